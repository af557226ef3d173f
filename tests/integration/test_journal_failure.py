"""A journal that cannot write halts trading, and nothing is lost or sent without its row.

The ledger's writer is made to stop (as a full disk stops it) at each journal call of a hedge
group's life in turn. Whatever the moment: trading halts at once with `ledger: <error>`, no
exception escapes the group's flow, no entry order leaves without its committed write-ahead
row, a leg that filled is still hedged or closed, and once the writer can be restarted
everything held in memory reaches the ledger (the tables agree with the engine's memory).
Then the same through the whole engine: the quote path, `/api/status`'s ledger section, the
refused rearm, and a real full filesystem (a small tmpfs, where this machine lets us mount one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import RiskConfig, demo_config
from core.hedge import HedgeGroup
from core.models import GroupState, Order, OrderPurpose, TradingState, Venue
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.control import ControlRefused
from engine.events import EventLog
from engine.journal import GuardedJournal, WriteAhead
from engine.orchestrator import HedgeOrchestrator
from engine.runtime import Runtime
from ledger.ahead import ahead_path, read_ahead
from ledger.ledger import Ledger
from tests.execution_support import INSTRUMENTS, ScriptedGateway, make_intent

DISK_FULL = sqlite3.OperationalError("database or disk is full")
JOURNAL_CALLS = ("group_opened", "group_state", "order_created", "mirror", "order_state", "fill", "compensation",
                 "risk_event", "dust", "flush")
FINISHED = {GroupState.HEDGED, GroupState.REPAIRED, GroupState.UNWOUND, GroupState.REJECTED}


class FaultPlan:
    """Counts the Ledger's journal calls; at call number `at` the writer stops as on a full disk."""

    def __init__(self, ledger: Ledger, at: int | None) -> None:
        self.ledger = ledger
        self.at = at
        self.calls: list[str] = []
        for name in JOURNAL_CALLS:
            original = getattr(ledger, name)
            setattr(ledger, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.at is not None and len(self.calls) == self.at:
                self.ledger.writer._fail(DISK_FULL)
            return original(*args, **kwargs)

        return call


class CheckedGateway:
    """A scripted venue that, at each place, checks the entry's write-ahead row is committed
    (`write_ahead="commit"`) or committed or in the write-ahead file (`"file"`)."""

    def __init__(self, inner: ScriptedGateway, db: Path, write_ahead: WriteAhead) -> None:
        self.inner = inner
        self.db = db
        self.write_ahead = write_ahead
        self.unjournaled_entries: list[str] = []
        self.placed: list[str] = []

    @property
    def venue(self) -> Venue:
        return self.inner.venue

    def _committed(self, client_order_id: str) -> bool:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT 1 FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        finally:
            con.close()
        if row is not None or self.write_ahead == "commit":
            return row is not None
        ahead = read_ahead(ahead_path(self.db))
        return any(r[2] == "order_created" and client_order_id in bytes(r[4]).decode() for r in ahead.rows)

    async def place(self, order: Order) -> OrderUpdate:
        self.placed.append(order.client_order_id)
        if order.purpose is OrderPurpose.ENTRY and not self._committed(order.client_order_id):
            self.unjournaled_entries.append(order.client_order_id)
        return await self.inner.place(order)

    async def cancel(self, order: Order) -> OrderUpdate:
        return await self.inner.cancel(order)

    async def query(self, order: Order) -> OrderUpdate:
        return await self.inner.query(order)


@dataclass
class Run:
    group: HedgeGroup
    gate: RiskGate
    journal: GuardedJournal
    halts: list[str]
    gateways: dict[Venue, CheckedGateway]
    calls: list[str]
    path: Path

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


async def _group_life(tmp_path: Path, fail_at: int | None, write_ahead: WriteAhead) -> Run:
    """One hedge group on scripted venues (both legs fill; retries fill), journaled through a
    GuardedJournal over a real ledger whose writer stops at journal call `fail_at`."""
    clock = ManualClock()
    path = tmp_path / f"ledger-{write_ahead}-{fail_at}.db"
    ledger = await Ledger.open(path, clock=clock)
    plan = FaultPlan(ledger, fail_at)
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    halts: list[str] = []

    def halt(error: str) -> None:
        halts.append(error)
        gate.kill(f"ledger: {error}")

    # retried by hand below
    journal = GuardedJournal(ledger, on_failure=halt, retry_s=0, write_ahead=write_ahead)
    venues: tuple[Venue, ...] = ("mt5", "binance")
    gateways: dict[Venue, CheckedGateway] = {
        v: CheckedGateway(ScriptedGateway(v, ["fill"] * 4, clock), path, write_ahead) for v in venues}
    touch = {("mt5", "BTCUSD"): (59990.0, 60000.0), ("binance", "BTCUSDT"): (60100.0, 60110.0)}
    ports: dict[Venue, ExecutionGateway] = dict(gateways)
    orch = HedgeOrchestrator(ports, INSTRUMENTS, gate, clock, EventLog(), journal=journal, poll_interval_s=0.0,
                             touch=lambda v, s: touch.get((v, s)))
    try:
        group = orch.submit(make_intent())
        await orch.drain()  # raises if anything escaped the group's flow
        await journal.flush()
        if journal.error is not None:
            plan.at = None  # the disk has room again
            assert await journal.retry(), f"the retry could not write: {journal.error}"
        assert journal.error is None and journal.unwritten == 0
        await ledger.flush()
    finally:
        await journal.close()
        await ledger.close()
    return Run(group, gate, journal, halts, gateways, plan.calls, path)


@pytest.mark.parametrize("write_ahead", ["file", "commit"])
async def test_a_writer_failure_at_any_journal_call_halts_and_loses_nothing(
    tmp_path: Path, write_ahead: WriteAhead
) -> None:
    baseline = await _group_life(tmp_path, None, write_ahead)
    assert baseline.group.state is GroupState.HEDGED and baseline.halts == []
    n = len(baseline.calls)
    assert n >= 8, baseline.calls  # opened, two write-aheads, states, fills, the close
    outcomes: set[GroupState] = set()
    for k in range(1, n + 1):
        run = await _group_life(tmp_path, k, write_ahead)
        where = f"writer stopped at call {k} ({run.calls[k - 1]}) of {run.calls}"
        # Halted at once, with the ledger's reason, once.
        assert len(run.halts) == 1, where
        assert run.gate.state is TradingState.HALTED and run.gate.reason.startswith("ledger: "), where
        assert "disk is full" in run.gate.reason, where
        # No entry order left without its committed write-ahead row.
        for gw in run.gateways.values():
            assert gw.unjournaled_entries == [], where
        # The group finished: hedged, repaired, unwound, or nothing filled; never left broken.
        group = run.group
        assert group.state in FINISHED, (where, group.state)
        assert group.own_residual() == 0, (where, group.state, group.residual())
        outcomes.add(group.state)
        # Everything the engine did is in the ledger once the writer is back.
        orders: dict[str, tuple[str, Decimal]] = {}
        for coid, state, qty in run.rows(
            "SELECT o.client_order_id, o.state, f.qty FROM orders o "
            "LEFT JOIN fills f ON f.order_id = o.order_id WHERE o.group_id = ?", group.group_id
        ):
            _state, total = orders.get(coid, (state, Decimal(0)))
            orders[coid] = (state, total + (Decimal(qty) if qty is not None else Decimal(0)))
        sent = {o.client_order_id: (str(o.state), o.filled_qty) for o in group.orders
                if o.client_order_id in {c for gw in run.gateways.values() for c in gw.placed}}
        for coid, (state, filled) in sent.items():
            assert coid in orders, (where, coid)
            assert orders[coid] == (state, filled), (where, coid, orders[coid])
        fills = run.rows("SELECT count(*) FROM fills f JOIN orders o ON o.order_id = f.order_id "
                         "WHERE o.group_id = ?", group.group_id)[0][0]
        assert fills == sum(len(o.fills) for o in group.orders), where
        [(state,)] = run.rows("SELECT state FROM hedge_groups WHERE group_id = ?", group.group_id)
        assert state == str(group.state), where
    # The moments mattered: a failure at a write-ahead refuses that entry (the group is then
    # rejected or repaired), later ones let the hedge complete.
    assert GroupState.HEDGED in outcomes and outcomes & {GroupState.REJECTED, GroupState.REPAIRED}, outcomes


# ---------------------------------------------------------------------------------------------
# The whole engine


def _runtime(path: Path, clock: ManualClock) -> Runtime:
    return Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)


