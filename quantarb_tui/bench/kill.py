"""`quantarb bench kill`: how fast a kill takes hold while the engine is busy.

The demo engine (pipeline, orchestrator, paper venues with 20-60 ms order latency, a real
SQLite ledger) ingests a synthetic market at >= 20,000 quotes/s in this event loop. Each of
`kills` rounds waits until entry orders are in flight, then calls `Runtime.kill()` and
measures from that call to:

- (a) the gate refusing: the RiskGate's very next order check says `risk:halted`;
- (b) every cancel request sent: the orchestrator has issued a cancel for every entry order
  of every group with nothing filled (`on_cancels_sent`).

Then the groups settle, the engine is rearmed, and the next round starts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from decimal import Decimal
from typing import Any

from core.clock import RealClock
from core.config import QuantarbConfig, demo_config
from core.models import OrderPurpose, Quote, TradingState
from core.risk import OrderCheck, StateChange
from engine.runtime import Runtime
from quantarb_tui.bench.common import percentile
from sim.market import SyntheticMarket

TARGET_QUOTES_PER_S = 20_000
FEED_QUOTES_PER_S = 22_000  # paced a little above the target, so the target is met


def _config() -> QuantarbConfig:
    cfg = demo_config().model_dump(mode="python")
    cfg["paper"] = {"latency_ms_min": 20.0, "latency_ms_max": 60.0}
    cfg["strategy"]["cooldown_ms"] = 200
    cfg["risk"].update({"max_open_groups": 3, "max_gross_exposure": Decimal(10**9),
                        "max_consecutive_failures": 1_000_000, "daily_loss_limit": Decimal(10**9)})
    cfg["demo"]["dislocation_every_s"] = 0.2
    return QuantarbConfig.model_validate(cfg)


class _Feeder:
    """Synthetic quotes into `Runtime.ingest`, paced to a target rate in real time."""

    def __init__(self, runtime: Runtime, rate: int) -> None:
        self.runtime = runtime
        self.rate = rate
        pairs = runtime.pairs
        n = sum(len(p.instruments) for p in pairs)
        # One advance() quotes each instrument about once per tick: tick = n / rate seconds.
        self.tick_s = n / rate
        self.market = SyntheticMarket(pairs, seed=3, tick_ms=self.tick_s * 1000, dislocation_every_s=0.2)
        self.quotes = 0
        self.started = 0.0
        self.ended = 0.0
        self.stopped = False

    async def run(self) -> None:
        rt = self.runtime
        clock = rt.clock
        self.started = time.perf_counter()
        while not self.stopped:
            due = int((time.perf_counter() - self.started) * self.rate)
            batch = 0
            while self.quotes < due and batch < 2000:
                now_ns = clock.monotonic_ns()
                for t in self.market.advance(self.tick_s):
                    rt.ingest(Quote(t.venue, t.symbol, t.bid, t.ask, t.bid_size, t.ask_size, t.ts_ms, now_ns))
                    self.quotes += 1
                    batch += 1
            await asyncio.sleep(0 if self.quotes < due else 0.001)
        self.ended = time.perf_counter()

    @property
    def rate_achieved(self) -> float:
        elapsed = (self.ended or time.perf_counter()) - self.started
        return self.quotes / elapsed if elapsed > 0 else 0.0


async def _bench(kills: int, rate: int, wait_s: float) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="quantarb-bench-kill-")
    runtime = Runtime(_config(), is_demo=True, clock=RealClock(), ledger_path=os.path.join(tmp, "bench.db"),
                      mt5_in_process=True)
    await runtime.open_ledger()
    orch_task = asyncio.create_task(runtime.orchestrator.run())
    feeder = _Feeder(runtime, rate)
    feed_task = asyncio.create_task(feeder.run())
    gate = runtime.gate
    probe = OrderCheck("probe", "okx", "BTC", "buy", Decimal("0.01"), Decimal(60000), OrderPurpose.ENTRY)
    gate_ns: list[int] = []
    sent_ns: list[int] = []
    cancels: list[int] = []
    t0 = 0
    real_kill = gate.kill

    def timed_kill(reason: str) -> StateChange:
        change = real_kill(reason)
        if gate.check_order(probe) == "risk:halted":
            gate_ns.append(time.perf_counter_ns() - t0)
        return change

    def on_sent(n: int) -> None:
        sent_ns.append(time.perf_counter_ns() - t0)
        cancels.append(n)

    gate.kill = timed_kill  # type: ignore[method-assign]
    try:
        await asyncio.sleep(0.5)  # books filled
        for i in range(kills):
            waited = 0.0
            while not runtime.orchestrator.entries_to_cancel() and waited < wait_s:
                await asyncio.sleep(0.001)
                waited += 0.001
            t0 = time.perf_counter_ns()
            await runtime.control.kill(f"bench kill {i}", on_cancels_sent=on_sent)
            await runtime.orchestrator.settle_open(timeout_s=10.0)
            if gate.state is TradingState.HALTED:
                await runtime.control.rearm("bench")
    finally:
        feeder.stopped = True
        await feed_task
        await runtime.orchestrator.shutdown(timeout_s=10.0)
        orch_task.cancel()
        await asyncio.gather(orch_task, return_exceptions=True)
        await runtime.close_ledger()
    gate_sorted = sorted(gate_ns)
    sent_sorted = sorted(sent_ns)
    with_cancels = sorted(ns for ns, n in zip(sent_ns, cancels, strict=True) if n > 0)

    def ms(values: list[int], q: float) -> float:
        return round(percentile(values, q) / 1e6, 4)

    result: dict[str, Any] = {
        "kills": kills,
        "quotes_per_s": round(feeder.rate_achieved),
        "target_quotes_per_s": TARGET_QUOTES_PER_S,
        "gate_refusing_ms_p50": ms(gate_sorted, 50),
        "gate_refusing_ms_p99": ms(gate_sorted, 99),
        "gate_refusing_ms_max": ms(gate_sorted, 100),
        "cancels_sent_ms_p50": ms(sent_sorted, 50),
        "cancels_sent_ms_p99": ms(sent_sorted, 99),
        "cancels_sent_ms_max": ms(sent_sorted, 100),
        "kills_with_cancels": len(with_cancels),
        "cancels_total": sum(cancels),
        "cancels_sent_ms_p99_with_cancels": ms(with_cancels, 99),
        "targets": {"gate_refusing_ms": 1.0, "cancels_sent_ms_p99": 50.0},
    }
    result["lines"] = [
        f"engine fed {result['quotes_per_s']:,} quotes/s (target >= {TARGET_QUOTES_PER_S:,}) during {kills} kills",
        f"(a) kill -> gate refusing: p50 {result['gate_refusing_ms_p50']} ms, "
        f"p99 {result['gate_refusing_ms_p99']} ms, max {result['gate_refusing_ms_max']} ms (target <= 1 ms)",
        f"(b) kill -> every cancel sent: p50 {result['cancels_sent_ms_p50']} ms, "
        f"p99 {result['cancels_sent_ms_p99']} ms (target <= 50 ms); "
        f"{result['kills_with_cancels']} kills had entries in flight, {result['cancels_total']} cancels",
    ]
    return result


def bench_kill(kills: int = 100, rate: int = FEED_QUOTES_PER_S, wait_s: float = 2.0) -> dict[str, Any]:
    return asyncio.run(_bench(kills, rate, wait_s))
