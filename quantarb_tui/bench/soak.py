"""Bench: memory over a long run (`quantarb bench soak`).

`quantarb headless` runs for weeks, so its memory must level off. This bench runs the demo
engine as headless runs it (the ledger, the listener, the EA simulator on loopback, the OKX
and Binance simulators behind the real WebSocket feeds, the market paced by the wall clock),
optionally under the real TUI (Textual's test driver, refreshing at 5 Hz), and samples the
process every few seconds:

- RSS (`/proc/self/statm`);
- where RSS is (`rss_breakdown`: quantarb_tui.bench.memory_map);
- gc-tracked objects by type, at two moments (the end of the warm-up and the end).

This process does not trace. A twin forked before it starts runs the same soak with
tracemalloc (quantarb_tui.bench.twin: tracing's own entries fragment the heap being judged)
and gives the Python heap: its traced size, started with the run, and two snapshots compared
by line (tracing from the start: its own growth, a trace table filling as the heap turns over
and resizing by the megabyte, is then over by the end of the warm-up; when it started at the
end of the warm-up, that growth was most of the slope of an idle engine: main heap +3.4 MB in
five minutes, docs/performance.md).

It reports the least-squares RSS slope after the warm-up (`rss_mb_per_hour`), the lines and
types that grew most between the two snapshots, and whether the slope is within
`TARGET_MB_PER_HOUR`.

`accelerate=True` compresses the demo's activity: quotes 5x as often, a dislocation every
0.1 s, cooldowns and breaker pauses 30x shorter, paper faults on (rejects, timeouts, lost
acks, partial fills: compensation), a consecutive-failure breaker that trips and releases
itself, halts rearmed by the bench, every feed's connection dropped every 30 s (the feeds
reconnect) and the EA simulator restarted every 60 s (a new terminal session). What a
per-event leak costs then shows within minutes; the result says how many hours of the demo's
default activity the run covered, counted in hedge groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.clock import RealClock
from core.config import QuantarbConfig, demo_config
from core.models import TradingState
from engine.control import ControlRefused
from engine.events import EngineEvent
from engine.runtime import Runtime
from quantarb_tui.bench.memory_map import (
    KINDS,
    mallinfo,
    read_pymalloc_stats,
    read_rss_breakdown,
    sqlite_memory_used,
    thread_count,
)
from quantarb_tui.bench.twin import Twin, TwinFailed

TARGET_MB_PER_HOUR = 2.0
# The demo's default activity, measured (docs/performance.md, issue 19): 790 hedge groups and
# 171k quotes in 25 minutes. Used to say how much demo time an accelerated run stands for.
DEMO_GROUPS_PER_HOUR = 1900.0
DEMO_QUOTES_PER_HOUR = 410_000.0
TOP = 12
# How long the traced twin may still take once this run has ended (it started at the same time
# and runs as long; tracing slows it): past that it is ended and the report says so.
TWIN_GRACE_S = 120.0
EVENTS_QUOTED = 10  # breaker trips and errors quoted in the report (the first ones)
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def rss_kib() -> int:
    """Resident set size of this process, KiB (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except OSError:  # not Linux: the peak is the best there is
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)




def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; 0.0 below two points."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600.0


def type_counts() -> Counter[str]:
    """gc-tracked objects by type name (containers and instances; not str, int, Decimal)."""
    return Counter(type(o).__qualname__ for o in gc.get_objects())


@dataclass
class Sample:
    t_s: float
    rss_kib: int
    tracemalloc_kib: int  # tracemalloc's own memory (subtracted from RSS for the slope)
    traced_kib: int  # live blocks allocated since tracing started
    # gc-tracked objects: 0 in a sample. Counting them takes `gc.get_objects()`, a list of every
    # object (a megabyte, made and freed every sample in the heap being measured: the bench's own
    # fragmentation, session 9); the marks count them, once each.
    objects: int
    blocks: int  # memory blocks CPython has allocated (`sys.getallocatedblocks`), every object
    malloc_kib: int  # glibc: in use by malloc (SQLite, C extensions, Python's large blocks)
    mmap_kib: int  # glibc: blocks malloc mmap'd (large ones; CPython's arenas are mmap'd apart)
    # Where RSS is (quantarb_tui.bench.memory_map): KiB by kind of mapping, in KINDS order.
    rss_by_kind: tuple[int, ...] = ()
    malloc_free_kib: int = 0  # glibc: free inside its arenas (fragmentation, top not given back)
    sqlite_kib: int = 0  # sqlite3_memory_used: page caches of every connection, statements
    threads: int = 0
    arenas: int = 0  # glibc thread arenas mapped
    wal_kib: int = 0  # the ledger's -wal file (on disk; only its -shm index is mapped)
    # pymalloc (memory_map.PymallocStats): its arenas (in `anon_other`), in use and free inside them.
    pymalloc_arenas_kib: int = 0
    pymalloc_in_use_kib: int = 0
    pymalloc_free_kib: int = 0