async def _drive_until_group(rt: Runtime) -> None:
    for _ in range(3000):
        await rt.driver.drive(1, 20.0)
        if rt.orchestrator.closed:
            return
    raise AssertionError("the demo made no hedge group in 3000 steps")


async def test_the_engine_halts_on_a_ledger_failure_and_rearms_only_once_it_writes(tmp_path: Path) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "engine.db", clock)
    await rt.open_ledger()
    try:
        await _drive_until_group(rt)
        assert rt.view.status()["ledger"] == {"ok": True, "error": "", "unwritten": 0}
        assert rt.ledger is not None and rt.journal is not None
        rt.ledger.writer._fail(DISK_FULL)  # the disk fills up between two quotes
        # Said at once (the writer's own failure), not at the next write.
        assert rt.gate.state is TradingState.HALTED
        assert rt.gate.reason.startswith("ledger: ") and "disk is full" in rt.gate.reason
        intents = rt.pipeline.intents
        await rt.driver.drive(300, 20.0)  # quotes keep coming: nothing raises, no new group
        assert rt.pipeline.intents == intents
        status = rt.view.status()
        assert status["trading_state"] == "halted" and status["health"] == "halted"
        assert status["ledger"]["ok"] is False and "disk is full" in status["ledger"]["error"]
        with pytest.raises(ControlRefused, match="the ledger cannot write"):
            await rt.control.rearm("looks fine")
        assert rt.gate.state is TradingState.HALTED
        # Room again: the held events are written, and only then may an operator rearm.
        assert await rt.journal.retry()
        assert rt.view.status()["ledger"] == {"ok": True, "error": "", "unwritten": 0}
        result = await rt.control.rearm("disk cleaned")
        assert result.trading_state == "active"
    finally:
        await rt.close_ledger()
    assert rt.ledger_failures == 1
    kinds = [r[0] for r in sqlite3.connect(tmp_path / "engine.db").execute(
        "SELECT kind FROM risk_events ORDER BY rowid").fetchall()]
    assert kinds[-2:] == ["kill", "rearm"]  # the halt reached the ledger after the retry


