"""Paper gateway: fills marketable IOC orders against the current book, with seeded faults.

An order whose limit crosses the current touch fills at the touch (IOC semantics); one that
does not is expired unfilled, as an IOC order is on a real venue. Fees are the instrument's
taker fee on notional.

A `PaperBehaviour` makes the venue realistic, every draw from a seeded `random.Random` per
gateway so that a run replays: latency before the venue acts (the book may move meanwhile),
adverse slippage against the touch (never beyond the order's limit), partial fills (the rest
of the IOC expires), rejects with a venue-like reason, timeouts (place waits, then raises
`TimeoutError`; the order may or may not have reached the venue) and lost acknowledgements
(the order executes, then place raises `ConnectionError`). The default behaviour is none of
that: no latency, no faults, fills at the touch.

A **spot** paper account (`spot_inventory` given: base units held per asset) cannot sell what
it does not hold: a sell beyond the inventory is rejected as Binance spot rejects it
(`-2010`, "Account has insufficient balance for requested action."), and every fill moves the
inventory. A derivatives account (perpetuals, CFDs) may go short.

Whatever happens, the gateway never guesses and never lies: `query` by client order id
reports the truth about every order the venue saw (an order it never saw is rejected with
"order not found"), and a re-sent client order id is answered, never executed twice. Like a
real venue's order history, that memory has a horizon: `PAPER_ORDER_HORIZON_MS`, and at most
`PAPER_ORDERS_KEPT` orders (every order is in the ledger).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.bounded import forget_oldest
from core.clock import Clock
from core.instruments import Instrument, ceil_to, floor_to
from core.models import Fill, Order, OrderState, Venue
from core.ports import OrderUpdate

# (bid, ask) of an instrument right now, in venue units; None when never quoted.
TouchSource = Callable[[Venue, str], tuple[float, float] | None]

# How long a paper venue remembers an order (answers queries and re-sends about it). The
# engine asks about an order within its group's deadline (seconds), or once more when the
# group closes, and a group open past `risk.hold_timeout_s` (600 s by default) is unwound:
# ten minutes covers that, and is about 700 orders (~0.5 MB) at the demo's load.
PAPER_ORDER_HORIZON_MS = 10 * 60_000
# And at most this many, whatever the rate (a burst must not grow memory either).
PAPER_ORDERS_KEPT = 10_000

# What venues say when they refuse an order (the reasons a rejected paper order carries).
REJECT_REASONS: tuple[str, ...] = (
    "insufficient margin",
    "rate limit exceeded",
    "price outside the allowed band",
    "instrument temporarily halted",
    "risk limit exceeded",
)

_FEE_Q = Decimal("0.00000001")
INSUFFICIENT_BALANCE = "insufficient balance: Account has insufficient balance for requested action."


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class PaperBehaviour:
    """How realistic (and how unreliable) a paper venue is. The default: perfect.

    - `latency_ms`: (min, max) delay before the venue acts on an order, uniform.
    - `slippage_bps`: the fill price is up to this much worse than the touch (uniform), and
      never worse than the order's limit.
    - `partial_prob`, `partial_min_fraction`: an IOC fills only a fraction in
      [partial_min_fraction, 1) of its quantity (down to the lot step); the rest expires.
    - `reject_prob`: the venue refuses the order with a venue-like reason.
    - `timeout_prob`, `timeout_ms`: place waits `timeout_ms`, then raises `TimeoutError`;
      half of those orders reached the venue and executed, the other half never arrived.
    - `lost_ack_prob`: the order executes, then place raises `ConnectionError`.
    - `seed`: seeds each gateway's random draws (combined with the gateway's venue).
    """

    latency_ms: tuple[float, float] = (0.0, 0.0)
    slippage_bps: float = 0.0
    partial_prob: float = 0.0
    partial_min_fraction: float = 0.1
    reject_prob: float = 0.0
    timeout_prob: float = 0.0
    timeout_ms: float = 250.0
    lost_ack_prob: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.latency_ms
        if not 0.0 <= low <= high:
            raise ValueError(f"latency_ms must be 0 <= min <= max, got {self.latency_ms}")
        if not self.slippage_bps >= 0.0:
            raise ValueError(f"slippage_bps must be >= 0, got {self.slippage_bps}")
        if not self.timeout_ms >= 0.0:
            raise ValueError(f"timeout_ms must be >= 0, got {self.timeout_ms}")
        for name in ("partial_prob", "partial_min_fraction", "reject_prob", "timeout_prob", "lost_ack_prob"):
            _probability(name, getattr(self, name))

    @property
    def faulty(self) -> bool:
        return self.reject_prob > 0 or self.timeout_prob > 0 or self.lost_ack_prob > 0


@dataclass(frozen=True, slots=True)
class _Draws:
    """Every random choice about one order, drawn at once: a fixed count per order keeps a
    seeded run reproducible whichever path the order takes."""

    latency_s: float
    reject: bool
    reject_reason: str
    timeout: bool
    timeout_executed: bool
    lost_ack: bool
    partial: bool
    partial_fraction: float
    slippage: float  # fraction of slippage_bps, in [0, 1)


class PaperGateway:
    """An ExecutionGateway for one venue that trades against the last seen quote."""

    def __init__(
        self,
        venue: Venue,
        instruments: dict[str, Instrument],
        touch: TouchSource,
        clock: Clock,
        *,
        fee_ccy: str = "USDT",
        behaviour: PaperBehaviour | None = None,
        orders_kept: int = PAPER_ORDERS_KEPT,
        order_horizon_ms: int = PAPER_ORDER_HORIZON_MS,
        spot_inventory: Mapping[str, Decimal] | None = None,
    ) -> None:
        if orders_kept < 1 or order_horizon_ms < 1:
            raise ValueError("orders_kept and order_horizon_ms must be >= 1")
        if spot_inventory is not None and any(not q.is_finite() or q < 0 for q in spot_inventory.values()):
            raise ValueError("spot inventory must be finite and >= 0 per asset")
        # A spot account's holdings per asset (base units); None for a derivatives account.
        self._inventory: dict[str, Decimal] | None = None if spot_inventory is None else dict(spot_inventory)
        self._venue: Venue = venue
        self._instruments = instruments
        self._touch = touch
        self._clock = clock
        self._fee_ccy = fee_ccy
        self.behaviour = behaviour or PaperBehaviour()
        # One stream per gateway: the same seed gives each venue its own, reproducible draws.
        self._rng = random.Random(f"{self.behaviour.seed}:{venue}")
        self._trade_ids = itertools.count(1)
        self._order_ids = itertools.count(1)
        # Ids must be unique across runs on the same ledger (a real venue's are): a counter
        # that restarts at 1 would reuse trade ids, and the ledger dedupes fills by them.
        self._run = f"{time.time_ns():x}"[-9:]
        # Orders the venue saw, by client order id, with when they landed, oldest first: a
        # re-sent id is answered, never executed twice. Forgotten past the horizon (`_remember`).
        self._orders: OrderedDict[str, tuple[int, OrderUpdate]] = OrderedDict()
        self._orders_kept = orders_kept
        self._order_horizon_ms = order_horizon_ms
        # Orders on their way (latency): a re-send waits for the first to land.
        self._inflight: dict[str, asyncio.Event] = {}
        # Cancels that reached the venue before the order did (a kill during latency).
        self._cancel_first: set[str] = set()

    @property
    def venue(self) -> Venue:
        return self._venue

    def use_run_id(self, run_id: str) -> None:
        """Name this run's venue ids by `run_id` instead of the wall clock: a replay into a
        fresh ledger must write the same ids every time it runs (determinism)."""
        self._run = run_id

    async def place(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        pending = self._inflight.get(cid)
        if pending is not None:
            await pending.wait()
        seen = self._seen(cid)
        if seen is not None:
            return OrderUpdate(cid, seen.state, seen.venue_order_id, [], "duplicate")
        draws = self._draw()
        behaviour = self.behaviour
        if draws.timeout:
            # The request (or its answer) is lost: the caller hears nothing until it gives up.
            landed = asyncio.Event()
            self._inflight[cid] = landed
            try:
                await asyncio.sleep(behaviour.timeout_ms / 1000)
                if cid in self._cancel_first:
                    self._remember(self._cancelled_on_arrival(cid))
                elif draws.timeout_executed:
                    self._remember(self._execute(order, draws))
            finally:
                del self._inflight[cid]
                landed.set()
            raise TimeoutError(f"{self._venue}: no answer for {cid} within {behaviour.timeout_ms:.0f} ms")
        if draws.latency_s > 0:
            landed = asyncio.Event()
            self._inflight[cid] = landed
            try:
                await asyncio.sleep(draws.latency_s)
            finally:
                del self._inflight[cid]
                landed.set()
            seen = self._seen(cid)
            if seen is not None:  # a concurrent re-send got there first
                return OrderUpdate(cid, seen.state, seen.venue_order_id, [], "duplicate")
            if cid in self._cancel_first:
                return self._remember(self._cancelled_on_arrival(cid))
        if draws.reject:
            update = OrderUpdate(cid, OrderState.REJECTED, self._venue_order_id(), [], draws.reject_reason)
        else:
            update = self._execute(order, draws)
        self._remember(update)
        if draws.lost_ack and not draws.reject:
            raise ConnectionError(f"{self._venue}: connection reset before the acknowledgement of {cid}")
        return update

    @property
    def spot(self) -> bool:
        """True for a spot account: it sells only what it holds."""
        return self._inventory is not None

    def add_inventory(self, asset: str, qty: Decimal) -> None:
        """A spot account's holdings moved by fills from before this run (the ledger's), base units."""
        if self._inventory is None:
            raise ValueError(f"{self._venue}: not a spot account")
        if not qty.is_finite():
            raise ValueError("inventory change must be finite")
        self._inventory[asset] = self._inventory.get(asset, Decimal(0)) + qty

    def held(self, asset: str) -> Decimal | None:
        """Base units of `asset` a spot account holds now (None for a derivatives account)."""
        return None if self._inventory is None else self._inventory.get(asset, Decimal(0))

    @property
    def orders_remembered(self) -> int:
        """Orders the venue still answers about (within the horizon, at most `orders_kept`)."""
        return len(self._orders)

    def _seen(self, cid: str) -> OrderUpdate | None:
        seen = self._orders.get(cid)
        return None if seen is None else seen[1]

    def _remember(self, update: OrderUpdate) -> OrderUpdate:
        """Keep what the venue did with an order; forget those past the horizon or the count."""
        orders = self._orders
        now = self._clock.time_ms()
        cid = update.client_order_id
        orders[cid] = (now, update)
        orders.move_to_end(cid)
        forget_oldest(orders, self._orders_kept, now - self._order_horizon_ms, lambda v: v[0])
        return update

    def _cancelled_on_arrival(self, cid: str) -> OrderUpdate:
        self._cancel_first.discard(cid)
        return OrderUpdate(cid, OrderState.CANCELLED, self._venue_order_id(), [], "cancelled before it executed")

    async def cancel(self, order: Order) -> OrderUpdate:
        cid = order.client_order_id
        landing = self._inflight.get(cid)
        if landing is not None:
            # Still on its way: the cancel gets there first; answer once the order has landed.
            self._cancel_first.add(cid)
            await landing.wait()
            self._cancel_first.discard(cid)  # landed: used, or not needed (a re-send got there first)
        seen = self._seen(order.client_order_id)
        if seen is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="unknown order")
        # IOC orders are already terminal: the cancel changes nothing.
        return OrderUpdate(order.client_order_id, seen.state, seen.venue_order_id, [], "already final")

    async def query(self, order: Order) -> OrderUpdate:
        seen = self._seen(order.client_order_id)
        if seen is None:
            return OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="order not found")
        return OrderUpdate(
            order.client_order_id, seen.state, seen.venue_order_id, list(seen.fills), seen.reason
        )

    # -- internals -----------------------------------------------------------------------
    def _draw(self) -> _Draws:
        b = self.behaviour
        rng = self._rng
        low, high = b.latency_ms
        latency = rng.uniform(low, high) / 1000
        reject = rng.random() < b.reject_prob
        reason = REJECT_REASONS[rng.randrange(len(REJECT_REASONS))]
        timeout = rng.random() < b.timeout_prob
        timeout_executed = rng.random() < 0.5
        lost_ack = rng.random() < b.lost_ack_prob
        partial = rng.random() < b.partial_prob
        fraction = rng.uniform(b.partial_min_fraction, 1.0)
        slippage = rng.random()
        return _Draws(latency, reject, reason, timeout, timeout_executed, lost_ack, partial, fraction, slippage)

    def _venue_order_id(self) -> str:
        return f"P{self._venue[:2].upper()}{self._run}{next(self._order_ids)}"

    def _execute(self, order: Order, draws: _Draws) -> OrderUpdate:
        cid = order.client_order_id
        venue_order_id = self._venue_order_id()
        inst = self._instruments.get(order.symbol)
        if inst is None:
            return OrderUpdate(cid, OrderState.REJECTED, venue_order_id, [], "unknown symbol")
        touch = self._touch(self._venue, order.symbol)
        if touch is None:
            return OrderUpdate(cid, OrderState.REJECTED, venue_order_id, [], "no market")
        bid, ask = touch
        buy = order.side == "buy"
        price = Decimal(repr(ask)) if buy else Decimal(repr(bid))
        marketable = order.price >= price if buy else order.price <= price
        if not marketable or order.qty <= 0:
            return OrderUpdate(cid, OrderState.EXPIRED, venue_order_id, [], "not marketable")
        price = self._slipped(price, order, inst, draws.slippage)
        qty = order.qty
        if draws.partial:
            part = floor_to(qty * Decimal(repr(draws.partial_fraction)), inst.lot_step)
            if 0 < part < qty:
                qty = part
        if self._inventory is not None:
            held = self._inventory.get(inst.pair, Decimal(0))
            base = inst.to_base_qty(qty)
            if not buy and base > held:
                return OrderUpdate(cid, OrderState.REJECTED, venue_order_id, [], INSUFFICIENT_BALANCE)
            self._inventory[inst.pair] = held + base if buy else held - base
        notional = qty * inst.qty_per_unit * price * inst.price_scale
        fee = (notional * Decimal(repr(inst.taker_fee_bps)) / Decimal(10_000)).quantize(_FEE_Q)
        fill = Fill(
            venue=self._venue,
            venue_trade_id=f"T{self._venue[:2].upper()}{self._run}{next(self._trade_ids)}",
            client_order_id=cid,
            qty=qty,
            price=price,
            fee=fee,
            fee_ccy=self._fee_ccy,
            ts_ms=self._clock.time_ms(),
        )
        if qty < order.qty:
            return OrderUpdate(cid, OrderState.EXPIRED, venue_order_id, [fill], "partially filled, rest expired")
        return OrderUpdate(cid, OrderState.FILLED, venue_order_id, [fill])

    def _slipped(self, touch: Decimal, order: Order, inst: Instrument, u: float) -> Decimal:
        """The touch moved against the order by up to slippage_bps, clamped to its limit."""
        bps = self.behaviour.slippage_bps * u
        if bps <= 0:
            return touch
        move = Decimal(repr(bps)) / Decimal(10_000)
        if order.side == "buy":
            return min(ceil_to(touch * (1 + move), inst.tick_size), order.price)
        return max(floor_to(touch * (1 - move), inst.tick_size), order.price)
