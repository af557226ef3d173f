"""core.attribution netting (issue 19): settled groups holding one book in opposite ways are set
against each other at the mark, so the running attribution is bounded by the net positions,
not by every group that ever traded; zero-sum, and the ledger replays the journaled nets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attribution import Attribution, GroupMoney, Net
from core.clock import ManualClock
from core.instruments import Instrument
from core.models import Side
from ledger import Ledger, money, queries
from ledger import events as ev
from tests.unit.test_attribution import INSTS, MT5, OKX, T0
from tests.unit.test_ledger_money import book, fill
from tests.unit.test_ledger_support import make_group, make_order

D = Decimal


class Groups:
    """Hedges of 1 oz x `lots` into an Attribution: `+` long MT5 / short OKX, `-` the other way."""

    def __init__(self, keep_flat: bool = False) -> None:
        self.a = Attribution(INSTS, keep_flat=keep_flat)
        self.n = 0

    def _fill(self, gid: str, inst: Instrument, side: Side, qty: Decimal, price: Decimal) -> None:
        self.n += 1
        self.a.fill(group_id=gid, closing=False, venue=inst.venue, symbol=inst.symbol, side=side, qty=qty,
                    price=price, fee=D("0.1"), ts_ms=T0 + self.n, trade_id=f"t{self.n}")

    def hedge(self, gid: str, way: int, lots: int = 1, mt5_px: str = "2650.00", okx_px: str = "2655.0") -> None:
        self._fill(gid, MT5, "buy" if way > 0 else "sell", D("0.01") * lots, D(mt5_px))
        self._fill(gid, OKX, "sell" if way > 0 else "buy", D(1000) * lots, D(okx_px))


def test_a_settled_group_nets_against_an_older_opposite_one_and_they_share_the_round_trip() -> None:
    g = Groups()
    g.hedge("g1", +1, mt5_px="2650.00", okx_px="2655.0")
    assert g.a.settle("g1", T0 + 10) == []  # nothing older to net against
    g.hedge("g2", -1, mt5_px="2662.00", okx_px="2657.0")
    nets = g.a.settle("g2", T0 + 20)
    # At the midpoint of the two entries on each book: MT5 (2650 + 2662) / 2, OKX (2655 + 2657) / 2.
    assert nets == [Net("mt5", "XAUUSD", "g1", "g2", D(1), D(2656), T0 + 20),
                    Net("okx", "XAUT-USDT-SWAP", "g2", "g1", D(1), D(2656), T0 + 20)]
    closed = {m.group_id: m for m in g.a.take_closed()}
    assert set(closed) == {"g1", "g2"}
    # The round trips made 12 on MT5 and -2 on OKX: each group has half, less its own fees.
    assert closed["g1"].realized == closed["g2"].realized == D(6) - D(1) - D("0.2")
    assert closed["g1"].closed_by == ["g2"] and closed["g2"].closed_by == ["g1"]
    # Both are flat and taken: the running attribution forgets them.
    assert g.a.remembered() == 0 and g.a.settled() == []


def test_a_group_not_settled_is_not_netted() -> None:
    """A group still in flight (its execution not ended, an order pending) keeps its positions:
    a fill still to come must find its group's money whole."""
    g = Groups()
    g.hedge("g1", +1)
    g.hedge("g2", -1)
    assert g.a.settle("g1", T0 + 10) == []  # g2 holds against it but is not settled
    assert g.a.remembered() == 2 and g.a.take_closed() == []
    assert len(g.a.settle("g2", T0 + 20)) == 2


def test_what_a_net_books_is_a_figure_of_the_fills_not_of_when_groups_settle() -> None:
    """A replay at another latency settles groups at other moments: their PnL must not move."""
    pnls = []
    for settle_ms in (T0, T0 + 987_654):
        g = Groups()
        g.hedge("g1", +1, mt5_px="2650.00", okx_px="2655.0")
        g.a.settle("g1", settle_ms)
        g.hedge("g2", -1, lots=2, mt5_px="2661.00", okx_px="2659.0")
        nets = g.a.settle("g2", settle_ms)
        pnls.append(([(n.price, n.qty) for n in nets], sorted((m.group_id, m.realized) for m in g.a.take_closed())))
    assert pnls[0] == pnls[1] and pnls[0][1][0][0] == "g1"


def test_a_larger_group_is_netted_first_in_first_out_and_keeps_the_rest() -> None:
    g = Groups()
    for gid in ("g1", "g2", "g3"):
        g.hedge(gid, +1)
        g.a.settle(gid, T0)
    g.hedge("g4", -1, lots=2)
    nets = g.a.settle("g4", T0 + 5)
    assert [(n.long_group, n.short_group) for n in nets if n.venue == "mt5"] == [("g1", "g4"), ("g2", "g4")]
    assert sorted(m.group_id for m in g.a.take_closed()) == ["g1", "g2", "g4"]
    assert g.a.settled() == ["g3"] and g.a.remembered() == 1


def _group_money(m: GroupMoney) -> tuple[object, ...]:
    return (m.cash, m.fees, m.closing_cash, m.closing_qty, {k: q for k, q in m.positions.items() if q},
            list(m.closed_by))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, -1]), st.integers(1, 4), st.integers(2600, 2700),
                          st.integers(2600, 2700), st.booleans()), min_size=1, max_size=40))
