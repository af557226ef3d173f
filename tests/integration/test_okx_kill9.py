"""kill -9 of an engine trading through the live OKX gateway, at the two points the write-ahead
rule is about, then a restart that finishes the group from the ledger (docs/ledger.md,
"Write-ahead and the order path").

The engine is a real process (`python -m tests.okx_kill9_engine`: HedgeOrchestrator,
GuardedJournal over a real SQLite ledger, the OKX gateway over REST and its private
WebSocket) trading against an OKX simulator that runs here, in the test's process, on
127.0.0.1:0, so the venue outlives the engine. The process is SIGKILLed:

- (i) after the entry order's write-ahead committed and before its request left (the engine
  is held in the gateway's `place()`, which the orchestrator calls only once the commit
  returned): the venue never saw the order;
- (ii) after the venue accepted and filled the order but before its answer reached the engine
  (the simulator holds its answer), so the fill was never journaled.

The restart opens the ledger, `recover()`s the open group and resumes it with a fresh
orchestrator and a fresh OKX gateway: the order is asked about by client order id (on the
wire: `GET /api/v5/trade/order?...clOrdId=`), (i) not found -> rejected, the group rejected,
nothing sent; (ii) found filled -> its fill booked once, the group repaired by a retry on the
other leg. The simulator saw exactly one order per client order id, and none after the kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import RealClock
from core.hedge import HedgeGroup
from core.models import GroupState, Venue
from core.ports import ExecutionGateway
from engine.journal import GuardedJournal
from ledger import queries
from ledger.ledger import Ledger
from sim.market import SimTick
from sim.okx_accounts import spec_from_instrument
from sim.okx_server import OkxSimServer
from tests.okx_kill9_engine import (
    KEY,
    OKX_ASK,
    OKX_BID,
    OKX_BTC,
    PASSPHRASE,
    SECRET,
    FillingVenue,
    in_ahead_file,
    okx_gateway,
    orchestrator,
    wide_gate,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 20.0  # bound on every wait; a wait that runs out fails with what it waited for


@dataclass
class SimVenue:
    """The OKX simulator, with every order it received counted by client order id."""

    server: OkxSimServer
    received: Counter[str] = field(default_factory=Counter)
    ledger: Path | None = None  # when set: whether each order's row was safe as it arrived
    ahead_on_arrival: dict[str, bool] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def okx_venue() -> AsyncIterator[SimVenue]:
    server = OkxSimServer("127.0.0.1", 0, symbols=[OKX_BTC.symbol], clock=RealClock(),
                          specs=[spec_from_instrument(OKX_BTC)], idle_timeout_s=60.0)
    server.private.add_account(KEY, SECRET, PASSPHRASE)
    venue = SimVenue(server)
    place = server.private.place_order

    def counted(account: Any, args: Any) -> dict[str, str]:
        cid = str(args.get("clOrdId", "")) if isinstance(args, dict) else ""
        venue.received[cid] += 1
        if venue.ledger is not None:
            venue.ahead_on_arrival[cid] = in_ahead_file(venue.ledger, cid)
        return place(account, args)

    server.private.place_order = counted  # type: ignore[method-assign]
    async with server:
        server.publish(SimTick("okx", OKX_BTC.symbol, OKX_BID, OKX_ASK, 50.0, 50.0, server.clock.time_ms()))
        yield venue


async def until(predicate: Callable[[], bool], what: str, proc: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not predicate():
        if proc.returncode is not None:
            err = await proc.stderr.read() if proc.stderr is not None else b""
            raise AssertionError(f"the engine exited ({proc.returncode}) before {what}: {err.decode()[-2000:]}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {BOUND_S} s waiting for {what}")
        await asyncio.sleep(0.01)


async def start_engine(ledger: Path, server: OkxSimServer, *extra: str) -> tuple[asyncio.subprocess.Process, str, str]:
    """The engine process, once it has submitted its group: (process, group id, OKX client order id)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.okx_kill9_engine", "--ledger", str(ledger), "--rest-url", server.rest_url,
        "--ws-url", server.private_ws_url, *extra,
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), BOUND_S)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"the engine did not submit its group within {BOUND_S} s") from None
    words = line.decode().split()
    if len(words) != 3 or words[0] != "group":
        proc.kill()
        err = await proc.stderr.read() if proc.stderr is not None else b""
        raise AssertionError(f"unexpected first line {line!r}: {err.decode()[-2000:]}")
    return proc, words[1], words[2]


