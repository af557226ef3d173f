"""MT5 deals of forgotten orders heard while the ledger cannot write are kept for its return,
bounded: beyond `DEFERRED_KEPT` commands the oldest is dropped, and an error names its deals
(then not booked here). A real orchestrator and a real ledger whose writer stopped on a full disk."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.commands import CommandFill, CommandState, Mt5Command
from core.config import RiskConfig
from core.models import TradingState
from core.risk import RiskGate
from engine import mt5_late
from engine.events import EventLog
from engine.journal import GuardedJournal
from engine.mt5_late import Mt5LateDeals
from engine.orchestrator import HedgeOrchestrator
from ledger.ledger import Ledger
from tests.execution_support import INSTRUMENTS

DISK_FULL = sqlite3.OperationalError("database or disk is full")


def command(n: int, deals: list[int]) -> Mt5Command:
    return Mt5Command(
        command_id=f"qag{n}l0a0", terminal="DEMO", group_id=f"g{n}", client_order_id=f"qag{n}l0a0", kind="open",
        symbol="XAUUSD", side="buy", volume=Decimal("0.10"), price=Decimal("2650"), deviation_points=5000,
        filling="IOC", magic=0, position=0, expires_msc=1, created_ms=0, state=CommandState.EXPIRED,
        fills=[CommandFill(deal=d, order=7, position=8, volume=Decimal("0.01"), price=Decimal("2650"),
                           commission=Decimal(0), time_msc=d) for d in deals])


async def heard(deals: Mt5LateDeals, c: Mt5Command) -> None:
    work = deals.heard(c)
    assert work is not None  # an order the orchestrator does not remember
    await work


async def test_the_commands_kept_for_the_ledgers_return_are_bounded_oldest_dropped_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mt5_late, "DEFERRED_KEPT", 2)
    clock = ManualClock()
    ledger = await Ledger.open(tmp_path / "l.db", clock=clock)
    journal = GuardedJournal(ledger, on_failure=lambda _: None, retry_s=0)  # retried by no one here
    events = EventLog()
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    orch = HedgeOrchestrator({}, INSTRUMENTS, gate, clock, events, journal=journal)
    deals = Mt5LateDeals(orch, lambda c: [], events, clock, ledger=lambda: ledger, journal=lambda: journal)
    try:
        ledger.writer._fail(DISK_FULL)
        await journal.flush()
        assert journal.error is not None
        first, second, third = command(1, [11, 12]), command(2, [21]), command(3, [31])
        await heard(deals, first)
        await heard(deals, second)
        assert list(deals.deferred) == [first.command_id, second.command_id]
        assert gate.state is TradingState.HALTED
        # More deals on a kept command: its newest state is kept, in its place.
        second_again = command(2, [21, 22])
        await heard(deals, second_again)
        assert list(deals.deferred) == [first.command_id, second.command_id]
        assert deals.deferred[second.command_id] is second_again
        assert [e.text for e in events.recent() if e.kind == "error"] == []
        # A third command: the oldest goes, said with its deals.
        await heard(deals, third)
        assert list(deals.deferred) == [second.command_id, third.command_id]
        assert [e.text for e in events.recent() if e.kind == "error"] == [
            f"mt5: deal(s) 11, 12 of {first.client_order_id} (command {first.command_id}) not booked: "
            "more than 2 commands wait for the ledger to write"]
    finally:
        await journal.close()
        await ledger.close()
