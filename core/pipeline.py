"""OpportunityPipeline: turns every quote into one Decision, and good edges into intents.

Per quote it refreshes the directed edges that the quote touches (CompareEngine) and gives
one verdict: an intent for the best edge that passes every rule, otherwise the reason the
best edge was blocked. A quote the price guard refuses (its mid further than
`max_quote_deviation_bps` from every other venue's fresh mid, see `core.compare`) is judged
no further: `price_outlier`. Rules, in the order they are checked for an edge over threshold:

1. sane prices: the two legs' mids within `max_quote_deviation_bps` of each other
   (`price_outlier`) and the edge at most `max_edge_bps` (`edge_above_ceiling`): an edge that
   large is a bad price, not an opportunity;
2. trading state (`halted`, `paused`, `reducing`): the kill switch is seen on the next quote;
   then the pair itself: a pair disabled by config or at runtime -> `pair_disabled`;
3. stale guard: both quotes younger than `max_quote_age_ms` (local receive time);
4. persistence: the edge has stayed over threshold (and sane) for `persistence_ms`;
5. in flight: no new intent while a group of the pair is open;
6. cooldown: per pair and direction, after an intent;
7. risk limits (`risk:<rule>` from the RiskGate);
8. size: min of both top-of-book sizes and `max_leg_notional / price`, rounded down to a
   whole number of both venues' lot steps; below the minimum size -> `size_too_small`.

Edges that a quote does not touch are not re-judged: their inputs did not change.

The threshold, the cooldown, `max_leg_notional` and the enabled pairs change only through the
`set_*` methods (engine.steering, docs/operator.md): the next decision uses the new value.

`lifetimes` counts how long edges stayed over the threshold (from the first quote at or over
it to the first under it) in fixed buckets (`core.durations`): the analytics screen shows it
against the orchestrator's reaction time.
"""

from __future__ import annotations

from collections import Counter
from decimal import ROUND_FLOOR, Context, Decimal

from core.clock import Clock
from core.compare import Book, CompareEngine, EdgeState
from core.config import RiskConfig, StrategyConfig
from core.durations import DurationHistogram
from core.instruments import floor_to
from core.models import Decision, ExecutionIntent, ExecutionLeg, Outcome, Quote, Reason
from core.risk import RiskGate

_NEG_INF = float("-inf")
# The verdicts of every quote, as module constants: a StrEnum member read through its class
# costs ~60 ns, and _decide reads one per edge below the threshold.
_BELOW = Reason.BELOW_THRESHOLD
_NO_COUNTER = Reason.NO_COUNTER_QUOTE
_BLOCKED = Outcome.BLOCKED
_FLOOR = Context(rounding=ROUND_FLOOR)  # quantity caps never round up


