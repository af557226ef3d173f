"""HedgeOrchestrator: intent -> HedgeGroup -> two leg orders -> terminal state.

It creates the group and both orders with deterministic client order ids
(`core.hedge.client_order_id(group, leg, attempt)`), sends the legs through the venue
gateways by the configured leg policy, moves orders only through the InFlightOrderTracker
(the order state machine of docs/architecture.md, State machines; refused transitions are
logged with both states), and settles the group:

- both legs filled the same base quantity (within one lot step) -> `hedged`;
- nothing filled -> `rejected`;
- otherwise `broken` -> `compensating`, driven by the CompensationEngine: `retry_hedge` on
  the unfilled venue (up to `max_retries`, each a new client id), then `unwind` on the venue
  that filled, then `escalate` (`failed`, RiskGate halted, a `breaker` risk event).

A gateway that times out or loses the answer leaves the order `unknown`; it is resolved by
querying the venue by client order id (a bounded number of times, then a cancel), never by
sending it again under a new id. A fill reported after an order was cancelled or expired is
applied, and the group's residual is re-evaluated (a late fill can hedge or break a group).

With a ledger, every step is journaled: the order row with its client order id is committed
before the request leaves (write-ahead), fills are committed before the group moves on, and
groups recovered after a crash are resumed by asking the venues about their unfinished
orders by client order id.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from types import MappingProxyType

from core.clock import Clock
from core.compensation import CompensationEngine, Plan
from core.durations import DurationHistogram
from core.hedge import HedgeGroup, client_order_id, new_group_id
from core.holdings import coarsest_steps
from core.instruments import Instrument
from core.models import (
    CompensationAction,
    CompensationKind,
    Decision,
    ExecutionIntent,
    ExecutionLeg,
    Fill,
    GroupState,
    Order,
    OrderPurpose,
    OrderState,
    TradingState,
    Venue,
)
from core.orders import is_terminal
from core.pnl import PairStats, PairSummary, group_pnl
from core.ports import ExecutionGateway, Journal, JournalUnavailable, OrderUpdate
from core.risk import OrderCheck, RiskGate, StateChange
from core.tracker import InFlightOrderTracker
from engine.events import EngineEvent, EventLog, Level

GroupListener = Callable[[HedgeGroup], None]
# (bid, ask) of an instrument right now, in venue units; None when never quoted.
TouchSource = Callable[[Venue, str], tuple[float, float] | None]

_LATE_STATES = (OrderState.CANCELLED, OrderState.EXPIRED)
# Closed groups kept in memory, newest first: what the views show and what a late fill is
# matched against; every group is in the ledger (history screen, `quantarb ledger show`). At
# most 200, more than any screen lists; beyond the newest 50 (the groups pane's rows) none whose
# execution ended more than five minutes ago, unless an order of it is still pending (asked
# about in the background), so at a slow rate the steady state comes within minutes rather than
# after 200 groups (issue 19). A fill that late for a group no longer remembered halts
# (`late_fill`: an untracked order); reconciliation books it in the ledger and hands it over
# with the order as the ledger has it, and it is applied to the running books then, once (not
# asked about: the venue's answer would repeat the order's earlier fills, which the engine has
# already booked). At the demo's full rate 200 groups were about six minutes too.
RECENT_GROUPS_KEPT = 200
RECENT_GROUPS_SHOWN = 50
RECENT_GROUPS_MAX_AGE_MS = 5 * 60_000
# Orders outside any group (flatten orders, a restart's orphans) remembered for a late fill:
# a flatten sends one order per venue and asset (per ticket on MT5), so this is many
# flattens; the oldest are forgotten (their rows are in the ledger). As with closed groups,
# beyond the newest `RECENT_GROUPS_SHOWN` a final one is also forgotten
# `RECENT_GROUPS_MAX_AGE_MS` after its last change (a flatten of a few hundred MT5 tickets every
# few minutes filled the 1,000 for most of an hour, issue 19); one still pending is kept.
LOOSE_ORDERS_KEPT = 1_000
LOOSE_SWEEP_MS = 1_000  # the age sweep walks them all: at most once a second
# Fills of forgotten orders applied to the running books (`late_fill` with the journaled fill),
# by (venue, venue trade id): reconciliation reports one again only while the ledger lacks it (a
# write refused or not yet done), and it must not move the books twice. Such fills are rare (a
# fill minutes after its order ended); the newest 1,000 cover far more than one pass reports.
UNTRACKED_FILLS_KEPT = 1_000


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
        on_fill: Callable[[Order, Fill], None] | None = None,
        recent: int = RECENT_GROUPS_KEPT,
        recent_shown: int = RECENT_GROUPS_SHOWN,
        recent_max_age_ms: int = RECENT_GROUPS_MAX_AGE_MS,
        journal: Journal | None = None,
        group_deadline_ms: int = 5000,
        order_timeout_ms: int = 3000,
        max_slippage_bps: float = 15.0,
        max_retries: int = 2,
        touch: TouchSource | None = None,
        asset_of: Mapping[tuple[Venue, str], str] | None = None,
        query_attempts: int = 3,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._gateways = gateways
        self._instruments = instruments
        self._gate = gate
        self._clock = clock
        self._events = events
        self._leg_policy = leg_policy
        self._on_closed = on_closed
        self._on_fill = on_fill  # every fill as it is booked (the running equity)
        self._order_tap: Callable[[Order], None] | None = None  # a live recording (tap_execution)
        self._fill_tap: Callable[[Order, Fill], None] | None = None
        self._touch = touch
        # (venue, symbol) -> the pair's name: the asset the RiskGate's exposure is kept in.
        self._asset_of: Mapping[tuple[Venue, str], str] = asset_of or {}
        # Per asset, the dust a repair may carry and still count as one (`_check_for`).
        self._dust_credit = coarsest_steps(instruments.values())
        self.refused_orders = 0
        self._cash: dict[Venue, Decimal] = {}  # fills' cash flows less fees, per venue
        # Orders outside any open group, by client id: this run's flatten orders and, after a
        # restart, orders left open by groups that had closed. A late fill on one is caught.
        self._loose: dict[str, Order] = {}
        self._loose_swept_ms = -LOOSE_SWEEP_MS  # when `_forget_old_loose` last walked them
        self._recheck_on_close: set[str] = set()
        # Set by flatten (until a rearm): only flatten orders leave; groups still settling
        # cannot re-open what flatten closes.
        self._flattening = False
        self._ticket_closes: set[str] = set()  # flatten orders that close one venue ticket
        self._pregated: set[str] = set()  # entry legs already judged (and reserved) as a pair
        self._journal = journal
        self.group_deadline_ms = group_deadline_ms
        self.order_timeout_ms = order_timeout_ms
        self.query_attempts = max(1, query_attempts)
        self.poll_interval_s = poll_interval_s
        self.tracker = InFlightOrderTracker(clock, order_timeout_ms=order_timeout_ms)
        self.compensation = CompensationEngine(max_slippage_bps=max_slippage_bps, max_retries=max_retries)
        self.pair_stats = PairStats()
        self._seq = itertools.count(1)
        self._pending: deque[HedgeGroup] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._reconciled: set[str] = set()
        # Orders being asked about outside a group's flow (resolve_orphan), and those a venue
        # reported a new fill for meanwhile: asked once more when the current answer is in.
        self._resolving: set[str] = set()
        self._ask_again: set[str] = set()
        # Fills of forgotten orders already applied (UNTRACKED_FILLS_KEPT, oldest first).
        self._untracked_fills: dict[tuple[Venue, str], None] = {}
        self._open: dict[str, HedgeGroup] = {}
        self.closed: deque[HedgeGroup] = deque(maxlen=recent)
        self._recent_shown = min(recent_shown, recent)
        self._recent_max_age_ms = recent_max_age_ms
        self.closed_by_state: dict[str, int] = {}  # this run's groups (see count_from) by state
        self._started_ms = clock.time_ms()
        # How each group's execution ended (never moved on by a later close: `closed_by_state` is
        # where groups are now). Benches and soaks count activity by it.
        self.ended_by_state: dict[str, int] = {}
        self.realized_pnl = Decimal(0)
        # From the quote that made an intent to both entry orders sent (bounded: the analytics
        # screen), and who else wants each measure and each closed group (a replay's study).
        self.reaction = DurationHistogram()
        self._reaction_listeners: list[Callable[[HedgeGroup, int], None]] = []
        self._closed_listeners: list[GroupListener] = []
        self._after_closed: list[GroupListener] = []

    # -- what others do to it ----------------------------------------------------------
    def tap_execution(self, on_order: Callable[[Order], None] | None,
                      on_fill: Callable[[Order, Fill], None] | None) -> None:
        """Also hand every order state change (when the ledger gets it, the send included) and
        every booked fill to these (a live recording measures real latencies); None stops."""
        self._order_tap = on_order
        self._fill_tap = on_fill

    @property
    def open(self) -> Mapping[str, HedgeGroup]:
        """Groups in flight by id (read-only: groups enter by `submit` or `adopt`)."""
        return MappingProxyType(self._open)

    @property
    def loose_orders(self) -> Mapping[str, Order]:
        """Orders outside any open group (this run's flatten orders, a restart's orphans), by id."""
        return MappingProxyType(self._loose)

    @property
    def flattening(self) -> bool:
        """True from `begin_flatten()` until `end_flatten()`: only flatten orders leave."""
        return self._flattening

    def on_reaction(self, listener: Callable[[HedgeGroup, int], None]) -> None:
        """Also call `listener(group, reaction_ns)` when a group's second entry order is sent."""
        self._reaction_listeners.append(listener)

    def on_group_closed(self, listener: GroupListener) -> None:
        """Also call `listener(group)` when a group closes (after the runtime's own listener)."""
        self._closed_listeners.append(listener)

    def after_group_closed(self, listener: GroupListener) -> None:
        """Call `listener(group)` when a group closes, after every `on_group_closed` listener
        (so they see the state its execution ended in, before anything closes it further), and
        again when an order it closed with still pending becomes final with nothing filled."""
        self._after_closed.append(listener)

    def attach_journal(self, journal: Journal | None) -> None:
        """Journal every group, order and fill from now on (the runtime opens the ledger at
        start, after the orchestrator is built)."""
        self._journal = journal

    def adopt(self, group: HedgeGroup) -> None:
        """A group recovered from the ledger: open now (an EA fill for it is its own) and
        finished by `resume()` once quotes flow."""
        self._open[group.group_id] = group

    def adopt_orphan(self, order: Order) -> None:
        """An order the ledger left open outside any open group: a fill reported for it
        before `resolve_orphan()` answers is still caught."""
        self._loose[order.client_order_id] = order

    def restore_cash(self, venue: Venue, amount: Decimal) -> None:
        """Add the ledger's past cash flows (less fees) of `venue` at start."""
        self._cash[venue] = self._cash.get(venue, Decimal(0)) + amount

    def cash(self, venue: Venue) -> Decimal:
        """Fills' cash flows less fees on `venue`, the ledger's past included."""
        return self._cash.get(venue, Decimal(0))

    def rebook(self, group: HedgeGroup, realized_before: Decimal) -> None:
        """A closed group traded again (an operator closed its legs, engine.group_close): its
        ledger row takes the new PnL and fees, and this run's realized PnL the difference."""
        if self._journal is not None:
            self._journal.group_state(group)
        self.realized_pnl += group.realized_pnl - realized_before

    def begin_flatten(self) -> None:
        """From now until `end_flatten()`, only flatten orders leave: groups still settling
        cannot re-open what flatten closes."""
        self._flattening = True

    def end_flatten(self) -> None:
        """A rearm: entries and compensation may leave again (the gate still decides)."""
        self._flattening = False

    # -- intake ----------------------------------------------------------------------
    def submit(self, intent: ExecutionIntent) -> HedgeGroup:
        """Create the group for an intent (synchronously: the pipeline's hot path calls this)."""
        now = self._clock.time_ms()
        group_id = new_group_id(now, next(self._seq))
        instruments = {
            leg.venue: self._instruments[(leg.venue, leg.symbol)] for leg in intent.legs
        }
        group = HedgeGroup(group_id=group_id, intent=intent, instruments=instruments, opened_ms=now)
        if self._journal is not None:
            self._journal.group_opened(group)
        self._open[group_id] = group
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

    def record_decision(self, decision: Decision) -> None:
        """Feed the monitor statistics (edge percentiles, trigger rate) with one decision.

        A decision without a counter quote has no edge (its 0.0 is a placeholder): skipped.
        """
        if decision.buy_venue is None:
            return
        self.pair_stats.record_decision(
            decision.pair, decision.edge_bps, intent=decision.intent is not None
        )

    def stats(self) -> dict[str, PairSummary]:
        """Per-pair aggregates: groups, hit rate, PnL, slippage, edge percentiles, trigger rate."""
        return self.pair_stats.snapshot()

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

    async def execute_next(self) -> bool:
        """Run the oldest pending group to its end (a replay runs each at its own due time);
        False when none is pending."""
        if not self._pending:
            return False
        await self.execute(self._pending.popleft())
        return True

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Let groups in flight reach a terminal state, then cancel what is left.

        Groups submitted but not yet started are started too. The wait covers a group's
        whole deadline (plus its compensation); a group cancelled past that is left open in
        the ledger and resumed by the next start.
        """
        while self._pending:
            group = self._pending.popleft()
            task = asyncio.create_task(self.execute(group), name=f"group-{group.group_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if timeout_s is None:
            timeout_s = 2 * self.group_deadline_ms / 1000 + 5.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Closing groups start new tasks (an order asked about once more): wait for those too.
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                pending = set(self._tasks)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def settle_open(self, timeout_s: float) -> bool:
        """Wait (bounded, nothing cancelled) for every group in flight to reach a terminal
        state; groups submitted but not started are started. True when none is left open."""
        while self._pending:
            group = self._pending.popleft()
            task = asyncio.create_task(self.execute(group), name=f"group-{group.group_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not self._open

    def late_fill(self, group_id: str, client_order_id: str,
                  journaled: tuple[Order, Fill] | None = None) -> Awaitable[None] | None:
        """A venue reported a fill for one of our orders outside its group's own flow.

        Returns the work to do (None when the group's flow is still running and will apply
        it itself): for an order of a group that already closed, ask the venue, journal the
        fill, and halt (the exposure is unhedged); for an order this engine no longer
        remembers (`remembers`), halt with an alert. `journaled` is the fill the caller
        journals (with its order as the ledger has it: reconciliation, and an MT5 deal the EA
        reports on a forgotten order's command, `engine.mt5_late`): for a forgotten order it
        is applied to the running books (exposure, cash, the running equity) here and now,
        before this returns, so a caller cancelled before it awaits the work cannot leave the
        ledger ahead of the books; once per venue trade id (`UNTRACKED_FILLS_KEPT`). Without
        it (no ledger, the ledger cannot write, or it does not know the order) only the halt.
        """
        if not self.remembers(group_id, client_order_id):
            return self._untracked(group_id, client_order_id, journaled)
        group = self._open.get(group_id)
        if group is not None:
            for order in group.orders:
                if order.client_order_id == client_order_id and (
                    is_terminal(order.state) or order.state is OrderState.UNKNOWN
                ):
                    # Its flow may have asked about it already (or given up on it, `unknown`):
                    # ask again while the group settles, and once more after it closes (in
                    # case the fill lands between).
                    self._reconciled.discard(client_order_id)
                    self._recheck_on_close.add(client_order_id)
            return None
        if client_order_id in self._resolving:
            self._ask_again.add(client_order_id)  # its answer may predate this fill: ask again
            return None
        if self.tracker.get(client_order_id) is not None:
            return None  # a flatten order still being sent or resolved: its flow applies it
        loose = self._loose.get(client_order_id)
        if loose is not None:
            self._emit("late_fill", f"fill for order {client_order_id} ({loose.purpose}) after it was final",
                       None, level="error")
            return self.resolve_orphan(loose)
        for group in self.closed:
            if group.group_id == group_id:
                for order in group.orders:
                    if order.client_order_id == client_order_id:
                        self._emit("late_fill", f"fill for {client_order_id} after group {group_id} closed "
                                   f"({group.state})", group, level="error")
                        return self.resolve_orphan(order)
        return self._untracked(group_id, client_order_id, journaled)  # not reached: remembers() found it

    def _untracked(self, group_id: str, client_order_id: str,
                   journaled: tuple[Order, Fill] | None) -> Awaitable[None]:
        said = "" if journaled is None else f"; {self._book_untracked(client_order_id, *journaled)}"
        self._emit("alert", f"fill for order {client_order_id} (group {group_id}) that this engine no longer "
                   f"tracks{said}", None, level="error")
        return self.halt(f"fill for untracked order {client_order_id}")

    def remembers(self, group_id: str, client_order_id: str) -> bool:
        """Whether `late_fill` takes one of the order's own paths (its group's flow, a resolve
        running, a flatten order in flight, a loose order, an order of a recent closed group)
        rather than the forgotten order's: what a caller asks before it reads the ledger."""
        return (group_id in self._open or client_order_id in self._resolving
                or self.tracker.get(client_order_id) is not None or client_order_id in self._loose
                or any(g.group_id == group_id and any(o.client_order_id == client_order_id for o in g.orders)
                       for g in self.closed))

    def keep(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run `work` (what `late_fill` returned) as one of this orchestrator's tasks, which
        `shutdown` waits for like a group's: a caller cancelled meanwhile (a reconciliation pass
        past its time) does not cancel it, so a fill already journaled still reaches the running
        books when the venue answers, and its halt still comes."""
        async def run() -> None:
            await work

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _book_untracked(self, client_order_id: str, order: Order, fill: Fill) -> str:
        """A forgotten order's fill, journaled by the caller, into the running books once; says
        what became of it. Not through the tracker: the order is not tracked, and asking the
        venue about it would bring back fills the books already hold."""
        said = f"{fill.venue}:{fill.venue_trade_id} ({fill.qty} @ {fill.price})"
        if not (client_order_id == order.client_order_id == fill.client_order_id and fill.venue == order.venue):
            return f"{said} is not of order {order.client_order_id}: not applied"
        if (order.venue, order.symbol) not in self._instruments:
            return f"{said}: {order.venue} {order.symbol} is not configured: not applied"
        key = (fill.venue, fill.venue_trade_id)
        if key in self._untracked_fills:
            return f"{said} already applied"
        self._untracked_fills[key] = None
        while len(self._untracked_fills) > UNTRACKED_FILLS_KEPT:
            del self._untracked_fills[next(iter(self._untracked_fills))]
        self._exposure_fills(order, [fill])
        return f"{said} applied to the running books"

    def asset_of(self, venue: Venue, symbol: str) -> str:
        return self._asset_of.get((venue, symbol), symbol)

    async def resolve_orphan(self, order: Order) -> None:
        """After a restart: an order still open in the ledger whose group had already closed
        (or a flatten order). Ask its venue what became of it and journal the answer; if it
        filled after its group closed, that exposure is unhedged, so trading halts."""
        coid = order.client_order_id
        self.tracker.track(order)
        self._resolving.add(coid)
        before = order.filled_qty
        pending = not is_terminal(order.state)
        try:
            while True:
                self._ask_again.discard(coid)
                await self._resolve(order)
                await self.durable()
                if coid not in self._ask_again:
                    break
        except Exception as exc:
            self._emit("error", f"resolving {coid} failed: {exc!r}", None, level="error")
            await self.halt(f"could not resolve order {coid} after restart")
            return
        finally:
            self._resolving.discard(coid)
            self._ask_again.discard(coid)
            self.tracker.forget(coid)
        if order.filled_qty != before:
            self._emit("alert", f"order {order.client_order_id} of closed group {order.group_id} filled "
                       f"{order.filled_qty - before} after its group closed", None, level="error")
            await self.halt(f"late fill on closed group {order.group_id}")
        elif pending and is_terminal(order.state):
            self._now_settled(order.group_id)

    def _now_settled(self, group_id: str) -> None:
        """A closed group's last pending order (`unknown` when the group closed) is final now with
        nothing new filled: the group is told to those that wait for a settled group (its net,
        `after_group_closed`), as if it had closed so; without this it was remembered until a
        flatten, outside the bound by the net positions."""
        group = self.find_group(group_id)
        if group is None or not all(is_terminal(o.state) for o in group.orders):
            return
        for listener in self._after_closed:
            listener(group)

    async def resume(self, group: HedgeGroup) -> None:
        """Finish a group recovered from the ledger after a restart.

        Each unfinished order is resolved by asking its venue by client order id; then the
        group settles as usual (hedged, rejected, or broken -> compensation). Nothing is
        re-sent under a new id.
        """
        self._open[group.group_id] = group
        self._emit("recover", f"resuming group {group.group_id} {group.pair} ({group.state})", group)
        try:
            for order in group.orders:
                self.tracker.track(order)
                if order.state is OrderState.NEW:
                    # Written ahead but maybe never sent: the venue will say.
                    self._transition(order, OrderState.UNKNOWN)
                if not is_terminal(order.state):
                    await self._resolve(order)
            self._settle_recovered_actions(group)
            if group.state is GroupState.PLANNED and group.orders:
                self._set_group(group, GroupState.WORKING)
            if group.state is GroupState.PLANNED:
                self._set_group(group, GroupState.REJECTED)
            elif group.state in (GroupState.BROKEN, GroupState.COMPENSATING):
                await self._compensate(group)
            else:
                await self._classify(group)
            self._close(group)
        except Exception as exc:
            self._emit("error", f"resuming {group.group_id} failed: {exc!r}", group, level="error")
            await self.halt(f"recovery of {group.group_id} failed")

    # -- one group -------------------------------------------------------------------
    async def execute(self, group: HedgeGroup) -> None:
        try:
            await self._execute(group)
        except Exception as exc:  # an adapter bug must not leave the pair blocked forever
            self._emit("error", f"group {group.group_id} failed: {exc!r}", group, level="error")
            group.state = GroupState.FAILED
            group.closed_ms = self._clock.time_ms()
            try:
                if self._journal is not None:
                    self._journal.group_state(group)
                await self.halt(f"execution error in {group.group_id}")
            finally:
                self._close(group)  # whatever the ledger did, the pair must not stay blocked

    async def _execute(self, group: HedgeGroup) -> None:
        intent = group.intent
        buy = self._order(group, intent.buy, leg=0, attempt=0, purpose=OrderPurpose.ENTRY)
        sell = self._order(group, intent.sell, leg=1, attempt=0, purpose=OrderPurpose.ENTRY)
        self._set_group(group, GroupState.WORKING)
        if not self._gate_entries(buy, sell):
            await self._classify(group)  # nothing sent: rejected
            self._close(group)
            return
        if self._leg_policy == "concurrent":
            await asyncio.gather(self._send(buy), self._send(sell))
        else:
            mt5_first = self._leg_policy == "mt5_first"
            first, second = (buy, sell) if (buy.venue == "mt5") == mt5_first else (sell, buy)
            await self._send(first)
            # Size the second leg to what the first one actually did.
            first_base = group.base_filled(first)
            inst = group.instruments[second.venue]
            second.qty = min(second.qty, inst.to_venue_qty(first_base))
            if second.qty > 0:
                await self._send(second)
            else:
                self._transition(second, OrderState.REJECTED)
                second.reject_reason = "first leg did not fill"
        await self._classify(group)
        self._close(group)

    async def _classify(self, group: HedgeGroup) -> None:
        """Settle a working group: hedged, rejected, or broken -> compensation."""
        if group.terminal:
            return
        if self._imbalance(group) >= group.step:
            # A short leg that was cancelled or expired may still have filled late.
            await self._reconcile(group)
        bought = group.entry_filled("buy")
        sold = group.entry_filled("sell")
        if bought == 0 and sold == 0 and abs(group.residual()) < group.step:
            self._set_group(group, GroupState.REJECTED)
        elif abs(bought - sold) < group.step and abs(group.residual()) < group.step:
            if group.residual() != 0:  # within one lot step: booked as dust, never lost
                self.compensation.dust.add(group.pair, group.residual())
            self._set_group(group, GroupState.HEDGED)
        else:
            self._set_group(group, GroupState.BROKEN)
            await self._compensate(group)

    @staticmethod
    def _imbalance(group: HedgeGroup) -> Decimal:
        return abs(group.entry_filled("buy") - group.entry_filled("sell"))

    async def _compensate(self, group: HedgeGroup) -> None:
        """Drive the CompensationEngine until the group is repaired, unwound or failed."""
        if group.state is GroupState.BROKEN:
            self._set_group(group, GroupState.COMPENSATING)
        while True:
            await self._reconcile(group)
            plan = self.compensation.next_step(group, self._touches(group), self._clock.time_ms())
            if plan.kind is None:
                state = GroupState.UNWOUND if plan.settled_as == "unwound" else GroupState.REPAIRED
                if plan.residual != 0:
                    self._emit("dust", f"group {group.group_id}: dust {plan.residual} {group.pair} "
                               "booked for the next action", group)
                self._set_group(group, state)
                break
            if plan.kind is CompensationKind.ESCALATE:
                await self._escalate(group, plan)
                break
            await self._run_action(group, plan)
        self.compensation.forget(group)

    async def _run_action(self, group: HedgeGroup, plan: Plan) -> None:
        action = plan.action
        assert action is not None
        group.actions.append(action)
        self._record_action(action)
        self._emit("compensation", f"group {group.group_id}: {action.kind} {action.reason}", group,
                   level="warn")
        order = plan.order
        if order is None:
            return  # below the venue's minimum: recorded, next step
        group.orders.append(order)
        await self._send(order)
        self._settle_action(action, order)

    def _settle_action(self, action: CompensationAction, order: Order) -> None:
        """Record how a compensation action ended, from its order's final state."""
        if order.state is OrderState.REJECTED and order.reject_reason.startswith("risk:"):
            action.outcome = f"refused {order.reject_reason}"
        elif order.state is OrderState.FILLED:
            action.outcome = "filled"
        elif order.filled_qty > 0:
            action.outcome = f"partial {order.filled_qty}/{order.qty}"
        else:
            action.outcome = str(order.state)
        self._record_action(action)

    def _settle_recovered_actions(self, group: HedgeGroup) -> None:
        """After a restart: an action whose order was in flight at the crash ends with it. The
        order is the one made with the action (same kind, same instant)."""
        for action in group.actions:
            if action.outcome != "pending" or action.kind is CompensationKind.ESCALATE:
                continue
            order = next((o for o in group.orders if str(o.purpose) == str(action.kind)
                          and o.created_ms == action.created_ms and is_terminal(o.state)), None)
            if order is not None:
                self._settle_action(action, order)

    async def _escalate(self, group: HedgeGroup, plan: Plan) -> None:
        action = plan.action
        assert action is not None
        group.actions.append(action)
        self._set_group(group, GroupState.FAILED)
        self._record_action(action)
        self._emit("alert", f"group {group.group_id} FAILED: {action.reason}; trading halted",
                   group, level="error")
        await self.halt(f"group {group.group_id} failed with a residual")

    def halt_at_once(self, reason: str) -> None:
        """Halt trading before this returns (the gate is synchronous: the very next decision
        sees it), for a caller that reads the ledger before it calls `late_fill`, whose work
        then makes the halt durable."""
        self._gate.kill(reason)

    def halt(self, reason: str) -> Awaitable[None]:
        """Halt trading before this returns (the gate is synchronous: the next decision sees it),
        also when the caller hands the work on to a task instead of awaiting it (`late_fill`'s
        callers); the work makes it durable: a restart stays halted."""
        return self._journal_halt(self._gate.kill(reason))

    async def _journal_halt(self, change: StateChange) -> None:
        if self._journal is not None:
            try:
                await self._journal.risk_event("breaker", change)
            except Exception as exc:
                self._emit("error", f"could not record the halt in the ledger: {exc!r}", None, level="error")

    def _touches(self, group: HedgeGroup) -> dict[Venue, tuple[float, float] | None]:
        if self._touch is None:
            return {}
        return {v: self._touch(v, inst.symbol) for v, inst in group.instruments.items()}

    async def _reconcile(self, group: HedgeGroup) -> None:
        """Ask once about each cancelled/expired, not fully filled order: late fills count."""
        for order in list(group.orders):
            if (order.state in _LATE_STATES and order.filled_qty < order.qty
                    and order.client_order_id not in self._reconciled):
                self._reconciled.add(order.client_order_id)
                update = await self._call(self._gateways[order.venue].query(order), order)
                if update is not None:
                    self._apply(order, update)
                    await self.durable()

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

    def _place_timeout_s(self, venue: Venue) -> float:
        # The MT5 gateway waits for the EA up to the command's expiry (plus a grace) itself.
        ms = max(self.order_timeout_ms, self.group_deadline_ms) if venue == "mt5" else self.order_timeout_ms
        return ms / 1000.0

    # -- kill and flatten --------------------------------------------------------------
    def entries_to_cancel(self) -> list[Order]:
        """Entry orders of open groups with nothing filled yet, sent and not yet final."""
        return [
            o
            for g in self._open.values()
            if all(order.filled_qty == 0 for order in g.orders)
            for o in g.orders
            if o.purpose is OrderPurpose.ENTRY and o.state is not OrderState.NEW and not is_terminal(o.state)
        ]

    async def cancel_entries(self, on_sent: Callable[[int], None] | None = None) -> list[Order]:
        """Kill: cancel (MT5: withdraw) the entry orders of groups with nothing filled.

        The requests go out concurrently; `on_sent(n)` is called once every request has
        left (the kill bench's figure), then the answers are applied. Groups with a leg
        filled are left to their hedge or compensation (the gate lets reducing orders pass).
        Entries not yet sent are refused by the gate when their turn comes.
        """
        targets = self.entries_to_cancel()
        tasks = [asyncio.create_task(self._cancel(o), name=f"cancel-{o.client_order_id}") for o in targets]
        await asyncio.sleep(0)  # each task ran up to its first await: its request has left
        if on_sent is not None:
            on_sent(len(targets))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.durable()
        return targets

    async def _cancel(self, order: Order) -> None:
        update = await self._call(self._gateways[order.venue].cancel(order), order)
        if update is None or (is_terminal(order.state) and not update.fills):
            return
        if update.state is OrderState.CANCELLED and order.state in (
            OrderState.SUBMITTED, OrderState.ACKED, OrderState.PARTIALLY_FILLED
        ):
            self._transition(order, OrderState.CANCEL_PENDING)
        self._apply(order, update)
        self._emit("kill", f"order {order.client_order_id} on {order.venue}: {order.state} "
                   f"({update.reason or 'cancel'})", self._open.get(order.group_id), level="warn")

    def hold_expired(self, group: HedgeGroup) -> None:
        """hold_timeout: a group open far too long is alerted on and unwound, not retried."""
        self.compensation.skip_retries(group)
        self._emit("alert", f"group {group.group_id} {group.pair} held open past the hold timeout: "
                   "its residual will be unwound", group, level="error")

    async def send_flatten(self, order: Order, close: Callable[[], Awaitable[OrderUpdate]] | None = None) -> None:
        """Send one flatten order through the gate, write-ahead and tracked to a final state.

        `close` sends it another way than `place` (MT5: a `close` command by ticket).
        """
        self._forget_old_loose()
        self._loose[order.client_order_id] = order
        while len(self._loose) > LOOSE_ORDERS_KEPT:
            self._forget_loose(next(iter(self._loose)))
        if close is not None:
            self._ticket_closes.add(order.client_order_id)
        await self._send(order, close)
        self.tracker.forget(order.client_order_id)
        # Final or not, it no longer reserves room: a late fill still moves the position.
        self._gate.exposure.release(order.client_order_id)

    def _forget_old_loose(self) -> None:
        """Beyond the newest `recent_shown`, the loose orders final and unchanged for
        `recent_max_age_ms` (all of them, not only up to the first one still pending)."""
        now = self._clock.time_ms()
        beyond = len(self._loose) - self._recent_shown
        if beyond <= 0 or now - self._loose_swept_ms < LOOSE_SWEEP_MS:
            return
        self._loose_swept_ms = now
        horizon = now - self._recent_max_age_ms
        for order in list(itertools.islice(self._loose.values(), beyond)):
            if is_terminal(order.state) and order.updated_ms < horizon:
                self._forget_loose(order.client_order_id)

    def _forget_loose(self, client_order_id: str) -> None:
        del self._loose[client_order_id]
        self._ticket_closes.discard(client_order_id)

    def _check_for(self, order: Order) -> OrderCheck:
        group = self._open.get(order.group_id)
        inst = self._instruments[(order.venue, order.symbol)]
        base_qty = inst.to_base_qty(order.qty)
        reduces_group = False
        if group is not None:
            # The residual the group answers for, with the dust of earlier groups the
            # compensation engine folds into this very order, credited up to the asset's
            # coarsest lot step (what one leg can leave behind): a repair is exempt from the
            # leg limit (core/risk.py), and dust piles up without a bound between flattens, so
            # more of it than that makes the order new exposure, judged as such.
            credit = self._dust_credit.get(group.pair, group.step)
            dust = max(-credit, min(credit, group.dust_folded))
            residual = group.residual() + dust
            signed = base_qty if order.side == "buy" else -base_qty
            reduces_group = (residual != 0 and (residual > 0) != (signed > 0)
                             and base_qty <= abs(residual) + group.step)
        return OrderCheck(
            closes_position=order.client_order_id in self._ticket_closes,
            key=order.client_order_id,
            venue=order.venue,
            asset=self._asset_of.get((order.venue, order.symbol), order.symbol),
            side=order.side,
            base_qty=base_qty,
            price=inst.normalized_price(order.price),
            purpose=order.purpose,
            reduces_group=reduces_group,
        )

    def _judge(self, order: Order, check: OrderCheck) -> str | None:
        """The gate's verdict, and while flattening only flatten orders may leave."""
        refusal = self._gate.check_order(check)
        if refusal is None and self._flattening and order.purpose is not OrderPurpose.FLATTEN:
            return "risk:flattening"
        return refusal

    def _gate_order(self, order: Order) -> bool:
        """The RiskGate's last word before an order leaves; a refused order is rejected
        locally (never sent, never journaled as created) with the rule as its reason."""
        check = self._check_for(order)
        refusal = self._judge(order, check)
        if refusal is None:
            self._gate.exposure.reserve(check.key, check.venue, check.asset, check.side, check.base_qty, check.price)
            return True
        self._refuse_locally(order, refusal)
        self.refused_orders += 1
        self._emit("risk", f"order {order.client_order_id} {order.purpose} {order.venue} {order.side} "
                   f"{order.qty} {order.symbol} refused: {refusal}", self._open.get(order.group_id), level="warn")
        return False

    def _gate_entries(self, first: Order, second: Order) -> bool:
        """Both entry legs pass the gate together, or neither is sent: a hedge leg refused
        after its partner left would break the group for nothing. Both stay reserved."""
        if not self._gate_order(first):
            self._refuse_locally(second, f"paired leg refused: {first.reject_reason}")
            return False
        if not self._gate_order(second):
            self._gate.exposure.release(first.client_order_id)
            self._refuse_locally(first, f"paired leg refused: {second.reject_reason}")
            return False
        self._pregated.update((first.client_order_id, second.client_order_id))
        return True

    def _refuse_locally(self, order: Order, reason: str) -> None:
        order.reject_reason = reason
        order.state = OrderState.REJECTED
        order.updated_ms = self._clock.time_ms()

    def _exposure_fills(self, order: Order, fills: list[Fill]) -> None:
        inst = self._instruments[(order.venue, order.symbol)]
        asset = self._asset_of.get((order.venue, order.symbol), order.symbol)
        on_fill = self._on_fill
        fill_tap = self._fill_tap
        for f in fills:
            if on_fill is not None:
                on_fill(order, f)
            if fill_tap is not None:
                fill_tap(order, f)
            base = inst.to_base_qty(f.qty)
            price = inst.normalized_price(f.price)
            self._gate.exposure.fill(order.venue, asset, order.side, base, price, order.client_order_id)
            # Cash per venue (quote currency): what a venue account would show, for free margin.
            flow = base * price
            self._cash[order.venue] = self._cash.get(order.venue, Decimal(0)) + (
                flow if order.side == "sell" else -flow) - f.fee
        if is_terminal(order.state):
            self._gate.exposure.release(order.client_order_id)

    async def _send(self, order: Order, close: Callable[[], Awaitable[OrderUpdate]] | None = None) -> None:
        gateway = self._gateways[order.venue]
        if order.client_order_id in self._pregated:
            self._pregated.discard(order.client_order_id)  # judged with its paired leg
        elif not self._gate_order(order):
            return
        if self._touch is not None:
            touch = self._touch(order.venue, order.symbol)
            if touch is not None:
                order.touch_price = Decimal(repr(touch[1] if order.side == "buy" else touch[0]))
        self.tracker.track(order)
        if self._journal is not None:
            # Write-ahead: the order and its client order id are on disk before it leaves.
            try:
                await self._journal.order_created(order)
            except JournalUnavailable as exc:  # no durable row: this order never leaves
                order.reject_reason = str(exc)[:200]
                self._transition(order, OrderState.REJECTED)
                self._emit("error", f"order {order.client_order_id} not sent: {order.reject_reason}",
                           self._open.get(order.group_id), level="error")
                return
        if self._gate.state in (TradingState.HALTED, TradingState.REDUCING) or self._flattening:
            # A kill (or flatten) landed since this order was judged (paired entries are
            # judged before either is sent; the write-ahead awaits): judge it again, or it
            # would leave after the kill with no cancel behind it.
            refusal = self._judge(order, self._check_for(order))
            if refusal is not None:
                order.reject_reason = refusal
                self._transition(order, OrderState.REJECTED)
                self._emit("risk", f"order {order.client_order_id} withheld: {refusal}",
                           self._open.get(order.group_id), level="warn")
                return
        self._log_refusal(self.tracker.sent(order))
        self._ledger_order(order)
        if order.purpose is OrderPurpose.ENTRY:
            self._entry_sent(order)
        try:
            update: OrderUpdate | None = await asyncio.wait_for(
                close() if close is not None else gateway.place(order), self._place_timeout_s(order.venue)
            )
        except Exception as exc:  # a timeout or lost answer is `unknown`, never `rejected`
            self._emit("error", f"order {order.client_order_id} unknown: {exc!r}", None, level="warn")
            update = None
        if update is not None:
            self._apply(order, update)
            await self.durable()
        if update is None or not is_terminal(order.state):
            await self._resolve(order)

    def _entry_sent(self, order: Order) -> None:
        """The reaction time ends when the second entry order of a group leaves."""
        group = self._open.get(order.group_id)
        if group is None or group.intent.quote_ns <= 0:
            return
        for other in group.orders:
            if other is not order and other.purpose is OrderPurpose.ENTRY and other.state is OrderState.NEW:
                return  # its partner has not left yet
        reaction_ns = self._clock.monotonic_ns() - group.intent.quote_ns
        self.reaction.record(reaction_ns)
        for listener in self._reaction_listeners:
            listener(group, reaction_ns)

    async def _resolve(self, order: Order) -> None:
        """Find out what became of an order by its client order id (never a blind resend)."""
        gateway = self._gateways[order.venue]
        if order.state in (OrderState.SUBMITTED, OrderState.NEW):
            self._log_refusal(self.tracker.timed_out(order))
            self._ledger_order(order)
        for attempt in range(self.query_attempts):
            if attempt:
                if self._past_deadline(order):
                    break  # the group must settle: cancel what is still open
                await asyncio.sleep(self.poll_interval_s)
            update = await self._call(gateway.query(order), order)
            if update is not None:
                self._apply(order, update)
                await self.durable()
            if is_terminal(order.state):
                return
            if order.venue == "mt5":
                # A command the EA may still execute: wait for its outcome. `place` is
                # idempotent by client order id (it never sends a second command).
                update = await self._call(gateway.place(order), order)
                if update is not None:
                    self._apply(order, update)
                    await self.durable()
                if is_terminal(order.state):
                    return
        # Still open after the queries: ask the venue to cancel, then ask once more.
        if order.state is not OrderState.UNKNOWN:
            self._transition(order, OrderState.CANCEL_PENDING)
        update = await self._call(gateway.cancel(order), order)
        if update is not None:
            self._apply(order, update)
        if not is_terminal(order.state):
            update = await self._call(gateway.query(order), order)
            if update is not None:
                self._apply(order, update)
        await self.durable()
        if not is_terminal(order.state):
            self._emit("error", f"order {order.client_order_id} on {order.venue} unresolved "
                       f"({order.state})", None, level="error")

    def _past_deadline(self, order: Order) -> bool:
        group = self._open.get(order.group_id)
        return group is not None and self._clock.time_ms() > group.opened_ms + self.group_deadline_ms

    async def _call(self, request: Awaitable[OrderUpdate], order: Order) -> OrderUpdate | None:
        """A query or cancel, bounded by the order timeout; None when it got no answer."""
        try:
            return await asyncio.wait_for(request, self._place_timeout_s(order.venue))
        except Exception as exc:
            self._emit("error", f"order {order.client_order_id}: no answer ({exc!r})", None, level="warn")
            return None

    async def durable(self) -> None:
        """Fills (and everything before them) committed before the group moves on."""
        if self._journal is not None:
            await self._journal.flush()

    def _record_action(self, action: CompensationAction) -> None:
        if self._journal is not None:
            self._journal.compensation(action)

    def _ledger_order(self, order: Order) -> None:
        if self._journal is not None:
            self._journal.order_state(order)
        if self._order_tap is not None:
            self._order_tap(order)

    def _apply(self, order: Order, update: OrderUpdate) -> None:
        applied = self.tracker.apply(order, update)
        self._exposure_fills(order, applied.new_fills)
        if self._journal is not None:
            for fill in applied.new_fills:
                self._journal.fill(order, fill)
        self._log_refusal(applied.refused)
        if applied.late:
            self._emit("late_fill", f"order {order.client_order_id}: late fill after {order.state} "
                       f"({sum((f.qty for f in applied.new_fills), Decimal(0))})", None, level="warn")
        if applied.changed:
            self._ledger_order(order)

    def _transition(self, order: Order, new: OrderState) -> None:
        refusal = self.tracker.transition(order, new)
        if refusal is not None:
            self._log_refusal(refusal)
            return
        if is_terminal(order.state):
            self._gate.exposure.release(order.client_order_id)
        self._ledger_order(order)

    def _log_refusal(self, refusal: object | None) -> None:
        if refusal is not None:
            self._emit("refused", str(refusal), None, level="warn")

    # -- group bookkeeping -----------------------------------------------------------
    def _set_group(self, group: HedgeGroup, state: GroupState) -> None:
        if group.transition(state, self._clock.time_ms()):
            if self._journal is not None:
                self._journal.group_state(group)
            level: Level = "warn" if state in (GroupState.BROKEN, GroupState.FAILED) else "info"
            self._emit("group", f"group {group.group_id} {group.pair} -> {state}", group, level=level)

    def _close(self, group: HedgeGroup) -> None:
        if not group.terminal:
            return
        if self._journal is not None:
            self._journal.group_state(group)  # final PnL and fees with the last fills
        self._open.pop(group.group_id, None)
        for order in group.orders:
            self._gate.exposure.release(order.client_order_id)
            self._pregated.discard(order.client_order_id)
            # An order still not final when its group closes (`unknown`: the venue never said)
            # is asked about again: a deal it made later is booked, and halts.
            if order.client_order_id in self._recheck_on_close or not is_terminal(order.state):
                self._recheck_on_close.discard(order.client_order_id)
                task = asyncio.create_task(self.resolve_orphan(order), name=f"late-{order.client_order_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self.tracker.forget(order.client_order_id)
            self._reconciled.discard(order.client_order_id)
        self.closed.appendleft(group)
        self._forget_old_groups()
        self.closed_by_state[group.state] = self.closed_by_state.get(group.state, 0) + 1
        self.ended_by_state[group.state] = self.ended_by_state.get(group.state, 0) + 1
        if group.state is not GroupState.REJECTED:
            self.realized_pnl += group.realized_pnl
        self.pair_stats.record_group(group_pnl(group))
        if self._on_closed is not None:
            self._on_closed(group)
        for listener in self._closed_listeners:
            listener(group)
        for listener in self._after_closed:
            listener(group)

    def _forget_old_groups(self) -> None:
        """Beyond the newest `recent_shown`, closed groups whose execution ended more than
        `recent_max_age_ms` ago (the count bound is the deque's own)."""
        horizon = self._clock.time_ms() - self._recent_max_age_ms
        closed = self.closed
        while (len(closed) > self._recent_shown and closed[-1].closed_ms < horizon
               and all(is_terminal(o.state) for o in closed[-1].orders)):
            closed.pop()

    def find_group(self, group_id: str) -> HedgeGroup | None:
        """An open group, or a closed one still remembered (the most recent `recent`)."""
        group = self._open.get(group_id)
        if group is None:
            group = next((g for g in self.closed if g.group_id == group_id), None)
        return group

    def close_group(self, group: HedgeGroup, closing_cash: Decimal, closing_fees: Decimal, by: str = "") -> bool:
        """Closing orders took a terminal group's positions to flat (`core.attribution`): it is
        `closed` with their cash and fees in its PnL, journaled. False from a state that holds
        nothing to close (or a group still in flight)."""
        before, pnl_before = group.state, group.realized_pnl
        if group.group_id in self._open or not group.close(closing_cash, closing_fees, self._clock.time_ms(), by):
            return False
        self._recount(before, group.state, group.closed_ms)
        self.realized_pnl += group.realized_pnl - pnl_before
        self.pair_stats.add_pnl(group.pair, group.realized_pnl - pnl_before)
        if self._journal is not None:
            self._journal.group_state(group)
        self._emit("group", f"group {group.group_id} {group.pair} {before} -> closed, pnl {group.realized_pnl:f}",
                   group)
        return True

    def _recount(self, before: str, after: str, ended_ms: int | None) -> None:
        """A group moved from `before` to `after`: the counts by state follow when this run
        counted it (its execution ended since `count_from`; not a group read from the ledger)."""
        if ended_ms is not None and ended_ms >= self._started_ms:
            self.closed_by_state[before] = max(0, self.closed_by_state.get(before, 0) - 1)
            self.closed_by_state[after] = self.closed_by_state.get(after, 0) + 1

    def count_from(self, ms: int) -> None:
        """This run's counts by state begin at `ms` (a replay's clock is set to its recording's
        time after the orchestrator is built)."""
        self._started_ms = ms

    def closed_from_ledger(self, pair: str, before: GroupState, pnl_delta: Decimal, ended_ms: int | None) -> None:
        """A group no longer in memory was closed from its ledger row (the runtime journaled it):
        the total and the pair's PnL follow, as `close_group` does, and the counts by state too
        when this run counted the group (its execution ended since this engine started); a
        group of the run before a restart was never in them (they are this run's groups)."""
        self._recount(before, GroupState.CLOSED, ended_ms)
        self.realized_pnl += pnl_delta
        self.pair_stats.add_pnl(pair, pnl_delta)

    def _emit(self, kind: str, text: str, group: HedgeGroup | None, *, level: Level = "info") -> None:
        data: dict[str, object] = {}
        if group is not None:
            data = {"group_id": group.group_id, "pair": group.pair, "state": str(group.state)}
        self._events.emit(EngineEvent(self._clock.time_ms(), kind, text, level, data))
