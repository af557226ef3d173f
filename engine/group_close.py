"""Close one hedge group by hand: both legs back at market, the orders filed with the group.

An operator who wants one arbitrage out (a hedged pair held too long, a failed group's
residual) closes its legs alone instead of flattening every venue. What each venue holds for
the group (the sum of its orders' fills) is sent back as marketable IOC orders, the way the
flattener closes a venue (engine.flatten): priced at the touch less the slippage allowance,
up to REDUCE_ATTEMPTS orders per leg for what the book left, each attempt its own client
order id, never again after a partial fill whose trades may still be coming or an `unknown`.
Each order goes through `HedgeOrchestrator.send_flatten`: judged by the gate (it must shrink
the venue's position, so a halted engine still sends it, as flatten does), written ahead,
resolved by client order id when an answer is lost. The orders carry the group's id, so their
fills count in the group's PnL (in memory and in the ledger's group row).

Refused, with nothing sent, when: the group is unknown, still in flight, closed (a flatten or
a net took its positions, though its own orders still add up to them), has an order the
venue never settled (`unknown`), already holds nothing (flat), or a leg cannot go (no quote,
a quote older than `max_quote_age_ms`, the venue blocked by a breaker, below the venue
minimum, or the gate refuses it: e.g. other groups hold the opposite on that venue, so the
close would not shrink the position). The audit record (who, why, the legs) is committed
before the first order leaves. A close that ends with a residual makes the operator pause
trading (engine.operator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.clock import Clock
from core.hedge import HedgeGroup, base36
from core.instruments import Instrument, floor_to
from core.models import GroupState, Order, OrderPurpose, OrderState, Side, Venue
from core.orders import is_terminal
from core.risk import OrderCheck, RiskGate
from engine.control import ControlRefused
from engine.flatten import REDUCE_ATTEMPTS, TouchSource, closing_price
from engine.operator_audit import OperatorAudit
from engine.orchestrator import HedgeOrchestrator

GroupSource = Callable[[str], Awaitable[HedgeGroup | None]]
Known = Callable[[list[str]], Awaitable[set[str]]]  # which of these client order ids the ledger has
QuoteAge = Callable[[Venue, str], float | None]  # ms since the venue's quote was received; None: none
# What the running attribution says a group holds per venue (base units; {} for nothing), None
# when it cannot say (its restore failed): nets and a flatten's shares move it off the group's
# own orders (core.attribution).
Held = Callable[[str], dict[Venue, Decimal] | None]
# Told when a close of a group begins (True) and ends (False): no net may take the group while
# its close orders are out (their fills, under its id, must find its money whole).
Closing = Callable[[HedgeGroup, bool], None]
RETRY_PAUSE_S = 0.2  # as engine.flatten: the touch an IOC took is shown again after the book moves


def close_order_id(group: HedgeGroup) -> str:
    """`qa<group>c<n>`: ours for reconciliation (the `qa` prefix), at most 32 alphanumerics,
    unique within the group: n is past every close id the group holds, not just its order
    count. A close order refused locally was never journaled, so a group read back from the
    ledger has fewer orders than ids were handed out; counting would hand out an id a
    journaled (filled) close already has, and the ledger would file the new order's fills on
    it. (An id never journaled was never sent either, so reusing one of those is harmless.)"""
    prefix = f"qa{group.group_id}c"
    used = [int(o.client_order_id[len(prefix):], 36) for o in group.orders
            if o.client_order_id.startswith(prefix) and o.client_order_id[len(prefix):].isalnum()]
    cid = f"{prefix}{base36(max([len(group.orders), *(n + 1 for n in used)]))}"
    if len(cid) > 32 or not cid.isalnum():
        raise ValueError(f"client order id {cid!r} is not in the safe format")
    return cid


@dataclass(slots=True)
class CloseLeg:
    venue: Venue
    symbol: str
    before: Decimal  # the group's base quantity on the venue, signed
    after: Decimal = Decimal(0)
    orders: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self, step: Decimal) -> dict[str, Any]:
        return {"venue": self.venue, "symbol": self.symbol, "before": str(self.before), "after": str(self.after),
                "orders": list(self.orders), "flat": abs(self.after) < step, "note": self.note}


class GroupCloser:
    def __init__(
        self,
        orchestrator: HedgeOrchestrator,
        gate: RiskGate,
        clock: Clock,
        touch: TouchSource,
        audit: OperatorAudit,
        *,
        load: GroupSource,
        max_slippage_bps: float,
        quote_age_ms: QuoteAge | None = None,
        max_quote_age_ms: float | None = None,
        known: Known | None = None,
        held: Held | None = None,
        closing: Closing | None = None,
    ) -> None:
        self._orch = orchestrator
        self._gate = gate
        self._clock = clock
        self._touch = touch
        self._audit = audit
        self._load = load
        self._slippage = Decimal(repr(max_slippage_bps)) / Decimal(10_000)
        self._quote_age_ms = quote_age_ms
        self._max_quote_age_ms = max_quote_age_ms
        self._known = known
        self._held = held
        self._closing = closing

    async def close(self, group_id: str, reason: str, actor: str) -> dict[str, Any]:
        """Close the group's legs; the report per leg (before, after, orders, flat, note)."""
        group = await self._find(group_id)
        legs = self._plan(group)
        detail = {"state": str(group.state),
                  "legs": [{"venue": leg.venue, "symbol": leg.symbol, "qty": str(leg.before)} for leg in legs]}
        # From the check of what it holds (`_find`, no await since) to its last close fill.
        if self._closing is not None:
            self._closing(group, True)
        try:
            await self._audit.record("close_group", group_id, actor, reason, detail, group_id=group_id)
            before = group.realized_pnl
            # Every leg runs to its end even when the other fails: a failing leg is reported on
            # its line (the close then ends with a residual), never left sending unattended.
            outcomes = await asyncio.gather(*(self._close_leg(group, leg) for leg in legs), return_exceptions=True)
        finally:
            if self._closing is not None:
                self._closing(group, False)
        for leg, outcome in zip(legs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                leg.note = f"failed: {type(outcome).__name__}: {outcome}"[:300]
        if all(abs(group.position(v)) < inst.base_step for v, inst in group.instruments.items()):
            # Flat: `closed` (its own close orders are in its orders: no cash from elsewhere).
            self._orch.close_group(group, Decimal(0), Decimal(0), "its own close")
        self._orch.rebook(group, before)
        await self._orch.durable()  # the orders, their fills and the group's new PnL
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # a cancellation or exit: after the books are right
        for leg in legs:
            leg.after = group.position(leg.venue)
        lines = [leg.to_json(group.instruments[leg.venue].base_step) for leg in legs]
        flat = all(line["flat"] for line in lines)
        result = "flat" if flat else "residual " + ", ".join(
            f"{line['venue']} {line['after']}" for line in lines if not line["flat"])
        return {"group": group_id, "flat": flat, "legs": lines, "realized_pnl": str(group.realized_pnl),
                "message": f"group {group_id} closed: {result}"}

    async def _find(self, group_id: str) -> HedgeGroup:
        live = self._orch.open.get(group_id)
        if live is not None:
            raise ControlRefused(f"group {group_id} is still in flight ({live.state}): wait for it to settle")
        group = next((g for g in self._orch.closed if g.group_id == group_id), None)
        if group is None:
            group = await self._load(group_id)
        if group is None:
            raise ControlRefused(f"no group {group_id}")
        if not group.terminal:
            raise ControlRefused(f"group {group_id} is still in flight ({group.state}): wait for it to settle")
        unsettled = [o for o in group.orders if not is_terminal(o.state)]
        if unsettled:
            o = unsettled[0]
            raise ControlRefused(f"group {group_id}: order {o.client_order_id} on {o.venue} is {o.state} (the "
                                 "venue has not said what became of it): not closed until it settles")
        if all(abs(group.position(v)) < inst.base_step for v, inst in group.instruments.items()):
            raise ControlRefused(f"group {group_id} is already flat ({group.state}): nothing to close")
        if group.state is GroupState.CLOSED:
            # Its own orders still add up to a position, but a flatten or a net (issue 19) took
            # it: closing "its legs" would trade other groups' positions under its id (their
            # money booked twice in the groups' rows, and elsewhere by the ledger's replay).
            raise ControlRefused(f"group {group_id} is closed ({group.outcome} until closed): it holds nothing "
                                 "of its own (a flatten or another group's net took its positions)")
        held = self._held(group_id) if self._held is not None else None
        if held is not None:
            off = [v for v, inst in sorted(group.instruments.items())
                   if abs(held.get(v, Decimal(0)) - group.position(v)) >= inst.base_step]
            if off:
                what = ", ".join(f"{v} {held.get(v, Decimal(0))}" for v in off)
                own = ", ".join(f"{v} {group.position(v)}" for v in off)
                raise ControlRefused(f"group {group_id} holds {what} of its own orders' {own}: a net or a flatten "
                                     "set part of it against other groups; a flatten closes what the venues hold")
        return group

    def _plan(self, group: HedgeGroup) -> list[CloseLeg]:
        """The legs to close, each checked before anything is sent: both go, or neither."""
        legs: list[CloseLeg] = []
        for venue, inst in sorted(group.instruments.items()):
            held = group.position(venue)
            if abs(held) < inst.base_step:
                continue
            side: Side = "sell" if held > 0 else "buy"
            base = floor_to(abs(held), inst.base_step)
            what = f"the {venue} leg ({side} {base} {inst.symbol})"
            if base < inst.base_min_qty:
                raise ControlRefused(f"close refused: {what} is below the venue minimum ({inst.base_min_qty})")
            price = self._price(inst, side)
            if price is None:
                raise ControlRefused(f"close refused: no quote for {venue} {inst.symbol} to price {what}")
            self._check_venue(venue, inst.symbol, what)
            refusal = self._gate.check_order(OrderCheck(
                key=f"close-check-{group.group_id}-{venue}", venue=venue,
                asset=self._orch.asset_of(venue, inst.symbol), side=side, base_qty=base,
                price=inst.normalized_price(price), purpose=OrderPurpose.FLATTEN))
            if refusal is not None:
                why = (" (it would not shrink the venue's position: other groups hold the opposite there)"
                       if refusal == "risk:flatten_not_reducing" else "")
                raise ControlRefused(f"close refused: {what}: {refusal}{why}")
            legs.append(CloseLeg(venue, inst.symbol, held))
        return legs

    def _check_venue(self, venue: Venue, symbol: str, what: str) -> None:
        """Both legs go at once: a venue that cannot trade now (a breaker blocks it: stale
        feed, down, price outliers) or whose quote is older than the strategy trusts would let
        the other leg close alone and leave the hedge one open position. A low free balance
        does not stop a close (it only shrinks the position); flatten is the way otherwise."""
        blocking = sorted(b.name for b in self._gate.breakers.tripped()
                          if b.effect == "block_venue" and b.venue == venue and not b.name.startswith("balance:"))
        if blocking:
            raise ControlRefused(f"close refused: {what}: {venue} is blocked ({', '.join(blocking)}): "
                                 "the other leg would close alone")
        if self._quote_age_ms is None or self._max_quote_age_ms is None:
            return
        age = self._quote_age_ms(venue, symbol)
        if age is None or age > self._max_quote_age_ms:
            shown = "no quote" if age is None else f"the quote is {age:.0f} ms old"
            raise ControlRefused(f"close refused: {what}: {shown} (> {self._max_quote_age_ms:g} ms): "
                                 "the other leg would close alone")

    def _price(self, inst: Instrument, side: Side) -> Decimal | None:
        return closing_price(self._touch(inst.venue, inst.symbol), inst, side, self._slippage)

    async def _close_leg(self, group: HedgeGroup, leg: CloseLeg) -> None:
        """Marketable IOC orders until the group holds nothing on the venue (as the flattener's
        `_reduce`): a retry only after an IOC the book left unfilled or part-filled and final."""
        inst = group.instruments[leg.venue]
        for attempt in range(REDUCE_ATTEMPTS):
            if attempt and RETRY_PAUSE_S > 0:
                await asyncio.sleep(RETRY_PAUSE_S)
            remaining = group.position(leg.venue)
            if abs(remaining) < inst.base_step:
                leg.note = ""
                return
            side: Side = "sell" if remaining > 0 else "buy"
            qty = inst.to_venue_qty(floor_to(abs(remaining), inst.base_step))
            if inst.to_base_qty(qty) < inst.base_min_qty:
                leg.note = f"below the venue minimum ({inst.base_min_qty})"
                return
            price = self._price(inst, side)
            if price is None:
                leg.note = "no quote to price the order"
                return
            order = Order(client_order_id=close_order_id(group), group_id=group.group_id, venue=leg.venue,
                          symbol=leg.symbol, side=side, qty=qty, price=price, purpose=OrderPurpose.FLATTEN,
                          created_ms=self._clock.time_ms())
            group.orders.append(order)  # at once (the other leg numbers past it); its fills are the group's
            if self._known is not None and order.client_order_id in await self._known([order.client_order_id]):
                # Never reuse an id the ledger has: its row would take this order's fills.
                group.orders.remove(order)
                leg.note = f"{order.client_order_id} is already in the ledger: not sent"
                return
            leg.orders.append(order.client_order_id)
            await self._orch.send_flatten(order)
            if order.state is OrderState.FILLED:
                leg.note = ""
                return
            leg.note = f"{order.client_order_id} {order.state} {order.reject_reason}".strip()
            if order.state not in (OrderState.EXPIRED, OrderState.CANCELLED):
                return  # refused, unknown, or trades still to come: never send again blindly
