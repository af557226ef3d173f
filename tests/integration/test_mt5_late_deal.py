"""An MT5 deal on the command of an order the engine forgot reaches the ledger and the books once.

The demo runtime (its ledger file, its listener on 127.0.0.1, its command queue on the ledger)
is started on a ledger that holds an MT5 order of a run before: its row (expired, unfilled) and
its command's row (delivered, expired unacknowledged). No memory of this run knows the order,
and the queue reads the command back from the ledger when the EA reports on it. The EA (signed
requests over HTTP) then reports deals on it late, as a terminal does after a freeze: each deal
is journaled in `fills` (trade id = the deal ticket) and applied to the running exposure and
cash once, and trading halts with the alert; the EA's re-report of a deal changes nothing; a
restart reads the same from the ledger, and a re-report after it changes nothing either.
Before engine.mt5_late only the halt happened: the deal stayed in its command's row.
A deal heard while the ledger cannot write is booked, once, when it writes again (before,
never: the queue held it, so the EA's re-report was a duplicate).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.clock import ManualClock
from core.commands import CommandFill, CommandState, Mt5Command
from core.config import QuantarbConfig, demo_config
from core.models import Order, OrderPurpose, OrderState, TradingState
from engine.runtime import Runtime
from engine.settings import Secrets
from ledger.ledger import Ledger
from mt5_bridge.gateway import command_id_for
from mt5_bridge.queue import EXPIRED_BY_US
from tests.mt5_support import Ea
from tests.waiting import until

SECRET = "late-deal-secret-of-the-demo-terminal"
T = 10.0  # bound on every wait
DISK_FULL = sqlite3.OperationalError("database or disk is full")
GROUP = "g0ld"
COID = f"qa{GROUP}l0a0"


def config() -> QuantarbConfig:
    cfg = demo_config()
    return cfg.model_copy(update={
        "listener": cfg.listener.model_copy(update={"port": 0}),
        "demo": cfg.demo.model_copy(update={"dislocation_every_s": 1e9}),  # no trading of its own
    })


async def seed(path: Path, clock: ManualClock, *, with_order: bool = True, deals: tuple[CommandFill, ...] = (),
               order_state: OrderState = OrderState.EXPIRED) -> None:
    """A run before: its MT5 leg's order (expired, nothing filled, unless `order_state` says
    otherwise) and its command, holding `deals` (none: the EA never reported one)."""
    ledger = await Ledger.open(path, clock=clock)
    try:
        now = clock.time_ms()
        order = Order(client_order_id=COID, group_id=GROUP, venue="mt5", symbol="XAUUSD", side="buy",
                      qty=Decimal("0.10"), price=Decimal("2650.31"), purpose=OrderPurpose.ENTRY, created_ms=now)
        if with_order:
            await ledger.order_created(order)
            if order_state is not OrderState.NEW:
                order.state = order_state
                ledger.order_state(order)
        await ledger.save(Mt5Command(
            command_id=command_id_for(COID), terminal="DEMO", group_id=GROUP, client_order_id=COID, kind="open",
            symbol="XAUUSD", side="buy", volume=Decimal("0.10"), price=Decimal("2650.31"), deviation_points=5000,
            filling="IOC", magic=0, position=0, expires_msc=now + 2_000, created_ms=now, updated_ms=now + 2_001,
            state=CommandState.EXPIRED, reason=EXPIRED_BY_US, deliveries=1, fills=list(deals),
        ))
        await ledger.flush()
    finally:
        await ledger.close()


def fills(path: Path) -> list[tuple[str, str, str, str, str]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT order_id, venue_trade_id, qty, price, fee FROM fills ORDER BY fill_id").fetchall()
    finally:
        con.close()
    return [tuple(str(c) for c in r) for r in rows]  # type: ignore[misc]


def fill_events(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM events WHERE kind = 'fill'").fetchone()[0])
    finally:
        con.close()


def trading(runtime: Runtime) -> TradingState:
    """The trading state now (read through a call, so mypy keeps no earlier narrowing)."""
    return runtime.gate.state


def untracked(runtime: Runtime) -> list[str]:
    """The orchestrator's alerts for a fill of the order it no longer tracks (the risk loop
    alerts too, on its own second: the books now hold MT5 gold without its other leg)."""
    said = [e.text for e in runtime.events.recent() if e.kind == "alert"]
    return [text for text in said if text.startswith(f"fill for order {COID} ")]


def alerts(runtime: Runtime) -> int:
    return len(untracked(runtime))


def books(runtime: Runtime) -> tuple[Decimal, Decimal]:
    """The running exposure on MT5 gold (oz) and MT5's running cash."""
    return runtime.gate.exposure.position("mt5", "XAU"), runtime.orchestrator.cash("mt5")


