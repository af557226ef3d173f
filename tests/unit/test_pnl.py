"""PnL: realized PnL, fees per venue, realized edge, slippage split, pair aggregates, monitor stats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.hedge import HedgeGroup, client_order_id
from core.models import Fill, GroupState, Order, OrderPurpose, OrderState, Side, Venue
from core.pnl import PairStats, group_pnl, percentile
from tests.execution_support import BY_VENUE, make_group

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
