"""What every exchange gateway shares: how an error is classed, what an instrument allows, the
venue's clock.

Each venue folder (`exchanges/okx/`, `exchanges/binance/`) maps its own error codes onto
`ErrorKind` in its `errors.py`, so the engine acts on one vocabulary: a `rejected` order is
final, an `unknown` one is asked about by client order id and never sent again, a
`retryable` one never reached the matching engine. Instrument specs come from the venue
(OKX instruments, Binance exchangeInfo); an order is rounded against them before it leaves,
and refused locally, naming the filter, when it cannot satisfy them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum

from core.instruments import Instrument, ceil_to, floor_to
from core.models import Side


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"  # did not reach the engine: the same request (same client id) may go again
    REJECTED = "rejected"  # the venue refused the order: final, nothing happened
    UNKNOWN = "unknown"  # it may have happened: ask by client order id, never send it again
    RATE_LIMITED = "rate_limited"  # wait `retry_after_s` (the venue bans those who do not)
    CLOCK_SKEW = "clock_skew"  # our timestamp is outside the venue's window: resync, then retry
    AUTH = "auth"  # key, signature, passphrase or permission: nothing works until fixed
    HALT = "halt"  # anything that makes trading on the venue unsafe


class VenueError(Exception):
    """A venue's answer that is not a success, classed. The message never holds a secret."""

    def __init__(self, venue: str, kind: ErrorKind, code: str, message: str, *,
                 retry_after_s: float | None = None, http_status: int | None = None) -> None:
        super().__init__(f"{venue} {kind} {code}: {message}")
        self.venue = venue
        self.kind = kind
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.http_status = http_status


class FilterRefusal(ValueError):
    """The order cannot satisfy one of the venue's instrument filters; refused before sending."""

    def __init__(self, symbol: str, filter_name: str, detail: str) -> None:
        super().__init__(f"{symbol}: {filter_name}: {detail}")
        self.symbol = symbol
        self.filter_name = filter_name


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One instrument as the venue defines it, in the venue's units (contracts for OKX swaps).

    `contract_value`: base units per order unit (OKX `ctVal`; 1 for spot and Binance)."""

    venue: str
    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    min_qty: Decimal
    min_notional: Decimal = Decimal(0)
    max_qty: Decimal | None = None
    contract_value: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        """A spec without a usable grid or with nonsense bounds is refused when built, not when an
        order meets it (a zero tick would divide by zero on the hot path)."""
        for name in ("tick_size", "lot_size", "contract_value"):
            value: Decimal = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{self.venue} {self.symbol}: {name} must be a finite number > 0, not {value}")
        for name in ("min_qty", "min_notional"):
            value = getattr(self, name)
            if not value.is_finite() or value < 0:
                raise ValueError(f"{self.venue} {self.symbol}: {name} must be a finite number >= 0, not {value}")
        if self.max_qty is not None and (not self.max_qty.is_finite() or self.max_qty <= 0):
            raise ValueError(f"{self.venue} {self.symbol}: max_qty must be None or a finite number > 0")

    def round_order(self, side: Side, qty: Decimal, price: Decimal, *,
                    reduce_only: bool = False) -> tuple[Decimal, Decimal]:
        """(qty, price) on the venue's grid: quantity down to a lot, price never worse than the
        limit asked (a buy rounds down, a sell up). FilterRefusal names the filter it fails.

        The arithmetic is exact (`core.instruments.floor_to`/`ceil_to`): dividing in the default
        28-digit context rounded a long quotient up before flooring, which sent more than asked
        or a buy above its limit."""
        if not (qty.is_finite() and price.is_finite()) or qty <= 0 or price <= 0:
            raise FilterRefusal(self.symbol, "positive", f"qty {qty} and price {price} must be finite and > 0")
        q = floor_to(qty, self.lot_size)
        p = floor_to(price, self.tick_size) if side == "buy" else ceil_to(price, self.tick_size)
        if q <= 0:
            raise FilterRefusal(self.symbol, "lot_size", f"{qty} is less than one lot of {self.lot_size}")
        if p <= 0:
            raise FilterRefusal(self.symbol, "tick_size", f"a buy at {price} is below one tick of {self.tick_size}")
        if q < self.min_qty:
            raise FilterRefusal(self.symbol, "min_qty", f"{q} below the minimum {self.min_qty}")
        if self.max_qty is not None and q > self.max_qty:
            raise FilterRefusal(self.symbol, "max_qty", f"{q} above the maximum {self.max_qty}")
        with localcontext() as ctx:
            ctx.prec = 2000  # exact, like the rounding: a boundary notional must not round up
            notional = q * self.contract_value * p
        if notional < self.min_notional and not reduce_only:
            raise FilterRefusal(self.symbol, "min_notional", f"{notional} below the minimum {self.min_notional}")
        return q, p

    def mismatches(self, configured: Instrument) -> list[str]:
        """How the config's typed-in instrument differs from the venue's (empty: they agree).
        A mismatch is an error at start: trading at the wrong size is never silent."""
        out: list[str] = []
        checks = (
            ("tick_size", configured.tick_size, self.tick_size),
            ("lot_step", configured.lot_step, self.lot_size),
            ("min_qty", configured.min_qty, self.min_qty),
            ("qty_per_unit", configured.qty_per_unit, self.contract_value),
        )
        for name, mine, theirs in checks:
            if Decimal(mine) != theirs:
                out.append(f"{self.venue} {self.symbol}: {name} is {mine} in the config, {theirs} on the venue")
        return out


class ClockOffset:
    """The venue's clock minus ours, from its server-time endpoint (a skew error resyncs it)."""

    def __init__(self) -> None:
        self.offset_ms = 0
        self.synced = False

    def update(self, server_ms: int, sent_ms: int, received_ms: int) -> None:
        """Assume the server read its clock halfway through the round trip."""
        self.offset_ms = server_ms - (sent_ms + received_ms) // 2
        self.synced = True

    def venue_ms(self, local_ms: int) -> int:
        return local_ms + self.offset_ms
