"""HedgeOrchestrator (first version): intent -> HedgeGroup -> two leg orders -> terminal state.

It creates the group and both orders with deterministic client order ids, sends the legs
through the venue gateways by the configured leg policy, applies the venues' answers with
the order state machine, and settles the group: hedged, rejected, or broken -> unwind of
the residual on the venue that filled (unwound), or failed with the RiskGate halted when
even that does not close it. Retries, partial fills, timeouts and the ledger come with the
execution-engine work; the shapes here are the ones it extends.

With a ledger, every step is journaled: the order row with its client order id is
committed before the request leaves (write-ahead), fills are committed before the group
moves on, and groups recovered after a crash are resumed by asking the venues about their
unfinished orders by client order id (never by re-sending blindly).
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
from core.orders import can_transition, is_terminal
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from ledger.ledger import Ledger
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
        ledger: Ledger | None = None,
    ) -> None:
        self._gateways = gateways
        self._instruments = instruments
        self._gate = gate
        self._clock = clock
        self._events = events
        self._leg_policy = leg_policy
        self._on_closed = on_closed
        self.ledger = ledger
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
        if self.ledger is not None:
            self.ledger.group_opened(group)
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

    async def resume(self, group: HedgeGroup) -> None:
        """Finish a group recovered from the ledger after a restart.

        Each unfinished order is resolved by asking its venue by client order id; then the
        group settles as usual (hedged, rejected, or broken -> unwind). Nothing is re-sent.
        """
        self.open[group.group_id] = group
        self._emit("recover", f"resuming group {group.group_id} {group.pair} ({group.state})", group)
        try:
            for order in group.orders:
                if order.state in (OrderState.NEW,):
                    # Written ahead but maybe never sent: the venue will say.
                    self._transition(order, OrderState.UNKNOWN)
                if not is_terminal(order.state):
                    gateway = self._gateways[order.venue]
                    self._apply(order, await gateway.query(order))
                    if not is_terminal(order.state) and order.venue == "mt5":
                        # A command the EA may still execute: wait for its outcome. `place`
                        # is idempotent by client order id (it never sends a second command).
                        self._apply(order, await gateway.place(order))
                    await self._durable()
            if group.state is GroupState.PLANNED and group.orders:
                self._set_group(group, GroupState.WORKING)
            if group.state is GroupState.PLANNED:
                self._set_group(group, GroupState.REJECTED)
                self._close(group)
            elif group.state in (GroupState.BROKEN, GroupState.COMPENSATING):
                await self._unwind(group)
                self._close(group)
            else:
                await self._settle(group)
        except Exception as exc:
            self._emit("error", f"resuming {group.group_id} failed: {exc!r}", group, level="error")
            self._gate.kill(f"recovery of {group.group_id} failed")

    # -- one group -------------------------------------------------------------------
    async def execute(self, group: HedgeGroup) -> None:
        try:
            await self._execute(group)
        except Exception as exc:  # an adapter bug must not leave the pair blocked forever
            self._emit("error", f"group {group.group_id} failed: {exc!r}", group, level="error")
            group.state = GroupState.FAILED
            group.closed_ms = self._clock.time_ms()
            self._gate.kill(f"execution error in {group.group_id}")
            if self.ledger is not None:
                self.ledger.group_state(group)
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
        if group.state is GroupState.BROKEN:
            self._set_group(group, GroupState.COMPENSATING)
        base = len(group.actions)
        for attempt, venue in enumerate(group.instruments, start=base + 1):
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
                self._record_action(action)
                continue
            self._record_action(action)
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
            self._record_action(action)
        if abs(group.residual()) < group.step:
            self._set_group(group, GroupState.UNWOUND)
        else:
            self._set_group(group, GroupState.FAILED)
            escalate = CompensationAction(
                action_id=f"{group.group_id}cx", group_id=group.group_id,
                kind=CompensationKind.ESCALATE, reason=f"residual {group.residual()} left",
                created_ms=self._clock.time_ms(), outcome="halted",
            )
            group.actions.append(escalate)
            self._record_action(escalate)
            change = self._gate.kill(f"group {group.group_id} failed with a residual")
            if self.ledger is not None:
                await self.ledger.risk_event("breaker", change)

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
        if self.ledger is not None:
            # Write-ahead: the order and its client order id are on disk before it leaves.
            await self.ledger.order_created(order)
        self._transition(order, OrderState.SUBMITTED)
        try:
            update = await gateway.place(order)
        except Exception as exc:  # a lost answer is `unknown`, never `rejected`
            self._transition(order, OrderState.UNKNOWN)
            self._emit("error", f"order {order.client_order_id} unknown: {exc!r}", None, level="warn")
            update = await gateway.query(order)
        self._apply(order, update)
        await self._durable()

    async def _durable(self) -> None:
        """Fills (and everything before them) committed before the group moves on."""
        if self.ledger is not None:
            await self.ledger.flush()

    def _record_action(self, action: CompensationAction) -> None:
        if self.ledger is not None:
            self.ledger.compensation(action)

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
            if self.ledger is not None:
                self.ledger.fill(order, fill)
        order.reject_reason = update.reason
        if update.state is not order.state:
            self._transition(order, update.state)
        elif self.ledger is not None and update.fills:
            self.ledger.order_state(order)

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
        if self.ledger is not None:
            self.ledger.order_state(order)

    # -- group bookkeeping -----------------------------------------------------------
    def _set_group(self, group: HedgeGroup, state: GroupState) -> None:
        if group.transition(state, self._clock.time_ms()):
            if self.ledger is not None:
                self.ledger.group_state(group)
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
