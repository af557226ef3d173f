"""Review of group netting (issue 19): cases where the running attribution and the ledger's
replay (`ledger groups`, a restart) part ways, or a restart nets a group that is not settled."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from core.attribution import GroupMoney, Net
from core.clock import ManualClock
from core.models import GroupState, Order, OrderPurpose, OrderState
from ledger import Ledger, money, queries
from ledger.errors import LedgerError
from tests.unit.test_attribution import OKX as XOKX
from tests.unit.test_attribution_netting import Groups
from tests.unit.test_ledger_money import book, fill
from tests.unit.test_ledger_support import T0, make_group, make_order

D = Decimal


def _money(m: GroupMoney | None) -> tuple[object, ...] | None:
    if m is None:
        return None
    return (m.cash, m.fees, {k: q for k, q in m.positions.items() if q})


async def _hedge(led: Ledger, gid: str, way: int, ts: int, okx: str = "65000", mt5: str = "65100") -> None:
    """A hedged group: `way` +1 buys 10 OKX contracts and sells 0.10 lot MT5, -1 the other way."""
    g = make_group(gid, ts)
    led.group_opened(g)
    b, s = make_order(g, 0, ts_ms=ts), make_order(g, 1, ts_ms=ts)
    if way < 0:
        b.side, s.side = "sell", "buy"
    await book(led, b, fill(b, f"{gid}o", okx, ts=ts + 1))
    await book(led, s, fill(s, f"{gid}m", mt5, ts=ts + 2))
    g.state = GroupState.HEDGED
    led.group_state(g)


async def test_a_flatten_fill_stamped_before_a_net_is_replayed_as_the_engine_booked_it(tmp_path: Path) -> None:
    """Live: g2 settles at T0+100 and nets g1 (oldest long) flat; then a flatten's OKX sell,
    stamped by the venue at T0+90 (its clock, or the time it traded before the engine read it),
    is booked first in, first out to g3, the only long left. The replay sorts the fill before the
    net (fills by their venue time, nets by the engine's) put the flatten on g1, the net then
    took g1 short: `ledger groups` no longer said what the engine journaled. The replay now
    books fills and nets in journal order."""
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await _hedge(led, "g1", +1, T0)
        await _hedge(led, "g3", +1, T0 + 10)
        await _hedge(led, "g2", -1, T0 + 20, okx="65200", mt5="65150")
        await led.flush()
        async with queries.open_reader(path) as db:
            live = await money.group_attribution(db, keep_flat=False)
        live.mark_settled(["g1", "g3"])
        nets = live.settle("g2", T0 + 100)
        assert {(n.long_group, n.short_group) for n in nets} == {("g1", "g2"), ("g2", "g1")}
        for n in nets:
            led.net(n)
        live.take_closed()
        flat = Order(client_order_id="qaflat1", group_id="", venue="okx", symbol="BTC-USDT-SWAP", side="sell",
                     qty=D(10), price=D("65300"), purpose=OrderPurpose.FLATTEN, created_ms=T0 + 80)
        f = fill(flat, "fl1", "65300", ts=T0 + 90)
        assert live.fill(group_id=None, closing=True, venue="okx", symbol="BTC-USDT-SWAP", side="sell", qty=f.qty,
                         price=f.price, fee=f.fee, ts_ms=f.ts_ms, trade_id="fl1") == [("g3", D("0.1"))]
        await book(led, flat, f)
        await led.flush()
        async with queries.open_reader(path) as db:
            replayed = await money.group_attribution(db)
    finally:
        await led.close()
    for gid in ("g1", "g3"):
        want = _money(live.group(gid)) if live.group(gid) is not None else None
        got = _money(replayed.group(gid))
        if want is None:  # forgotten live: it was flat
            assert got is not None and not got[2], f"{gid}: replay holds {got}, the engine nothing"
        else:
            assert got == want, gid


async def test_a_restart_does_not_net_a_group_with_an_order_still_open(tmp_path: Path) -> None:
    """A crash while a close of g1 (its own close orders) was out: the ledger has g1 `hedged`
    with an open order. The restart must not net g1 before recovery learns what that order did
    (its fills, under g1's id, would find g1 netted and forgotten)."""
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await _hedge(led, "g1", +1, T0)
        await _hedge(led, "g2", -1, T0 + 20)
        g1 = make_group("g1", T0)
        close = Order(client_order_id="qag1c2", group_id="g1", venue="okx", symbol="BTC-USDT-SWAP", side="sell",
                      qty=D(10), price=D("64000"), purpose=OrderPurpose.FLATTEN, created_ms=T0 + 50)
        close.state = OrderState.UNKNOWN
        g1.orders.append(close)
        await led.order_created(close)
        led.order_state(close)
        await led.flush()
        async with queries.open_reader(path) as db:
            settled = await money.settled_groups(db, ["g1", "g2"])
    finally:
        await led.close()
    assert settled == ["g2"]


def test_replay_keeps_a_late_closing_fill_where_the_engine_put_it() -> None:
    """g1 netted flat and forgotten by the running attribution (keep_flat=False); a fill of a
    close order sent under g1's id (a close of g1 that was out when g2 netted it) then is
    spread first in, first out over other holders live, and was g1's own in the replay. A closing
    order is its group's own only while the group holds something, in both."""

    runs = []
    for keep in (False, True):
        g = Groups(keep_flat=keep)
        g.hedge("g1", +1)
        g.a.settle("g1", T0)
        g.hedge("g3", +1)
        g.a.settle("g3", T0)
        g.hedge("g2", -1)
        g.a.settle("g2", T0 + 5)
        g.a.take_closed()
        g.a.fill(group_id="g1", closing=True, venue=XOKX.venue, symbol=XOKX.symbol, side="buy", qty=D(1000),
                 price=D("2660.0"), fee=D("0.1"), ts_ms=T0 + 9, trade_id="c1")
        runs.append({gid: _money(g.a.group(gid)) for gid in ("g1", "g3")})
    assert runs[0]["g3"] == runs[1]["g3"]


async def _restart_rows(path: Path) -> dict[str, tuple[str, Decimal]]:
    """Open the ledger in a Runtime (a restart: restore, then the restored groups net), let the
    closes from ledger rows finish; each group's (state, realized_pnl) in the ledger after."""
    import sqlite3

    from core.config import demo_config
    from engine.runtime import Runtime

    rt = Runtime(demo_config(), is_demo=True, clock=ManualClock(wall_ms=T0 + 1000), ledger_path=str(path),
                 mt5_in_process=True)
    await rt.open_ledger()
    try:
        for _ in range(500):
            if not rt.running_background():
                break
            await asyncio.sleep(0.01)
        assert rt.ledger is not None
        await rt.ledger.flush()
    finally:
        await rt.close_ledger()
    con = sqlite3.connect(path)
    try:
        return {str(r[0]): (str(r[1]), D(r[2])) for r in con.execute(
            "SELECT group_id, state, realized_pnl FROM hedge_groups")}
    finally:
        con.close()


async def test_a_restart_closes_an_unwound_group_a_net_took_flat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwound group that lot sizes left holding (CLOSABLE, and `HedgeGroup.close` takes it to
    closed) is netted at the restart like any settled group; closed from its ledger row like the
    hedged one it netted with, or its row keeps the PnL from before the net while the other's
    row has the net's cash: the rows' sum is no longer the money."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await _hedge(led, "g1", +1, T0)
        await _hedge(led, "g2", -1, T0 + 20, okx="65200", mt5="65150")
        g1 = make_group("g1", T0)
        g1.state = GroupState.UNWOUND
        led.group_state(g1)
        await led.flush()
    finally:
        await led.close()
    rows = await _restart_rows(path)
    assert rows["g2"][0] == "closed"
    assert rows["g1"][0] == "closed", rows
    async with queries.open_reader(path) as db:
        attribution = await money.group_attribution(db)
    for gid in ("g1", "g2"):
        m = attribution.group(gid)
        assert m is not None and rows[gid][1] == m.realized, gid


async def test_a_crash_between_a_net_and_the_close_is_closed_at_the_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nets were committed, the closes they called for were not (a crash, the journal
    down): the restart's replay finds both groups flat and `RunningEquity.restore` drops them
    as 'closed before this run: journaled then'. They were not: their rows must be closed now."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await _hedge(led, "g1", +1, T0)
        await _hedge(led, "g2", -1, T0 + 20, okx="65200", mt5="65150")
        await led.flush()
        async with queries.open_reader(path) as db:
            live = await money.group_attribution(db, keep_flat=False)
        live.mark_settled(["g1"])
        for n in live.settle("g2", T0 + 30):
            led.net(n)
        await led.flush()
    finally:
        await led.close()
    rows = await _restart_rows(path)
    assert rows["g1"][0] == rows["g2"][0] == "closed", rows


async def test_a_net_past_decimal_range_is_a_ledger_error(tmp_path: Path) -> None:
    """A net event whose figures read (finite, > 0) but overflow when booked (a damaged or
    tampered ledger): `ledger groups` and a restart's restore say LedgerError, not a traceback
    of decimal.Overflow (the restore lets only LedgerError through to a warning)."""
    path = tmp_path / "l.db"
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        await _hedge(led, "g1", +1, T0)
        led.net(Net("okx", "BTC-USDT-SWAP", "g1", "g2", D("9e999999"), D("65000"), T0 + 5))
        await led.flush()
    finally:
        await led.close()
    async with queries.open_reader(path) as db:
        with pytest.raises(LedgerError, match="net at"):
            await money.group_attribution(db)
