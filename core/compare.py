"""CompareEngine: the latest Quote of every instrument and the directed edges between them.

The hot path is one `update()` per quote. It normalizes the quote into a mutable book slot
and recomputes only the directed edges that involve that instrument (an edge that touches
neither changed quote has not changed). Edge states are mutable slots too: nothing is
allocated per quote except by callers that ask for a `PairComparison`.

The price guard (`set_guard`, configured by the pipeline from `strategy.max_quote_deviation_bps`):
a quote whose mid is further than the bound from the mid of EVERY other venue of its pair that
quoted within the freshness window before it (by local receive time) is an outlier. It is
refused: the book withdraws its tradable quote (its edges become invalid until a sane quote
comes), keeps the outlier's mid only as a reference for the other venues, and counts it.
"Every other venue" (not their average) is what lets two agreeing venues outvote a third; with
two venues a disagreement cannot be attributed, so both sides' quotes are refused while it
lasts. Without a fresh quote on another venue there is nothing to compare with, and the quote
is accepted (no guess).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from core.instruments import Instrument, Pair, common_step
from core.models import DirectedEdge, PairComparison, Quote, Venue

_INF = float("inf")


class Book:
    """Latest quote of one instrument, normalized to base units and normalized prices."""

    __slots__ = (
        "agreed",
        "ask",
        "ask_qty",
        "bid",
        "bid_qty",
        "edges",
        "has_quote",
        "inst",
        "mid",
        "outlier",
        "outlier_run",
        "outliers",
        "pair",
        "peers",
        "quotes",
        "raw_ask",
        "raw_ask_size",
        "raw_bid",
        "raw_bid_size",
        "recv_ns",
        "seen_ns",
        "venue",
        "venue_ts_ms",
    )

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.venue: Venue = inst.venue
        self.pair = inst.pair
        self.has_quote = False
        self.bid = 0.0
        self.ask = 0.0
        self.bid_qty = 0.0
        self.ask_qty = 0.0
        self.raw_bid = 0.0
        self.raw_ask = 0.0
        self.raw_bid_size = 0.0
        self.raw_ask_size = 0.0
        self.venue_ts_ms = 0
        self.recv_ns = 0
        self.quotes = 0
        self.edges: list[EdgeState] = []
        # The price guard: the other venues' books of the pair, the mid of the latest quote
        # received (accepted or not) and when, and the outlier bookkeeping.
        self.peers: list[Book] = []
        self.mid = 0.0
        self.seen_ns = 0
        self.outlier = False  # the latest quote was refused as an outlier
        self.outlier_run = 0  # outliers in a row (a quote that agrees resets it)
        self.outliers = 0  # outliers since start
        self.agreed = False  # a quote has agreed with another venue since start


class EdgeState:
    """One directed edge of a pair (buy on `buy`, sell on `sell`) and the pipeline's memory of it."""

    __slots__ = (
        "above_since_ns",
        "buy",
        "buy_cost",
        "edge_bps",
        "gross_bps",
        "last_intent_ns",
        "last_reason",
        "min_base_qty",
        "min_notional",
        "pair",
        "sell",
        "sell_keep",
        "step",
        "valid",
    )

    def __init__(self, pair: str, buy: Book, sell: Book) -> None:
        self.pair = pair
        self.buy = buy
        self.sell = sell
        # Fee factors: the buy leg costs ask * (1 + fee), the sell leg keeps bid * (1 - fee).
        self.buy_cost = 1.0 + buy.inst.fee_f
        self.sell_keep = 1.0 - sell.inst.fee_f
        self.gross_bps = 0.0
        self.edge_bps = 0.0
        self.valid = False
        self.above_since_ns = 0
        self.last_intent_ns: int | None = None
        self.last_reason = ""
        # A size both venues can trade exactly: a whole number of both lot steps.
        self.step: Decimal = common_step(buy.inst.base_step, sell.inst.base_step)
        self.min_base_qty: Decimal = max(buy.inst.base_min_qty, sell.inst.base_min_qty, self.step)
        self.min_notional: Decimal = max(buy.inst.min_notional, sell.inst.min_notional)

    def recompute(self) -> float:
        """Refresh gross and net edge from the two books; returns the net edge in bps."""
        buy = self.buy
        sell = self.sell
        ask = buy.ask
        bid = sell.bid
        self.gross_bps = (bid - ask) / ask * 10_000.0
        edge = (bid * self.sell_keep / (ask * self.buy_cost) - 1.0) * 10_000.0
        self.edge_bps = edge
        self.valid = True
        return edge

    def to_edge(self) -> DirectedEdge:
        return DirectedEdge(
            pair=self.pair,
            buy_venue=self.buy.venue,
            sell_venue=self.sell.venue,
            buy_price=self.buy.ask,
            sell_price=self.sell.bid,
            buy_qty=self.buy.ask_qty,
            sell_qty=self.sell.bid_qty,
            gross_bps=self.gross_bps,
            edge_bps=self.edge_bps,
        )


