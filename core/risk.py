"""RiskGate: the single switch every intent and every order passes, and that a kill flips
synchronously (the pipeline reads `state` on the very next decision).

Trading states: `active`, `paused` (no new intents; groups in flight go on), `reducing`
(only exposure-reducing orders), `halted` (only cancels, orders that reduce their own
group's residual, and flatten orders that reduce a position).

Limits, judged against worst-case exposure (positions plus every open order filling in full,
`core.exposure`), each refusing with `risk:<rule>`:

- `risk:max_leg_notional`: one leg's notional;
- `risk:max_open_groups`: groups in flight;
- `risk:max_venue_exposure` / `risk:max_asset_exposure`: gross notional per venue / asset;
- `risk:venue_blocked`: a breaker blocks new intents on the venue (stale feed, or quotes
  that keep failing the price guard);
- `risk:min_free_balance`: the venue's free balance or margin is below the floor.

`check_order` adds `risk:halted` / `risk:reducing` (the trading state refuses it),
`risk:flatten_not_reducing` and `risk:invalid_order` (no quantity, or a negative price).

An order that shrinks its venue position, with the venue's other open orders on its side
filling too, is exempt from the exposure limits (it can only bring worst-case exposure
down); everything else must fit, except that a group's repair (`reduces_group`: a retry or
unwind no larger than the residual its group holds, plus at most the asset's coarsest lot
step of dust from earlier groups folded in, and one lot step) is not judged against
`max_leg_notional`: its size is a leg the gate admitted with the group's entry, and the
entry is sized to the limit at the touch, so the repair, priced up to the slippage bound
through a touch that may have moved, would be refused whenever it does not also shrink its
venue position, leaving the residual unhedged and the group failed. It must still fit the
venue and asset exposure limits (a retry that does not fit them falls to the unwind).
Automatic breakers (`core.breakers`) trip into these states; `rearm` returns to active
only when none is still tripped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from core.breakers import BreakerChange, BreakerLimits, Breakers
from core.clock import Clock
from core.config import RiskConfig
from core.exposure import ZERO, ExposureBook, Reservation
from core.models import ExecutionIntent, OrderPurpose, Reason, Side, TradingState

_ACTIVE = TradingState.ACTIVE  # a module constant: blocked_state runs for every edge over the threshold

# Trading-state changes the gate keeps in memory (`RiskGate.history`), newest last.
STATE_HISTORY_KEPT = 100


@dataclass(slots=True, frozen=True)
class StateChange:
    ts_ms: int
    state: TradingState
    reason: str


class RearmRefused(Exception):
    """Rearm without a reason, or while a breaker is still tripped (the message names them)."""


@dataclass(slots=True, frozen=True)
class RiskLimits:
    max_leg_notional: Decimal
    max_open_groups: int
    max_venue_exposure: Decimal
    max_asset_exposure: Decimal
    min_free_balance: Decimal = ZERO

    @classmethod
    def from_config(cls, cfg: RiskConfig) -> RiskLimits:
        return cls(
            max_leg_notional=cfg.max_leg_notional,
            max_open_groups=cfg.max_open_groups,
            max_venue_exposure=cfg.max_venue_exposure or cfg.max_gross_exposure,
            max_asset_exposure=cfg.max_asset_exposure or cfg.max_gross_exposure,
            min_free_balance=cfg.min_free_balance,
        )


def breaker_limits(cfg: RiskConfig) -> BreakerLimits:
    return BreakerLimits(
        daily_loss_limit=cfg.daily_loss_limit,
        max_consecutive_failures=cfg.max_consecutive_failures,
        failure_pause_s=cfg.failure_pause_s,
        venue_block_s=cfg.venue_block_s,
        feed_stale_halt_s=cfg.feed_stale_halt_s,
        venue_down_halt_s=cfg.venue_down_halt_s,
        min_free_balance=cfg.min_free_balance,
        hold_timeout_s=cfg.hold_timeout_s,
        outlier_block_count=cfg.outlier_block_count,
    )


@dataclass(slots=True, frozen=True)
class OrderCheck:
    """What the gate needs to know about an order before it leaves (normalized units).

    `reduces_group`: filling it shrinks its own group's residual (the hedge of a filled leg,
    a retry, an unwind): the one kind of group order a halted engine still sends.
    `closes_position`: it closes (part of) one position the venue itself reports, by ticket
    (MT5 `close`): it can only shrink the account's gross exposure, even where a hedging
    account holds tickets both ways and the venue's net position would flip meanwhile.
    """

    key: str
    venue: str
    asset: str
    side: Side
    base_qty: Decimal
    price: Decimal
    purpose: OrderPurpose
    reduces_group: bool = False
    closes_position: bool = False


class RiskGate:
    def __init__(
        self,
        clock: Clock,
        *,
        max_open_groups: int | None = None,
        limits: RiskLimits | None = None,
        breakers: BreakerLimits | None = None,
    ) -> None:
        self._clock = clock
        self.state = TradingState.ACTIVE
        self.reason = ""
        if limits is None:
            cfg = RiskConfig() if max_open_groups is None else RiskConfig(max_open_groups=max_open_groups)
            limits = RiskLimits.from_config(cfg)
        self.limits = limits
        self.breakers = Breakers(breakers or breaker_limits(RiskConfig()))
        self.exposure = ExposureBook()
        self.free_balance: dict[str, Decimal] = {}
        # Spot accounts: venue -> asset -> what it held before every fill the exposure book
        # holds (base units). A spot account sells only what it holds (`spot_account`).
        self._spot: dict[str, dict[str, Decimal]] = {}
        # The newest state changes (every one is a journaled risk event in the ledger; the risk
        # screen shows RiskJournal's rows): breakers tripping and releasing for weeks must not
        # grow memory.
        self.history: deque[StateChange] = deque(maxlen=STATE_HISTORY_KEPT)
        self.last_released: list[BreakerChange] = []

    @classmethod
    def from_config(cls, clock: Clock, cfg: RiskConfig) -> RiskGate:
        return cls(clock, limits=RiskLimits.from_config(cfg), breakers=breaker_limits(cfg))

    def spot_account(self, venue: str, inventory: Mapping[str, Decimal]) -> None:
        """`venue` is a spot account that held `inventory` (base units per asset) before the
        fills in the exposure book: a sell beyond what it holds now, less its open sells, is
        refused (`risk:spot_inventory`) instead of breaking a hedge at the venue."""
        self._spot[venue] = dict(inventory)

    def spot_held(self, venue: str, asset: str) -> Decimal | None:
        """What a spot account holds of `asset` now (None for a venue that can go short)."""
        inventory = self._spot.get(venue)
        if inventory is None:
            return None
        return inventory.get(asset, ZERO) + self.exposure.position(venue, asset)

    @property
    def max_open_groups(self) -> int:
        return self.limits.max_open_groups

    def set_max_leg_notional(self, notional: Decimal) -> None:
        """A runtime setting (engine.steering): every check from now on uses it."""
        self.limits = replace(self.limits, max_leg_notional=notional)

    # -- trading state ---------------------------------------------------------------------
    def _set(self, state: TradingState, reason: str) -> StateChange:
        self.state = state
        self.reason = reason
        change = StateChange(self._clock.time_ms(), state, reason)
        self.history.append(change)
        return change

    def kill(self, reason: str) -> StateChange:
        """Halt: effective for the very next decision, since the pipeline reads `state`."""
        return self._set(TradingState.HALTED, reason or "kill")

    def reduce(self, reason: str) -> StateChange:
        """Only exposure-reducing orders from now on (never loosens a halt)."""
        if self.state is TradingState.HALTED:
            return StateChange(self._clock.time_ms(), self.state, self.reason)
        return self._set(TradingState.REDUCING, reason or "reducing")

    def pause(self, reason: str = "pause") -> StateChange | None:
        if self.state is not TradingState.ACTIVE:
            return None
        return self._set(TradingState.PAUSED, reason)

    def resume(self, reason: str = "resume") -> StateChange | None:
        """Undo a pause; refused (None) while the failure breaker holds the pause."""
        if self.state is not TradingState.PAUSED:
            return None
        if self.breakers.all["consecutive_failures"].tripped:
            return None
        return self._set(TradingState.ACTIVE, reason)

    def rearm(self, reason: str) -> StateChange:
        """Back to active, only with a reason and with no halting or pausing breaker tripped.

        Latched halt breakers whose cause is gone are released first (and returned through
        `last_released`), so the caller journals them.
        """
        self.last_released = []
        if not reason.strip():
            raise RearmRefused("rearm needs a reason")
        self.last_released = self.breakers.clear_latched(self._clock.time_ms())
        blocking = self.breakers.blocking_rearm()
        if blocking:
            names = ", ".join(f"{b.name} ({b.detail})" for b in blocking)
            raise RearmRefused(f"breaker still tripped: {names}")
        return self._set(TradingState.ACTIVE, reason)

    def blocked_state(self) -> str | None:
        """The reason new groups are refused by the trading state, or None when active."""
        state = self.state
        if state is _ACTIVE:
            return None
        if state is TradingState.HALTED:
            return Reason.HALTED
        if state is TradingState.PAUSED:
            return Reason.PAUSED
        return Reason.REDUCING

    # -- breakers --------------------------------------------------------------------------
    def apply(self, changes: list[BreakerChange]) -> list[tuple[BreakerChange, StateChange | None]]:
        """Apply breaker trips and releases to the trading state; returns each change with
        the state change it caused (for the risk_events journal)."""
        out: list[tuple[BreakerChange, StateChange | None]] = []
        for c in changes:
            state: StateChange | None = None
            if c.tripped and c.effect == "halt":
                state = self._set(TradingState.HALTED, f"breaker {c.name}: {c.detail}")
            elif c.tripped and c.effect == "pause":
                if self.state is TradingState.ACTIVE:
                    state = self._set(TradingState.PAUSED, f"breaker {c.name}: {c.detail}")
            elif (not c.tripped and c.effect == "pause" and self.state is TradingState.PAUSED
                  and self.reason.startswith(f"breaker {c.name}")):
                    state = self._set(TradingState.ACTIVE, f"breaker {c.name} released: {c.detail}")
            out.append((c, state))
        return out

    def set_free_balance(self, venue: str, free: Decimal) -> list[BreakerChange]:
        self.free_balance[venue] = free
        return self.breakers.on_balance(venue, free, self._clock.time_ms())

    # -- judging ---------------------------------------------------------------------------
    def check(self, intent: ExecutionIntent, open_groups: int) -> str | None:
        """Limits on a would-be intent (both legs as entries); returns `risk:<rule>` or None."""
        if open_groups >= self.limits.max_open_groups:
            return "risk:max_open_groups"
        blocked = self.breakers.blocked_venues()
        book = self.exposure
        held: list[str] = []
        try:
            for leg, price in ((intent.buy, intent.buy_price), (intent.sell, intent.sell_price)):
                if leg.venue in blocked:
                    return self._blocked_reason(leg.venue)
                value = Decimal(repr(price))
                refusal = self._limits(leg.venue, intent.pair, leg.side, leg.base_qty, value)
                if refusal is not None:
                    return refusal
                # Both legs together: the second is judged with the first one in flight, as
                # check_order will judge it (without touching the marks).
                key = f"\x00intent:{leg.side}"
                book.reservations[key] = Reservation(leg.venue, intent.pair, leg.side, leg.base_qty, value)
                held.append(key)
        finally:
            for key in held:
                book.reservations.pop(key, None)
        return None

    def _blocked_reason(self, venue: str) -> str:
        b = self.breakers.all.get(f"balance:{venue}")
        if b is not None and b.tripped:
            return "risk:min_free_balance"
        return "risk:venue_blocked"

    def position_reducing(
        self, venue: str, asset: str, side: Side, qty: Decimal, exclude: str | None = None
    ) -> bool:
        """Filling the order in full leaves a smaller |position| on its venue, with the
        venue's other open orders on the same side filling as well (never flipping through
        zero): so such an order can never raise the worst-case exposure. `exclude`: the
        order's own key, when it already holds a reservation."""
        pos = self.exposure.position(venue, asset)
        if qty <= 0 or pos == 0 or (pos > 0) == (side == "buy"):
            return False
        return qty <= abs(pos) - self.exposure.pending(asset, side, venue, exclude)

    def net_reducing(self, asset: str, side: Side, qty: Decimal, exclude: str | None = None) -> bool:
        """Filling the order in full leaves a smaller |net position| of the asset over every
        venue, with the other open orders on the same side filling as well."""
        net = self.exposure.net(asset)
        if qty <= 0 or net == 0 or (net > 0) == (side == "buy"):
            return False
        return qty <= abs(net) - self.exposure.pending(asset, side, None, exclude)

    def check_order(self, o: OrderCheck) -> str | None:
        """The last word before an order leaves: trading state, then limits."""
        if o.base_qty <= 0 or o.price < 0:
            return "risk:invalid_order"
        reduces_position = o.closes_position or self.position_reducing(
            o.venue, o.asset, o.side, o.base_qty, o.key
        )
        state = self.state
        if state is TradingState.HALTED:
            allowed = reduces_position if o.purpose is OrderPurpose.FLATTEN else o.reduces_group
            if not allowed:
                return "risk:halted"
        elif state is TradingState.REDUCING and not (
            reduces_position or self.net_reducing(o.asset, o.side, o.base_qty, o.key)
        ):
            return "risk:reducing"
        if reduces_position:
            return None
        if o.purpose is OrderPurpose.FLATTEN:
            return "risk:flatten_not_reducing"
        if o.purpose is OrderPurpose.ENTRY and o.venue in self.breakers.blocked_venues() and not o.reduces_group:
            return self._blocked_reason(o.venue)
        return self._limits(o.venue, o.asset, o.side, o.base_qty, o.price, exclude=o.key,
                            repair=o.reduces_group)

    def _limits(
        self, venue: str, asset: str, side: Side, qty: Decimal, price: Decimal, exclude: str | None = None,
        repair: bool = False,
    ) -> str | None:
        """`repair`: the order re-trades (part of) a leg its group already holds, so its size
        was admitted with the group's entry: not judged against `max_leg_notional` again."""
        lim = self.limits
        book = self.exposure
        # An unpriced order (a market close) is valued at the asset's mark; with neither,
        # its notional cannot be shown to fit.
        value = price if price > 0 else book.marks.get(asset, ZERO)
        if value <= 0 or (not repair and qty * value > lim.max_leg_notional):
            return "risk:max_leg_notional"
        held_now = self.spot_held(venue, asset) if side == "sell" else None
        if held_now is not None and qty > held_now - book.pending(asset, "sell", venue, exclude):
            return "risk:spot_inventory"
        held = book.reservations.pop(exclude, None) if exclude is not None else None
        try:
            mark = book.marks.get(asset)
            if mark is None and price > 0:
                book.marks[asset] = price
            try:
                if book.venue_gross(venue, (asset, side, qty)) > lim.max_venue_exposure:
                    return "risk:max_venue_exposure"
                if book.asset_gross(asset, (venue, side, qty)) > lim.max_asset_exposure:
                    return "risk:max_asset_exposure"
            finally:
                if mark is None:
                    book.marks.pop(asset, None)
        finally:
            if held is not None and exclude is not None:
                book.reservations[exclude] = held
        return None

    # -- views -----------------------------------------------------------------------------
    def limit_use(self, open_groups: int) -> list[tuple[str, str, Decimal, Decimal]]:
        """(rule, scope, limit, used) for every limit: the risk screen and `status`."""
        lim = self.limits
        rows: list[tuple[str, str, Decimal, Decimal]] = [
            ("max_open_groups", "engine", Decimal(lim.max_open_groups), Decimal(open_groups)),
        ]
        largest = max((r.remaining * r.price for r in self.exposure.reservations.values()), default=ZERO)
        rows.append(("max_leg_notional", "leg", lim.max_leg_notional, largest))
        for venue, gross in self.exposure.gross_by_venue().items():
            rows.append(("max_venue_exposure", venue, lim.max_venue_exposure, gross))
        for asset, gross in self.exposure.gross_by_asset().items():
            rows.append(("max_asset_exposure", asset, lim.max_asset_exposure, gross))
        if lim.min_free_balance > 0:
            for venue, free in sorted(self.free_balance.items()):
                rows.append(("min_free_balance", venue, lim.min_free_balance, free))
        return rows
