"""The price guard (issue 13): a quote far from every other venue's mid, or an edge too large to
be real, is refused with its own reason, counted, and never traded; a venue whose quotes keep
failing the check is blocked like a stale one. Pure core, manual clock."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.breakers import BreakerLimits, Breakers
from core.clock import ManualClock
from core.compare import CompareEngine, EdgeState
from core.config import RiskConfig, StrategyConfig, demo_config
from core.instruments import Instrument, Pair
from core.models import Decision, Outcome, Quote, Reason, Venue
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate

D = Decimal
MS = 1_000_000
XAU = next(p for p in demo_config().build_pairs() if p.name == "XAU")
# XAU: MT5 XAUUSD (1 lot = 100 oz, 0 bps), OKX XAUT-USDT-SWAP (1 contract = 0.001 oz, 5 bps),
# Binance PAXGUSDT (1 unit = 1 oz, 5 bps).
SYMBOL = {"mt5": "XAUUSD", "okx": "XAUT-USDT-SWAP", "binance": "PAXGUSDT"}
SIZE = {"mt5": 1.0, "okx": 1000.0, "binance": 1.0}  # 1 lot = 100 oz; 1000 contracts = 1 oz; 1 oz


class Rig:
    def __init__(
        self, *, max_edge_bps: float = 300.0, max_quote_deviation_bps: float = 500.0, threshold_bps: float = 8.0
    ) -> None:
        self.clock = ManualClock()
        strategy = StrategyConfig(threshold_bps=threshold_bps, cooldown_ms=0, max_edge_bps=max_edge_bps,
                                  max_quote_deviation_bps=max_quote_deviation_bps)
        risk = RiskConfig(max_leg_notional=D(5000), max_gross_exposure=D(50_000))
        self.gate = RiskGate.from_config(self.clock, risk)
        self.engine = CompareEngine([XAU])
        self.pipe = OpportunityPipeline(self.engine, strategy, risk, self.gate, self.clock)

    def q(self, venue: Venue, bid: float, ask: float) -> Decision:
        quote = Quote(venue, SYMBOL[venue], bid, ask, SIZE[venue], SIZE[venue],
                      venue_ts_ms=self.clock.time_ms(), recv_ns=self.clock.monotonic_ns())
        d = self.pipe.on_quote(quote)
        assert d is not None
        return d

    def edge(self, buy: str, sell: str) -> EdgeState:
        return next(e for e in self.engine.edges("XAU") if (e.buy.venue, e.sell.venue) == (buy, sell))


def _blocked(d: Decision, reason: str) -> Decision:
    assert (d.outcome, d.reason, d.intent) == (Outcome.BLOCKED, reason, None)
    return d


# -- the issue's scenario -------------------------------------------------------------------------

def test_issue_13_mt5_tick_at_100_while_the_others_show_2650_is_refused_and_counted() -> None:
    rig = Rig()
    _blocked(rig.q("okx", 2650.0, 2650.5), Reason.NO_COUNTER_QUOTE)
    _blocked(rig.q("binance", 2650.2, 2650.6), Reason.BELOW_THRESHOLD)
    # Without the guard: buy MT5 at 100.1, sell OKX at 2650 * 0.9995: a 254,598 bps "edge".
    d = _blocked(rig.q("mt5", 100.0, 100.1), Reason.PRICE_OUTLIER)
    assert (d.pair, d.buy_venue, d.sell_venue) == ("XAU", None, None)
    mt5 = rig.engine.book("mt5", "XAUUSD")
    assert mt5 is not None
    assert (mt5.outlier, mt5.outlier_run, mt5.outliers, mt5.has_quote) == (True, 1, 1, False)
    assert rig.engine.outliers == 1
    assert rig.pipe.intents == 0
    assert rig.pipe.reasons == Counter({Reason.NO_COUNTER_QUOTE: 1, Reason.BELOW_THRESHOLD: 1,
                                        Reason.PRICE_OUTLIER: 1})
    for e in mt5.edges:  # every edge of the refused quote: invalid, and says why
        assert (e.valid, e.last_reason) == (False, Reason.PRICE_OUTLIER)
    # The other venues go on, and never trade against the refused quote.
    _blocked(rig.q("okx", 2650.1, 2650.6), Reason.BELOW_THRESHOLD)
    assert rig.pipe.intents == 0
    # A sane MT5 quote is accepted again, and trades (buy MT5 at 2640.1: ~35 bps net).
    d = rig.q("mt5", 2640.0, 2640.1)
    assert (d.outcome, d.buy_venue, mt5.outlier, mt5.outlier_run, mt5.has_quote) == (
        Outcome.INTENT, "mt5", False, 0, True)
    assert d.intent is not None and d.intent.buy.venue == "mt5"


def test_an_absurd_first_quote_never_trades_and_is_outvoted_once_the_others_quote() -> None:
    rig = Rig()
    _blocked(rig.q("mt5", 100.0, 100.1), Reason.NO_COUNTER_QUOTE)  # nothing to compare with
    # OKX disagrees with the only other venue: with two venues nobody can say which is wrong.
    _blocked(rig.q("okx", 2650.0, 2650.5), Reason.PRICE_OUTLIER)
    # Binance agrees with OKX: accepted. The MT5 quote it would trade against is absurd.
    d = _blocked(rig.q("binance", 2650.2, 2650.6), Reason.PRICE_OUTLIER)
    assert (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    assert rig.edge("mt5", "binance").last_reason == Reason.PRICE_OUTLIER
    # The next MT5 tick is judged against two venues that agree: refused.
    _blocked(rig.q("mt5", 100.0, 100.1), Reason.PRICE_OUTLIER)
    _blocked(rig.q("okx", 2650.0, 2650.5), Reason.BELOW_THRESHOLD)
    assert rig.pipe.intents == 0
    assert [(v, rig.engine.book(v, SYMBOL[v]).outliers) for v in ("mt5", "okx", "binance")] == [  # type: ignore[union-attr]
        ("mt5", 1), ("okx", 1), ("binance", 0)]


def test_no_fresh_quote_elsewhere_means_no_guess_but_the_legs_must_still_agree() -> None:
    rig = Rig()
    rig.q("okx", 2650.0, 2650.5)
    rig.clock.advance(ms=1501)  # older than max_quote_age_ms: not a reference any more
    d = _blocked(rig.q("mt5", 100.0, 100.1), Reason.PRICE_OUTLIER)
    mt5 = rig.engine.book("mt5", "XAUUSD")
    assert mt5 is not None
    assert (mt5.outlier, mt5.outliers, mt5.has_quote) == (False, 0, True)  # not judged as an outlier
    assert (d.buy_venue, d.sell_venue) == ("mt5", "okx")  # but never traded against OKX


@pytest.mark.parametrize(("mid", "refused"), [(2782.5, False), (2782.6, True), (2524.0, False), (2523.0, True)])
def test_deviation_bound_is_inclusive_and_relative_to_the_lower_mid(mid: float, refused: bool) -> None:
    # Bound 500 bps of the lower mid: 2650 * 1.05 = 2782.5 agrees; 2650 / 2524 - 1 = 4.99 %
    # agrees, 2650 / 2523 - 1 = 5.03 % does not.
    rig = Rig(max_edge_bps=10_000.0)
    rig.q("okx", 2650.0, 2650.0)
    d = rig.q("binance", mid, mid)
    book = rig.engine.book("binance", "PAXGUSDT")
    assert book is not None
    assert book.outlier is refused
    assert (d.reason == Reason.PRICE_OUTLIER) is refused


# -- the edge ceiling ---------------------------------------------------------------------------

def test_edge_above_the_ceiling_is_refused_with_its_own_reason() -> None:
    rig = Rig()
    rig.q("okx", 2649.5, 2650.0)
    # buy OKX at 2650 * 1.0005, sell Binance at 2760 * 0.9995: 404.7 bps, within the 500 bps
    # deviation bound, above the 300 bps ceiling.
    d = _blocked(rig.q("binance", 2760.0, 2760.5), Reason.EDGE_ABOVE_CEILING)
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")
    assert d.edge_bps == pytest.approx((2760 * 0.9995 / (2650 * 1.0005) - 1) * 10_000)
    assert rig.edge("okx", "binance").last_reason == Reason.EDGE_ABOVE_CEILING
    assert rig.pipe.reasons[Reason.EDGE_ABOVE_CEILING] == 1 and rig.pipe.intents == 0
    # Back under the ceiling: trades at once (persistence restarts from the sane quote).
    d = rig.q("binance", 2700.0, 2700.5)
    assert d.outcome is Outcome.INTENT and d.edge_bps < 300


def test_edge_just_under_a_raised_ceiling_trades() -> None:
    rig = Rig(max_edge_bps=404.7)
    rig.q("okx", 2649.5, 2650.0)
    d = rig.q("binance", 2760.0, 2760.5)
    assert d.outcome is Outcome.INTENT and d.intent is not None
    assert 404.6 < d.intent.expected_edge_bps < 404.7


def test_normal_quotes_still_trade_on_all_three_venues() -> None:
    rig = Rig()
    rig.q("mt5", 2649.8, 2650.0)
    rig.q("okx", 2649.9, 2650.2)
    d = rig.q("binance", 2660.0, 2660.4)  # buy MT5 at 2650, sell Binance at 2660 * 0.9995: 32.7 bps
    assert d.outcome is Outcome.INTENT and (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    assert rig.engine.outliers == 0 and Reason.PRICE_OUTLIER not in rig.pipe.reasons


# -- blocking the venue -----------------------------------------------------------------------------

LIMITS = BreakerLimits(daily_loss_limit=D(100), max_consecutive_failures=3, failure_pause_s=60, venue_block_s=5,
                       feed_stale_halt_s=30, venue_down_halt_s=20, min_free_balance=D(0), hold_timeout_s=600,
                       outlier_block_count=3)


def test_breaker_trips_at_the_count_and_releases_when_a_quote_agrees() -> None:
    b = Breakers(LIMITS)
    assert b.on_price_check("mt5", outlier_run=0, agreed=True, now_ms=1) == []
    assert "outlier:mt5" not in b.all  # a venue that never sent an outlier shows no breaker
    assert b.on_price_check("mt5", outlier_run=2, agreed=True, now_ms=2) == []
    assert b.all["outlier:mt5"].tripped is False and b.blocked_venues() == set()
    [trip] = b.on_price_check("mt5", outlier_run=3, agreed=True, now_ms=3)
    assert (trip.name, trip.effect, trip.tripped, trip.venue) == ("outlier:mt5", "block_venue", True, "mt5")
    assert "3 quotes in a row" in trip.detail
    assert b.blocked_venues() == {"mt5"}
    assert b.blocking_rearm() == []  # blocks the venue, not the engine
    # Still in a run (shorter or not): stays tripped.
    assert b.on_price_check("mt5", outlier_run=1, agreed=True, now_ms=4) == []
    # Run over, but no quote has agreed since start (a restored trip): stays tripped.
    assert b.on_price_check("mt5", outlier_run=0, agreed=False, now_ms=5) == []
    [release] = b.on_price_check("mt5", outlier_run=0, agreed=True, now_ms=6)
    assert (release.name, release.tripped) == ("outlier:mt5", False)
    assert b.blocked_venues() == set()


def test_repeated_outliers_block_the_venue_for_intents_and_an_agreeing_quote_releases_it() -> None:
    rig = Rig()
    breakers = rig.gate.breakers
    breakers.limits = LIMITS

    def monitor(venue: str) -> None:  # what engine.risk_monitor.RiskMonitor gathers per venue
        books = [b for b in rig.engine.books() if b.venue == venue]
        rig.gate.apply(breakers.on_price_check(venue, outlier_run=max(b.outlier_run for b in books),
                                               agreed=any(b.agreed for b in books), now_ms=rig.clock.time_ms()))

    rig.q("okx", 2650.0, 2650.5)
    rig.q("binance", 2650.2, 2650.6)
    for n in range(1, 4):
        _blocked(rig.q("mt5", 100.0, 100.1), Reason.PRICE_OUTLIER)
        rig.clock.advance(ms=100)
        monitor("mt5")
        assert breakers.all["outlier:mt5"].tripped is (n >= 3), n
    assert rig.pipe.reasons[Reason.PRICE_OUTLIER] == 3
    # A sane, profitable MT5 quote: accepted by the guard, refused by the blocked venue.
    d = _blocked(rig.q("mt5", 2640.0, 2640.1), "risk:venue_blocked")
    assert (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    monitor("mt5")  # it agreed: released
    assert not breakers.all["outlier:mt5"].tripped
    rig.clock.advance(ms=100)
    assert rig.q("mt5", 2640.0, 2640.1).outcome is Outcome.INTENT


# -- the book-level rule against a model ---------------------------------------------------------

_VENUES: list[Venue] = ["mt5", "okx", "binance"]


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(_VENUES),
            st.sampled_from([2650.0, 2651.0, 2700.0, 2790.0, 2800.0, 100.0, 1e300, 5e-324]),
            st.integers(0, 1_000),  # ms before the quote
        ),
        max_size=40,
    ),
    bound=st.sampled_from([1.0, 50.0, 500.0]),
    fresh_ms=st.sampled_from([0, 200, 1500]),
)
def test_outlier_verdicts_match_a_model(steps: list[tuple[Venue, float, int]], bound: float, fresh_ms: int) -> None:
    """A quote is an outlier iff some other venue quoted within the window and none of those
    quotes' mids is within the bound (relative to the lower mid); an outlier leaves its book
    without a tradable quote, and an edge is valid iff both its books hold one."""
    pair = Pair("XAU", tuple(Instrument(
        venue=v, symbol=SYMBOL[v], pair="XAU", qty_per_unit=D(1), tick_size=D("0.01"), lot_step=D("0.01"),
        min_qty=D("0.01"), taker_fee_bps=0.0) for v in _VENUES))
    engine = CompareEngine([pair])
    engine.set_guard(bound, fresh_ms * MS)
    seen: dict[str, tuple[float, int]] = {}  # venue -> (mid, when) of its latest quote
    tradable: dict[str, bool] = {}
    now = 0
    for venue, price, gap_ms in steps:
        now += gap_ms * MS
        mid = price * 0.5 + price * 0.5  # (bid + ask) / 2, halved first as the engine does
        peers = [m for v, (m, t) in seen.items() if v != venue and now - t <= fresh_ms * MS]
        expected = bool(peers) and all(abs(mid - m) > bound / 10_000 * min(mid, m) for m in peers)
        book = engine.update(Quote(venue, SYMBOL[venue], price, price, 1.0, 1.0, 0, now))
        assert book is not None
        assert book.outlier is expected, (venue, mid, peers)
        assert book.mid == mid
        seen[venue] = (mid, now)
        tradable[venue] = not expected  # a refused quote withdraws the book's tradable quote
        assert book.has_quote is tradable[venue]
        for e in engine.edges("XAU"):
            assert e.valid is (tradable.get(e.buy.venue, False) and tradable.get(e.sell.venue, False))
