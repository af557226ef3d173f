"""InFlightOrderTracker: order state machine transitions only, fill aggregation, timeouts, late fills.

The allowed transitions are those of docs/architecture.md, State machines.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from core.models import Fill, Order, OrderPurpose, OrderState
from core.orders import can_transition
from core.ports import OrderUpdate
from core.tracker import InFlightOrderTracker, Refusal

S = OrderState

ALLOWED = {
    (S.NEW, S.SUBMITTED), (S.NEW, S.REJECTED),
    *((a, b) for a in (S.SUBMITTED, S.ACKED)
      for b in (S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.REJECTED, S.EXPIRED)),
    (S.SUBMITTED, S.ACKED),
    *((S.PARTIALLY_FILLED, b) for b in (S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.EXPIRED, S.CANCELLED)),
    *((S.CANCEL_PENDING, b) for b in (S.CANCELLED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED)),
    *((a, S.UNKNOWN) for a in (S.NEW, S.SUBMITTED, S.ACKED, S.PARTIALLY_FILLED, S.CANCEL_PENDING)),
    *((S.UNKNOWN, b) for b in S if b not in (S.NEW, S.UNKNOWN)),
}


def _order(coid: str = "qag1l0a0", state: S = S.NEW, qty: str = "1") -> Order:
    return Order(coid, "g1", "binance", "BTCUSDT", "buy", Decimal(qty), Decimal(100),
                 OrderPurpose.ENTRY, 0, state=state)


def _state(order: Order) -> S:
    """The order's state now (a call, so mypy does not narrow it across updates)."""
    return order.state


def _fill(tid: str, qty: str, coid: str = "qag1l0a0") -> Fill:
    return Fill("binance", tid, coid, Decimal(qty), Decimal(100), Decimal("0.01"), "USDT", 0)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_transition_table_is_design_4(current: S, new: S) -> None:
    tracker = InFlightOrderTracker(ManualClock())
    order = _order(state=current)
    refusal = tracker.transition(order, new)
    allowed = (current, new) in ALLOWED
    assert can_transition(current, new) == allowed
    if allowed:
        assert refusal is None and order.state is new
    else:
        assert refusal == Refusal(order.client_order_id, current, new)
        assert order.state is current
        assert str(current) in str(refusal) and str(new) in str(refusal)


def test_partial_fills_aggregate_and_dedupe() -> None:
    tracker = InFlightOrderTracker(ManualClock())
    order = _order()
    tracker.track(order)
    tracker.sent(order)
    a = tracker.apply(order, OrderUpdate(order.client_order_id, S.PARTIALLY_FILLED, "v1", [_fill("t1", "0.4")]))
    assert a.new_fills and _state(order) is S.PARTIALLY_FILLED and order.venue_order_id == "v1"
    # The venue repeats t1 with a new t2: only t2 counts.
    b = tracker.apply(order, OrderUpdate(order.client_order_id, S.FILLED, "v1",
                                         [_fill("t1", "0.4"), _fill("t2", "0.6")]))
    assert [f.venue_trade_id for f in b.new_fills] == ["t2"]
    assert order.filled_qty == Decimal("1.0") and _state(order) is S.FILLED
    assert order.avg_price == Decimal(100)
    c = tracker.apply(order, OrderUpdate(order.client_order_id, S.FILLED, "v1", [_fill("t2", "0.6")]))
    assert not c.new_fills and not c.changed


def test_acked_with_fills_is_partially_filled() -> None:
    tracker = InFlightOrderTracker(ManualClock())
    order = _order()
    tracker.sent(order)
    tracker.apply(order, OrderUpdate(order.client_order_id, S.ACKED, fills=[_fill("t1", "0.5")]))
    assert order.state is S.PARTIALLY_FILLED


def test_timeout_moves_to_unknown_once_per_deadline() -> None:
    clock = ManualClock()
    tracker = InFlightOrderTracker(clock, order_timeout_ms=3000)
    order = _order()
    tracker.track(order)
    tracker.sent(order)
    clock.advance(ms=2999)
    assert tracker.check_timeouts() == []
    clock.advance(ms=1)
    assert tracker.check_timeouts() == [order]
    assert _state(order) is S.UNKNOWN
    assert tracker.check_timeouts() == []  # the query that follows gets its own deadline
    # The query resolves it to whatever the venue reports.
    tracker.apply(order, OrderUpdate(order.client_order_id, S.FILLED, fills=[_fill("t1", "1")]))
    assert _state(order) is S.FILLED
    clock.advance(ms=10_000)
    assert tracker.check_timeouts() == []
    assert tracker.in_flight == []


def test_late_fill_after_cancel_is_applied_without_revival() -> None:
    tracker = InFlightOrderTracker(ManualClock())
    order = _order()
    tracker.sent(order)
    tracker.apply(order, OrderUpdate(order.client_order_id, S.EXPIRED))
    late = tracker.apply(order, OrderUpdate(order.client_order_id, S.FILLED, fills=[_fill("t9", "1")]))
    assert late.late and late.new_fills
    assert order.state is S.EXPIRED and order.filled_qty == 1


def test_refused_update_is_reported() -> None:
    tracker = InFlightOrderTracker(ManualClock())
    order = _order()
    tracker.sent(order)
    tracker.apply(order, OrderUpdate(order.client_order_id, S.REJECTED))
    result = tracker.apply(order, OrderUpdate(order.client_order_id, S.ACKED))
    assert result.refused == Refusal(order.client_order_id, S.REJECTED, S.ACKED)
    assert tracker.refusals[-1] == result.refused


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="order_timeout_ms"):
        InFlightOrderTracker(ManualClock(), order_timeout_ms=0)


@given(st.lists(st.tuples(st.sampled_from(list(S)), st.integers(0, 3)), max_size=20))
def test_random_updates_keep_invariants(updates: list[tuple[S, int]]) -> None:
    """Fills never double count; a terminal order never moves again; every move is one the
    DESIGN 4 table (ALLOWED, written out above, not read from the code) allows, and every
    refused update leaves the order where it was."""
    tracker = InFlightOrderTracker(ManualClock())
    order = _order(qty="100")
    tracker.sent(order)
    seen: set[str] = set()
    for state, n in updates:
        fills = [_fill(f"t{n}-{i}", "1") for i in range(n)]
        seen |= {f.venue_trade_id for f in fills}
        before = _state(order)
        result = tracker.apply(order, OrderUpdate(order.client_order_id, state, fills=fills))
        after = _state(order)
        if before in (S.FILLED, S.REJECTED, S.CANCELLED, S.EXPIRED):
            assert after is before
        if after is not before:
            assert (before, after) in ALLOWED, (before, after)
        if result.refused is not None:
            assert after is before and result.refused.current is before
    assert order.filled_qty == len(seen)
