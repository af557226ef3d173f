"""Groups net against each other in the running engine (issue 19), in a real Runtime on the demo
with a real SQLite ledger on a manual clock: a hedge offset by a later opposite hedge is closed
by it, each net journaled before the close; the running attribution remembers no more groups
than the net positions have lots; `ledger groups` states every closed group's PnL as the engine
journaled it; and a restart remembers the same groups."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import demo_config
from core.models import GroupState
from engine.runtime import Runtime
from ledger import money, queries

D = Decimal


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")


def _runtime(path: Path, clock: ManualClock) -> Runtime:
    return Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)


def _lots_held(rt: Runtime, now_ms: int) -> int:
    """Every book's net position in lot steps (base units over the instrument's base step)."""
    total = 0
    for p in rt.equity.positions(now_ms):
        step = rt.instruments[(p.venue, p.symbol)].base_step
        total += int(abs(p.qty) / step)
    return total


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
