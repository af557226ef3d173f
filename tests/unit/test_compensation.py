"""CompensationEngine: residual, retry_hedge -> unwind -> escalate, slippage bound, dust."""

from __future__ import annotations

from decimal import Decimal

from core.compensation import CompensationEngine, DustBook, next_attempt
from core.hedge import HedgeGroup, client_order_id
from core.models import CompensationKind, Fill, GroupState, Order, OrderPurpose, OrderState, Side, Venue
from tests.execution_support import BY_VENUE, make_group, make_intent

NOW = 1_732_150_000_000
TOUCH: dict[Venue, tuple[float, float] | None] = {"mt5": (59990.0, 60000.0), "binance": (60100.0, 60110.0)}


def _filled(group: HedgeGroup, venue: Venue, side: Side, qty: str, *, leg: int, attempt: int = 0,
            purpose: OrderPurpose = OrderPurpose.ENTRY) -> Order:
    inst = BY_VENUE[venue]
    order = Order(client_order_id(group.group_id, leg, attempt), group.group_id, venue, inst.symbol, side,
                  Decimal(qty), Decimal(60000), purpose, NOW, state=OrderState.FILLED)
    if Decimal(qty) > 0:
        order.fills.append(Fill(venue, f"{order.client_order_id}t", order.client_order_id, Decimal(qty),
                                Decimal(60000), Decimal(0), "USDT", NOW))
        order.filled_qty = Decimal(qty)
        order.notional = Decimal(qty) * 60000
    group.orders.append(order)
    return order


def _broken(buy: str = "0.1", sell: str = "0") -> HedgeGroup:
    group = make_group()
    group.state = GroupState.COMPENSATING
    _filled(group, "mt5", "buy", buy, leg=0)
    _filled(group, "binance", "sell", sell, leg=1)
    return group


def test_residual_in_base_units_across_venue_units() -> None:
    group = make_group(make_intent(buy="okx", sell="binance"))
    _filled(group, "okx", "buy", "10", leg=0)  # 10 contracts of 0.01 = 0.1 base
    _filled(group, "binance", "sell", "0.04", leg=1)
    assert CompensationEngine().residual(group) == Decimal("0.06")


def test_retry_then_unwind_then_escalate() -> None:
    engine = CompensationEngine(max_slippage_bps=15, max_retries=2)
    group = _broken()
    plans = []
    for _ in range(4):
        plan = engine.next_step(group, TOUCH, NOW)
        plans.append(plan)
        if plan.order is not None:
            group.orders.append(plan.order)  # sent, nothing filled
            plan.order.state = OrderState.REJECTED
        if plan.action is not None:
            group.actions.append(plan.action)
    kinds = [p.kind for p in plans]
    assert kinds == [CompensationKind.RETRY_HEDGE, CompensationKind.RETRY_HEDGE,
                     CompensationKind.UNWIND, CompensationKind.ESCALATE]
    r1, r2, unwind = (p.order for p in plans[:3])
    assert r1 is not None and r2 is not None and unwind is not None
    # Retries on the unfilled venue, each attempt a new client id.
    assert (r1.venue, r1.side, r1.purpose) == ("binance", "sell", OrderPurpose.RETRY_HEDGE)
    assert r1.client_order_id.endswith("l1a1") and r2.client_order_id.endswith("l1a2")
    assert r1.qty == Decimal("0.100")
    # Marketable limit within 15 bps of the bid 60100.
    assert Decimal(60100) * (1 - Decimal("0.0015")) <= r1.price <= Decimal(60100)
    # Unwind on the venue that filled: sell the long on mt5, within 15 bps of its bid.
    assert (unwind.venue, unwind.side, unwind.purpose) == ("mt5", "sell", OrderPurpose.UNWIND)
    assert Decimal(59990) * (1 - Decimal("0.0015")) <= unwind.price <= Decimal(59990)
    assert plans[3].settled_as == "failed"
    assert plans[3].action is not None and plans[3].action.outcome == "halted"
    assert len({p.action.action_id for p in plans if p.action is not None}) == 4


