"""`ExecutionGateway` for the `mt5` venue: orders become commands for one terminal's EA.

`place(order)` enqueues an `open` command and waits for the EA's answer (ack and fills), up
to the command's `expires_msc` plus a grace for late fills. It never guesses:

| command at the end of the wait            | OrderUpdate                                   |
| ----------------------------------------- | --------------------------------------------- |
| fills cover the volume (any state)        | FILLED, with the fills                        |
| accepted, some fills                      | PARTIALLY_FILLED, with the fills              |
| accepted, no fill yet                     | ACKED                                         |
| rejected by the EA or broker              | REJECTED, reason `retcode N: <EA reason>`     |
| withdrawn (never served)                  | REJECTED, reason `withdrawn`                  |
| expired (not acked in time, or the EA     | EXPIRED (with any late fills)                 |
| refused it as expired)                    |                                               |
| still pending/delivered, acked `unknown`  | UNKNOWN: ask again with `query`               |
| (TIMEOUT), delivered and expired without  |                                               |
| an ack, or the store failed while         |                                               |
| enqueuing                                 |                                               |

The command id is derived from the client order id (the same string when it is short and
safe for the EA's flat JSON and MT5's 31-character order comment, a hash otherwise), so a
second `place` of the same order finds the command already queued and reports on it instead
of sending it twice.

On a hedging account (the EA's account report says `margin_mode` `hedging`) an order that
goes against an open position of ours on its symbol closes (part of) that position instead of
opening a new one (`close_opposite`): a `close` command for the smallest such ticket whose
volume, less what closes in flight or not yet reported have taken from it, covers the order
(the oldest among equals; the smallest, so that small remainders are used up by small legs);
same side, volume and limit price as the `open` would have had. The net position is the
same either way; the account does not pile up offsetting tickets, each accruing swap and
margin and each reported in every account report. The volume a close takes from a ticket is
held until its outcome is known and an account report shows it (the ticket's volume down to
what is left after it, or the ticket gone: a ticket's volume only ever goes down), so a report
that predates a close never lets the same volume be closed twice; a close whose outcome is not
known keeps its hold. With no account report, or no ticket that covers the order, the order
opens a position as before.

Fills are reported as `core.models.Fill` with `venue_trade_id` = the deal ticket and
`fee = -commission` (MT5 reports charges as negative commission). Every update carries all
of the command's fills; the tracker dedupes them by (venue, venue_trade_id).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.clock import Clock
from core.commands import CommandKind, CommandState, Filling, Mt5Command
from core.instruments import Instrument
from core.models import Fill, Order, OrderState, Side, Venue
from core.orders import is_terminal
from core.ports import OrderUpdate
from mt5_bridge.bridge import AccountState
from mt5_bridge.queue import UNKNOWN_OUTCOME, CommandQueue, accepted_late, outcome_unknown

__all__ = ["MT5Gateway", "command_id_for"]

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,31}")


def command_id_for(client_order_id: str) -> str:
    """The command id of an order: deterministic, at most 31 characters of `[A-Za-z0-9_-]`."""
    if _SAFE_ID.fullmatch(client_order_id):
        return client_order_id
    return "c" + hashlib.sha256(client_order_id.encode("utf-8")).hexdigest()[:30]


@dataclass(slots=True)
class _Hold:
    """Volume a close takes from a ticket; `target`: the ticket's volume once it (and the
    closes before it) are done; `heard`: its outcome is known."""

    qty: Decimal
    target: Decimal
    heard: bool = False


class MT5Gateway:
    """Places, cancels and queries orders on one MT5 terminal through the command queue.

    `instruments` maps the terminal's symbols to their instruments (orders on other symbols
    are rejected before anything is sent). `grace_ms` is how long after `expires_msc` a
    `place` still waits for late fills.
    """

    def __init__(
        self,
        queue: CommandQueue,
        terminal: str,
        instruments: Mapping[str, Instrument],
        clock: Clock,
        *,
        magic: int,
        deviation_points: int,
        filling: Filling,
        command_ttl_ms: int,
        grace_ms: int = 1000,
        fee_ccy: str = "USD",
        account: Callable[[], AccountState | None] | None = None,
        close_opposite: bool = True,
    ) -> None:
        if command_ttl_ms <= 0 or grace_ms < 0:
            raise ValueError("command_ttl_ms must be > 0 and grace_ms >= 0")
        self._queue = queue
        self.terminal = terminal
        self._instruments = dict(instruments)
        self._clock = clock
        self.magic = magic
        self.deviation_points = deviation_points
        self.filling: Filling = filling
        self.command_ttl_ms = command_ttl_ms
        self.grace_ms = grace_ms
        self.fee_ccy = fee_ccy
        self._account = account
        self.close_opposite = close_opposite and account is not None
        self._taken: dict[int, dict[str, _Hold]] = {}  # ticket -> client order id -> hold
        self.closed_opposite = 0

    @property
    def venue(self) -> Venue:
        return "mt5"

    async def place(self, order: Order) -> OrderUpdate:
        """Send `order` as an `open` command and report the EA's answer (see the module doc)."""
        if order.venue != "mt5":
            raise ValueError(f"order {order.client_order_id} is for {order.venue}, not mt5")
        problem = self._check(order.symbol, order.qty, order.price, allow_zero_price=False)
        if problem:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason=problem)
        cid = order.client_order_id
        ticket = self._opposite_ticket(order)
        if ticket is None:
            cmd = self._command("open", cid, group_id=order.group_id, symbol=order.symbol,
                                side=order.side, volume=order.qty, price=order.price, position=0)
        else:
            cmd = self._command("close", cid, group_id=order.group_id, symbol=order.symbol, side=order.side,
                                volume=order.qty, price=order.price, position=ticket)
        return self._heard(await self._submit(cmd))

    def _heard(self, update: OrderUpdate) -> OrderUpdate:
        """A final outcome: the volume its close took is released by the next account report."""
        if is_terminal(update.state) and self._taken:
            done = sum((f.qty for f in update.fills), Decimal(0))
            for held in self._taken.values():
                hold = held.get(update.client_order_id)
                if hold is not None and not hold.heard:
                    hold.heard = True
                    hold.target += hold.qty - min(done, hold.qty)  # what did not fill was not taken
                    hold.qty = min(done, hold.qty)
        return update

    def _opposite_ticket(self, order: Order) -> int | None:
        """The smallest position of ours opposite to `order` on its symbol that covers it (less
        what is taken from it), on a hedging account; None to open a new position."""
        if not self.close_opposite or self._account is None:
            return None
        account = self._account()
        if account is None or account.margin_mode != "hedging":
            return None
        self._release(account)
        if self._queue.get(command_id_for(order.client_order_id)) is not None:
            return None  # sent before: the queue reports on that command, whatever it chose
        covering: list[tuple[Decimal, int]] = []  # (volume left, ticket)
        for p in account.positions:
            if p.symbol != order.symbol or p.side == order.side:
                continue
            left = p.volume - sum((h.qty for h in self._taken.get(p.ticket, {}).values()), Decimal(0))
            if left >= order.qty:
                covering.append((left, p.ticket))
        if not covering:
            return None
        left, ticket = min(covering)
        self._taken.setdefault(ticket, {})[order.client_order_id] = _Hold(order.qty, left - order.qty)
        self.closed_opposite += 1
        return ticket

    def _release(self, account: AccountState) -> None:
        """Drop the holds the report shows: of closes whose outcome is known, on a ticket gone
        or down to what the close left of it (or less)."""
        volume = {p.ticket: p.volume for p in account.positions}
        for ticket in list(self._taken):
            held = self._taken[ticket]
            now = volume.get(ticket)
            for cid in [c for c, h in held.items() if h.heard and (now is None or h.qty == 0 or now <= h.target)]:
                del held[cid]
            if not held:
                del self._taken[ticket]

    def holds(self) -> int:
        """Closes whose volume is still held (in flight, or not yet shown by a report)."""
        return sum(len(h) for h in self._taken.values())

    async def close_position(
        self,
        ticket: int,
        symbol: str,
        side: Side,
        volume: Decimal,
        group_id: str,
        client_order_id: str,
        *,
        price: Decimal = Decimal(0),
    ) -> OrderUpdate:
        """Close (part of) position `ticket` (flatten): a `close` command with `position=ticket`.

        `side` is the side of the closing deal, the opposite of the position's type
        (`core.models.opposite(position_type)`). `price` 0 means at market: the EA uses the
        current Bid/Ask.
        """
        if ticket <= 0:
            return OrderUpdate(client_order_id, OrderState.REJECTED, reason="invalid position ticket")
        problem = self._check(symbol, volume, price, allow_zero_price=True)
        if problem:
            return OrderUpdate(client_order_id, OrderState.REJECTED, reason=problem)
        cmd = self._command("close", client_order_id, group_id=group_id, symbol=symbol, side=side,
                            volume=volume, price=price, position=ticket)
        return await self._submit(cmd)

    async def cancel(self, order: Order) -> OrderUpdate:
        """Withdraw the command if the EA has not been served it yet (REJECTED, `withdrawn`);
        otherwise it cannot be recalled, and its current state is reported."""
        cid = command_id_for(order.client_order_id)
        if await self._queue.withdraw(cid):
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="withdrawn")
        return await self.query(order)

    async def query(self, order: Order) -> OrderUpdate:
        """The order's state as the queue knows it now (no waiting)."""
        cmd = await self._queue.lookup(command_id_for(order.client_order_id))
        if cmd is None:
            if self._queue.knows_every_command:
                # Write-ahead: a command is saved before it can be served, so one the store
                # does not know was never sent.
                return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="not sent")
            return OrderUpdate(order.client_order_id, OrderState.UNKNOWN, reason="no such command")
        return self._heard(self._report(cmd, order.client_order_id, final=False))

    # ---------------------------------------------------------------------------- internals

    def _check(self, symbol: str, volume: Decimal, price: Decimal, *, allow_zero_price: bool) -> str:
        if symbol not in self._instruments:
            return f"symbol {symbol} is not configured for terminal {self.terminal}"
        if not volume.is_finite() or volume <= 0:
            return f"invalid volume {volume}"
        if not price.is_finite() or price < 0 or (price == 0 and not allow_zero_price):
            return f"invalid price {price}"
        return ""

    def _command(
        self, kind: CommandKind, client_order_id: str, *, group_id: str, symbol: str, side: Side,
        volume: Decimal, price: Decimal, position: int,
    ) -> Mt5Command:
        now = self._clock.time_ms()
        return Mt5Command(
            command_id=command_id_for(client_order_id),
            terminal=self.terminal,
            group_id=group_id,
            client_order_id=client_order_id,
            kind=kind,
            symbol=symbol,
            side=side,
            volume=volume,
            price=price,
            deviation_points=self.deviation_points,
            filling=self.filling,
            magic=self.magic,
            position=position,
            expires_msc=now + self.command_ttl_ms,
            created_ms=now,
            updated_ms=now,
        )

    async def _submit(self, cmd: Mt5Command) -> OrderUpdate:
        coid = cmd.client_order_id
        try:
            queued = await self._queue.enqueue(cmd)
        except Exception as exc:
            log.exception("mt5 %s: enqueue of %s failed", self.terminal, cmd.command_id)
            return OrderUpdate(coid, OrderState.UNKNOWN, reason=f"command store failed: {type(exc).__name__}")
        if queued.client_order_id != coid or queued.terminal != self.terminal:
            log.error("mt5 %s: command id %s already used by order %s on %s", self.terminal,
                      queued.command_id, queued.client_order_id, queued.terminal)
            return OrderUpdate(coid, OrderState.REJECTED, reason="command id already in use")
        return await self._await_outcome(queued.command_id, coid)

    @staticmethod
    def _settled(cmd: Mt5Command) -> bool:
        if cmd.state in (CommandState.REJECTED, CommandState.WITHDRAWN):
            return True
        return cmd.filled_volume >= cmd.volume

    async def _await_outcome(self, command_id: str, coid: str) -> OrderUpdate:
        loop = asyncio.get_running_loop()
        first = self._queue.get(command_id)
        if first is None:
            return OrderUpdate(coid, OrderState.UNKNOWN, reason="command vanished")
        deadline_ms = first.expires_msc + self.grace_ms
        # A real-time cap too, so a clock that does not move (or jumps back) cannot hang us.
        hard_deadline = loop.time() + max(deadline_ms - self._clock.time_ms(), 0) / 1000
        cmd = first
        while True:
            version = self._queue.version(command_id)
            current = self._queue.get(command_id)
            if current is None:
                break
            cmd = current
            if self._settled(cmd):
                break
            now = self._clock.time_ms()
            if cmd.is_open and now > cmd.expires_msc:
                try:
                    expired = await self._queue.expire(now)
                except Exception:
                    log.exception("mt5 %s: expiry of %s failed", self.terminal, command_id)
                    break
                if expired or self._queue.version(command_id) != version:
                    continue
            remaining_ms = deadline_ms - now
            remaining_s = hard_deadline - loop.time()
            if remaining_ms <= 0 or remaining_s <= 0:
                break
            wake_ms = remaining_ms
            if cmd.is_open:
                wake_ms = min(wake_ms, max(cmd.expires_msc - now + 1, 1))
            await self._queue.wait_change(command_id, version, min(wake_ms / 1000, remaining_s))
        return self._report(cmd, coid, final=True)

    def fills(self, cmd: Mt5Command, coid: str | None = None) -> list[Fill]:
        """The command's deals as `Fill`s of order `coid` (the command's own by default): the
        one conversion, so a deal is the same fill (trade id = its ticket) on every path."""
        return [
            Fill(
                venue="mt5",
                venue_trade_id=str(f.deal),
                client_order_id=cmd.client_order_id if coid is None else coid,
                qty=f.volume,
                price=f.price,
                fee=-f.commission,
                fee_ccy=self.fee_ccy,
                ts_ms=f.time_msc,
            )
            for f in cmd.fills
        ]

    def _report(self, cmd: Mt5Command, coid: str, *, final: bool) -> OrderUpdate:
        fills = self.fills(cmd, coid)
        venue_order_id = str(cmd.fills[0].order) if cmd.fills else ""
        filled = cmd.filled_volume
        state: OrderState
        reason = ""
        if filled > 0 and filled >= cmd.volume:
            state = OrderState.FILLED
        elif cmd.state is CommandState.ACCEPTED or accepted_late(cmd):
            state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.ACKED
            reason = f"retcode {cmd.retcode}" if cmd.retcode else ""
        elif cmd.state is CommandState.REJECTED:
            state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.REJECTED
            reason = f"retcode {cmd.retcode}: {cmd.reason}" if cmd.reason else f"retcode {cmd.retcode}"
        elif cmd.state is CommandState.WITHDRAWN:
            state, reason = OrderState.REJECTED, "withdrawn"
        elif cmd.state is CommandState.EXPIRED:
            if outcome_unknown(cmd):
                # We stopped waiting, but the EA had the command and may have executed it (it
                # never answered, or answered `unknown`): that is not "expired", it is unknown
                # until the EA reports (docs/mt5-protocol.md, Command lifecycle).
                state = OrderState.UNKNOWN
                reason = (f"retcode {cmd.retcode}: {cmd.reason}" if cmd.reason.startswith(UNKNOWN_OUTCOME)
                          else "delivered, not acknowledged before expiry")
            else:
                state, reason = OrderState.EXPIRED, cmd.reason or "expired"
        elif final:
            state, reason = OrderState.UNKNOWN, (f"retcode {cmd.retcode}: {cmd.reason}" if cmd.reason
                                                 else f"no answer from the EA ({cmd.state})")
        else:
            state, reason = OrderState.SUBMITTED, str(cmd.state)
        return OrderUpdate(coid, state, venue_order_id=venue_order_id, fills=fills, reason=reason)
