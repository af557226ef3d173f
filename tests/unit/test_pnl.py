"""PnL: realized PnL, fees per venue, realized edge, slippage split, pair aggregates, monitor stats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.hedge import HedgeGroup, client_order_id
from core.models import Fill, GroupState, Order, OrderPurpose, OrderState, Side, Venue
from core.pnl import PairStats, group_pnl, percentile
from tests.execution_support import BY_VENUE, make_group, make_intent

NOW = 1_732_150_000_000


def _order(group: HedgeGroup, venue: Venue, side: Side, qty: str, price: str, touch: str, fee: str,
           leg: int) -> Order:
    inst = BY_VENUE[venue]
    order = Order(client_order_id(group.group_id, leg, 0), group.group_id, venue, inst.symbol, side,
                  Decimal(qty), Decimal(price), OrderPurpose.ENTRY, NOW, state=OrderState.FILLED,
                  touch_price=Decimal(touch))
    fill = Fill(venue, f"t{leg}", order.client_order_id, Decimal(qty), Decimal(price), Decimal(fee), "USDT", NOW)
    order.fills.append(fill)
    order.filled_qty = fill.qty
    order.notional = fill.qty * fill.price
    order.fees = fill.fee
    group.orders.append(order)
    return order


def _hedged() -> HedgeGroup:
    group = make_group()  # intent: buy mt5 at 60000, sell binance at 60100
    _order(group, "mt5", "buy", "0.1", "60012", "60006", "0", 0)
    _order(group, "binance", "sell", "0.1", "60088", "60094", "3", 1)
    group.state = GroupState.HEDGED
    return group


def test_group_pnl() -> None:
    pnl = group_pnl(_hedged())
    assert pnl.realized_pnl == Decimal("0.1") * (60088 - 60012) - 3
    assert pnl.fees == {"mt5": Decimal(0), "binance": Decimal(3)}
    assert pnl.realized_edge_bps == pytest.approx((60088 - 60012 - 30) / 60012 * 10_000)
    assert pnl.expected_edge_bps == make_group().intent.expected_edge_bps
    # Latency: buy touch 6 above the intent, sell touch 6 below; impact: 6 more each.
    assert pnl.latency_slippage_bps == pytest.approx((6 / 60000 + 6 / 60100) / 2 * 10_000)
    assert pnl.impact_slippage_bps == pytest.approx((6 / 60006 + 6 / 60094) / 2 * 10_000)
    assert pnl.latency_slippage_bps is not None and pnl.impact_slippage_bps is not None
    assert pnl.slippage_bps == pytest.approx(pnl.latency_slippage_bps + pnl.impact_slippage_bps)


def test_group_pnl_without_touch_or_fills() -> None:
    group = make_group()
    pnl = group_pnl(group)
    assert pnl.realized_pnl == 0 and pnl.realized_edge_bps is None
    assert pnl.latency_slippage_bps is None and pnl.slippage_bps is None


def test_pair_stats() -> None:
    stats = PairStats(window=4)
    stats.record_group(group_pnl(_hedged()))
    broken = make_group(group_id="gtest002")
    _order(broken, "mt5", "buy", "0.1", "60000", "60000", "0", 0)
    broken.state = GroupState.FAILED
    stats.record_group(group_pnl(broken))
    rejected = make_group(group_id="gtest003")
    rejected.state = GroupState.REJECTED
    stats.record_group(group_pnl(rejected))
    for edge, intent in [(1.0, False), (2.0, False), (9.0, True), (3.0, False), (10.0, True)]:
        stats.record_decision("BTC", edge, intent=intent)
    s = stats.get("BTC")
    assert s is not None
    assert s.groups == 2 and s.hits == 1 and s.hit_rate == 0.5
    assert s.total_pnl == group_pnl(_hedged()).realized_pnl + group_pnl(broken).realized_pnl
    # The broken group traded at its touch and at its intent's price: 0 bps; the mean over
    # the two groups with fills is half the hedged group's slippage.
    hedged_slippage = group_pnl(_hedged()).slippage_bps
    assert hedged_slippage is not None and hedged_slippage > 0
    assert group_pnl(broken).slippage_bps == 0.0
    assert s.mean_slippage_bps == pytest.approx(hedged_slippage / 2)
    assert s.trigger_rate == pytest.approx(2 / 5)
    edges = s.edge_percentiles()  # window: 2, 9, 3, 10
    assert edges is not None
    assert edges["p50"] == pytest.approx(6.0)
    assert edges["p75"] == pytest.approx(9.25)
    assert edges["p90"] == pytest.approx(9.7)
    assert s.as_dict()["groups"] == 2
    assert "BTC" in stats.snapshot()


def test_percentile_edges() -> None:
    assert percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        PairStats(window=0)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_percentiles_are_ordered_and_bounded(values: list[float]) -> None:
    p50, p75, p90 = (percentile(values, q) for q in (50, 75, 90))
    assert min(values) <= p50 <= p75 <= p90 <= max(values)


# -- a group's PnL: its hedged quantity, never an open residual's notional -------------------------
def _leg(group: HedgeGroup, venue: Venue, side: Side, fills: list[tuple[str, str]], fee: str,
         purpose: OrderPurpose = OrderPurpose.ENTRY) -> Order:
    """An order of `group` with fills [(qty, price)] in the venue's units."""
    inst = BY_VENUE[venue]
    leg = len(group.orders)
    order = Order(client_order_id(group.group_id, leg, 0), group.group_id, venue, inst.symbol, side,
                  sum((Decimal(q) for q, _ in fills), Decimal(0)), Decimal(fills[0][1]), purpose, NOW,
                  state=OrderState.FILLED)
    for i, (qty, price) in enumerate(fills):
        f = Fill(venue, f"t{leg}-{i}", order.client_order_id, Decimal(qty), Decimal(price),
                 Decimal(fee) if i == 0 else Decimal(0), "USDT", NOW)
        order.fills.append(f)
        order.filled_qty += f.qty
        order.notional += f.qty * f.price
        order.fees += f.fee
    group.orders.append(order)
    return order