async def test_a_rate_that_cannot_be_journaled_halts_and_is_written_once_the_ledger_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate in force is journaled before a figure uses it (`engine.rates.RateLog`): a write
    that fails halts trading like every other, and the event is held and written on retry."""
    clock = ManualClock()
    rt = _runtime(tmp_path / "engine.db", clock)
    await rt.open_ledger()
    try:
        assert rt.ledger is not None and rt.journal is not None
        original = rt.ledger.rate

        def full(*_: Any) -> int:
            raise DISK_FULL

        monkeypatch.setattr(rt.ledger, "rate", full)
        assert rt.equity.total(clock.time_ms()) is not None  # the first reading: the demo's typed USDT = 1
        assert rt.gate.state is TradingState.HALTED and "disk is full" in rt.gate.reason
        assert rt.journal.unwritten == 1
        monkeypatch.setattr(rt.ledger, "rate", original)
        assert await rt.journal.retry()
        assert rt.journal.unwritten == 0
    finally:
        await rt.close_ledger()
    rows = sqlite3.connect(tmp_path / "engine.db").execute(
        "SELECT json_extract(payload, '$.ccy'), json_extract(payload, '$.source'), json_extract(payload, '$.rate') "
        "FROM events WHERE kind = 'rate'").fetchall()
    assert rows == [("USDT", "given", "1")]


async def test_an_unexpected_error_on_the_quote_path_halts_instead_of_escaping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    rt = _runtime(tmp_path / "bug.db", clock)
    await rt.driver.drive(50, 20.0)

    def broken(_decision: object) -> None:
        raise RuntimeError("a bug in the statistics")

    monkeypatch.setattr(rt.orchestrator, "record_decision", broken)
    await rt.driver.drive(50, 20.0)  # would raise into the feed's read loop before
    assert rt.gate.state is TradingState.HALTED
    assert rt.gate.reason.startswith("engine: RuntimeError('a bug in the statistics')")
    errors = [e for e in rt.events.recent(500) if e.kind == "error" and "halting" in e.text]
    assert len(errors) == 1  # said once, not once per quote


# ---------------------------------------------------------------------------------------------
# A real full filesystem


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    # The suppress outermost: closing a file on a full disk raises too.
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    return filler


async def _until(predicate: Callable[[], bool], step: Callable[[], Awaitable[None]], what: str, n: int = 2000) -> None:
    for _ in range(n):
        if predicate():
            return
        await step()
    raise AssertionError(f"not reached after {n} steps: {what}")


async def test_a_full_disk_halts_the_engine_and_the_ledger_catches_up_when_room_returns(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "3m") as disk:
        clock = ManualClock()
        rt = _runtime(disk / "full.db", clock)
        await rt.open_ledger()
        try:
            await _drive_until_group(rt)
            filler = _fill(disk)
            await _until(lambda: rt.gate.state is TradingState.HALTED, lambda: rt.driver.drive(10, 20.0),
                         "the engine halted on the full disk")
            assert rt.gate.reason.startswith("ledger: ") and "full" in rt.gate.reason, rt.gate.reason
            assert rt.journal is not None
            assert not await rt.journal.retry()  # still full
            filler.unlink()
            assert await rt.journal.retry()
        finally:
            await rt.close_ledger()
        groups_in_memory = {g.group_id: str(g.state) for g in rt.orchestrator.closed}
        con = sqlite3.connect(disk / "full.db")
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = dict(con.execute("SELECT group_id, state FROM hedge_groups").fetchall())
        finally:
            con.close()
        for group_id, state in groups_in_memory.items():
            assert rows.get(group_id) == state, (group_id, state, rows.get(group_id))


def _groups_in(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=0.5)
        try:
            return int(con.execute("SELECT count(*) FROM hedge_groups").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_headless_exits_3_after_the_ledger_stopped_writing(tmp_path: Path) -> None:
    """Told to stop (SIGTERM) after the disk filled up mid-run, headless says why and exits 3."""
    with _tmpfs(tmp_path / "small", "3m") as disk:
        ledger = disk / "headless.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "quantarb_tui.cli", "headless", "--ledger", str(ledger), "--duration", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "QUANTARB_LISTENER__PORT": "0"},
        )
        try:
            deadline = time.monotonic() + 30
            while _groups_in(ledger) == 0:  # trading, not only started
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no hedge group in the ledger within 30 s"
                time.sleep(0.1)
            _fill(disk)
            time.sleep(1.5)  # quotes and groups go on arriving against the full disk
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 3, (out[-2000:], err[-2000:])
        assert "ledger cannot write, trading halted" in out
        assert "the ledger could not be written during this run" in err
        assert "Traceback" not in out + err, err[-3000:]