class OpportunityPipeline:
    def __init__(
        self,
        compare: CompareEngine,
        strategy: StrategyConfig,
        risk: RiskConfig,
        gate: RiskGate,
        clock: Clock,
        *,
        disabled_pairs: frozenset[str] = frozenset(),
    ) -> None:
        self.compare = compare
        self.gate = gate
        self.clock = clock
        self.threshold_bps = strategy.threshold_bps
        self.persistence_ns = strategy.persistence_ms * 1_000_000
        self.cooldown_ns = strategy.cooldown_ms * 1_000_000
        self.max_age_ns = strategy.max_quote_age_ms * 1_000_000
        self.max_edge_bps = strategy.max_edge_bps
        self.tolerance = strategy.max_quote_deviation_bps / 10_000.0
        # The quote-level half of the price guard lives with the books; quotes are fresh
        # references for it as long as they may trade.
        compare.set_guard(strategy.max_quote_deviation_bps, self.max_age_ns)
        self.max_leg_notional = risk.max_leg_notional
        self.in_flight: set[str] = set()
        self._disabled: set[str] = set(disabled_pairs)
        self.reasons: Counter[str] = Counter()
        self.quotes = 0
        self.decisions = 0
        self.intents = 0
        # How long edges stay over the threshold (and sane), bounded: the analytics screen.
        self.lifetimes = DurationHistogram()

    # -- steering (engine.steering): effective on the next decision ---------------------
    def set_threshold_bps(self, bps: float) -> None:
        self.threshold_bps = bps

    def set_cooldown_ms(self, ms: int) -> None:
        self.cooldown_ns = ms * 1_000_000

    def set_max_leg_notional(self, notional: Decimal) -> None:
        self.max_leg_notional = notional

    def set_pair_enabled(self, pair: str, enabled: bool) -> None:
        if enabled:
            self._disabled.discard(pair)
        else:
            self._disabled.add(pair)

    def pair_enabled(self, pair: str) -> bool:
        return pair not in self._disabled

    @property
    def cooldown_ms(self) -> int:
        return self.cooldown_ns // 1_000_000

    # -- group lifecycle -------------------------------------------------------------
    def release(self, pair: str) -> None:
        """A group of `pair` reached a terminal state: the pair may trade again."""
        self.in_flight.discard(pair)

    # -- hot path --------------------------------------------------------------------
    def on_quote(self, quote: Quote) -> Decision | None:
        """Judge one quote. None only when the quote itself was refused (unknown or insane)."""
        self.quotes += 1
        book = self.compare.update(quote)
        if book is None:
            return None
        if book.outlier:
            return self._outlier(book)
        return self._decide(book)

    def _outlier(self, book: Book) -> Decision:
        """The quote was refused by the price guard: no edge of its book is judged."""
        for edge in book.edges:
            edge.above_since_ns = 0
            edge.last_reason = Reason.PRICE_OUTLIER
        self.decisions += 1
        self.reasons[Reason.PRICE_OUTLIER] += 1
        return Decision(self.clock.time_ms(), book.pair, None, None, 0.0, Outcome.BLOCKED, Reason.PRICE_OUTLIER)

    def _decide(self, book: Book) -> Decision:
        now_ns = self.clock.monotonic_ns()
        threshold = self.threshold_bps
        below = _BELOW
        best: EdgeState | None = None
        best_bps = _NEG_INF
        over: list[EdgeState] | None = None
        for edge in book.edges:
            if not edge.valid:
                continue
            bps = edge.edge_bps
            if bps >= threshold:
                if edge.above_since_ns == 0:
                    edge.above_since_ns = now_ns
                if over is None:
                    over = [edge]
                else:
                    over.append(edge)
            else:
                if edge.above_since_ns:  # an edge's time over the threshold ends
                    self.lifetimes.record(now_ns - edge.above_since_ns)
                    edge.above_since_ns = 0
                edge.last_reason = below
            if bps > best_bps:
                best_bps = bps
                best = edge
        self.decisions += 1
        ts_ms = self.clock.time_ms()
        if best is None:
            self.reasons[_NO_COUNTER] += 1
            return Decision(ts_ms, book.pair, None, None, 0.0, _BLOCKED, _NO_COUNTER)
        if over is None:
            self.reasons[_BELOW] += 1
            return Decision(
                ts_ms, best.pair, best.buy.venue, best.sell.venue, best_bps,
                _BLOCKED, _BELOW,
            )
        if len(over) > 1:
            over.sort(key=_by_edge, reverse=True)
        first_reason = ""
        for edge in over:
            reason, intent = self._judge(edge, now_ns, ts_ms)
            edge.last_reason = reason
            if intent is not None:
                self.reasons[Reason.OK] += 1
                self.intents += 1
                return Decision(
                    ts_ms, edge.pair, edge.buy.venue, edge.sell.venue, edge.edge_bps,
                    Outcome.INTENT, Reason.OK, intent,
                )
            if not first_reason:
                first_reason = reason
        top = over[0]
        self.reasons[first_reason] += 1
        return Decision(
            ts_ms, top.pair, top.buy.venue, top.sell.venue, top.edge_bps,
            _BLOCKED, first_reason,
        )

    def _judge(self, edge: EdgeState, now_ns: int, ts_ms: int) -> tuple[str, ExecutionIntent | None]:
        # The price guard on the edge, first (inline: this runs for every edge over threshold).
        a = edge.buy.mid
        b = edge.sell.mid
        if abs(a - b) > self.tolerance * (a if a < b else b):
            edge.above_since_ns = 0  # persistence counts from the first sane quote
            return Reason.PRICE_OUTLIER, None
        if edge.edge_bps > self.max_edge_bps:
            edge.above_since_ns = 0
            return Reason.EDGE_ABOVE_CEILING, None
        blocked = self.gate.blocked_state()
        if blocked is not None:
            return blocked, None
        if self._disabled and edge.pair in self._disabled:
            return Reason.PAIR_DISABLED, None
        max_age = self.max_age_ns
        if now_ns - edge.buy.recv_ns > max_age or now_ns - edge.sell.recv_ns > max_age:
            return Reason.STALE_QUOTE, None
        if now_ns - edge.above_since_ns < self.persistence_ns:
            return Reason.PERSISTING, None
        if edge.pair in self.in_flight:
            return Reason.IN_FLIGHT, None
        last = edge.last_intent_ns
        if last is not None and now_ns - last < self.cooldown_ns:
            return Reason.COOLDOWN, None
        intent = self._size(edge, ts_ms)
        if intent is None:
            return Reason.SIZE_TOO_SMALL, None
        risk = self.gate.check(intent, len(self.in_flight))
        if risk is not None:
            return risk, None
        edge.last_intent_ns = now_ns
        self.in_flight.add(edge.pair)
        return Reason.OK, intent

    def _size(self, edge: EdgeState, ts_ms: int) -> ExecutionIntent | None:
        buy = edge.buy
        sell = edge.sell
        bi = buy.inst
        si = sell.inst
        # In decimals from the venue's own numbers: the float route lost a whole step whenever a
        # product or quotient fell just under a step (0.29 lot * 100 = 28.999999999999996 oz -> 28;
        # a cap of 7 * 2650.01 over 2650.01 = 6.999999999999999 -> 6). The cap rounds down.
        ask = Decimal(repr(buy.ask))
        # Both legs must fit max_leg_notional: the sell leg (at the bid, above the ask when
        # there is an edge) is the larger one.
        top = max(ask, Decimal(repr(sell.bid)))
        qty = min(
            Decimal(repr(buy.raw_ask_size)) * bi.qty_per_unit,
            Decimal(repr(sell.raw_bid_size)) * si.qty_per_unit,
            _FLOOR.divide(self.max_leg_notional, top),
        )
        if qty <= 0:
            return None
        base_qty = floor_to(qty, edge.step)
        if base_qty < edge.min_base_qty:
            return None
        if edge.min_notional and base_qty * ask < edge.min_notional:
            return None
        buy_leg = ExecutionLeg(
            venue=bi.venue,
            symbol=bi.symbol,
            side="buy",
            quantity=bi.to_venue_qty(base_qty),
            limit_price=bi.limit_price(buy.raw_ask, "buy"),
            base_qty=base_qty,
        )
        sell_leg = ExecutionLeg(
            venue=si.venue,
            symbol=si.symbol,
            side="sell",
            quantity=si.to_venue_qty(base_qty),
            limit_price=si.limit_price(sell.raw_bid, "sell"),
            base_qty=base_qty,
        )
        return ExecutionIntent(
            pair=edge.pair,
            buy=buy_leg,
            sell=sell_leg,
            base_qty=base_qty,
            expected_edge_bps=edge.edge_bps,
            buy_price=buy.ask,
            sell_price=sell.bid,
            created_ms=ts_ms,
            quote_ns=buy.recv_ns if buy.recv_ns > sell.recv_ns else sell.recv_ns,
        )


def _by_edge(edge: EdgeState) -> float:
    return edge.edge_bps

