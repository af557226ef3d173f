"""GuardedJournal's edges (from review): a retry never raises and runs one at a time, events
caught in a failing commit come back in their order, and one invalid event is not an outage.

Real ledgers on tmp_path; the disk failure is the writer's COMMIT raising as SQLite does when
the disk is full.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.models import TradingState
from core.risk import StateChange
from engine.journal import GuardedJournal
from ledger.ledger import Ledger

DISK_FULL = sqlite3.OperationalError("database or disk is full")


class Rig:
    def __init__(self, ledger: Ledger, path: Path) -> None:
        self.ledger = ledger
        self.path = path
        self.halts: list[str] = []
        self.journal = GuardedJournal(ledger, on_failure=self.halts.append, retry_s=0)

    def fail_commits(self) -> None:
        """The next COMMIT of the current writer fails like a full disk."""
        conn = self.ledger.writer._conn

        async def commit() -> None:
            raise DISK_FULL

        conn.commit = commit  # type: ignore[method-assign]

    def risk_kinds(self) -> list[str]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return [r[0] for r in con.execute("SELECT kind FROM risk_events ORDER BY rowid")]
        finally:
            con.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    path = tmp_path / "guard.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    r = Rig(ledger, path)
    try:
        yield r
    finally:
        await r.journal.close()
        await ledger.close()


def _change(reason: str, state: TradingState = TradingState.HALTED) -> StateChange:
    return StateChange(1_732_150_000_000, state, reason)


async def test_durable_events_caught_in_a_failed_commit_come_back_in_their_order(rig: Rig) -> None:
    rig.fail_commits()
    # A kill and then a rearm in flight together when the commit fails: the restart must see
    # the rearm last, so replaying them reversed would come back halted.
    kill = asyncio.ensure_future(rig.journal.risk_event("kill", _change("k")))
    rearm = asyncio.ensure_future(rig.journal.risk_event("rearm", _change("r", TradingState.ACTIVE)))
    assert await kill == -1 and await rearm == -1
    assert rig.journal.error is not None and len(rig.halts) == 1
    assert rig.journal.unwritten == 2
    assert await rig.journal.retry()
    assert rig.risk_kinds() == ["kill", "rearm"]


async def test_a_cancelled_caller_does_not_lose_its_durable_event(rig: Rig) -> None:
    rig.fail_commits()
    waiter = asyncio.ensure_future(rig.journal.risk_event("kill", _change("k")))
    await asyncio.sleep(0)  # queued, not committed
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await rig.journal.flush()  # the commit fails now: the journal learns it from the writer
    for _ in range(50):
        if rig.journal.error is not None:
            break
        await asyncio.sleep(0.01)
    assert rig.journal.error is not None, "the failed commit was never reported"
    assert await rig.journal.retry()
    assert rig.risk_kinds() == ["kill"]


async def test_retry_never_raises_and_runs_one_at_a_time(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.fail_commits()
    assert await rig.journal.risk_event("kill", _change("k")) == -1
    assert rig.journal.error is not None

    async def cannot_open() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rig.ledger, "restart_writer", cannot_open)
    assert await rig.journal.retry() is False  # was: the sqlite3 error escaped (and killed the loop)
    assert "disk I/O error" in (rig.journal.error or "")
    monkeypatch.undo()
    opened: list[int] = []
    real = rig.ledger.restart_writer

    async def counted() -> None:
        opened.append(1)
        await real()

    monkeypatch.setattr(rig.ledger, "restart_writer", counted)
    first, second = await asyncio.gather(rig.journal.retry(), rig.journal.retry())
    assert (first, second) == (True, True)
    assert opened == [1]  # the second waited, then found the journal writing
    assert rig.risk_kinds() == ["kill"]  # written once


async def test_one_invalid_event_is_not_an_outage(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def invalid(*_args: Any) -> int:
        raise ValueError("fill is for another order")

    monkeypatch.setattr(rig.ledger, "dust", invalid)
    assert rig.journal.dust("BTC", Decimal("0.001")) == -1
    assert rig.journal.error is None and rig.halts == []  # trading goes on; the writer is fine
    assert await rig.journal.risk_event("kill", _change("k")) > 0
