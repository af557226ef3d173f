"""Bench: durable ledger writes with group commit, against a naive commit-per-event writer.

Both writers run in the same process, one after the other, on fresh files in the same
directory, with the same schema (journal + projection triggers + indexes), the same
`synchronous=FULL`, and the same events: a realistic mix of write-ahead orders, order state
changes and fills (prepared before the clock starts, so building core objects is not
timed; encoding the payloads is). `producers` asyncio tasks each await every event's commit
before sending the next, as the orchestrator awaits its write-ahead rows.

- group commit: `Ledger.append_durable` -> the single writer batches whatever is queued
  into one transaction.
- naive: `execute(INSERT) + commit()` per event on one aiosqlite connection, serialized by
  a lock (without it the producers' statements would share transactions by accident).

Commit latency is measured per event, from the `append_durable` call to its return. The
result has the shape of the other benches: JSON-able numbers and a "lines" list.

The decision path (`bench_decisions`) is the other cost the ledger puts on the engine: the
runtime calls `Ledger.decision` for every quote's decision, synchronously. It is timed over
a pipeline-like stream (mostly blocked decisions, sampled out; a few intents, logged) next to
what that path was before decision_stats counted every decision (the sampler and the log).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite

from core.clock import RealClock
from core.models import Decision, Fill, Order, OrderPurpose, OrderState, Outcome
from ledger import events as ev
from ledger.events import LedgerEvent
from ledger.ledger import DecisionSampler, Ledger
from ledger.projections import INSERT_EVENT
from ledger.schema import prepare
from ledger.writer import configure_writer_connection

EPOCH_MS = 1_732_150_000_000
WARMUP = 2000


def make_events(n: int) -> list[LedgerEvent]:
    """n events in cycles of 4: order_created, order_state(acked), fill, order_state(filled)."""
    out: list[LedgerEvent] = []
    venues = ("okx", "binance", "mt5")
    for i in itertools.count():
        if len(out) >= n:
            break
        ts = EPOCH_MS + i
        venue = venues[i % 3]
        order = Order(
            client_order_id=f"qab{i:08d}l{i % 2}a0", group_id=f"gb{i // 2:08d}", venue=venue,  # type: ignore[arg-type]
            symbol="BTCUSDT", side="buy" if i % 2 else "sell", qty=Decimal("0.010"),
            price=Decimal("65000.1") + i % 100, purpose=OrderPurpose.ENTRY, created_ms=ts,
        )
        out.append(ev.order_created(order, ts))
        order.state, order.venue_order_id, order.updated_ms = OrderState.ACKED, f"v{i}", ts + 1
        out.append(ev.order_state(order, ts + 1))
        fill = Fill(venue=order.venue, venue_trade_id=f"t{i}", client_order_id=order.client_order_id,
                    qty=order.qty, price=order.price, fee=Decimal("0.0325"), fee_ccy="USDT", ts_ms=ts + 2)
        out.append(ev.fill(fill, ts + 2, order.group_id))
        order.state, order.filled_qty, order.updated_ms = OrderState.FILLED, order.qty, ts + 3
        out.append(ev.order_state(order, ts + 3))
    return out[:n]


async def _drive(
    events: list[LedgerEvent], producers: int, durable: Callable[[LedgerEvent], Awaitable[int]]
) -> tuple[float, list[int]]:
    """Run `producers` tasks over `events`; returns (elapsed seconds, sorted latencies in ns)."""
    it = iter(events)
    latencies: list[int] = []
    perf = time.perf_counter_ns

    async def producer() -> None:
        record = latencies.append
        for event in it:
            t = perf()
            await durable(event)
            record(perf() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return elapsed, latencies


class NaiveWriter:
    """One transaction and one fsync per event."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._seq = itertools.count(1)

    async def append_durable(self, event: LedgerEvent) -> int:
        async with self._lock:
            seq = next(self._seq)
            await self._conn.execute(
                INSERT_EVENT, (seq, event.ts_ms, event.kind, event.group_id, ev.encode_payload(event.payload))
            )
            await self._conn.commit()
            return seq


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    rank = max(0, min(len(sorted_ns) - 1, round(q / 100.0 * len(sorted_ns)) - 1))
    return sorted_ns[rank] / 1e6


