"""Tick to trade: from a market frame's arrival to both legs' order requests on the wire.

The engine is the runtime's own composition (`engine.runtime.Runtime`: CompareEngine,
OpportunityPipeline, RiskGate, HedgeOrchestrator, GuardedJournal over a real SQLite `Ledger`
in a temporary directory), with our live OKX and Binance spot gateways, started and connected
to the simulators, put in the runtime's gateway map where the paper ones were (the bench
builds its own, with the keys and the Ed25519 logon it needs, instead of a live config). The
orchestrator runs as in the runtime (`run()` task, concurrent legs), and each entry order is
written ahead as the runtime's `[engine] write_ahead` says (the default: `<ledger>.ahead`).

Each round: the simulators' books are set so both legs will fill; then one raw frame (bytes,
as the feed's socket gives it: an OKX `tickers` push or a Binance `bookTicker`) dislocates
one venue by `DISLOCATION_BPS`. Timed from just before `FrameNormalizer.normalize(frame)`:
the normalizer, `Runtime.ingest` (pipeline, risk gate, group submitted and journaled), the
orchestrator's task, both legs' gate check and write-ahead commit, the gateways' `place()` up
to the order frame written to the socket (`WireProbe`). Then the group settles (both legs
fill: `hedged`), a calm frame puts the venue back, and the next round dislocates the other
way (positions stay flat). Nothing overlaps: a round starts when the last group closed.

Breakdown per round: `decide` (normalize + ingest, synchronous), `to_write_ahead` (until the
first leg's write-ahead starts: task scheduling, gate), `write_ahead` (first start to last
commit of the two legs: the journal's share), `after_write_ahead` (last commit to the last
leg on the wire: the re-check, the gateways' validation, rounding, JSON, WebSocket frame).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from core.clock import Clock
from core.config import QuantarbConfig
from core.hedge import HedgeGroup, client_order_id
from core.models import Order, Venue
from engine.runtime import Runtime
from feeds.normalizers import BinanceBookTickerNormalizer, FrameNormalizer, OkxTickerNormalizer
from quantarb_tui.bench.common import percentile
from quantarb_tui.bench.venues import (
    BN_SYMBOL,
    OKX_SYMBOL,
    PAIR_CONFIG,
    Venues,
    binance_gateway,
    okx_gateway,
)
from quantarb_tui.bench.wire import WireProbe

MID = 97_000.0
DISLOCATION_BPS = 40.0
ROUND_TIMEOUT_S = 10.0
_update_id = [400_900_000]


def bench_config() -> QuantarbConfig:
    """One pair on OKX (swap) and Binance (spot); intents whenever the edge is over 5 bps."""
    return QuantarbConfig.model_validate({
        "engine": {"execution": "paper"},
        "venues": {"okx": {}, "binance": {"market": "spot"}},
        "pairs": [PAIR_CONFIG],
        "strategy": {"threshold_bps": 5, "cooldown_ms": 0, "persistence_ms": 0, "max_quote_age_ms": 60_000},
        "risk": {"max_leg_notional": "5000", "max_open_groups": 5, "max_gross_exposure": str(10**9),
                 "daily_loss_limit": str(10**9), "max_consecutive_failures": 1_000_000},
    })


def okx_frame(bid: float, ask: float, size: float, ts_ms: int) -> bytes:
    """An OKX `tickers` push as OKX sends it (every value a string)."""
    data = {"instType": "SWAP", "instId": OKX_SYMBOL, "last": _num(ask), "lastSz": "1", "askPx": _num(ask),
            "askSz": _num(size), "bidPx": _num(bid), "bidSz": _num(size), "open24h": "96000", "high24h": "98000",
            "low24h": "95500", "volCcy24h": "81234.5", "vol24h": "8123450", "sodUtc0": "96500", "sodUtc8": "96800",
            "ts": str(ts_ms)}
    return json.dumps({"arg": {"channel": "tickers", "instId": OKX_SYMBOL}, "data": [data]},
                      separators=(",", ":")).encode()


def binance_frame(bid: float, ask: float, size: float) -> bytes:
    """A Binance spot `bookTicker` on a raw stream (prices padded to 8 decimals, as Binance does)."""
    _update_id[0] += 7
    data = {"u": _update_id[0], "s": BN_SYMBOL, "b": f"{bid:.8f}", "B": f"{size:.8f}", "a": f"{ask:.8f}",
            "A": f"{size:.8f}"}
    return json.dumps(data, separators=(",", ":")).encode()


def _num(value: float) -> str:
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def _round_to(value: float, tick: float) -> float:
    return round(round(value / tick) * tick, 8)


class _Round:
    """The books and frames of one round: `cheap` is the venue bought, the other is dislocated."""

    def __init__(self, cheap: Venue) -> None:
        self.cheap = cheap
        hi = MID * (1 + DISLOCATION_BPS / 10_000)
        self.okx_calm = (MID - 0.1, MID)
        self.bn_calm = (MID - 0.01, MID)
        if cheap == "okx":  # Binance bid jumps: buy OKX at its ask, sell Binance at its bid
            self.okx_book = self.okx_calm
            self.bn_book = (_round_to(hi, 0.01), _round_to(hi + 0.01, 0.01))
        else:  # OKX bid jumps: buy Binance, sell OKX
            self.okx_book = (_round_to(hi, 0.1), _round_to(hi + 0.1, 0.1))
            self.bn_book = self.bn_calm

    def frame(self, clock: Clock) -> tuple[Venue, bytes]:
        if self.cheap == "okx":
            return "binance", binance_frame(*self.bn_book, 5.0)
        return "okx", okx_frame(*self.okx_book, 500.0, clock.time_ms())

    def calm_frame(self, clock: Clock) -> tuple[Venue, bytes]:
        if self.cheap == "okx":
            return "binance", binance_frame(*self.bn_calm, 5.0)
        return "okx", okx_frame(*self.okx_calm, 500.0, clock.time_ms())


class _Instruments:
    """Timing hooks on the runtime, added as instance attributes (no engine code changes)."""

    def __init__(self, runtime: Runtime) -> None:
        self.write_ahead: dict[str, tuple[int, int]] = {}  # cid -> (start, committed) ns
        self.closed = asyncio.Event()
        journal = runtime.journal
        if journal is None:
            raise RuntimeError("the bench runtime has no journal")
        real_created = journal.order_created
        perf = time.perf_counter_ns
        spans = self.write_ahead

        async def order_created(order: Order) -> int:
            start = perf()
            try:
                return await real_created(order)
            finally:
                spans[order.client_order_id] = (start, perf())

        journal.order_created = order_created  # type: ignore[method-assign]
        real_release: Callable[[str], None] = runtime.pipeline.release
        closed = self.closed

        def release(pair: str) -> None:
            real_release(pair)
            closed.set()

        runtime.pipeline.release = release  # type: ignore[method-assign]


def _us(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(percentile(ordered, 50) / 1000, 1), "p99": round(percentile(ordered, 99) / 1000, 1),
            "max": round(ordered[-1] / 1000, 1) if ordered else 0.0}


async def bench_tick_to_trade(venues: Venues, clock: Clock, probe: WireProbe, *, intents: int,
                              warmup: int) -> dict[str, Any]:
    config = bench_config()
    tmp = tempfile.mkdtemp(prefix="quantarb-bench-orders-")
    runtime = Runtime(config, is_demo=False, clock=clock, ledger_path=os.path.join(tmp, "bench.db"),
                      serve_operator_api=False)
    normalizers: dict[Venue, FrameNormalizer] = {"okx": OkxTickerNormalizer([OKX_SYMBOL]),
                                                 "binance": BinanceBookTickerNormalizer([BN_SYMBOL])}
    samples: dict[str, list[int]] = {k: [] for k in ("tick_to_trade", "decide", "to_write_ahead", "write_ahead",
                                                     "after_write_ahead")}
    orch_task: asyncio.Task[None] | None = None
    try:
        await runtime.open_ledger()
        hooks = _Instruments(runtime)
        async with okx_gateway(venues, clock, websocket=True) as okx, \
                binance_gateway(venues, clock, websocket=True) as binance:
            runtime.gateways["okx"] = okx  # where the runtime routes each leg (paper until the next issue)
            runtime.gateways["binance"] = binance
            orch_task = asyncio.create_task(runtime.orchestrator.run(), name="bench-orchestrator")
            ports: dict[Venue, int] = {"okx": venues.okx_port, "binance": venues.binance_port}
            first = _Round("binance")
            venues.set_books(first.okx_calm, first.bn_calm)
            books: list[tuple[Venue, bytes]] = [("okx", okx_frame(*first.okx_calm, 500.0, clock.time_ms())),
                                                ("binance", binance_frame(*first.bn_calm, 5.0))]
            for venue, frame in books:
                for q in normalizers[venue].normalize(frame, clock.monotonic_ns()):
                    runtime.ingest(q)
            for i in range(warmup + intents):
                rnd = _Round("okx" if i % 2 == 0 else "binance")
                venues.set_books(rnd.okx_book, rnd.bn_book)
                venue, frame = rnd.frame(clock)
                normalizer = normalizers[venue]
                ingest = runtime.ingest
                hooks.closed.clear()
                probe.arm()
                # -- timed from here: the frame has arrived ------------------------------------
                t0 = time.perf_counter_ns()
                decision = None
                for q in normalizer.normalize(frame, clock.monotonic_ns()):
                    decision = ingest(q)
                t_decided = time.perf_counter_ns()
                if decision is None or decision.intent is None:
                    reason = decision.reason if decision is not None else "no quote"
                    raise RuntimeError(f"round {i}: the dislocated frame made no intent ({reason})")
                group = _group_of(runtime, decision.intent)
                try:
                    await asyncio.wait_for(hooks.closed.wait(), ROUND_TIMEOUT_S)
                except TimeoutError:
                    raise RuntimeError(f"round {i}: group {group.group_id} did not close within "
                                       f"{ROUND_TIMEOUT_S} s ({group.state})") from None
                probe.disarm()
                wire: list[int] = []
                spans: list[tuple[int, int]] = []
                for leg, spec in enumerate((group.intent.buy, group.intent.sell)):
                    cid = client_order_id(group.group_id, leg, 0)
                    done = probe.request_done_ns(ports[spec.venue], cid.encode())
                    span = hooks.write_ahead.pop(cid, None)
                    if done is None or span is None:
                        raise RuntimeError(f"round {i}: leg {cid} on {spec.venue} never reached the wire "
                                           f"(group {group.state}, write-ahead {span is not None})")
                    wire.append(done)
                    spans.append(span)
                if i >= warmup:
                    samples["tick_to_trade"].append(max(wire) - t0)
                    samples["decide"].append(t_decided - t0)
                    samples["to_write_ahead"].append(min(s for s, _ in spans) - t0)
                    samples["write_ahead"].append(max(e for _, e in spans) - min(s for s, _ in spans))
                    samples["after_write_ahead"].append(max(wire) - max(e for _, e in spans))
                venue, calm = rnd.calm_frame(clock)
                for q in normalizers[venue].normalize(calm, clock.monotonic_ns()):
                    runtime.ingest(q)
            await runtime.orchestrator.shutdown(timeout_s=10.0)
            states = {str(k): v for k, v in runtime.orchestrator.ended_by_state.items()}  # how each ended
            sent = {"okx_over_ws": okx.sent_over_ws, "okx_over_rest": okx.sent_over_rest,
                    "binance_over_ws": binance.placed_over_ws, "binance_over_rest": binance.placed_over_rest}
    finally:
        if orch_task is not None:
            orch_task.cancel()
            await asyncio.gather(orch_task, return_exceptions=True)
        await runtime.close_ledger()
        shutil.rmtree(tmp, ignore_errors=True)
    t2t = samples["tick_to_trade"]
    wa = samples["write_ahead"]
    shares = sorted(w / t for w, t in zip(wa, t2t, strict=True) if t > 0)
    return {
        "intents": len(t2t),
        "tick_to_trade_us": _us(t2t),
        # Per round, the path less its write-ahead span: roughly what a send that did not wait
        # for the commit would take (derived, not measured on such an engine).
        "less_write_ahead_us": _us([t - w for t, w in zip(t2t, wa, strict=True)]),
        "breakdown_us": {k: _us(v) for k, v in samples.items() if k != "tick_to_trade"},
        "journal_share": {"p50": round(percentile(shares, 50), 3), "p99": round(percentile(shares, 99), 3),
                          "of_total_time": round(sum(wa) / sum(t2t), 3) if t2t else 0.0},
        "groups": states,
        "orders_sent": sent,
        "ledger_dir": tempfile.gettempdir(),
        "target_p99_us": 1000.0,
    }


def _group_of(runtime: Runtime, intent: object) -> HedgeGroup:
    for group in runtime.orchestrator.open.values():
        if group.intent is intent:
            return group
    raise RuntimeError("the intent's group is not open")


__all__ = ["DISLOCATION_BPS", "bench_config", "bench_tick_to_trade", "binance_frame", "okx_frame"]

