"""The engine's two faces for every surface: `EngineReader` (what it shows) and
`OperatorControl` (what an operator may do to it).

The TUI keys, the operator HTTP endpoints (`/api/...`) and the CLI (`quantarb kill`, ...)
all call these methods on the running engine (`Runtime.view`, `Runtime.control`), so a
number and an action mean the same thing whichever way they arrive. Each action returns a
`ControlResult` that serialises to the JSON the API and the CLI print; an action the engine
refuses (a rearm while a breaker is still tripped, a rearm without a reason)
raises `ControlRefused` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from engine.snapshot import RuntimeSnapshot

Action = Literal["kill", "flatten", "rearm", "pause", "resume", "close", "orphans_cancel"]
ACTIONS: tuple[Action, ...] = ("kill", "flatten", "rearm", "pause", "resume")
HealthStatus = Literal["ok", "degraded", "halted"]


class ControlRefused(Exception):
    """The engine refused an operator action; the message says why (safe to show)."""


class ReadFailed(Exception):
    """A view read from the ledger (history, a group's story, analytics) could not be read:
    the file is damaged or unreadable. The message says why (safe to show); the screen shows
    it and the engine runs on (trading halts on a ledger that cannot write, not on a read)."""


@dataclass(frozen=True, slots=True)
class OrphanRef:
    """One quarantined order the operator confirmed for cancelling, as the status listed it:
    by client order id, or by the venue's order id when the order has none (a manual OKX
    order has an empty clOrdId)."""

    venue: str
    client_order_id: str
    venue_order_id: str = ""

    def key(self) -> tuple[str, str]:
        """The reconciler's quarantine key (engine.reconcile.quarantine_key)."""
        return (self.venue, self.client_order_id or f"ordId:{self.venue_order_id}")

    def to_json(self) -> dict[str, str]:
        return {"venue": self.venue, "client_order_id": self.client_order_id, "venue_order_id": self.venue_order_id}


@dataclass(slots=True)
class ControlResult:
    """What an operator action did: the trading state it left, and action-specific detail."""

    action: Action
    trading_state: str
    reason: str
    changed: bool
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EngineReader(Protocol):
    """Implemented by `engine.view_model.ViewModel` (`Runtime.view`). Reads only."""

    def pair_names(self) -> list[str]:
        """The configured pairs, in config order."""
        ...

    def snapshot(self, *, groups: int = 50, log: int = 200) -> RuntimeSnapshot:
        """Everything a screen shows, taken at one instant (pulled on a timer, <= 10 Hz)."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-able picture of the engine: trading state and reason, mode, PnL, open
        groups, limits, breakers, feeds (what `GET /api/status` and `quantarb status` show)."""
        ...

    def health_status(self) -> HealthStatus:
        """`halted` when halted, `degraded` when paused/reducing or a venue is down, else `ok`."""
        ...

    async def group_detail(self, group_id: str) -> dict[str, Any] | None:
        """One group's story from the ledger; None without a ledger or such a group.
        These three reads raise ReadFailed when the ledger cannot be read."""
        ...

    async def history(
        self, *, pair: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Groups from the ledger, newest first."""
        ...

    async def analytics(self) -> dict[str, Any] | None:
        """The equity curve and trade statistics from the ledger; None without a ledger."""
        ...


class OperatorControl(Protocol):
    """Implemented by `engine.operator.Operator` (`Runtime.control`)."""

    async def kill(self, reason: str) -> ControlResult:
        """Halt: the gate flips before the first await, so the very next decision is refused;
        then entry legs with nothing filled are cancelled (MT5 commands withdrawn)."""
        ...

    async def flatten(self, reason: str) -> ControlResult:
        """Halt, then close the net exposure on every venue and report any residual."""
        ...

    async def rearm(self, reason: str) -> ControlResult:
        """Back to active; raises ControlRefused without a reason or with a breaker tripped."""
        ...

    async def pause(self, reason: str) -> ControlResult:
        """No new intents; nothing in flight is cancelled."""
        ...

    async def resume(self, reason: str) -> ControlResult:
        """Undo a pause (never a halt: that needs rearm)."""
        ...

    async def close_group(self, group_id: str, reason: str, actor: str) -> ControlResult:
        """Close one settled group's legs at market (engine.group_close); raises ControlRefused
        (nothing sent) for an unknown, in-flight or flat group, or without a reason."""
        ...

    async def cancel_orphans(self, reason: str, actor: str, orders: Sequence[OrphanRef]) -> ControlResult:
        """Cancel the quarantined open orders the operator confirmed (`orders`, as listed) and
        still quarantined (engine.orphans), with a result per order; one confirmed but no
        longer quarantined is `skipped`. Raises ControlRefused when none is confirmed, or
        without a reason."""
        ...


class Engine(Protocol):
    """One engine as a face holds it (implemented by `engine.runtime.Runtime`): its two
    interfaces, and start/stop (`start` raises `engine.errors.RuntimeFailure` or
    `LedgerRefused`)."""

    @property
    def view(self) -> EngineReader: ...

    @property
    def control(self) -> OperatorControl: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