_SCALARS = ("t_s", "rss_kib", "tracemalloc_kib", "traced_kib", "objects", "blocks", "malloc_kib", "mmap_kib",
            "malloc_free_kib", "sqlite_kib", "threads", "arenas", "wal_kib", "pymalloc_arenas_kib",
            "pymalloc_in_use_kib", "pymalloc_free_kib")


class SampleSeries:
    """The samples, as numbers in one array allocated when the run starts: a `Sample` object per
    sample (a dataclass and its tuple, about 0.2 MB an hour at one every ten seconds) would be
    the bench's own growth in the RSS it judges. A `Sample` is made again when read."""

    _COLUMNS = len(_SCALARS) + 1 + len(KINDS)  # the scalars, whether rss_by_kind is there, its values

    def __init__(self, capacity: int = 256) -> None:
        self._data = array("d", bytes(8 * self._COLUMNS * max(1, capacity)))
        self._n = 0

    def append(self, s: Sample) -> None:
        width = self._COLUMNS
        if (self._n + 1) * width > len(self._data):  # more samples than planned: grows, doubling
            self._data.extend(array("d", bytes(8 * len(self._data))))
        kinds = s.rss_by_kind if len(s.rss_by_kind) == len(KINDS) else (0,) * len(KINDS)
        row = array("d", [*(float(getattr(s, name)) for name in _SCALARS), 1.0 if s.rss_by_kind else 0.0, *kinds])
        self._data[self._n * width:(self._n + 1) * width] = row
        self._n += 1

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Samples the array holds before it must grow."""
        return len(self._data) // self._COLUMNS

    def __getitem__(self, i: int) -> Sample:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        row = self._data[i * self._COLUMNS:(i + 1) * self._COLUMNS]
        scalars = {name: (row[k] if name == "t_s" else int(row[k])) for k, name in enumerate(_SCALARS)}
        kinds = tuple(int(v) for v in row[len(_SCALARS) + 1:]) if row[len(_SCALARS)] else ()
        return Sample(**scalars, rss_by_kind=kinds)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(self._n))


@dataclass
class Probe:
    """What the run did (the activity the memory figures are per)."""

    quotes: int = 0
    decisions: int = 0
    intents: int = 0
    groups: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    ea_restarts: int = 0
    rearms: int = 0
    flattens: int = 0
    flatten_every_s: float = 0.0
    breaker_trips: int = 0
    events: int = 0
    log_bytes: int = 0
    mt5_tickets: int = 0  # open MT5 positions of ours in the last account report
    trims: int = 0  # glibc malloc_trim calls by the engine (engine.memory_trim), 0 when off
    trim_ms_total: float = 0.0  # their time, and the longest (the event loop waited that long)
    trim_ms_max: float = 0.0
    malloc_tuned: dict[str, int] = field(default_factory=dict)  # engine.malloc_tuning: what glibc took
    # The ledger's connections: page cache (cache_size, negative = KiB) and mmap size each.
    sqlite_connections: dict[str, dict[str, int]] = field(default_factory=dict)
    # Why the engine stopped trading, when it did: the first breaker trips and errors or halts, each as
    # "<seconds into the run> <text>" (a halted demo run measures an idle engine, not its load).
    trips: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def soak_config(*, accelerate: bool, ledger: str) -> QuantarbConfig:
    """The demo as `quantarb headless` runs it, on an ephemeral listener port and a private
    ledger; accelerated: the same world, compressed (see the module docstring)."""
    config = demo_config()
    updates: dict[str, Any] = {
        "engine": config.engine.model_copy(update={"ledger": ledger}),
        "listener": config.listener.model_copy(update={"port": 0}),
    }
    if accelerate:
        updates["demo"] = config.demo.model_copy(update={"tick_ms": 10, "dislocation_every_s": 0.03})
        updates["strategy"] = config.strategy.model_copy(update={"cooldown_ms": 50})
        updates["paper"] = config.paper.model_copy(update={
            "reject_rate": 0.05, "timeout_rate": 0.02, "lost_ack_rate": 0.02, "partial_rate": 0.1,
            "latency_ms_min": 1, "latency_ms_max": 10,
        })
        updates["risk"] = config.risk.model_copy(update={
            "failure_pause_s": 2.0, "daily_loss_limit": Decimal(10**9),
        })
    return config.model_copy(update=updates)


class _Churn:
    """What happens to the engine besides the market: accelerated, dropped feeds, a restarted
    EA and halts rearmed; with `flatten_every_s`, an operator's flatten (then a rearm) on a
    schedule, which closes the MT5 tickets a hedging account otherwise accumulates."""

    def __init__(self, runtime: Runtime, probe: Probe, *, accelerate: bool, flatten_every_s: float) -> None:
        self._runtime = runtime
        self._probe = probe
        self._accelerate = accelerate
        self._flatten_every_s = flatten_every_s

    @property
    def active(self) -> bool:
        return self._accelerate or self._flatten_every_s > 0

    async def run(self, stop: asyncio.Event, *, reconnect_every_s: float = 30.0,
                  ea_every_s: float = 60.0) -> None:
        runtime = self._runtime
        start = time.monotonic()
        next_drop, next_ea = start + reconnect_every_s, start + ea_every_s
        next_flatten = start + self._flatten_every_s if self._flatten_every_s > 0 else float("inf")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            now = time.monotonic()
            if now >= next_flatten:
                next_flatten = now + self._flatten_every_s
                with contextlib.suppress(ControlRefused):
                    await runtime.control.flatten("soak: scheduled flatten")
                    self._probe.flattens += 1
            if runtime.gate.state is TradingState.HALTED and (self._accelerate or self._probe.flattens):
                with contextlib.suppress(ControlRefused):  # refused while a breaker still holds
                    await runtime.control.rearm("soak: rearm")
                    self._probe.rearms += 1
            if not self._accelerate:
                continue
            if now >= next_drop and runtime.world is not None:
                next_drop = now + reconnect_every_s
                for server in (runtime.world.okx, runtime.world.binance):
                    server.faults.drop_after_frames = 0
                await asyncio.sleep(0.2)
                for server in (runtime.world.okx, runtime.world.binance):
                    server.faults.clear()
            if now >= next_ea and runtime.demo_ea is not None and runtime.listener_url is not None:
                next_ea = now + ea_every_s
                await runtime.demo_ea.stop()
                await runtime.demo_ea.start(runtime.listener_url)
                self._probe.ea_restarts += 1


class _Sampler:
    def __init__(self, warmup_s: float, interval_s: float, trace: bool,
                 wal_path: Callable[[], str | None] = lambda: None, duration_s: float = 0.0) -> None:
        self.warmup_s = warmup_s
        self._wal_path = wal_path
        self.interval_s = interval_s
        self.trace = trace
        self.samples = SampleSeries(int(duration_s / interval_s) + 16 if duration_s > 0 else 256)
        # The heap snapshots, dumped to files: one held in memory would be megabytes of the
        # process's growth between the marks, which is what is being measured.
        self.snapshot_dir = tempfile.mkdtemp(prefix="quantarb-soak-")
        self.snapshots: list[str] = []
        self.types: list[Counter[str]] = []
        self.marked_at: list[float] = []
        self.t0 = time.monotonic()
        self.load_start = _load()

    def sample(self) -> Sample:
        tracing = tracemalloc.is_tracing()
        info = mallinfo() if mallinfo is not None else None
        breakdown = read_rss_breakdown()
        pymalloc = read_pymalloc_stats()
        s = Sample(
            t_s=time.monotonic() - self.t0,
            rss_kib=rss_kib(),
            tracemalloc_kib=tracemalloc.get_tracemalloc_memory() // 1024 if tracing else 0,
            traced_kib=tracemalloc.get_traced_memory()[0] // 1024 if tracing else 0,
            objects=0,  # counted at the marks only (`_report`): see `Sample.objects`
            blocks=sys.getallocatedblocks(),
            malloc_kib=info.in_use // 1024 if info else 0,
            mmap_kib=info.mmapped // 1024 if info else 0,
            rss_by_kind=tuple(breakdown.kib[k] for k in KINDS) if breakdown else (),
            malloc_free_kib=info.free // 1024 if info else 0,
            sqlite_kib=sqlite_memory_used() // 1024 if sqlite_memory_used is not None else 0,
            threads=thread_count(),
            arenas=breakdown.arenas if breakdown else 0,
            wal_kib=_file_kib(self._wal_path()),
            pymalloc_arenas_kib=pymalloc.arenas // 1024 if pymalloc else 0,
            pymalloc_in_use_kib=pymalloc.in_use // 1024 if pymalloc else 0,
            pymalloc_free_kib=pymalloc.free // 1024 if pymalloc else 0,
        )
        self.samples.append(s)
        return s

    def mark(self, *, rehearsal: bool = False) -> None:
        """One of the two comparison points: a heap snapshot and the object counts. Taking
        them costs megabytes for a moment (the snapshot's traces as Python objects, the list of
        every object) that pymalloc and glibc keep afterwards: measured, a 3.5 MB step in RSS
        at the first mark, then RSS flat to the KiB for eleven minutes. A `rehearsal` is the
        same work, kept nowhere, in the warm-up: the marks after it reuse that memory."""
        gc.collect()
        if self.trace and tracemalloc.is_tracing():
            path = os.path.join(self.snapshot_dir, f"heap{len(self.snapshots)}")
            snapshot = tracemalloc.take_snapshot()
            snapshot.dump(path)
            del snapshot
            if rehearsal:
                os.unlink(path)
            else:
                self.snapshots.append(path)
        types = type_counts()
        if not rehearsal:
            self.types.append(types)
            self.marked_at.append(time.monotonic() - self.t0)

    async def run(self, duration_s: float, stop: asyncio.Event) -> None:
        """Sample until `duration_s`; tracing starts now (see the module docstring). The
        marks' own cost stays out of the measured part: a rehearsal half-way through the
        warm-up, the first comparison point just before the warm-up ends, the second after
        the last sample."""
        end = self.t0 + duration_s
        rehearse_at = self.t0 + self.warmup_s / 2
        first_mark = self.t0 + max(0.0, self.warmup_s - self.interval_s)
        rehearsed = marked = False
        if self.trace and not tracemalloc.is_tracing():
            tracemalloc.start(1)
        self.sample()
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if not rehearsed and now >= rehearse_at:
                rehearsed = True
                self.mark(rehearsal=True)
            if not marked and now >= first_mark:
                marked = True
                self.mark()
            await asyncio.sleep(min(self.interval_s, max(0.0, end - now)))
            self.sample()
        if not marked:
            self.mark()
        self.mark()


def _file_kib(path: str | None) -> int:
    if path is None:
        return 0
    try:
        return os.path.getsize(path) // 1024
    except OSError:
        return 0


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _probe(runtime: Runtime, probe: Probe) -> None:
    snap = runtime.view.snapshot(groups=0, log=0)
    probe.quotes = snap.quotes_total
    probe.decisions = snap.decisions_total
    probe.intents = snap.intents_total
    # How each group's execution ended (a group netted later is `closed` in the snapshot).
    probe.groups = {str(k): int(v) for k, v in runtime.orchestrator.ended_by_state.items()}
    probe.reconnects = sum(row.reconnects for row in runtime.health.rows(runtime.clock.monotonic_ns()))
    probe.events = runtime.events.total
    mt5 = runtime.mt5
    account = mt5.bridge.account(mt5.terminals[0]) if mt5 is not None else None
    if account is not None:
        probe.mt5_tickets = len(account.positions)
    probe.trims = runtime.memory_trim.calls
    probe.trim_ms_total = round(runtime.memory_trim.total_s * 1000, 3)
    probe.trim_ms_max = round(runtime.memory_trim.max_s * 1000, 3)
    probe.malloc_tuned = dict(runtime.malloc_tuned)


async def _run(duration_s: float, warmup_s: float, interval_s: float, *, accelerate: bool, tui: bool,
               trace: bool, flatten_every_s: float, keep_ledger: str | None = None) -> dict[str, Any]:
    probe = Probe(flatten_every_s=flatten_every_s)
    with tempfile.TemporaryDirectory() as tmp:
        config = soak_config(accelerate=accelerate, ledger=keep_ledger or f"{tmp}/soak.db")
        runtime = Runtime(config, is_demo=True, clock=RealClock())
        from quantarb_tui.headless import format_event

        started = time.monotonic()

        def _print(event: EngineEvent) -> None:  # what headless does with every event (but print it)
            probe.log_bytes += len(format_event(event, as_json=True)) + 1
            at = f"{time.monotonic() - started:.0f}s"
            if event.kind == "breaker" and event.data.get("tripped"):
                probe.breaker_trips += 1
                if len(probe.trips) < EVENTS_QUOTED:
                    probe.trips.append(f"{at} {event.text}")
            elif (event.level == "error" or "halt" in event.text.lower()) and len(probe.errors) < EVENTS_QUOTED:
                probe.errors.append(f"{at} {event.kind}: {event.text}")

        runtime.events.subscribe(_print)
        sampler = _Sampler(warmup_s, interval_s, trace,
                           wal_path=lambda: f"{runtime.ledger.path}-wal" if runtime.ledger is not None else None,
                           duration_s=duration_s)
        stop = asyncio.Event()
        churn = _Churn(runtime, probe, accelerate=accelerate, flatten_every_s=flatten_every_s)
        try:
            if tui:
                await _under_tui(runtime, sampler, churn, duration_s, stop, accelerate)
            else:
                await runtime.start()
                try:
                    await _measure(runtime, sampler, churn, duration_s, stop, accelerate)
                finally:
                    await runtime.stop()
        finally:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
        _probe(runtime, probe)
    try:
        return _report(sampler, probe, duration_s, warmup_s, accelerate=accelerate, tui=tui)
    finally:
        shutil.rmtree(sampler.snapshot_dir, ignore_errors=True)


async def _measure(runtime: Runtime, sampler: _Sampler, churn: _Churn, duration_s: float,
                   stop: asyncio.Event, accelerate: bool) -> None:
    if runtime.ledger is not None:
        churn._probe.sqlite_connections = await runtime.ledger.memory_settings()
    churn_task = asyncio.create_task(churn.run(stop)) if churn.active else None
    try:
        await sampler.run(duration_s, stop)
    finally:
        stop.set()
        if churn_task is not None:
            await churn_task
        _probe(runtime, churn._probe)


async def _under_tui(runtime: Runtime, sampler: _Sampler, churn: _Churn, duration_s: float,
                     stop: asyncio.Event, accelerate: bool) -> None:
    """The workstation on the running engine, refreshing at 5 Hz, as an operator leaves it
    for hours (the app is closed before the engine stops, as its quit does)."""
    from quantarb_tui.app import QuantArbApp

    await runtime.start()
    try:
        app = QuantArbApp(runtime, autostart=False, refresh_hz=5.0, stop_signals=False)
        app.animation_level = "none"
        async with app.run_test(size=(160, 48), headless=True) as pilot:
            await pilot.pause()
            await _measure(runtime, sampler, churn, duration_s, stop, accelerate)
            refreshes = app.refreshes
        if refreshes < duration_s:  # 5 Hz: far more than one a second
            raise RuntimeError(f"the TUI refreshed {refreshes} times in {duration_s:.0f} s")
    finally:
        await runtime.stop()


def _growth(sampler: _Sampler) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]:
    """The lines and types that grew between the two marks, and the Python heap's growth
    between them, MB per hour (the traced slope after the warm-up would also count
    bounded collections filling with blocks allocated after tracing began)."""
    lines: list[dict[str, Any]] = []
    heap_per_hour: float | None = None
    if len(sampler.snapshots) == 2:
        first, last = (tracemalloc.Snapshot.load(path) for path in sampler.snapshots)
        stats = last.compare_to(first, "lineno")
        span_s = sampler.marked_at[1] - sampler.marked_at[0]
        if span_s > 0:
            heap_per_hour = sum(stat.size_diff for stat in stats) / 1e6 / span_s * 3600
        own = __file__
        for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True):
            if stat.size_diff <= 0 or len(lines) >= TOP:
                break
            frame = stat.traceback[0]
            if frame.filename == own:  # the bench's own samples
                continue
            lines.append({"where": f"{_short(frame.filename)}:{frame.lineno}",
                          "kib": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff})
    types: list[dict[str, Any]] = []
    if len(sampler.types) == 2:
        before, after = sampler.types
        diff = Counter({k: after[k] - before.get(k, 0) for k in after})
        for name, n in diff.most_common(TOP):
            if n <= 0:
                break
            types.append({"type": name, "objects": n, "total": after[name]})
    return lines, types, heap_per_hour


def _short(path: str) -> str:
    for root in ("/site-packages/", "/lib/python3"):
        if root in path:
            return path.split(root, 1)[1]
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def _report(sampler: _Sampler, probe: Probe, duration_s: float, warmup_s: float, *, accelerate: bool,
            tui: bool) -> dict[str, Any]:
    after = [s for s in sampler.samples if s.t_s >= warmup_s]
    rss = [(s.t_s, (s.rss_kib - s.tracemalloc_kib) / 1024) for s in after]
    traced = [(s.t_s, s.traced_kib / 1024) for s in after if s.traced_kib]
    blocks = [(s.t_s, float(s.blocks)) for s in after]
    malloc = [(s.t_s, s.malloc_kib / 1024) for s in after]
    mmapped = [(s.t_s, s.mmap_kib / 1024) for s in after]
    slope = slope_per_hour(rss)
    lines, types, heap_per_hour = _growth(sampler)
    first, last = sampler.samples[0], sampler.samples[-1]
    groups = sum(probe.groups.values())
    demo_hours = groups / DEMO_GROUPS_PER_HOUR
    compression = demo_hours / (last.t_s / 3600) if last.t_s > 0 and demo_hours > 0 else 0.0
    result: dict[str, Any] = {
        "mode": ("accelerated" if accelerate else "demo") + (" + tui" if tui else "")
        + (f" + flatten every {probe.flatten_every_s:g} s" if probe.flatten_every_s > 0 else ""),
        "duration_s": round(last.t_s, 1),
        "warmup_s": warmup_s,
        "samples": len(sampler.samples),
        "rss_kib_start": first.rss_kib,
        "rss_kib_warm": after[0].rss_kib if after else first.rss_kib,
        "rss_kib_end": last.rss_kib,
        "rss_mb_per_hour": round(slope, 2),
        "traced_mb_per_hour": round(slope_per_hour(traced), 2),
        "heap_mb_per_hour": round(heap_per_hour, 2) if heap_per_hour is not None else None,
        "objects_per_hour": _objects_per_hour(sampler),
        "blocks_per_hour": round(slope_per_hour(blocks)),
        "malloc_mb_per_hour": round(slope_per_hour(malloc), 2) if mallinfo is not None else None,
        "mmap_mb_per_hour": round(slope_per_hour(mmapped), 2) if mallinfo is not None else None,
        "rss_breakdown": _breakdown(after),
        "sqlite_connections": probe.sqlite_connections,
        "target_mb_per_hour": TARGET_MB_PER_HOUR,
        "within_target": slope <= TARGET_MB_PER_HOUR,
        "activity": {
            "quotes": probe.quotes, "decisions": probe.decisions, "intents": probe.intents,
            "groups": probe.groups, "reconnects": probe.reconnects, "ea_restarts": probe.ea_restarts,
            "breaker_trips": probe.breaker_trips, "rearms": probe.rearms, "flattens": probe.flattens,
            "events": probe.events,
            "log_bytes": probe.log_bytes,
            "mt5_tickets": probe.mt5_tickets,
            "memory_trims": probe.trims,
            "memory_trim_ms_total": probe.trim_ms_total,
            "memory_trim_ms_max": probe.trim_ms_max,
            "malloc_tuned": probe.malloc_tuned,
            "trips": probe.trips,
            "errors": probe.errors,
        },
        "demo_hours_equivalent": round(demo_hours, 2),
        # Per hour of the demo's default activity: the slope divided by the compression.
        "compression": round(compression, 1) if compression else None,
        "rss_mb_per_demo_hour": round(slope / compression, 3) if compression else None,
        "top_growth_by_line": lines,
        "top_growth_by_type": types,
        "load_average_start": sampler.load_start,
        "load_average_end": _load(),
        "series_columns": ["t_s", "rss_kib", "tracemalloc_kib", "traced_kib", "blocks", "malloc_kib",
                           "mmap_kib", *(f"rss_{k}_kib" for k in KINDS), "malloc_free_kib", "sqlite_kib",
                           "threads", "arenas", "wal_kib", "pymalloc_arenas_kib", "pymalloc_in_use_kib",
                           "pymalloc_free_kib"],
        "series": [[round(s.t_s, 1), s.rss_kib, s.tracemalloc_kib, s.traced_kib, s.blocks,
                    s.malloc_kib, s.mmap_kib, *(s.rss_by_kind or (0,) * len(KINDS)), s.malloc_free_kib,
                    s.sqlite_kib, s.threads, s.arenas, s.wal_kib, s.pymalloc_arenas_kib, s.pymalloc_in_use_kib,
                    s.pymalloc_free_kib] for s in sampler.samples],
    }
    result["lines"] = _lines(result)
    return result


def _objects_per_hour(sampler: _Sampler) -> int | None:
    """gc-tracked objects between the two marks, per hour (None without both)."""
    if len(sampler.types) < 2 or sampler.marked_at[1] <= sampler.marked_at[0]:
        return None
    change = sum(sampler.types[1].values()) - sum(sampler.types[0].values())
    return round(change * 3600 / (sampler.marked_at[1] - sampler.marked_at[0]))


def _breakdown(after: list[Sample]) -> list[dict[str, Any]]:
    """Each part of RSS after the warm-up (the kinds of mapping), then what explains them
    (free memory inside glibc's arenas, SQLite's allocator, threads, arenas, the ledger's WAL
    on disk, pymalloc's arenas and what is in use and free inside them): first and last value,
    KiB (threads and arenas: counts), and the least-squares slope, MB per hour."""
    with_kinds = [s for s in after if s.rss_by_kind]
    rows: list[dict[str, Any]] = []
    series: list[tuple[str, list[tuple[float, float]]]] = [
        (kind, [(s.t_s, float(s.rss_by_kind[i])) for s in with_kinds]) for i, kind in enumerate(KINDS)
    ]
    series += [
        ("malloc_free", [(s.t_s, float(s.malloc_free_kib)) for s in after]),
        ("sqlite", [(s.t_s, float(s.sqlite_kib)) for s in after]),
        ("threads", [(s.t_s, float(s.threads)) for s in after]),
        ("arenas", [(s.t_s, float(s.arenas)) for s in after]),
        ("wal", [(s.t_s, float(s.wal_kib)) for s in after]),
    ]
    if any(s.pymalloc_arenas_kib for s in after):
        series += [
            ("pymalloc_arenas", [(s.t_s, float(s.pymalloc_arenas_kib)) for s in after]),
            ("pymalloc_in_use", [(s.t_s, float(s.pymalloc_in_use_kib)) for s in after]),
            ("pymalloc_free", [(s.t_s, float(s.pymalloc_free_kib)) for s in after]),
        ]
    for name, points in series:
        if not points:
            continue
        counted = name in ("threads", "arenas")
        rows.append({"part": name, "start": int(points[0][1]), "end": int(points[-1][1]),
                     "mb_per_hour": None if counted else round(slope_per_hour(points) / 1024, 2)})
    return rows


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _lines(r: dict[str, Any]) -> list[str]:
    a = r["activity"]
    groups = " ".join(f"{k}={v}" for k, v in sorted(a["groups"].items())) or "none"
    verdict = "within" if r["within_target"] else "ABOVE"
    out = [
        f"mode            {r['mode']}, {r['duration_s']:.0f} s ({r['warmup_s']:.0f} s warm-up), "
        f"{r['samples']} samples",
        f"rss             {r['rss_kib_start']:,} KiB start, {r['rss_kib_warm']:,} KiB after warm-up, "
        f"{r['rss_kib_end']:,} KiB end",
        f"rss slope       {r['rss_mb_per_hour']:+.2f} MB/h after warm-up ({verdict} the target "
        f"{r['target_mb_per_hour']:g} MB/h); python heap {_mb(r['heap_mb_per_hour'])} MB/h "
        f"between the marks ({_mb(r['traced_mb_per_hour'])} traced after the warm-up); "
        "gc objects " + (f"{r['objects_per_hour']:+,}/h" if r["objects_per_hour"] is not None else "n/a")
        + f", memory blocks {r['blocks_per_hour']:+,}/h",
        f"allocator       malloc in use {r['malloc_mb_per_hour'] or 0:+.2f} MB/h, mmap'd "
        f"{r['mmap_mb_per_hour'] or 0:+.2f} MB/h (glibc)",
        f"activity        quotes {a['quotes']:,} decisions {a['decisions']:,} intents {a['intents']:,} "
        f"groups {groups}",
        f"                reconnects {a['reconnects']} ea restarts {a['ea_restarts']} breaker trips "
        f"{a['breaker_trips']} rearms {a['rearms']} flattens {a['flattens']} events {a['events']:,}; "
        f"open MT5 tickets {a['mt5_tickets']}; heap trims {a.get('memory_trims', 0)} "
        f"(longest {a.get('memory_trim_ms_max', 0):g} ms); malloc tuned "
        f"{', '.join(f'{k} {v}' for k, v in a.get('malloc_tuned', {}).items()) or 'no'}; "
        f"~{r['demo_hours_equivalent']:.1f} h of the demo's groups",
    ]
    out += [f"  tripped at {t}" for t in a["trips"]] + [f"  error at {e}" for e in a["errors"]]
    twin = r.get("traced_twin")
    if twin is not None and "error" in twin:
        out.append(f"traced twin     none ({twin['error']}): no python heap figures or growth by line")
    elif twin is not None:
        groups = " ".join(f"{k}={v}" for k, v in sorted(twin["groups"].items())) or "none"
        out.append(f"traced twin     rss {twin['rss_mb_per_hour'] or 0:+.2f} MB/h (tracing's own entries in the "
                   f"heap: not the verdict), groups {groups}; the heap figures and lines are its")
        out += [f"  twin's error at {e}" for e in twin["errors"]]
    if r["sqlite_connections"]:
        out.append("ledger connections  " + ", ".join(
            f"{name} cache {c['cache_size']} mmap {c['mmap_size']}" for name, c in r["sqlite_connections"].items()))
    if r["rss_breakdown"]:
        out.append("rss breakdown after the warm-up (KiB start -> end, MB/h):")
        out += [f"  {b['part']:<14} {b['start']:>9,} -> {b['end']:>9,}"
                + (f"  {b['mb_per_hour']:+.2f}" if b["mb_per_hour"] is not None else "")
                for b in r["rss_breakdown"]]
    if r["top_growth_by_line"]:
        out.append("top growth by line (the traced twin, the end of the warm-up -> the end):")
        out += [f"  {g['kib']:>9.1f} KiB {g['blocks']:>+8} blocks  {g['where']}" for g in r["top_growth_by_line"]]
    if r["top_growth_by_type"]:
        out.append("top growth by type:")
        out += [f"  {g['objects']:>+9} {g['type']} ({g['total']:,} now)" for g in r["top_growth_by_type"]]
    return out


def bench_soak(*, duration_s: float = 1800.0, warmup_s: float = 600.0, interval_s: float = 10.0,
               accelerate: bool = False, tui: bool = False, trace: bool = True,
               flatten_every_s: float = 0.0, keep_ledger: str | None = None) -> dict[str, Any]:
    """Run the demo engine for `duration_s` and report how its memory grows after `warmup_s`
    (at most two thirds of the run); its ledger is `keep_ledger` when given (kept), else a
    temporary file.

    This process does not trace: its RSS is the verdict. With `trace`, a twin forked first runs
    the same soak traced alongside (quantarb_tui.bench.twin says why); the Python heap's growth
    and the lines it grew by are the twin's (`traced_twin` holds its own figures)."""
    warmup_s = min(warmup_s, duration_s * 2 / 3)
    interval_s = max(0.2, min(interval_s, duration_s / 20))

    def once(traced: bool, ledger: str | None) -> dict[str, Any]:
        return asyncio.run(_run(duration_s, warmup_s, interval_s, accelerate=accelerate, tui=tui, trace=traced,
                                flatten_every_s=flatten_every_s, keep_ledger=ledger))

    twin = Twin.start(lambda: once(True, None)) if trace else None
    traced: dict[str, Any] | str = "not run" if not trace else "no fork on this platform"
    try:
        result = once(False, keep_ledger)
        if twin is not None:
            try:
                traced = twin.result(timeout_s=TWIN_GRACE_S + duration_s / 4)
            except TwinFailed as exc:
                traced = str(exc)
    except BaseException:  # this run failed or was interrupted: the twin goes too
        if twin is not None:
            twin.cancel()
        raise
    # Untraced, this run has no heap figures of its own: the twin's, or none (not zeros).
    result["heap_mb_per_hour"] = result["traced_mb_per_hour"] = None
    if isinstance(traced, str):
        result["traced_twin"] = {"error": traced}
    else:
        _adopt_twin(result, traced)
    result["lines"] = _lines(result)
    return result


def _adopt_twin(result: dict[str, Any], traced: dict[str, Any]) -> None:
    """The traced twin's heap figures and growth by line into this run's report; its own RSS
    (tracing's entries included, so not the verdict) and activity under `traced_twin`."""
    for key in ("heap_mb_per_hour", "traced_mb_per_hour", "top_growth_by_line"):
        result[key] = traced.get(key)
    activity = traced.get("activity", {})
    result["traced_twin"] = {
        "rss_mb_per_hour": traced.get("rss_mb_per_hour"),
        "heap_mb_per_hour": traced.get("heap_mb_per_hour"),
        "groups": activity.get("groups", {}),
        "errors": activity.get("errors", []),
        "top_growth_by_type": traced.get("top_growth_by_type", []),
    }


__all__ = ["TARGET_MB_PER_HOUR", "bench_soak", "rss_kib", "slope_per_hour", "soak_config"]