class CompareEngine:
    """Latest Quote per instrument; all directed edges of each pair across its venues."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self.pairs: dict[str, Pair] = {}
        self._books: dict[tuple[str, str], Book] = {}
        self._pair_books: dict[str, list[Book]] = {}
        self._pair_edges: dict[str, list[EdgeState]] = {}
        self.rejected = 0
        self.unknown = 0
        self.outliers = 0
        # The price guard, off until `set_guard`: a tolerance as a fraction of the lower mid.
        self.tolerance = _INF
        self.fresh_ns = 0
        for pair in pairs:
            if pair.name in self.pairs:
                raise ValueError(f"duplicate pair {pair.name}")
            self.pairs[pair.name] = pair
            books = [Book(inst) for inst in pair.instruments]
            for book in books:
                key = (book.venue, book.inst.symbol)
                if key in self._books:
                    raise ValueError(f"instrument {key} belongs to two pairs")
                self._books[key] = book
            edges: list[EdgeState] = []
            for buy in books:
                for sell in books:
                    if buy is sell:
                        continue
                    edge = EdgeState(pair.name, buy, sell)
                    edges.append(edge)
                    buy.edges.append(edge)
                    sell.edges.append(edge)
            for book in books:
                book.peers = [b for b in books if b.venue != book.venue]
            self._pair_books[pair.name] = books
            self._pair_edges[pair.name] = edges

    def set_guard(self, max_deviation_bps: float, fresh_ns: int) -> None:
        """Refuse quotes whose mid is more than `max_deviation_bps` from the mid of every other
        venue that quoted within `fresh_ns` (inf: off)."""
        if not max_deviation_bps > 0.0 or fresh_ns < 0:
            raise ValueError("max_deviation_bps must be > 0 and fresh_ns >= 0")
        self.tolerance = max_deviation_bps / 10_000.0
        self.fresh_ns = fresh_ns

    def book(self, venue: str, symbol: str) -> Book | None:
        return self._books.get((venue, symbol))

    def books(self) -> list[Book]:
        return list(self._books.values())

    def edges(self, pair: str | None = None) -> list[EdgeState]:
        if pair is not None:
            return self._pair_edges[pair]
        return [e for edges in self._pair_edges.values() for e in edges]

    def update(self, quote: Quote) -> Book | None:
        """Store a quote and recompute the edges it touches.

        Returns the instrument's book, or None when the quote is for an unknown instrument
        or not a sane two-sided book (non-positive or crossed); such quotes change nothing.
        An outlier (see the module docstring) returns its book with `outlier` set and no
        tradable quote.
        """
        book = self._books.get((quote.venue, quote.symbol))
        if book is None:
            self.unknown += 1
            return None
        inst = book.inst
        scale = inst.price_scale_f
        bid = quote.bid * scale
        ask = quote.ask * scale
        bid_size = quote.bid_size
        ask_size = quote.ask_size
        # Checked on normalized prices (a scale may underflow or overflow them); the `>=`
        # form refuses NaN sizes, which `< 0.0` let through and which made min() in sizing
        # order-dependent (a NaN depth on one leg was ignored). +inf depth is allowed.
        if not (0.0 < bid <= ask < _INF) or not (bid_size >= 0.0 and ask_size >= 0.0):
            self.rejected += 1
            return None
        # Halves first: bid + ask overflows to inf near the largest floats.
        mid = bid * 0.5 + ask * 0.5
        recv_ns = quote.recv_ns
        book.quotes += 1
        tolerance = self.tolerance
        if tolerance != _INF:  # the price guard, inline: it runs for every quote
            fresh_ns = self.fresh_ns
            disagreed = False
            for peer in book.peers:
                if peer.quotes and recv_ns - peer.seen_ns <= fresh_ns:
                    other = peer.mid
                    if abs(mid - other) <= tolerance * (mid if mid < other else other):
                        disagreed = False  # one agreeing venue is enough
                        if book.outlier_run:
                            book.outlier_run = 0
                        if not book.agreed:
                            book.agreed = True
                        break
                    disagreed = True
            if disagreed:  # further than the bound from every fresh peer
                self._refuse(book)
                book.mid = mid
                book.seen_ns = recv_ns
                return book
        book.mid = mid
        book.seen_ns = recv_ns
        if book.outlier:
            book.outlier = False
        qpu = inst.qty_per_unit_f
        book.raw_bid = quote.bid
        book.raw_ask = quote.ask
        book.raw_bid_size = bid_size
        book.raw_ask_size = ask_size
        book.bid = bid
        book.ask = ask
        book.bid_qty = bid_size * qpu
        book.ask_qty = ask_size * qpu
        book.venue_ts_ms = quote.venue_ts_ms
        book.recv_ns = recv_ns
        book.has_quote = True
        for edge in book.edges:  # EdgeState.recompute, inline: four edges a quote on average
            buy = edge.buy
            sell = edge.sell
            if buy.has_quote and sell.has_quote:
                ask = buy.ask
                bid = sell.bid
                edge.gross_bps = (bid - ask) / ask * 10_000.0
                edge.edge_bps = (bid * edge.sell_keep / (ask * edge.buy_cost) - 1.0) * 10_000.0
                edge.valid = True
        return book

    def _refuse(self, book: Book) -> None:
        """An outlier: counted, and the book withdraws its tradable quote (its edges become
        invalid until a quote is accepted again)."""
        book.outlier = True
        book.outlier_run += 1
        book.outliers += 1
        self.outliers += 1
        if book.has_quote:
            book.has_quote = False
            for edge in book.edges:
                edge.valid = False

    def comparison(self, pair: str, ts_ns: int = 0) -> PairComparison:
        """All current directed edges of one pair (both quotes present)."""
        edges = tuple(
            e.to_edge() for e in self._pair_edges[pair] if e.buy.has_quote and e.sell.has_quote
        )
        return PairComparison(pair=pair, ts_ns=ts_ns, edges=edges)