async def _bench(
    n: int, producers: int, naive_n: int, directory: Path, writer_options: dict[str, Any]
) -> dict[str, Any]:
    events = make_events(max(n + WARMUP, naive_n))
    # Group commit through the Ledger's single writer.
    ledger = await Ledger.open(directory / "group.db", clock=RealClock(), **writer_options)
    try:
        await _drive(events[:WARMUP], producers, ledger.append_durable)  # not measured
        commits0, written0 = ledger.writer.commits, ledger.writer.events_written
        elapsed, lat = await _drive(events[WARMUP : WARMUP + n], producers, ledger.append_durable)
        commits = ledger.writer.commits - commits0
        written = ledger.writer.events_written - written0
        largest = ledger.writer.largest_batch
        wal_restarts = ledger.writer.wal_restarts
    finally:
        await ledger.close()
    measured = len(lat)
    rate = measured / elapsed

    # Naive commit-per-event on the same schema and pragmas.
    naive_path = directory / "naive.db"
    await asyncio.to_thread(prepare, naive_path)
    conn = await aiosqlite.connect(naive_path)
    try:
        await configure_writer_connection(conn)
        naive = NaiveWriter(conn)
        naive_elapsed, naive_lat = await _drive(events[:naive_n], producers, naive.append_durable)
    finally:
        await conn.close()
    naive_rate = len(naive_lat) / naive_elapsed
    p50, p99, p999 = _pct(lat, 50), _pct(lat, 99), _pct(lat, 99.9)
    ratio = rate / naive_rate if naive_rate else 0.0
    return {
        "events": measured,
        "producers": producers,
        "durable_events_per_s": round(rate),
        "commits": commits,
        "events_per_commit": round(written / commits, 1) if commits else 0.0,
        "largest_batch": largest,
        "wal_restarts": wal_restarts,
        "commit_latency_ms": {"p50": round(p50, 3), "p99": round(p99, 3), "p999": round(p999, 3),
                              "max": round(lat[-1] / 1e6, 3) if lat else 0.0},
        "naive_events": len(naive_lat),
        "naive_events_per_s": round(naive_rate),
        "naive_commit_latency_ms": {"p50": round(_pct(naive_lat, 50), 3), "p99": round(_pct(naive_lat, 99), 3)},
        "speedup_vs_naive": round(ratio, 1),
        "lines": [
            f"durable events  {measured:,} from {producers} producers awaiting each commit (synchronous=FULL)",
            f"group commit    {rate:,.0f} events/s   {commits:,} commits   "
            f"{written / max(commits, 1):.1f} events/commit (largest {largest})",
            f"commit latency  p50 {p50:.2f} ms   p99 {p99:.2f} ms   p99.9 {p999:.2f} ms   "
            f"(WAL restarts under load: {wal_restarts})",
            f"naive           {naive_rate:,.0f} events/s (commit per event, {len(naive_lat):,} events)   "
            f"p50 {_pct(naive_lat, 50):.2f} ms",
            f"speedup         {ratio:,.1f}x",
        ],
    }


def bench_ledger(
    events: int = 200_000,
    *,
    producers: int = 128,
    naive_events: int | None = None,
    directory: str | None = None,
    **writer_options: Any,
) -> dict[str, Any]:
    """Durable events per second with group commit vs commit-per-event, and commit latency.

    Files go to a fresh temporary directory (or under `directory`: put it on the disk the
    ledger will live on, since fsync cost is the point) and are deleted afterwards.
    """
    naive_n = naive_events if naive_events is not None else max(1000, min(events, 10_000))
    with tempfile.TemporaryDirectory(prefix="quantarb-bench-", dir=directory) as tmp:
        result = asyncio.run(_bench(events, producers, naive_n, Path(tmp), writer_options))
    decisions = bench_decisions(directory=directory)
    result["lines"].extend(decisions.pop("lines"))
    result["decision_path"] = decisions
    return result


def make_decisions(n: int, *, pairs: int = 10, per_ms: int = 400, intent_every: int = 150) -> list[Decision]:
    """A pipeline-like decision stream: `per_ms` decisions per millisecond (the pipeline bench's
    rate) over `pairs` pairs and both directions, edges spread over -30..+10 bps, one intent
    in `intent_every` (without an intent object: the ledger only logs it)."""
    out: list[Decision] = []
    names = [f"P{i}" for i in range(pairs)]
    for i in range(n):
        intent = i % intent_every == 0
        buy, sell = ("okx", "mt5") if i % 2 else ("mt5", "okx")
        out.append(Decision(
            EPOCH_MS + i // per_ms, names[i % pairs], buy, sell, -30.0 + (i * 7919 % 4000) / 100.0,  # type: ignore[arg-type]
            Outcome.INTENT if intent else Outcome.BLOCKED, "ok" if intent else "below_threshold",
        ))
    return out


async def _bench_decisions(decisions: list[Decision], directory: Path, repeat: int) -> dict[str, Any]:
    ledger = await Ledger.open(directory / "decisions.db", clock=RealClock())
    perf = time.perf_counter_ns

    def sampled_log_only(d: Decision) -> int | None:
        """`Ledger.decision` before decision_stats (schema v2): the sampler and the log."""
        if not ledger.sampler.keep(d):
            return None
        return ledger.writer.append(ev.decision(d, ledger.clock.time_ms(), None))

    try:
        best = best_v2 = float("inf")
        for _ in range(repeat):
            for fn in (ledger.decision, sampled_log_only):
                ledger.sampler = DecisionSampler()  # a fresh sampler: each pass logs as many rows
                t = perf()
                for d in decisions:
                    fn(d)
                ns = (perf() - t) / len(decisions)
                if fn == sampled_log_only:
                    best_v2 = min(best_v2, ns)
                else:
                    best = min(best, ns)
                await ledger.flush()
        kept = ledger.sampler.kept
    finally:
        await ledger.close()
    return {
        "decisions": len(decisions),
        "ledger_decision_ns": round(best, 1),
        "without_stats_ns": round(best_v2, 1),
        "stats_overhead_ns": round(best - best_v2, 1),
        "logged_per_pass": kept,
        "lines": [
            f"decision path   Ledger.decision {best:.0f} ns/decision, {best_v2:.0f} ns without decision_stats "
            f"(+{best - best_v2:.0f} ns; logs {kept:,} of {len(decisions):,}; best of {repeat})",
        ],
    }


def bench_decisions(decisions: int = 1_000_000, *, repeat: int = 3, directory: str | None = None) -> dict[str, Any]:
    """ns per `Ledger.decision` call on a pipeline-like stream, and the sampler alone."""
    stream = make_decisions(decisions)
    with tempfile.TemporaryDirectory(prefix="quantarb-bench-", dir=directory) as tmp:
        return asyncio.run(_bench_decisions(stream, Path(tmp), repeat))