def test_short_residual_buys_on_buy_venue() -> None:
    engine = CompensationEngine(max_retries=1)
    group = _broken(buy="0", sell="0.1")
    plan = engine.next_step(group, TOUCH, NOW)
    assert plan.order is not None
    assert (plan.order.venue, plan.order.side) == ("mt5", "buy")
    assert Decimal(60000) <= plan.order.price <= Decimal(60000) * Decimal("1.0015")


def test_no_touch_uses_entry_price() -> None:
    engine = CompensationEngine()
    plan = engine.next_step(_broken(), {}, NOW)
    assert plan.order is not None
    # The retry sells on binance; with no quote, the reference is the intent's sell limit
    # 60100: 60100 * (1 - 15 bps) = 60009.85, up to the 0.1 tick (never past the bound).
    assert (plan.order.venue, plan.order.side) == ("binance", "sell")
    assert plan.order.price == Decimal("60009.9")


def test_repaired_and_unwound_settlement() -> None:
    engine = CompensationEngine()
    group = _broken()
    _filled(group, "binance", "sell", "0.1", leg=1, attempt=1, purpose=OrderPurpose.RETRY_HEDGE)
    assert engine.next_step(group, TOUCH, NOW).settled_as == "repaired"
    group2 = _broken()
    _filled(group2, "mt5", "sell", "0.1", leg=2, attempt=1, purpose=OrderPurpose.UNWIND)
    assert engine.next_step(group2, TOUCH, NOW).settled_as == "unwound"


def test_zero_retries_goes_straight_to_unwind() -> None:
    plan = CompensationEngine(max_retries=0).next_step(_broken(), TOUCH, NOW)
    assert plan.kind is CompensationKind.UNWIND


def test_dust_is_booked_and_folded_into_next_action() -> None:
    engine = CompensationEngine()
    # Group 1: long 0.1 on mt5, sold 0.095 on binance: residual 0.005 < one step (0.01): dust.
    g1 = _broken(buy="0.1", sell="0.095")
    plan = engine.next_step(g1, TOUCH, NOW)
    assert plan.kind is None and plan.residual == Decimal("0.005")
    assert engine.dust.get("BTC") == Decimal("0.005")
    # Group 2: long residual 0.05; the retry sells 0.055 and takes the dust over.
    g2 = make_group(group_id="gtest002")
    _filled(g2, "mt5", "buy", "0.1", leg=0)
    _filled(g2, "binance", "sell", "0.05", leg=1)
    plan2 = engine.next_step(g2, TOUCH, NOW)
    assert plan2.order is not None and plan2.order.qty == Decimal("0.055")
    assert plan2.folded_dust == Decimal("0.005") and g2.dust_folded == Decimal("0.005")
    assert engine.dust.get("BTC") == 0
    g2.orders.append(plan2.order)
    plan2.order.filled_qty = plan2.order.qty
    # Group 2 answers for its own residual: zero once the fill came in.
    assert engine.residual(g2) == 0
    assert engine.next_step(g2, TOUCH, NOW).settled_as == "repaired"
    # And across both groups, the asset is flat.
    assert g1.residual() + g2.residual() == 0


def test_dust_book() -> None:
    book = DustBook()
    book.add("BTC", Decimal("0.001"))
    book.add("BTC", Decimal("-0.001"))
    assert book.items() == {}
    book.add("ETH", Decimal("0.2"))
    assert book.take("ETH") == Decimal("0.2") and book.get("ETH") == 0


def test_next_attempt() -> None:
    group = _broken()
    assert next_attempt(group, 1) == 1
    assert next_attempt(group, 2) == 1
    _filled(group, "mt5", "sell", "0", leg=2, attempt=11, purpose=OrderPurpose.UNWIND)
    assert next_attempt(group, 2) == 12


def test_recovered_group_keeps_its_attempts() -> None:
    group = _broken()
    _filled(group, "binance", "sell", "0", leg=1, attempt=1, purpose=OrderPurpose.RETRY_HEDGE)
    _filled(group, "binance", "sell", "0", leg=1, attempt=2, purpose=OrderPurpose.RETRY_HEDGE)
    plan = CompensationEngine(max_retries=2).next_step(group, TOUCH, NOW)
    assert plan.kind is CompensationKind.UNWIND
    assert plan.order is not None and plan.order.client_order_id.endswith("l2a1")