async def reconciled(runtime: Runtime) -> None:
    """The demo's first reconciliation pass done (before any deal: MT5's positions, compared
    after one is booked, would differ from the simulated broker's and halt for that reason);
    the next is `reconcile_interval_s` (30 s) away."""
    reconciler = runtime.reconciler
    assert reconciler is not None
    await until(lambda: reconciler.passes == 1, "the first reconciliation pass", within=T)


async def report(runtime: Runtime, clock: ManualClock, deal: int, volume: float, price: float) -> dict[str, object]:
    assert runtime.listener_url is not None
    clock.advance(ms=10)  # a request of its own (the same one at the same instant is refused as a replay)
    async with httpx.AsyncClient(base_url=runtime.listener_url, timeout=T) as client:
        ea = Ea(client, clock, terminal="DEMO")
        resp = await ea.request("POST", "/mt5/fill", {
            "command_id": command_id_for(COID), "deal": deal, "order": 77, "position": 88, "symbol": "XAUUSD",
            "side": "buy", "volume": volume, "price": price, "commission": -0.7, "time_msc": deal,
        }, secret=SECRET.encode())
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


async def test_a_late_mt5_deal_of_a_forgotten_order_is_booked_once_and_halts(tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock)
    secrets = Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)})
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path), secrets=secrets)
    await runtime.start()
    try:
        assert runtime.mt5 is not None and runtime.mt5_late is not None
        assert runtime.mt5.queue.get(command_id_for(COID)) is None  # finished: not restored into memory
        assert not runtime.orchestrator.remembers(GROUP, COID)
        assert books(runtime) == (Decimal(0), Decimal(0))
        await reconciled(runtime)
        assert trading(runtime) is TradingState.ACTIVE

        # The EA reports a deal on the command, late: journaled once, in the books once, halted.
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True}
        # Halted before the answer left, while the ledger is still being read: no group in between.
        assert trading(runtime) is TradingState.HALTED
        # Its work started before the answer left (the queue's fill listener): wait for it to end.
        await until(lambda: runtime.running_background() == 0, "the deal's work done", within=T)
        assert alerts(runtime) == 1
        assert runtime.journal is not None
        await runtime.journal.flush()
        assert fills(path) == [(COID, "5001", "0.05", "2650.35", "0.7")]
        once = (Decimal("5.00"), Decimal("-13252.45"))  # 0.05 lot x 100 oz bought at 2650.35, 0.7 charged
        assert books(runtime) == once
        assert trading(runtime) is TradingState.HALTED
        assert runtime.gate.reason == f"fill for untracked order {COID}"
        assert untracked(runtime) == [f"fill for order {COID} (group {GROUP}) that this engine no longer tracks; "
                        "mt5:5001 (0.05 @ 2650.35) applied to the running books"]
        assert [e.text for e in runtime.events.recent() if e.kind == "reconcile" and e.data.get("order") == COID] == [
            f"mt5: deal 5001 of {COID} (0.05 @ 2650.35), reported on command {COID}, was missing from the ledger: "
            "booked"]

        # The EA reports it again (it re-sends its recent deals): a duplicate, nothing moves.
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True, "duplicate": True}
        assert runtime.running_background() == 0
        await runtime.journal.flush()
        assert fills(path) == [(COID, "5001", "0.05", "2650.35", "0.7")]
        assert books(runtime) == once

        # Two more deals on the same command, reported at once: each once (the first not again).
        answers = await asyncio.gather(report(runtime, clock, 5002, 0.03, 2650.40),
                                       report(runtime, clock, 5003, 0.02, 2650.50))
        assert list(answers) == [{"ok": True}, {"ok": True}]
        await until(lambda: runtime.running_background() == 0, "the two deals' work done", within=T)
        assert alerts(runtime) == 3  # one per deal
        await runtime.journal.flush()
        all_three = [(COID, "5001", "0.05", "2650.35", "0.7"), (COID, "5002", "0.03", "2650.4", "0.7"),
                     (COID, "5003", "0.02", "2650.5", "0.7")]
        assert sorted(fills(path)) == all_three
        assert fill_events(path) == 3  # journaled once each, not only deduplicated by the ledger
        thrice = (Decimal("10.00"), Decimal("-13252.45") - Decimal("7951.2") - Decimal("5301.0") - Decimal("1.4"))
        assert books(runtime) == thrice
        assert runtime.mt5_late.booked == 3
        assert runtime.gate.reason == f"fill for untracked order {COID}"
    finally:
        await runtime.stop()

    # A restart reads the same from the ledger; the EA's re-report of a deal changes nothing.
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path), secrets=secrets)
    await runtime.start()
    try:
        assert books(runtime) == thrice
        assert trading(runtime) is TradingState.HALTED
        assert await report(runtime, clock, 5003, 0.02, 2650.50) == {"ok": True, "duplicate": True}
        assert runtime.running_background() == 0
        assert runtime.mt5_late is not None and runtime.mt5_late.booked == 0
        assert books(runtime) == thrice
        assert sorted(fills(path)) == all_three
        assert fill_events(path) == 3
    finally:
        await runtime.stop()