async def kill9(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    code = await asyncio.wait_for(proc.wait(), BOUND_S)
    assert code == -signal.SIGKILL, f"the engine ended with {code}, not by SIGKILL"


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def order_state(path: Path, cid: str) -> str | None:
    """The order's state as committed in the ledger now (None: no row yet)."""
    if not path.exists():
        return None
    try:
        found = rows(path, "SELECT state FROM orders WHERE client_order_id = ?", cid)
    except sqlite3.OperationalError:  # the schema is being created
        return None
    return str(found[0][0]) if found else None


@dataclass
class Restart:
    groups: list[HedgeGroup]
    unfinished: list[str]
    wire: list[str]  # "METHOD path?query" of every REST request the fresh gateway made
    sent: int  # orders the fresh OKX gateway sent (WebSocket and REST)
    mt5: FillingVenue


async def restart(ledger_path: Path, server: OkxSimServer) -> Restart:
    """Open the ledger, recover, and resume its open groups with a fresh engine and gateway."""
    clock = RealClock()
    wire: list[str] = []

    async def log(request: httpx.Request) -> None:
        wire.append(f"{request.method} {request.url.raw_path.decode()}")

    client = httpx.AsyncClient(base_url=server.rest_url, timeout=10.0, event_hooks={"request": [log]})
    ledger = await Ledger.open(ledger_path, clock=clock)
    okx = okx_gateway(server.rest_url, server.private_ws_url, clock, client=client)
    mt5 = FillingVenue("mt5")
    try:
        state = await ledger.recover()
        await okx.start([OKX_BTC.symbol])
        await okx.stream.wait_ready(BOUND_S)
        wire.clear()  # the start (server time, instruments) is not what this test is about
        journal = GuardedJournal(ledger, on_failure=lambda error: None)
        gateways: dict[Venue, ExecutionGateway] = {"okx": okx, "mt5": mt5}
        orch = orchestrator(gateways, journal, clock, wide_gate(clock))
        for group in state.open_groups:
            await asyncio.wait_for(orch.resume(group), BOUND_S)
        await asyncio.wait_for(orch.drain(), BOUND_S)
        await ledger.flush()
        return Restart(list(state.open_groups), [o.client_order_id for o in state.open_orders], wire,
                       okx.sent_over_ws + okx.sent_over_rest, mt5)
    finally:
        await okx.stop()
        await client.aclose()
        await ledger.close()


async def assert_nothing_left_open(path: Path) -> None:
    ledger = await Ledger.open(path)
    try:
        again = await ledger.recover()
        assert ([g.group_id for g in again.open_groups], [o.client_order_id for o in again.open_orders]) == ([], [])
        report = await ledger.read(queries.check)
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    finally:
        await ledger.close()


def asked_by_client_order_id(cid: str) -> str:
    return f"GET /api/v5/trade/order?instId={OKX_BTC.symbol}&clOrdId={cid}"


async def test_kill9_after_the_write_ahead_before_the_send_rejects_the_group(tmp_path: Path) -> None:
    """`write_ahead = "commit"`: the row was committed before the send; killed while held there."""
    path = tmp_path / "ledger.db"
    flag = tmp_path / "held"
    async with okx_venue() as venue:
        proc, group_id, cid = await start_engine(path, venue.server, "--hold-before-send", str(flag),
                                                 "--write-ahead", "commit")
        try:
            await until(flag.exists, "the engine to reach the send after the write-ahead", proc)
            # The `submitted` state queued just before the send commits within the writer's 2 ms
            # by itself: waiting for it makes the ledger's state at the kill one known state.
            await until(lambda: order_state(path, cid) == "submitted", "the submitted state committed", proc)
        finally:
            await kill9(proc)
        assert flag.read_text() == f"{cid} new absent"  # durable when the send began
        # Committed before the send, and never sent.
        assert rows(path, "SELECT client_order_id, venue, state FROM orders") == [(cid, "okx", "submitted")]
        assert rows(path, "SELECT state FROM hedge_groups WHERE group_id = ?", group_id) == [("working",)]
        assert venue.received == Counter() and venue.server.private.orders_received == 0
        await _restart_rejects(path, venue, group_id, cid)


async def test_kill9_with_the_row_only_in_the_write_ahead_file_recovers_it_and_rejects(tmp_path: Path) -> None:
    """`write_ahead = "file"` (the default): killed at the send, before SQLite committed the
    order's row; the next open replays it from `<ledger>.ahead` and recovery asks the venue."""
    path = tmp_path / "ledger.db"
    flag = tmp_path / "held"
    async with okx_venue() as venue:
        proc, group_id, cid = await start_engine(path, venue.server, "--hold-before-send", str(flag),
                                                 "--write-ahead", "file")
        code = await asyncio.wait_for(proc.wait(), BOUND_S)  # it kills itself at the send
        assert code == -signal.SIGKILL, f"the engine ended with {code}, not by SIGKILL"
        assert flag.read_text() == f"{cid} none ahead"  # not committed, but in the file
        assert rows(path, "SELECT count(*) FROM orders") == [(0,)]
        assert venue.received == Counter() and venue.server.private.orders_received == 0
        await _restart_rejects(path, venue, group_id, cid)


async def _restart_rejects(path: Path, venue: SimVenue, group_id: str, cid: str) -> None:

    again = await restart(path, venue.server)

    assert [g.group_id for g in again.groups] == [group_id] and again.unfinished == [cid]
    [group] = again.groups
    assert group.state is GroupState.REJECTED
    assert again.wire[0] == asked_by_client_order_id(cid)
    assert not any(line.startswith("POST") for line in again.wire)
    assert again.sent == 0 and again.mt5.calls == []
    assert venue.received == Counter() and venue.server.private.orders_received == 0
    assert rows(path, "SELECT client_order_id, state FROM orders") == [(cid, "rejected")]
    assert rows(path, "SELECT state FROM hedge_groups WHERE group_id = ?", group_id) == [("rejected",)]
    assert rows(path, "SELECT count(*) FROM fills") == [(0,)]
    await assert_nothing_left_open(path)


async def test_kill9_after_the_venue_filled_before_the_answer_books_the_fill_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with okx_venue() as venue:
        faults = venue.server.private.faults
        faults.hang_next, faults.hang_processed, faults.hang_s = 1, True, 120.0  # acts, answers never
        account = venue.server.private.accounts[KEY]
        venue.ledger = path
        proc, group_id, cid = await start_engine(path, venue.server)
        try:
            await until(lambda: cid in account.by_cl_ord_id and account.by_cl_ord_id[cid].state == "filled",
                        "the venue to fill the order", proc)
            await until(lambda: order_state(path, cid) == "submitted", "the submitted state committed", proc)
        finally:
            await kill9(proc)
        trades = sorted(f.trade_id for f in account.fills if f.order.cl_ord_id == cid)
        assert len(trades) == 1
        # The engine had written the order ahead and sent it; nothing of its outcome is journaled.
        assert rows(path, "SELECT state FROM orders WHERE client_order_id = ?", cid) == [("submitted",)]
        assert rows(path, "SELECT count(*) FROM fills") == [(0,)]
        assert rows(path, "SELECT state FROM hedge_groups WHERE group_id = ?", group_id) == [("working",)]
        assert venue.received == Counter({cid: 1})
        assert venue.ahead_on_arrival == {cid: True}  # written ahead before the venue saw it

        again = await restart(path, venue.server)

        assert [g.group_id for g in again.groups] == [group_id] and again.unfinished == [cid]
        [group] = again.groups
        assert again.wire[0] == asked_by_client_order_id(cid)
        assert not any(line.startswith("POST") for line in again.wire)
        assert again.sent == 0
        assert venue.received == Counter({cid: 1}) and venue.server.private.orders_received == 1
        # Booked once, with the venue's trade id, and the group repaired by a retry on MT5.
        assert rows(path, "SELECT venue, venue_trade_id, qty FROM fills WHERE order_id = ?", cid) == [
            ("okx", trades[0], "5")]
        assert rows(path, "SELECT client_order_id, state FROM orders WHERE client_order_id = ?", cid) == [
            (cid, "filled")]
        assert group.state is GroupState.REPAIRED
        assert [op for op, _ in again.mt5.calls] == ["place"]
        assert rows(path, "SELECT state FROM hedge_groups WHERE group_id = ?", group_id) == [("repaired",)]
        dupes = rows(path, "SELECT venue, venue_trade_id FROM fills GROUP BY 1, 2 HAVING count(*) > 1")
        assert dupes == []
    await assert_nothing_left_open(path)


pytestmark = pytest.mark.timeout(120)
