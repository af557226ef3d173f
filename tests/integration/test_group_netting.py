"""Groups net against each other in the running engine (issue 19), in a real Runtime on the demo
with a real SQLite ledger on a manual clock: a hedge offset by a later opposite hedge is closed
by it, each net journaled before the close; the running attribution remembers no more groups
than the net positions have lots; `ledger groups` states every closed group's PnL as the engine
journaled it; and a restart remembers the same groups."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.models import GroupState
from engine.runtime import Runtime
from ledger import money, queries
from tests.integration.test_risk_runtime import _isolated, _runtime  # noqa: F401  (autouse fixture)

D = Decimal


def _lots_held(rt: Runtime, now_ms: int) -> int:
    """Every book's net position in lot steps (base units over the instrument's base step)."""
    total = 0
    for p in rt.equity.positions(now_ms):
        step = rt.instruments[(p.venue, p.symbol)].base_step
        total += int(abs(p.qty) / step)
    return total


async def _drive_to_rest(rt: Runtime, drives: int) -> dict[str, int]:
    """Drive the demo `drives` times, wait for the closes from ledger rows (tasks; fails if they
    do not finish), flush the ledger; the counts by state."""
    for _ in range(drives):
        await rt.driver.drive(300, 20.0)
    for _ in range(500):
        if not rt.running_background():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("closing groups from their ledger rows did not finish")
    assert rt.ledger is not None
    await rt.ledger.flush()
    return {str(s): n for s, n in rt.orchestrator.closed_by_state.items() if n}


async def test_offsetting_groups_close_each_other_and_the_ledger_says_the_same(tmp_path: Path) -> None:
    path = tmp_path / "net.db"
    clock = ManualClock()
    rt = _runtime(path, clock)
    await rt.open_ledger()
    try:
        for _ in range(10):
            await rt.driver.drive(300, 20.0)
            assert not rt.orchestrator.open, "a group still in flight after the drive"
            # Bounded by the net positions, not by the groups that ever traded.
            assert rt.equity.remembered_groups() <= _lots_held(rt, clock.time_ms())
        by_state = dict(rt.orchestrator.closed_by_state)
        remembered = rt.equity.remembered_groups()
        assert rt.ledger is not None
        await rt.ledger.flush()
    finally:
        await rt.close_ledger()
    closed = by_state.get(GroupState.CLOSED, 0)
    traded = sum(n for s, n in by_state.items() if s is not GroupState.REJECTED)
    assert closed > 10 and remembered < traded - closed + 1
    async with queries.open_reader(path) as db:
        nets = await money.net_rows(db)
        attribution = await money.group_attribution(db)
        rows = await queries.groups(db)
        some_net = nets[0][1]
        shown = await queries.show(db, some_net.long_group)
    # `ledger show` lists the nets a group took part in (the event names it in its payload only).
    assert shown is not None
    net_lines = [t for t in shown["timeline"] if t["kind"] == "net"]
    assert net_lines and net_lines[0]["seq"] == nets[0][0], shown["timeline"]
    assert f"{some_net.long_group} sold to {some_net.short_group}" in net_lines[0]["text"]
    assert [t["seq"] for t in shown["timeline"]] == sorted(t["seq"] for t in shown["timeline"])
    assert len(nets) >= closed // 2 > 0
    ids = {r["group_id"] for r in rows}
    closed_rows = [r for r in rows if r["state"] == "closed"]
    assert len(closed_rows) == closed
    for row in closed_rows:
        g = attribution.group(row["group_id"])
        assert g is not None and g.realized == D(row["realized_pnl"]), row["group_id"]
        assert g.closed_by and set(g.closed_by) <= ids - {row["group_id"]}  # closed by other groups
    # A restart remembers the same groups (their nets replayed, the settled ones net on).
    rt2 = _runtime(path, ManualClock(wall_ms=clock.time_ms()))
    await rt2.open_ledger()
    try:
        assert rt2.equity.remembered_groups() == remembered
    finally:
        await rt2.close_ledger()


async def test_groups_no_longer_in_memory_are_closed_from_the_ledger_and_the_totals_follow(tmp_path: Path) -> None:
    """The engine remembers the newest closed groups only (`RECENT_GROUPS_KEPT`); an older one a
    net takes flat is closed from its ledger row. The groups' PnL every surface shows (the
    orchestrator's running total, per pair too) must still be the ledger's sum, and the counts
    by state the ledger's."""
    path = tmp_path / "old.db"
    clock = ManualClock()
    rt = _runtime(path, clock)
    rt.orchestrator.closed = deque(maxlen=2)  # remember two: nearly every net closes an older group
    await rt.open_ledger()
    try:
        by_state = await _drive_to_rest(rt, 6)
        total, by_pair = rt.orchestrator.realized_pnl, {p: s.total_pnl for p, s in rt.orchestrator.stats().items()}
        from_rows = [e for e in rt.events.recent(500) if e.kind == "group" and "-> closed" in e.text
                     and not any(g.group_id in e.text for g in rt.orchestrator.closed)]
    finally:
        await rt.close_ledger()
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT pair, state, realized_pnl FROM hedge_groups WHERE state != 'rejected'").fetchall()
    finally:
        con.close()
    assert from_rows, "no group was closed from its ledger row"
    assert total == sum((D(r[2]) for r in rows), D(0))
    ledger_pairs: dict[str, Decimal] = {}
    for pair, _state, pnl in rows:
        ledger_pairs[pair] = ledger_pairs.get(pair, D(0)) + D(pnl)
    assert by_pair == ledger_pairs
    counts: dict[str, int] = {}
    for _pair, state, _pnl in rows:
        counts[state] = counts.get(state, 0) + 1
    assert by_state == counts


async def test_after_a_restart_the_counts_by_state_are_this_runs_groups(tmp_path: Path) -> None:
    """Groups of the run before a restart that this run's nets close (from their ledger rows,
    not in memory) move this run's PnL total, not its counts by state: those count the groups
    this run traded, as the ledger's rows opened since the restart say."""
    path = tmp_path / "restart.db"
    clock = ManualClock()
    rt = _runtime(path, clock)
    await rt.open_ledger()
    try:
        await rt.driver.drive(300, 20.0)
        before_restart = rt.equity.remembered_groups()
    finally:
        await rt.close_ledger()
    assert before_restart > 0, "the first run left no settled group holding a position"
    clock2 = ManualClock(wall_ms=clock.time_ms() + 60_000)
    started_ms = clock2.time_ms()
    rt2 = _runtime(path, clock2)
    await rt2.open_ledger()
    try:
        by_state = await _drive_to_rest(rt2, 4)
    finally:
        await rt2.close_ledger()
    con = sqlite3.connect(path)
    try:
        old_closed = con.execute("SELECT COUNT(*) FROM hedge_groups WHERE opened_at_ms < ? AND state = 'closed'",
                                 (started_ms,)).fetchone()[0]
        rows = con.execute("SELECT state, COUNT(*) FROM hedge_groups WHERE opened_at_ms >= ? GROUP BY state",
                           (started_ms,)).fetchall()
    finally:
        con.close()
    assert old_closed > 0, "no group of the first run was closed by the second"
    assert by_state == dict(rows)
