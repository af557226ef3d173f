"""Bench: the workstation under load (`quantarb bench tui`).

The real QuantArbApp runs headless (Textual's test driver) on the demo engine (paper venues,
MT5 in process, a temporary ledger, the real clock) while a feeder task in the same event
loop ingests synthetic quotes at a fixed rate (20,000 quotes/s by default), paced by the
wall clock, with the orchestrator executing the groups the quotes trigger.

Two figures:

- key press to visible state: `p` is posted as a key event; the time runs until the first
  compositor frame that shows the new trading state in the status bar (`App._display`, where
  a terminal would be written; the bench also encodes every frame to escape sequences, as a
  terminal session would). `p` is pressed `presses` times, toggling pause and resume, at
  random moments relative to the refresh timer.
- the UI's CPU share: CPU time of the event-loop thread (`time.thread_time`, so the ledger's
  writer thread is not counted) per second of wall time, with the TUI minus without it, for
  the same feeder, engine and ledger. The time spent inside `refresh_view` (one snapshot plus
  the diff applied to the widgets) is reported as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from textual import events

from core.clock import RealClock
from core.config import QuantarbConfig, demo_config
from core.models import Quote
from engine.runtime import Runtime
from quantarb_tui.bench.common import percentile
from sim.market import SimTick, SyntheticMarket

TICK_POOL = 200_000


@dataclass
class FeedStats:
    quotes: int = 0
    ingest_ns: int = 0


def _ticks(runtime: Runtime, n: int, seed: int) -> list[SimTick]:
    market = SyntheticMarket(runtime.pairs, seed=seed, tick_ms=50.0, dislocation_every_s=0.5)
    ticks: list[SimTick] = []
    while len(ticks) < n:
        ticks.extend(market.advance(0.01))
    return ticks[:n]


async def _feed(runtime: Runtime, ticks: list[SimTick], rate: int, stop: asyncio.Event, stats: FeedStats) -> None:
    """Ingest quotes at `rate` per second of wall time, in small batches every ~2 ms."""
    ingest = runtime.ingest
    clock = runtime.clock
    n = len(ticks)
    i = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - t0) * rate) - stats.quotes
        batch = min(due, rate // 50 or 1)  # never more than 20 ms of quotes at once
        if batch > 0:
            start = time.perf_counter_ns()
            now_ns = clock.monotonic_ns()
            now_ms = clock.time_ms()
            for _ in range(batch):
                t = ticks[i]
                i = (i + 1) % n
                ingest(Quote(t.venue, t.symbol, t.bid, t.ask, t.bid_size, t.ask_size, now_ms, now_ns))
            stats.quotes += batch
            stats.ingest_ns += time.perf_counter_ns() - start
        await asyncio.sleep(0.002)


def bench_config() -> QuantarbConfig:
    """The demo, with the loss and failure breakers out of reach: replayed at 20,000 quotes/s
    the synthetic market breaks many groups, and a breaker holding a pause would make `p`
    (what the latency is measured on) a no-op."""
    config = demo_config()
    risk = config.risk.model_copy(update={"max_consecutive_failures": 1_000_000,
                                          "daily_loss_limit": Decimal(10**12)})
    return config.model_copy(update={"risk": risk})


async def _runtime(tmp: str, seed: int) -> Runtime:
    runtime = Runtime(bench_config(), is_demo=True, clock=RealClock(), ledger_path=f"{tmp}/bench.db",
                      mt5_in_process=True)
    # What start() does for the ledger, without the loopback venues (the feeder is the market).
    await runtime.open_ledger(f"{tmp}/bench.db")
    return runtime


async def _close(runtime: Runtime, orchestrator: asyncio.Task[None]) -> None:
    await runtime.orchestrator.shutdown(timeout_s=5.0)
    orchestrator.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await orchestrator
    await runtime.close_ledger()


async def _engine_only(ticks: list[SimTick], rate: int, seconds: float, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await _runtime(tmp, seed)
        orchestrator = asyncio.create_task(runtime.orchestrator.run())
        stop = asyncio.Event()
        stats = FeedStats()
        feeder = asyncio.create_task(_feed(runtime, ticks, rate, stop, stats))
        await asyncio.sleep(min(0.5, seconds / 4))  # warm-up
        cpu0, wall0, q0 = time.thread_time(), time.perf_counter(), stats.quotes
        await asyncio.sleep(seconds)
        cpu, wall, quotes = time.thread_time() - cpu0, time.perf_counter() - wall0, stats.quotes - q0
        stop.set()
        await feeder
        await _close(runtime, orchestrator)
    return {"cpu_per_s": cpu / wall, "quotes_per_s": quotes / wall}


async def _with_tui(
    ticks: list[SimTick], rate: int, seconds: float, presses: int, refresh_hz: float,
    size: tuple[int, int], seed: int,
) -> dict[str, Any]:
    from quantarb_tui.app import QuantArbApp
    from quantarb_tui.widgets.status_bar import StatusBar

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await _runtime(tmp, seed)
        orchestrator = asyncio.create_task(runtime.orchestrator.run())
        app = QuantArbApp(runtime, autostart=False, refresh_hz=refresh_hz)
        app.animation_level = "none"
        visible = asyncio.Event()
        target: list[str] = [""]
        seen_at: list[int] = [0]
        frames: list[int] = [0, 0]  # frames, bytes

        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            if renderable is not None and not app._batch_count:
                render = getattr(renderable, "render_segments", None)
                if render is not None:
                    frames[0] += 1
                    frames[1] += len(render(app.console))  # what a terminal would be sent
                if target[0] and app.screen.query_one(StatusBar).shown_state == target[0]:
                    seen_at[0] = time.perf_counter_ns()
                    target[0] = ""
                    visible.set()
            original(screen, renderable)

        app._display = display  # type: ignore[method-assign]
        async with app.run_test(size=size, headless=True) as pilot:
            await pilot.pause()
            stop = asyncio.Event()
            stats = FeedStats()
            feeder = asyncio.create_task(_feed(runtime, ticks, rate, stop, stats))
            await asyncio.sleep(min(0.5, seconds / 4))  # warm-up
            cpu0, wall0, q0 = time.thread_time(), time.perf_counter(), stats.quotes
            refresh0, refreshes0, frames0 = app.refresh_ns, app.refreshes, frames[0]
            await asyncio.sleep(seconds)
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
            quotes = stats.quotes - q0
            refresh_s = (app.refresh_ns - refresh0) / 1e9
            refreshes = app.refreshes - refreshes0
            fps = (frames[0] - frames0) / wall

            latencies_ms: list[float] = []
            missed = 0
            for _ in range(presses):
                await asyncio.sleep(rng.uniform(0.02, 0.12))  # a random phase against the timer
                state = runtime.view.snapshot(groups=0, log=0).trading_state
                if state not in ("active", "paused"):  # a halt (compensation failed): start again
                    runtime.gate.rearm("bench")
                target[0] = "active" if state == "paused" else "paused"
                visible.clear()
                t0 = time.perf_counter_ns()
                app.post_message(events.Key("p", "p"))
                try:
                    await asyncio.wait_for(visible.wait(), timeout=2.0)
                except TimeoutError:
                    missed += 1
                    target[0] = ""
                    continue
                latencies_ms.append((seen_at[0] - t0) / 1e6)
            stop.set()
            await feeder
            if runtime.view.snapshot(groups=0, log=0).trading_state == "paused":
                await runtime.control.resume("bench done")
        await _close(runtime, orchestrator)
    latencies_ms.sort()
    return {
        "cpu_per_s": cpu / wall,
        "quotes_per_s": quotes / wall,
        "refresh_share": refresh_s / wall,
        "refresh_ms_mean": refresh_s * 1000 / refreshes if refreshes else 0.0,
        "refreshes_per_s": refreshes / wall,
        "frames_per_s": fps,
        "latencies_ms": latencies_ms,
        "missed": missed,
    }


async def _bench(rate: int, seconds: float, presses: int, refresh_hz: float, size: tuple[int, int],
                 seed: int) -> dict[str, Any]:
    probe = Runtime(demo_config(), is_demo=True, clock=RealClock(), ledger_path="", mt5_in_process=True)
    ticks = _ticks(probe, max(1_000, min(TICK_POOL, int(rate * seconds * 2))), seed)
    # The tick pool is the bench's stand-in for the venues, not part of the process being
    # measured: frozen, its objects stay out of the collector's full passes.
    gc.collect()
    gc.freeze()
    engine = await _engine_only(ticks, rate, seconds, seed)
    tui = await _with_tui(ticks, rate, seconds, presses, refresh_hz, size, seed)
    lat = tui["latencies_ms"]
    p50, p99, worst = percentile(lat, 50), percentile(lat, 99), (lat[-1] if lat else 0.0)
    ui_share = max(0.0, tui["cpu_per_s"] - engine["cpu_per_s"])
    return {
        "quotes_per_s_target": rate,
        "quotes_per_s_engine_only": round(engine["quotes_per_s"]),
        "quotes_per_s_with_tui": round(tui["quotes_per_s"]),
        "terminal": f"{size[0]}x{size[1]}",
        "refresh_hz": refresh_hz,
        "loop_cpu_engine_only": round(engine["cpu_per_s"], 3),
        "loop_cpu_with_tui": round(tui["cpu_per_s"], 3),
        "ui_cpu_share": round(ui_share, 3),
        "refresh_share": round(tui["refresh_share"], 4),
        "refresh_ms_mean": round(tui["refresh_ms_mean"], 2),
        "refreshes_per_s": round(tui["refreshes_per_s"], 1),
        "frames_per_s": round(tui["frames_per_s"], 1),
        "presses": presses,
        "missed": tui["missed"],
        "key_to_visible_ms": {"p50": round(p50, 1), "p99": round(p99, 1), "max": round(worst, 1)},
        "lines": [
            f"load            {engine['quotes_per_s']:,.0f} quotes/s engine only, "
            f"{tui['quotes_per_s']:,.0f} quotes/s with the TUI (target {rate:,})",
            f"terminal        {size[0]}x{size[1]} headless, refresh {refresh_hz:g} Hz, "
            f"{tui['frames_per_s']:.1f} frames/s encoded",
            f"key->visible    p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {worst:.1f} ms "
            f"({len(lat)} presses of p, {tui['missed']} missed)",
            f"loop CPU        {engine['cpu_per_s'] * 100:.1f}% engine only, {tui['cpu_per_s'] * 100:.1f}% with the TUI"
            f" -> UI {ui_share * 100:.1f}% of one core",
            f"refresh_view    {tui['refresh_share'] * 100:.2f}% of wall time "
            f"({tui['refresh_ms_mean']:.2f} ms per snapshot+diff, {tui['refreshes_per_s']:.1f}/s)",
        ],
    }


def bench_tui(
    *,
    rate: int = 20_000,
    seconds: float = 5.0,
    presses: int = 100,
    refresh_hz: float = 5.0,
    size: tuple[int, int] = (160, 48),
    seed: int = 7,
) -> dict[str, Any]:
    """Key press to visible state and the UI's CPU share under `rate` quotes/s."""
    try:
        return asyncio.run(_bench(rate, seconds, presses, refresh_hz, size, seed))
    finally:
        gc.unfreeze()