async def test_a_late_mt5_deal_of_an_order_the_ledger_does_not_know_is_quarantined_not_booked(
    tmp_path: Path,
) -> None:
    """The command's row without its order's (a row held in memory and lost): nothing to book
    the deal on. The order is quarantined, nothing reaches `fills` or the books, trading halts."""
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock, with_order=False)
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)}))
    await runtime.start()
    try:
        await reconciled(runtime)
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True}
        await until(lambda: runtime.running_background() == 0, "the deal's work done", within=T)
        assert runtime.journal is not None
        await runtime.journal.flush()
        assert fills(path) == [] and fill_events(path) == 0
        assert books(runtime) == (Decimal(0), Decimal(0))
        assert runtime.mt5_late is not None and runtime.mt5_late.booked == 0
        assert runtime.reconciler is not None
        [quarantined] = runtime.reconciler.quarantined.values()
        assert (quarantined.venue, quarantined.client_order_id, quarantined.reason) == (
            "mt5", COID, "a fill (5001, 0.05 @ 2650.35) of an order the ledger does not know")
        assert trading(runtime) is TradingState.HALTED
        assert runtime.gate.reason == f"fill for untracked order {COID}"
        assert untracked(runtime) == [f"fill for order {COID} (group {GROUP}) that this engine no longer tracks"]
    finally:
        await runtime.stop()


