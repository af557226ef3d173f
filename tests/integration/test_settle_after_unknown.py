"""A group that closed with an order still `unknown` settles when the venue answers (issue 19).

A group's execution can end with one order the venue never answered about (`unknown`): the
group closes, and the order is asked about again in the background. Only a settled group
(every order final) nets against the groups holding its books the other way, which is what
bounds the running attribution by the net positions. Before, nothing told the netting when
that order became final, so such a group was remembered until a flatten. Now the group is
handed again to `after_group_closed` once the answer is in (expired, nothing filled); a late
fill found by that answer halts instead, and the group is not handed on.
"""

from __future__ import annotations

from decimal import Decimal

from core.clock import ManualClock
from core.config import RiskConfig
from core.hedge import HedgeGroup
from core.models import Order, OrderState, TradingState, Venue
from core.orders import is_terminal
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.orchestrator import HedgeOrchestrator
from tests.execution_support import INSTRUMENTS, ScriptedGateway, make_intent


class SilentVenue(ScriptedGateway):
    """A scripted venue that answers `unknown` to its first `silent` queries and cancels."""

    def __init__(self, venue: Venue, script: list[str], clock: ManualClock, *, silent: int) -> None:
        super().__init__(venue, script, clock)
        self.silent = silent

    def _silent(self, order: Order, calls: list[str]) -> OrderUpdate | None:
        if self.silent <= 0:
            return None
        self.silent -= 1
        calls.append(order.client_order_id)
        return OrderUpdate(order.client_order_id, OrderState.UNKNOWN, reason="no answer")

    async def query(self, order: Order) -> OrderUpdate:
        return self._silent(order, self.queries) or await super().query(order)

    async def cancel(self, order: Order) -> OrderUpdate:
        return self._silent(order, self.cancels) or await super().cancel(order)


def _orchestrator(binance_script: list[str], clock: ManualClock, *, recent_shown: int = 50,
                  recent_max_age_ms: int = 300_000) -> tuple[HedgeOrchestrator, SilentVenue, RiskGate]:
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    binance = SilentVenue("binance", binance_script, clock, silent=5)
    gateways: dict[Venue, ExecutionGateway] = {"mt5": ScriptedGateway("mt5", ["fill", "fill", "fill"], clock),
                                               "binance": binance}
    orch = HedgeOrchestrator(gateways, INSTRUMENTS, gate, clock, EventLog(), poll_interval_s=0.0, query_attempts=3,
                             max_retries=0, recent_shown=recent_shown, recent_max_age_ms=recent_max_age_ms)
    return orch, binance, gate


async def test_a_group_closed_with_an_unknown_order_is_settled_when_it_expires_unfilled() -> None:
    clock = ManualClock()
    orch, binance, gate = _orchestrator(["timeout_expired"], clock)
    handed: list[tuple[str, bool]] = []
    orch.after_group_closed(lambda g: handed.append((g.group_id, all(is_terminal(o.state) for o in g.orders))))
    group: HedgeGroup = orch.submit(make_intent())
    await orch.drain()  # the group's flow, then the background question that finds the answer
    assert not orch.open and group in orch.closed
    # Once at its close (an order still pending: not settled then), once when the answer came.
    assert handed == [(group.group_id, False), (group.group_id, True)], (handed, [o.state for o in group.orders])
    assert binance.silent == 0 and gate.state is TradingState.ACTIVE


async def test_a_late_fill_halts_and_the_group_is_not_handed_on() -> None:
    clock = ManualClock()
    orch, _, gate = _orchestrator(["timeout"], clock)  # the answer, when it comes: filled
    handed: list[str] = []
    orch.after_group_closed(lambda g: handed.append(g.group_id))
    group = orch.submit(make_intent())
    await orch.drain()
    assert handed == [group.group_id]  # at its close only
    assert gate.state is TradingState.HALTED


async def test_a_pending_group_outlives_the_age_bound_and_only_its_pending_order_settles_it() -> None:
    """A closed group with an order still pending is not forgotten by age (its answer must find
    it); once the answer settles it, a later re-check of that now final order (a redundant late
    fill notice) hands it on no more: a close by hand may be working on it by then."""
    clock = ManualClock()
    orch, binance, _ = _orchestrator(["timeout_expired", "fill"], clock, recent_shown=1, recent_max_age_ms=1000)
    binance.silent = 10  # neither the flow nor the background question gets an answer
    handed: list[str] = []
    orch.after_group_closed(lambda g: handed.append(g.group_id))
    first = orch.submit(make_intent())
    await orch.drain()
    [pending] = [o for o in first.orders if not is_terminal(o.state)]
    clock.advance(ms=60_000)
    binance.silent = 0
    second = orch.submit(make_intent(now_ms=clock.time_ms()))
    await orch.drain()
    # A minute past the age bound and beyond the one group shown, but still pending: kept.
    assert [g.group_id for g in orch.closed] == [second.group_id, first.group_id]
    work = orch.late_fill(first.group_id, pending.client_order_id)
    assert work is not None
    await work
    assert pending.state is OrderState.EXPIRED
    assert handed == [first.group_id, second.group_id, first.group_id]
    again = orch.late_fill(first.group_id, pending.client_order_id)
    assert again is not None
    await again
    assert handed == [first.group_id, second.group_id, first.group_id]