def test_netting_is_zero_sum_and_bounds_the_groups_by_the_net_position(
        hedges: list[tuple[int, int, int, int, bool]]) -> None:
    """Whatever the hedges, their sizes, prices and which settle: the groups together hold every
    fill's cash, fee and position exactly (nets are transfers); the settled groups holding a book
    all hold it the same way, so there are at most as many as the net position has lots (plus
    the groups not settled); and the nets booked as journaled (`transfer`, the ledger's replay)
    give every group the money the settling gave it."""
    g = Groups(keep_flat=True)
    replay = Groups(keep_flat=True)
    cash, fees, net_lots, unsettled = D(0), D(0), 0, 0
    for i, (way, lots, mt5_px, okx_px, settles) in enumerate(hedges):
        gid = f"g{i}"
        for grp in (g, replay):
            grp.hedge(gid, way, lots, f"{mt5_px}.00", f"{okx_px}.0")
        cash += way * lots * (okx_px - mt5_px)  # base x price: sells in, buys out
        fees += D("0.2")
        net_lots += way * lots
        if settles:
            for n in g.a.settle(gid, T0 + i):
                replay.a.transfer(n)
        else:
            unsettled += lots  # its lots may offset settled ones that cannot net with it
        for key in (MT5.key, OKX.key):
            signs = {m.positions[key] > 0 for gid2 in g.a.settled() if (m := g.a.group(gid2)) and m.positions[key]}
            assert len(signs) <= 1
        settled_holding = [s for s in g.a.settled() if any(g.a.group(s).positions.values())]  # type: ignore[union-attr]
        assert len(settled_holding) <= abs(net_lots) + unsettled
    every = [*g.a.groups().values(), g.a.line]
    assert sum((m.cash for m in every), D(0)) == cash  # zero-sum: nets move no cash in total
    assert sum((m.fees for m in every), D(0)) == fees
    assert sum((m.positions.get(MT5.key, D(0)) for m in every), D(0)) == net_lots
    assert {k: _group_money(m) for k, m in g.a.groups().items()} == {
        k: _group_money(m) for k, m in replay.a.groups().items()}


def test_a_journaled_net_is_refused_when_it_is_not_one() -> None:
    a = Attribution(INSTS)
    for bad in (Net("okx", "NOPE", "g1", "g2", D(1), D(1), T0), Net("mt5", "XAUUSD", "g1", "g1", D(1), D(1), T0),
                Net("mt5", "XAUUSD", "g1", "g2", D(0), D(1), T0), Net("mt5", "XAUUSD", "g1", "g2", D(1), D("NaN"), T0)):
        with pytest.raises(ValueError):
            a.transfer(bad)
    assert a.remembered() == 0


def test_a_net_event_round_trips_and_bad_payloads_are_refused() -> None:
    n = Net("okx", "XAUT-USDT-SWAP", "g1", "g2", D("1.5"), D("2660.25"), T0)
    event = ev.net(n, T0 + 1)
    assert event.kind == ev.NET and ev.net_from_payload(dict(event.payload)) == n
    for field, value in (("venue", "ftx"), ("qty", "-1"), ("price", "abc"), ("net_ms", True),
                         ("short_group", "g1"), ("symbol", "")):
        with pytest.raises(ValueError):
            ev.net_from_payload({**event.payload, field: value})
    with pytest.raises(ValueError):
        ev.net_from_payload({**event.payload, "extra": 1})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["venue", "symbol", "long_group", "short_group", "qty", "price", "net_ms",
                                        "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8),
                                 st.sampled_from(["okx", "mt5", "1", "0", "1e999", "NaN", "2.5"]))))
def test_any_net_payload_is_read_or_refused_with_a_value_error(payload: dict[str, object]) -> None:
    try:
        n = ev.net_from_payload(payload)
    except ValueError:
        return
    assert n.qty > 0 and n.price > 0 and n.long_group != n.short_group and n.venue in ("okx", "mt5", "binance")


async def test_the_ledger_replays_the_journaled_nets(tmp_path: Path) -> None:
    """Two opposite hedges in a real ledger, the net journaled as the engine does: the ledger's
    group attribution (`ledger groups`) gives each group the money the running one gave it, and
    a restart's attribution (keep_flat=False) remembers neither."""
    led = await Ledger.open(tmp_path / "l.db", clock=ManualClock(wall_ms=T0))
    try:
        g1, g2 = make_group("g1", T0), make_group("g2", T0)
        for g in (g1, g2):
            led.group_opened(g)
        b1, s1 = make_order(g1, 0, ts_ms=T0), make_order(g1, 1, ts_ms=T0)
        await book(led, b1, fill(b1, "o1", "65000", ts=T0 + 1))
        await book(led, s1, fill(s1, "m1", "65100", ts=T0 + 2))
        # g2 the other way round: sells what g1 bought, buys what g1 sold.
        s2, b2 = make_order(g2, 0, ts_ms=T0), make_order(g2, 1, ts_ms=T0)
        s2.side, b2.side = "sell", "buy"
        await book(led, s2, fill(s2, "o2", "65200", ts=T0 + 3))
        await book(led, b2, fill(b2, "m2", "65150", ts=T0 + 4))
        await led.flush()
        async with queries.open_reader(tmp_path / "l.db") as db:
            live = await money.group_attribution(db, keep_flat=False)
        live.mark_settled(["g1", "g2"])
        nets = live.settle("g2", T0 + 5)
        assert len(nets) == 2
        for n in nets:
            led.net(n)
        closed = {m.group_id: m for m in live.take_closed()}
        await led.flush()
        async with queries.open_reader(tmp_path / "l.db") as db:
            replayed = await money.group_attribution(db)
            restored = await money.group_attribution(db, keep_flat=False)
    finally:
        await led.close()
    assert set(closed) == {"g1", "g2"}
    for gid, m in closed.items():
        r = replayed.group(gid)
        assert r is not None and _group_money(r) == _group_money(m) and r.realized == m.realized
    restored.take_closed()
    assert restored.remembered() == 0