async def test_a_late_mt5_deal_heard_while_the_ledger_cannot_write_is_booked_once_when_it_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger cannot write when the EA reports the deal: nothing is booked then (the
    command's row, with the deal, waits in the journal's backlog), trading halts. When the
    ledger writes again the deal is booked, once, and reaches the books once; the EA's
    re-report is a duplicate for the queue and changes nothing. Before the command was kept for
    the ledger's return, the deal was never booked: the queue held it, the re-report was a
    duplicate, and nothing compared it with the ledger again."""
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock)
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)}))
    await runtime.start()
    try:
        assert runtime.ledger is not None and runtime.journal is not None and runtime.mt5_late is not None
        journal, ledger = runtime.journal, runtime.ledger
        await reconciled(runtime)
        assert trading(runtime) is TradingState.ACTIVE

        # The disk is full: the writer stops, and no new writer can write until it has room
        # (the journal's own retry loop, every 5 s, fails too until then).
        disk_full = True
        restart = ledger.restart_writer

        async def restart_writer() -> None:
            if disk_full:
                raise DISK_FULL
            await restart()

        monkeypatch.setattr(ledger, "restart_writer", restart_writer)
        ledger.writer._fail(DISK_FULL)
        await journal.flush()  # the journal sees the writer gone (and halts trading)
        assert journal.error is not None
        assert trading(runtime) is TradingState.HALTED

        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True}
        await until(lambda: runtime.running_background() == 0, "the deal's work done", within=T)
        assert journal.error is not None  # still down: nothing booked
        assert fills(path) == [] and fill_events(path) == 0
        assert books(runtime) == (Decimal(0), Decimal(0))
        assert runtime.mt5_late.booked == 0
        assert list(runtime.mt5_late.deferred) == [command_id_for(COID)]
        assert trading(runtime) is TradingState.HALTED
        assert untracked(runtime) == [f"fill for order {COID} (group {GROUP}) that this engine no longer tracks"]
        # The EA re-sends it while the ledger is still down: a duplicate for the queue.
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True, "duplicate": True}

        # The disk has room again: the backlog is written, then the deal is compared and booked.
        disk_full = False
        assert await journal.retry()
        await until(lambda: runtime.running_background() == 0, "the deferred deal's work done", within=T)
        await journal.flush()
        once = [(COID, "5001", "0.05", "2650.35", "0.7")]
        assert fills(path) == once and fill_events(path) == 1
        assert books(runtime) == (Decimal("5.00"), Decimal("-13252.45"))
        assert runtime.mt5_late.booked == 1 and runtime.mt5_late.deferred == {}
        assert untracked(runtime)[1:] == [f"fill for order {COID} (group {GROUP}) that this engine no longer tracks; "
                                          "mt5:5001 (0.05 @ 2650.35) applied to the running books"]
        assert trading(runtime) is TradingState.HALTED

        # A re-report now, and another recovery pass: nothing moves.
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True, "duplicate": True}
        assert runtime.mt5_late.recovered() is None
        assert runtime.running_background() == 0
        await journal.flush()
        assert fills(path) == once and fill_events(path) == 1
        assert books(runtime) == (Decimal("5.00"), Decimal("-13252.45"))
    finally:
        await runtime.stop()

    # A restart replays the ledger's one row: the same books.
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)}))
    await runtime.start()
    try:
        assert books(runtime) == (Decimal("5.00"), Decimal("-13252.45"))
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True, "duplicate": True}
        assert runtime.running_background() == 0
        assert fills(path) == once and fill_events(path) == 1
    finally:
        await runtime.stop()


def deal(ticket: int, volume: str, price: str) -> CommandFill:
    return CommandFill(deal=ticket, order=77, position=88, volume=Decimal(volume), price=Decimal(price),
                       commission=Decimal("-0.7"), time_msc=ticket)


async def test_a_deal_in_a_finished_orders_command_row_but_not_in_fills_is_booked_at_start_once_and_halts(
    tmp_path: Path,
) -> None:
    """The crash between the command row's commit (the EA's report, answered: it will not send
    the deal again) and the fill's: the ledger's command row holds deal 5001 of an order it
    has finished, `fills` does not. The restart books it before it replays the money (the
    exposure and cash hold it), says so, and halts durably; the next restart books nothing
    more and stays halted. Before engine.mt5_late's start-up pass the deal never reached
    `fills`, the books or the money: nothing asks about a finished order."""
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock, deals=(deal(5001, "0.05", "2650.35"),))
    secrets = Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)})
    once = [(COID, "5001", "0.05", "2650.35", "0.7")]
    booked = (Decimal("5.00"), Decimal("-13252.45"))  # 0.05 lot x 100 oz bought at 2650.35, 0.7 charged
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path), secrets=secrets)
    await runtime.start()
    try:
        assert runtime.mt5_late is not None and runtime.mt5_late.booked == 1
        assert fills(path) == once and fill_events(path) == 1  # committed before start() returned
        assert books(runtime) == booked
        assert trading(runtime) is TradingState.HALTED
        assert runtime.gate.reason == "1 MT5 deal(s) missing from the ledger at start"
        assert [e.text for e in runtime.events.recent() if e.kind == "reconcile" and e.data.get("order") == COID] == [
            f"mt5: deal 5001 of {COID} (0.05 @ 2650.35) on command {command_id_for(COID)} was missing from the "
            "ledger's fills at start: booked"]
        # The EA re-sends the deal: a duplicate for the queue (the command's row has it).
        assert await report(runtime, clock, 5001, 0.05, 2650.35) == {"ok": True, "duplicate": True}
        assert runtime.running_background() == 0
    finally:
        await runtime.stop()

    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path), secrets=secrets)
    await runtime.start()
    try:
        assert runtime.mt5_late is not None and runtime.mt5_late.booked == 0
        assert fills(path) == once and fill_events(path) == 1
        assert books(runtime) == booked
        assert trading(runtime) is TradingState.HALTED  # the halt was journaled
    finally:
        await runtime.stop()


async def test_a_deal_in_an_unfinished_orders_command_row_is_left_to_recovery_and_booked_once(
    tmp_path: Path,
) -> None:
    """The same crash with the order still unfinished in the ledger (acknowledged): the
    start-up pass leaves it to recovery, which asks the gateway (the command's row, read
    back) and books the deal through the order's flow, once, with no halt of its own."""
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock, deals=(deal(5001, "0.10", "2650.35"),), order_state=OrderState.ACKED)
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)}))
    await runtime.start()
    try:
        assert runtime.mt5_late is not None and runtime.mt5_late.booked == 0
        # The ledger's writer commits on its own: what recovery books shows in the file.
        await until(lambda: fills(path) != [], "recovery booked the deal", within=T)
        assert fills(path) == [(COID, "5001", "0.10", "2650.35", "0.7")]
        assert fill_events(path) == 1
        assert runtime.mt5_late.booked == 0  # recovery's flow booked it, not the start-up pass
        assert runtime.gate.reason != "1 MT5 deal(s) missing from the ledger at start"
    finally:
        await runtime.stop()


async def test_a_command_row_the_start_up_pass_cannot_read_halts_with_an_error(tmp_path: Path) -> None:
    """A finished order's command row whose deals are not JSON (damaged outside the engine):
    the start-up comparison cannot be made, so it is not trusted: an error is said and
    trading starts halted (the run goes on: the operator can read and flatten)."""
    path = tmp_path / "demo.db"
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    await seed(path, clock, deals=(deal(5001, "0.05", "2650.35"),))
    con = sqlite3.connect(path)
    try:
        con.execute("UPDATE mt5_commands SET fills = '[{\"deal\": 5001,' WHERE command_id = ?", (command_id_for(COID),))
        con.commit()
    finally:
        con.close()
    runtime = Runtime(config(), is_demo=True, clock=clock, ledger_path=str(path),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(SECRET)}))
    await runtime.start()
    try:
        assert trading(runtime) is TradingState.HALTED
        assert runtime.gate.reason == "MT5 deals not compared with the ledger at start"
        [said] = [e.text for e in runtime.events.recent() if e.kind == "error" and e.text.startswith("mt5: the ledger")]
        assert said.startswith("mt5: the ledger's MT5 deals could not be compared with its fills: ")
        assert fills(path) == []
    finally:
        await runtime.stop()
