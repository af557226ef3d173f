"""A venue reports a new deal for an order while the engine is already asking about it.

An order of a closed group is being asked about again (a late fill, or an `unknown` leg at its
group's close). If the venue reports another deal after composing the answer in flight, that
answer misses it: the engine must ask once more, book the deal, and halt (the exposure is
unhedged). Before, the notice was dropped ("its flow applies it") and the deal stayed out of
the ledger until the next restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

from core.clock import ManualClock
from core.config import RiskConfig
from core.models import Fill, Order, OrderPurpose, OrderState, TradingState, Venue
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.orchestrator import HedgeOrchestrator
from tests.execution_support import BINANCE, INSTRUMENTS


class SlowAnswerVenue:
    """Answers queries with the deals it has when asked; the first answer is held until released."""

    def __init__(self) -> None:
        self.deals: list[Fill] = []
        self.queries = 0
        self.release = asyncio.Event()

    @property
    def venue(self) -> Venue:
        return "binance"

    async def place(self, order: Order) -> OrderUpdate:
        raise AssertionError("nothing is placed here")

    async def cancel(self, order: Order) -> OrderUpdate:
        return OrderUpdate(order.client_order_id, OrderState.CANCELLED, fills=list(self.deals))

    async def query(self, order: Order) -> OrderUpdate:
        self.queries += 1
        answer = OrderUpdate(order.client_order_id, OrderState.CANCELLED, fills=list(self.deals))
        if self.queries == 1:
            await self.release.wait()  # composed before the second deal: it is not in this one
        return answer


def _deal(n: int, order: Order) -> Fill:
    return Fill("binance", f"t{n}", order.client_order_id, Decimal("0.05"), Decimal(60100), Decimal("0.003"),
                "USDT", 1_732_150_000_000)


async def _until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached: {what}")


async def test_a_deal_reported_while_asking_is_asked_about_again_and_booked() -> None:
    clock = ManualClock()
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    venue = SlowAnswerVenue()
    gateways: dict[Venue, ExecutionGateway] = {"binance": venue}
    orch = HedgeOrchestrator(gateways, INSTRUMENTS, gate, clock, EventLog(), poll_interval_s=0.0)
    order = Order("qagclosed1l1a0", "gclosed1", "binance", BINANCE.symbol, "sell", Decimal("0.1"), Decimal(60100),
                  OrderPurpose.ENTRY, clock.time_ms(), state=OrderState.CANCELLED)
    orch.adopt_orphan(order)
    venue.deals.append(_deal(1, order))

    asking = asyncio.ensure_future(orch.resolve_orphan(order))
    await _until(lambda: venue.queries == 1, "the first question is in flight")
    venue.deals.append(_deal(2, order))  # the venue's second deal, after that answer was composed
    assert orch.late_fill(order.group_id, order.client_order_id) is None  # the flow in progress takes it
    venue.release.set()
    await asyncio.wait_for(asking, 5)

    assert venue.queries == 2  # asked once more because of the notice
    assert order.filled_qty == Decimal("0.10")  # both deals booked, once each
    assert [f.venue_trade_id for f in order.fills] == ["t1", "t2"]
    assert gate.state is TradingState.HALTED and "late fill" in gate.reason