def test_a_failed_group_books_only_what_it_hedged() -> None:
    """The issue's case: a leg filled ten times its volume left the group `failed` with the
    oversold position's proceeds booked as +tens of thousands "realized"."""
    group = make_group()  # buy 0.1 on mt5, sell 0.1 on binance
    _leg(group, "mt5", "buy", [("0.1", "60000")], "0")
    _leg(group, "binance", "sell", [("1.0", "60100")], "30.05")  # 10x
    group.state = GroupState.FAILED
    assert group.cash_flow() == Decimal("60100") - Decimal("6000")  # +54,100: the old "realized" + fees
    assert group.residual() == Decimal("-0.9") and group.residual_cost() == Decimal("-0.9") * 60100
    assert group.realized_pnl == Decimal("0.1") * (60100 - 60000) - Decimal("30.05")
    # The open 0.9 short is valued at market: a rise to 60,500 costs it 360.
    assert group.unrealized(Decimal(60500)) == Decimal("-0.9") * (60500 - 60100)
    assert group_pnl(group).realized_pnl == group.realized_pnl


def test_a_repaired_or_hedged_group_is_its_cash_flow_after_fees() -> None:
    group = make_group()
    _leg(group, "mt5", "buy", [("0.06", "60000"), ("0.04", "60010")], "0")
    _leg(group, "binance", "sell", [("0.04", "60090")], "1.2", OrderPurpose.ENTRY)
    _leg(group, "binance", "sell", [("0.06", "60050")], "1.8", OrderPurpose.RETRY_HEDGE)
    assert group.residual() == 0 and group.residual_cost() == 0
    assert group.realized_pnl == group.cash_flow() - 3
    assert group.unrealized(Decimal(1)) == 0


@settings(max_examples=300, deadline=None)
@given(
    venues=st.permutations(["mt5", "binance", "okx"]),
    legs=st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from(["buy", "sell"]),
                  st.lists(st.tuples(st.integers(1, 300), st.integers(-200, 200)), min_size=1, max_size=3),
                  st.integers(0, 500)),
        min_size=1, max_size=6),
    mark=st.integers(-500, 500),
)
def test_group_realized_plus_its_residual_at_market_is_its_cash(
    venues: list[Venue], legs: list[tuple[int, Side, list[tuple[int, int]], int]], mark: int,
) -> None:
    """Entry, retry and unwind legs, partial or overfilled: realized + the residual at a mark is
    every fill's cash flow minus fees plus the residual at that mark, and realized alone is the
    matched quantity's spread after fees (the residual's notional is never in it)."""
    group = make_group(make_intent(buy=venues[0], sell=venues[1]))
    bought = sold = buy_cash = sell_cash = fees = Decimal(0)
    for which, side, fills, fee in legs:
        venue = venues[which]
        inst = BY_VENUE[venue]
        priced = [(str(inst.lot_step * lots), str(Decimal(60_000 + bps * 3) / inst.price_scale)) for lots, bps in fills]
        _leg(group, venue, side, priced, str(Decimal(fee) / 100))
        fees += Decimal(fee) / 100
        for qty, price in priced:
            base, money = Decimal(qty) * inst.qty_per_unit, Decimal(qty) * inst.qty_per_unit * Decimal(price)
            if side == "buy":
                bought, buy_cash = bought + base, buy_cash + money
            else:
                sold, sell_cash = sold + base, sell_cash + money
    at = Decimal(60_000 + mark)
    residual = bought - sold
    assert group.residual() == residual
    total = group.realized_pnl + group.unrealized(at)
    assert abs(total - (sell_cash - buy_cash - fees + residual * at)) < Decimal("1e-9")
    matched = min(bought, sold)
    spread = (sell_cash / sold if sold else 0) - (buy_cash / bought if bought else 0)
    assert abs(group.realized_pnl - (matched * spread - fees)) < Decimal("1e-9")
