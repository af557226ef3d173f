"""MT5 order commands: what quantarb asks an Expert Advisor to do, and how far it got.

The EA cannot be called; it pulls commands (docs/mt5-protocol.md, Command lifecycle). A
command is redelivered until the EA acknowledges it, expires if it is not acknowledged in
time, and accumulates fills by deal (a repeated deal is ignored). The state machine lives here, pure; the queue that
serves it over HTTP is in `mt5_bridge`, and the durable store behind it is the ledger's,
reached through the `CommandStore` port so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Protocol

from core.models import Side

CommandKind = Literal["open", "close"]
Filling = Literal["FOK", "IOC", "RETURN"]


class CommandState(StrEnum):
    PENDING = "pending"  # enqueued, not yet seen by the EA
    DELIVERED = "delivered"  # sent to the EA at least once, not acknowledged
    ACCEPTED = "accepted"  # the EA executed it (retcode DONE / DONE_PARTIAL / PLACED)
    REJECTED = "rejected"  # the EA or the broker refused it
    EXPIRED = "expired"  # not acknowledged before expires_msc, or refused by the EA as expired
    WITHDRAWN = "withdrawn"  # cancelled by quantarb before the EA saw it (kill)


COMMAND_OPEN_STATES: frozenset[CommandState] = frozenset({CommandState.PENDING, CommandState.DELIVERED})

_TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    CommandState.PENDING: frozenset(
        {CommandState.DELIVERED, CommandState.ACCEPTED, CommandState.REJECTED, CommandState.EXPIRED,
         CommandState.WITHDRAWN}
    ),
    CommandState.DELIVERED: frozenset(
        {CommandState.ACCEPTED, CommandState.REJECTED, CommandState.EXPIRED}
    ),
}


def can_transition(current: CommandState, new: CommandState) -> bool:
    """Whether `current -> new` is allowed. Terminal states never change (acks are idempotent).

    A delivered command cannot be withdrawn: the EA may already be executing it, so it must
    be acknowledged or expire.
    """
    return new in _TRANSITIONS.get(current, frozenset())


@dataclass(slots=True)
class CommandFill:
    """One deal reported by the EA for a command; unique per deal ticket."""

    deal: int
    order: int
    position: int
    volume: Decimal
    price: Decimal
    commission: Decimal
    time_msc: int
    swap: Decimal = Decimal(0)  # DEAL_SWAP, signed as charged (0 from an EA that does not send it)


@dataclass(slots=True)
class Mt5Command:
    """One command for one terminal. `volume` is in lots, `price` in the symbol's price."""

    command_id: str
    terminal: str
    group_id: str
    client_order_id: str
    kind: CommandKind
    symbol: str
    side: Side
    volume: Decimal
    price: Decimal
    deviation_points: int
    filling: Filling
    magic: int
    position: int
    expires_msc: int
    created_ms: int
    state: CommandState = CommandState.PENDING
    retcode: int = 0
    reason: str = ""
    updated_ms: int = 0
    deliveries: int = 0
    fills: list[CommandFill] = field(default_factory=list)

    @property
    def filled_volume(self) -> Decimal:
        return sum((f.volume for f in self.fills), Decimal(0))

    @property
    def is_open(self) -> bool:
        return self.state in COMMAND_OPEN_STATES


class CommandStore(Protocol):
    """Durable home of MT5 commands (the ledger implements it; tests may keep them in memory).

    `save` is awaited before a command is offered to the EA and after every state change or
    fill, so a restart of either side finds every command where it was.
    """

    async def save(self, command: Mt5Command) -> None: ...

    async def load_open(self) -> list[Mt5Command]:
        """Commands not yet terminal, and terminal ones still waiting for fills, for redelivery."""
        ...
