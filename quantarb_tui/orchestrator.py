"""HedgeOrchestrator (first version): intent -> HedgeGroup -> two leg orders -> terminal state.

It creates the group and both orders with deterministic client order ids, sends the legs
through the venue gateways by the configured leg policy, applies the venues' answers with
the order state machine, and settles the group: hedged, rejected, or broken -> unwind of
the residual on the venue that filled (unwound), or failed with the RiskGate halted when
even that does not close it. Retries, partial fills, timeouts and the ledger come with the
execution-engine and ledger work; the shapes here are the ones they extend.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal

from core.clock import Clock
from core.hedge import HedgeGroup, client_order_id, new_group_id
from core.instruments import Instrument
from core.models import (
    CompensationAction,
    CompensationKind,
    ExecutionIntent,
    ExecutionLeg,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    Side,
    Venue,
)
from core.orders import can_transition
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from quantarb_tui.events import EngineEvent, EventLog, Level

GroupListener = Callable[[HedgeGroup], None]


class HedgeOrchestrator:
    def __init__(
        self,
        gateways: Mapping[Venue, ExecutionGateway],
        instruments: Mapping[tuple[Venue, str], Instrument],
        gate: RiskGate,
        clock: Clock,
        events: EventLog,
        *,
        leg_policy: str = "concurrent",
        on_closed: GroupListener | None = None,
        recent: int = 200,
    ) -> None:
        self._gateways = gateways
        self._instruments = instruments
        self._gate = gate
        self._clock = clock
        self._events = events
        self._leg_policy = leg_policy
        self._on_closed = on_closed
        self._seq = itertools.count(1)
        self._pending: deque[HedgeGroup] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self.open: dict[str, HedgeGroup] = {}
        self.closed: deque[HedgeGroup] = deque(maxlen=recent)
        self.closed_by_state: dict[str, int] = {}
        self.realized_pnl = Decimal(0)

    # -- intake ----------------------------------------------------------------------
    def submit(self, intent: ExecutionIntent) -> HedgeGroup:
        """Create the group for an intent (synchronously: the pipeline's hot path calls this)."""
        now = self._clock.time_ms()
        group_id = new_group_id(now, next(self._seq))
        instruments = {
            leg.venue: self._instruments[(leg.venue, leg.symbol)] for leg in intent.legs
        }
        group = HedgeGroup(group_id=group_id, intent=intent, instruments=instruments, opened_ms=now)
        self.open[group_id] = group
        self._pending.append(group)
        self._wakeup.set()
        self._emit(
            "intent",
            f"intent {group_id} {intent.pair} buy {intent.buy.venue} {intent.buy.quantity}@"
            f"{intent.buy.limit_price} sell {intent.sell.venue} {intent.sell.quantity}@"
            f"{intent.sell.limit_price} edge {intent.expected_edge_bps:.1f}bps",
            group,
        )
        return group

    async def run(self) -> None:
        """Start a task per submitted group until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = self._pending.popleft()
                task = asyncio.create_task(self.execute(group), name=f"group-{group.group_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Run every pending group to its end, in order (deterministic tests and snapshots)."""
        while self._pending:
            await self.execute(self._pending.popleft())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Let groups in flight reach a terminal state, then cancel what is left."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # -- one group -------------------------------------------------------------------
    async def execute(self, group: HedgeGroup) -> None:
        try:
            await self._execute(group)
        except Exception as exc:  # an adapter bug must not leave the pair blocked forever
            self._emit("error", f"group {group.group_id} failed: {exc!r}", group, level="error")
            group.state = GroupState.FAILED
            group.closed_ms = self._clock.time_ms()
            self._gate.kill(f"execution error in {group.group_id}")
            self._close(group)

    async def _execute(self, group: HedgeGroup) -> None:
        intent = group.intent
        buy = self._order(group, intent.buy, leg=0, attempt=0, purpose=OrderPurpose.ENTRY)
        sell = self._order(group, intent.sell, leg=1, attempt=0, purpose=OrderPurpose.ENTRY)
        self._set_group(group, GroupState.WORKING)
        if self._leg_policy == "concurrent":
            await asyncio.gather(self._send(buy), self._send(sell))
        else:
            mt5_first = self._leg_policy == "mt5_first"
            first, second = (buy, sell) if (buy.venue == "mt5") == mt5_first else (sell, buy)
            await self._send(first)
            if first.filled_qty > 0:
                await self._send(second)
            else:
                self._apply(second, OrderUpdate(second.client_order_id, OrderState.REJECTED,
                                                reason="first leg did not fill"))
        await self._settle(group)

    async def _settle(self, group: HedgeGroup) -> None:
        now = self._clock.time_ms()
        bought = group.entry_filled("buy")
        sold = group.entry_filled("sell")
        if bought == 0 and sold == 0:
            self._set_group(group, GroupState.REJECTED)
        elif abs(bought - sold) < group.step:
            self._set_group(group, GroupState.HEDGED)
        else:
            self._set_group(group, GroupState.BROKEN)
            await self._unwind(group)
        group.closed_ms = group.closed_ms or now
        self._close(group)

    async def _unwind(self, group: HedgeGroup) -> None:
        """Close the residual on the venue that filled more (the retry path comes later)."""
        self._set_group(group, GroupState.COMPENSATING)
        for attempt, venue in enumerate(group.instruments, start=1):
            position = group.position(venue)
            if position == 0:
                continue
            inst = group.instruments[venue]
            side: Side = "sell" if position > 0 else "buy"
            qty = inst.to_venue_qty(abs(position))
            action = CompensationAction(
                action_id=f"{group.group_id}c{attempt}",
                group_id=group.group_id,
                kind=CompensationKind.UNWIND,
                reason=f"residual {position} on {venue}",
                created_ms=self._clock.time_ms(),
            )
            group.actions.append(action)
            if qty <= 0:
                action.outcome = "dust"
                continue
            entry = group.intent.buy if group.intent.buy.venue == venue else group.intent.sell
            # A marketable limit 20 bps through the entry price: bounded slippage.
            through = 1.002 if side == "buy" else 0.998
            spec = ExecutionLeg(
                venue=venue, symbol=inst.symbol, side=side, quantity=qty,
                limit_price=inst.limit_price(float(entry.limit_price) * through, side),
                base_qty=abs(position),
            )
            order = self._order(group, spec, leg=2, attempt=attempt, purpose=OrderPurpose.UNWIND)
            await self._send(order)
            action.outcome = "filled" if order.state is OrderState.FILLED else f"{order.state}"
        if abs(group.residual()) < group.step:
            self._set_group(group, GroupState.UNWOUND)
        else:
            self._set_group(group, GroupState.FAILED)
            group.actions.append(CompensationAction(
                action_id=f"{group.group_id}cx", group_id=group.group_id,
                kind=CompensationKind.ESCALATE, reason=f"residual {group.residual()} left",
                created_ms=self._clock.time_ms(), outcome="halted",
            ))
            self._gate.kill(f"group {group.group_id} failed with a residual")

    # -- orders ----------------------------------------------------------------------
    def _order(
        self, group: HedgeGroup, spec: ExecutionLeg, *, leg: int, attempt: int, purpose: OrderPurpose
    ) -> Order:
        order = Order(
            client_order_id=client_order_id(group.group_id, leg, attempt),
            group_id=group.group_id,
            venue=spec.venue,
            symbol=spec.symbol,
            side=spec.side,
            qty=spec.quantity,
            price=spec.limit_price,
            purpose=purpose,
            created_ms=self._clock.time_ms(),
        )
        group.orders.append(order)
        return order

    async def _send(self, order: Order) -> None:
        gateway = self._gateways[order.venue]
        self._transition(order, OrderState.SUBMITTED)
        try:
            update = await gateway.place(order)
        except Exception as exc:  # a lost answer is `unknown`, never `rejected`
            self._transition(order, OrderState.UNKNOWN)
            self._emit("error", f"order {order.client_order_id} unknown: {exc!r}", None, level="warn")
            update = await gateway.query(order)
        self._apply(order, update)

    def _apply(self, order: Order, update: OrderUpdate) -> None:
        if update.venue_order_id:
            order.venue_order_id = update.venue_order_id
        seen = {f.venue_trade_id for f in order.fills}
        for fill in update.fills:
            if fill.venue_trade_id in seen:
                continue  # fills are deduplicated by (venue, venue trade id)
            order.fills.append(fill)
            order.filled_qty += fill.qty
            order.notional += fill.qty * fill.price
            order.fees += fill.fee
        if update.state is not order.state:
            self._transition(order, update.state)
        order.reject_reason = update.reason

    def _transition(self, order: Order, new: OrderState) -> None:
        if not can_transition(order.state, new):
            self._emit(
                "refused",
                f"order {order.client_order_id}: refused transition {order.state} -> {new}",
                None,
                level="warn",
            )
            return
        order.state = new
        order.updated_ms = self._clock.time_ms()

    # -- group bookkeeping -----------------------------------------------------------
    def _set_group(self, group: HedgeGroup, state: GroupState) -> None:
        if group.transition(state, self._clock.time_ms()):
            level: Level = "warn" if state in (GroupState.BROKEN, GroupState.FAILED) else "info"
            self._emit("group", f"group {group.group_id} {group.pair} -> {state}", group, level=level)

    def _close(self, group: HedgeGroup) -> None:
        self.open.pop(group.group_id, None)
        self.closed.appendleft(group)
        self.closed_by_state[group.state] = self.closed_by_state.get(group.state, 0) + 1
        if group.state is not GroupState.REJECTED:
            self.realized_pnl += group.realized_pnl
        if self._on_closed is not None:
            self._on_closed(group)

    def _emit(self, kind: str, text: str, group: HedgeGroup | None, *, level: Level = "info") -> None:
        data: dict[str, object] = {}
        if group is not None:
            data = {"group_id": group.group_id, "pair": group.pair, "state": str(group.state)}
        self._events.emit(EngineEvent(self._clock.time_ms(), kind, text, level, data))
