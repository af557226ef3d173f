"""CompareEngine: normalized books and directed edges net of both taker fees."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.compare import CompareEngine
from core.config import (
    BinanceInstrumentConfig,
    Mt5InstrumentConfig,
    OkxInstrumentConfig,
    PairConfig,
    PairInstruments,
)
from core.instruments import Instrument, Pair
from core.models import DirectedEdge, Quote, Venue

D = Decimal
NAN = float("nan")
INF = float("inf")


def _inst(venue: Venue, symbol: str, fee_bps: float, pair: str = "TST", **kw: Any) -> Instrument:
    base: dict[str, Any] = {
        "venue": venue, "symbol": symbol, "pair": pair, "qty_per_unit": D(1), "tick_size": D("0.01"),
        "lot_step": D("0.001"), "min_qty": D("0.001"), "taker_fee_bps": fee_bps,
    }
    base.update(kw)
    return Instrument(**base)


def _tst(okx_fee: float = 5.0, bn_fee: float = 5.0, mt5_fee: float = 0.0) -> Pair:
    return Pair("TST", (
        _inst("mt5", "TSTUSD", mt5_fee),
        _inst("okx", "TST-USDT", okx_fee),
        _inst("binance", "TSTUSDT", bn_fee),
    ))


def _q(venue: Venue, symbol: str, bid: float, ask: float, sizes: tuple[float, float] = (1.0, 1.0), *,
       recv_ns: int = 1) -> Quote:
    """A quote; `sizes` is (bid size, ask size) in venue units."""
    return Quote(venue, symbol, bid, ask, sizes[0], sizes[1], venue_ts_ms=0, recv_ns=recv_ns)


def _edge(engine: CompareEngine, pair: str, buy: str, sell: str) -> DirectedEdge:
    for e in engine.comparison(pair).edges:
        if (e.buy_venue, e.sell_venue) == (buy, sell):
            return e
    raise AssertionError(f"no edge {buy}->{sell}")


# -- the edge formula --------------------------------------------------------------------

def test_edge_is_net_of_both_taker_fees_by_hand() -> None:
    engine = CompareEngine([_tst()])
    engine.update(_q("okx", "TST-USDT", 99.90, 100.00))
    engine.update(_q("binance", "TSTUSDT", 100.30, 100.40))
    e = _edge(engine, "TST", "okx", "binance")
    # Buy on OKX at its ask 100.00 with a 5 bps fee: cost = 100.00 * 1.0005 = 100.05
    # Sell on Binance at its bid 100.30 with a 5 bps fee: keep = 100.30 * 0.9995 = 100.24985
    # edge = 100.24985 / 100.05 - 1 = 0.19985 / 100.05 = 0.00199750124937531...
    #      = 19.9750124937531 bps
    assert e.edge_bps == pytest.approx(19.9750124937531, abs=1e-9)
    # gross = (100.30 - 100.00) / 100.00 = 0.003 = 30 bps
    assert e.gross_bps == pytest.approx(30.0, abs=1e-9)
    assert (e.buy_price, e.sell_price) == (100.00, 100.30)


def test_reverse_edge_by_hand() -> None:
    engine = CompareEngine([_tst()])
    engine.update(_q("okx", "TST-USDT", 99.90, 100.00))
    engine.update(_q("binance", "TSTUSDT", 100.30, 100.40))
    e = _edge(engine, "TST", "binance", "okx")
    # Buy on Binance at 100.40: cost = 100.40 * 1.0005 = 100.4502
    # Sell on OKX at 99.90:     keep = 99.90 * 0.9995 = 99.850050
    # edge = 99.85005 / 100.4502 - 1 = -0.60015 / 100.4502 = -0.00597460234...
    #      = -59.7460234 bps
    assert e.edge_bps == pytest.approx(-59.7460234026, abs=1e-6)
    # gross = (99.90 - 100.40) / 100.40 = -0.5 / 100.40 = -49.8007968 bps
    assert e.gross_bps == pytest.approx(-49.8007968127, abs=1e-6)


def test_fee_is_applied_to_the_leg_of_its_own_venue() -> None:
    # MT5 charges 0 bps, Binance 10 bps; both sides quote bid 100.30 / ask 100.00 on the other.
    engine = CompareEngine([_tst(bn_fee=10.0, mt5_fee=0.0)])
    engine.update(_q("mt5", "TSTUSD", 100.30, 100.30))
    engine.update(_q("binance", "TSTUSDT", 100.00, 100.00))
    # mt5 -> binance: buy MT5 ask 100.30 (fee 0), sell Binance bid 100.00 (fee 10 bps): negative
    # binance -> mt5: buy Binance ask 100.00 * 1.001 = 100.10, sell MT5 bid 100.30 * 1 = 100.30
    #   edge = 100.30 / 100.10 - 1 = 0.2 / 100.1 = 19.98001998 bps
    e = _edge(engine, "TST", "binance", "mt5")
    assert e.edge_bps == pytest.approx(19.98001998002, abs=1e-6)
    # Swap which venue is cheap: buy MT5 at 100.00 (fee 0), sell Binance at 100.30 (fee 10 bps):
    #   keep = 100.30 * 0.999 = 100.1997; edge = 100.1997 / 100.00 - 1 = 19.97 bps.
    # A formula that charged the fees on the wrong legs would give 19.98 here.
    engine.update(_q("mt5", "TSTUSD", 100.00, 100.00))
    engine.update(_q("binance", "TSTUSDT", 100.30, 100.30))
    e = _edge(engine, "TST", "mt5", "binance")
    assert e.edge_bps == pytest.approx(19.97, abs=1e-6)


def test_equal_prices_lose_both_fees() -> None:
    engine = CompareEngine([_tst()])
    engine.update(_q("okx", "TST-USDT", 100.0, 100.0))
    engine.update(_q("binance", "TSTUSDT", 100.0, 100.0))
    e = _edge(engine, "TST", "okx", "binance")
    # 0.9995 / 1.0005 - 1 = -0.001 / 1.0005 = -9.99500249875 bps: about both fees
    assert e.edge_bps == pytest.approx(-9.99500249875, abs=1e-6)
    assert e.gross_bps == 0.0


# -- which edges exist -----------------------------------------------------------------

def test_three_venues_give_six_directed_edges() -> None:
    engine = CompareEngine([_tst()])
    assert engine.comparison("TST").edges == ()
    engine.update(_q("mt5", "TSTUSD", 99.0, 101.0))
    # one venue quoted: no edge has both quotes
    assert engine.comparison("TST").edges == ()
    engine.update(_q("okx", "TST-USDT", 99.0, 101.0))
    # two venues: mt5->okx and okx->mt5
    assert {(e.buy_venue, e.sell_venue) for e in engine.comparison("TST").edges} == {
        ("mt5", "okx"), ("okx", "mt5"),
    }
    engine.update(_q("binance", "TSTUSDT", 99.0, 101.0))
    # three venues: 3 * 2 = 6 ordered pairs
    edges = engine.comparison("TST").edges
    assert len(edges) == 6
    assert {(e.buy_venue, e.sell_venue) for e in edges} == {
        ("mt5", "okx"), ("okx", "mt5"), ("mt5", "binance"),
        ("binance", "mt5"), ("okx", "binance"), ("binance", "okx"),
    }
    assert all(e.pair == "TST" for e in edges)
    assert len(engine.edges("TST")) == 6


def test_comparison_best_is_the_largest_net_edge() -> None:
    engine = CompareEngine([_tst()])
    engine.update(_q("mt5", "TSTUSD", 99.95, 100.00))
    engine.update(_q("okx", "TST-USDT", 99.95, 100.00))
    engine.update(_q("binance", "TSTUSDT", 100.50, 100.60))
    best = engine.comparison("TST", ts_ns=123).best
    assert best is not None
    # Both cheap venues ask 100.00; MT5 has no fee, so buying there nets more:
    # mt5->binance: 100.50 * 0.9995 / 100.00 - 1 = 100.449750 / 100 - 1 = 44.975 bps
    # okx->binance: 100.44975 / 100.05 - 1 = 0.39975 / 100.05 = 39.955 bps
    assert (best.buy_venue, best.sell_venue) == ("mt5", "binance")
    assert best.edge_bps == pytest.approx(44.975, abs=1e-6)
    assert _edge(engine, "TST", "okx", "binance").edge_bps == pytest.approx(39.95502248876, abs=1e-6)
    assert engine.comparison("TST", ts_ns=123).ts_ns == 123


def test_latest_quote_wins() -> None:
    engine = CompareEngine([_tst()])
    engine.update(_q("okx", "TST-USDT", 99.90, 100.00))
    engine.update(_q("binance", "TSTUSDT", 100.30, 100.40))
    engine.update(_q("okx", "TST-USDT", 100.20, 100.30))
    e = _edge(engine, "TST", "okx", "binance")
    # gross = (100.30 - 100.30) / 100.30 = 0
    assert e.gross_bps == 0.0
    assert e.buy_price == 100.30
    book = engine.book("okx", "TST-USDT")
    assert book is not None and book.quotes == 2


def test_pairs_are_independent() -> None:
    other = Pair("OTH", (_inst("okx", "OTH-USDT", 5.0, pair="OTH"), _inst("binance", "OTHUSDT", 5.0,
                                                                               pair="OTH")))
    engine = CompareEngine([_tst(), other])
    engine.update(_q("okx", "TST-USDT", 99.0, 100.0))
    engine.update(_q("binance", "OTHUSDT", 101.0, 102.0))
    # one quote in each pair: no pair has an edge with both quotes
    assert engine.comparison("TST").edges == ()
    assert engine.comparison("OTH").edges == ()
    assert len(engine.edges()) == 6 + 2


# -- normalization --------------------------------------------------------------------------

def _xau_engine() -> CompareEngine:
    pair = PairConfig(
        name="XAU",
        instruments=PairInstruments(
            mt5=Mt5InstrumentConfig(symbol="XAUUSD", qty_per_lot=D(100)),
            binance=BinanceInstrumentConfig(symbol="PAXGUSDT"),
        ),
    ).to_pair()
    return CompareEngine([pair])


def test_mt5_lots_compare_per_oz_against_a_token() -> None:
    engine = _xau_engine()
    # MT5 quotes XAUUSD per oz, sizes in 100-oz lots: 2 lots bid, 0.5 lot ask
    engine.update(_q("mt5", "XAUUSD", 2650.10, 2650.30, sizes=(2.0, 0.5)))
    # PAXG per oz, sizes in oz
    engine.update(_q("binance", "PAXGUSDT", 2660.00, 2660.50, sizes=(3.0, 4.0)))
    book = engine.book("mt5", "XAUUSD")
    assert book is not None
    # 2 lots * 100 = 200 oz; 0.5 lot * 100 = 50 oz; prices unchanged (already per oz)
    assert (book.bid_qty, book.ask_qty) == (200.0, 50.0)
    assert (book.bid, book.ask) == (2650.10, 2650.30)
    e = _edge(engine, "XAU", "mt5", "binance")
    # buy 50 oz on MT5 at 2650.30 (fee 0), sell 3 oz on Binance at 2660.00 (fee 5 bps):
    # edge = 2660.00 * 0.9995 / 2650.30 - 1 = 2658.67 / 2650.30 - 1 = 8.37 / 2650.30 = 31.581 bps
    assert (e.buy_qty, e.sell_qty) == (50.0, 3.0)
    assert e.edge_bps == pytest.approx(31.58133041542, abs=1e-6)
    # gross = 9.70 / 2650.30 = 36.599 bps
    assert e.gross_bps == pytest.approx(36.59963023054, abs=1e-6)


def test_okx_contracts_become_base_units() -> None:
    pair = PairConfig(
        name="BTC",
        instruments=PairInstruments(
            okx=OkxInstrumentConfig(symbol="BTC-USDT-SWAP", qty_per_contract=D("0.01")),
            binance=BinanceInstrumentConfig(symbol="BTCUSDT"),
        ),
    ).to_pair()
    engine = CompareEngine([pair])
    engine.update(_q("okx", "BTC-USDT-SWAP", 60000.0, 60000.1, sizes=(7.0, 250.0)))
    book = engine.book("okx", "BTC-USDT-SWAP")
    assert book is not None
    # 7 contracts * 0.01 BTC = 0.07 BTC; 250 * 0.01 = 2.5 BTC
    assert book.bid_qty == pytest.approx(0.07)
    assert book.ask_qty == pytest.approx(2.5)


def test_price_scale_is_applied_before_comparing() -> None:
    # A venue that quotes per 100 oz (price_scale 0.01) against one that quotes per oz.
    pair = Pair("XAU", (
        _inst("mt5", "XAU100", 0.0, pair="XAU", price_scale=D("0.01"), qty_per_unit=D(100)),
        _inst("binance", "PAXGUSDT", 0.0, pair="XAU"),
    ))
    engine = CompareEngine([pair])
    engine.update(_q("mt5", "XAU100", 265000.0, 265010.0, sizes=(1.0, 1.0)))
    engine.update(_q("binance", "PAXGUSDT", 2660.0, 2661.0))
    e = _edge(engine, "XAU", "mt5", "binance")
    # 265010 per 100 oz * 0.01 = 2650.10 per oz; gross = (2660 - 2650.10) / 2650.10 = 37.357 bps
    assert e.buy_price == pytest.approx(2650.10)
    assert e.gross_bps == pytest.approx(9.9 / 2650.10 * 10_000, rel=1e-12)
    book = engine.book("mt5", "XAU100")
    assert book is not None
    # raw venue prices kept for limit prices
    assert (book.raw_bid, book.raw_ask) == (265000.0, 265010.0)


# -- refusals ---------------------------------------------------------------------------------

def _snapshot(engine: CompareEngine) -> list[tuple[object, ...]]:
    books = [
        (b.has_quote, b.bid, b.ask, b.bid_qty, b.ask_qty, b.raw_bid, b.raw_ask, b.venue_ts_ms, b.recv_ns,
         b.quotes)
        for b in engine.books()
    ]
    edges = [(e.valid, e.edge_bps, e.gross_bps) for e in engine.edges()]
    return [*books, *edges]


def _primed() -> CompareEngine:
    engine = CompareEngine([_tst()])
    engine.update(_q("okx", "TST-USDT", 99.90, 100.00, (2.0, 3.0), recv_ns=10))
    engine.update(_q("binance", "TSTUSDT", 100.30, 100.40, (4.0, 5.0), recv_ns=20))
    return engine


@pytest.mark.parametrize(
    ("bid", "ask", "bid_size", "ask_size"),
    [
        (100.5, 100.4, 1.0, 1.0),   # crossed: bid above ask
        (0.0, 100.4, 1.0, 1.0),     # zero bid
        (100.3, 0.0, 1.0, 1.0),     # zero ask (and crossed)
        (0.0, 0.0, 1.0, 1.0),
        (-1.0, 100.4, 1.0, 1.0),    # negative bid
        (-2.0, -1.0, 1.0, 1.0),     # both negative
        (NAN, 100.4, 1.0, 1.0),     # NaN bid
        (100.3, NAN, 1.0, 1.0),     # NaN ask
        (NAN, NAN, 1.0, 1.0),
        (100.3, INF, 1.0, 1.0),     # infinite ask
        (INF, INF, 1.0, 1.0),       # infinite both
        (-INF, 100.4, 1.0, 1.0),
        (100.3, 100.4, -1.0, 1.0),  # negative sizes
        (100.3, 100.4, 1.0, -0.001),
        (100.3, 100.4, NAN, 1.0),   # NaN sizes
        (100.3, 100.4, 1.0, NAN),
        (100.3, 100.4, -INF, 1.0),
    ],
)
def test_insane_quotes_are_refused_and_change_nothing(
    bid: float, ask: float, bid_size: float, ask_size: float
) -> None:
    engine = _primed()
    before = _snapshot(engine)
    assert engine.update(_q("binance", "TSTUSDT", bid, ask, (bid_size, ask_size), recv_ns=99)) is None
    assert engine.rejected == 1
    assert engine.unknown == 0
    assert _snapshot(engine) == before
    # previous quote stays and the edge still reads it
    e = _edge(engine, "TST", "okx", "binance")
    assert e.sell_price == 100.30
    assert e.edge_bps == pytest.approx(19.9750124937531, abs=1e-9)


def test_refused_first_quote_leaves_the_book_empty() -> None:
    engine = CompareEngine([_tst()])
    assert engine.update(_q("okx", "TST-USDT", NAN, 100.0)) is None
    book = engine.book("okx", "TST-USDT")
    assert book is not None
    assert not book.has_quote
    assert book.quotes == 0
    assert engine.rejected == 1


@pytest.mark.parametrize(("venue", "symbol"), [("okx", "NOPE"), ("mt5", "TST-USDT"), ("binance", "")])
def test_unknown_instrument_is_refused(venue: Venue, symbol: str) -> None:
    engine = _primed()
    before = _snapshot(engine)
    assert engine.update(_q(venue, symbol, 100.3, 100.4)) is None
    assert engine.unknown == 1
    assert engine.rejected == 0
    assert _snapshot(engine) == before


def test_counters_accumulate() -> None:
    engine = _primed()
    engine.update(_q("okx", "NOPE", 1.0, 2.0))
    engine.update(_q("okx", "NOPE", 1.0, 2.0))
    engine.update(_q("okx", "TST-USDT", 2.0, 1.0))
    assert (engine.unknown, engine.rejected) == (2, 1)


def test_locked_book_and_zero_sizes_are_accepted() -> None:
    engine = _primed()
    # bid == ask is locked, not crossed; zero size is a valid (empty) level
    book = engine.update(_q("binance", "TSTUSDT", 100.35, 100.35, (0.0, 0.0), recv_ns=30))
    assert book is not None
    assert (book.bid, book.ask, book.bid_qty, book.ask_qty, book.recv_ns) == (100.35, 100.35, 0.0, 0.0, 30)
    assert engine.rejected == 0


def test_infinite_depth_is_accepted() -> None:
    # +inf depth means "unbounded" (a venue that sends no sizes); sizing is then capped by notional
    engine = _primed()
    book = engine.update(_q("binance", "TSTUSDT", 100.35, 100.40, (INF, INF)))
    assert book is not None
    assert book.bid_qty == INF


def test_prices_that_normalize_to_zero_or_infinity_are_refused() -> None:
    # price_scale 0.01: 5e-324 * 0.01 underflows to 0.0 and 1e308 / 1e308 stays finite but
    # a scale of 100 would overflow it to inf; both would poison the edge arithmetic
    tiny = Pair("S", (_inst("okx", "A", 5.0, pair="S", price_scale=D("0.01")),
                      _inst("binance", "B", 5.0, pair="S", price_scale=D(100))))
    engine = CompareEngine([tiny])
    assert engine.update(_q("okx", "A", 5e-324, 5e-324)) is None
    assert engine.update(_q("binance", "B", 1e308, 1e308)) is None
    assert engine.rejected == 2
    assert engine.update(_q("okx", "A", 1.0, 1.0)) is not None


def test_accepted_quote_updates_the_book() -> None:
    engine = _primed()
    q = Quote("okx", "TST-USDT", 99.80, 99.85, 6.0, 7.0, venue_ts_ms=1_732_150_000_123, recv_ns=55)
    book = engine.update(q)
    assert book is engine.book("okx", "TST-USDT")
    assert book is not None
    assert (book.bid, book.ask, book.bid_qty, book.ask_qty) == (99.80, 99.85, 6.0, 7.0)
    assert (book.venue_ts_ms, book.recv_ns, book.quotes) == (1_732_150_000_123, 55, 2)


def test_construction_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate pair"):
        CompareEngine([_tst(), _tst()])
    clash = Pair("OTH", (_inst("okx", "TST-USDT", 5.0, pair="OTH"), _inst("binance", "X", 5.0, pair="OTH")))
    with pytest.raises(ValueError, match="two pairs"):
        CompareEngine([_tst(), clash])


def test_edges_are_finite_for_sane_quotes() -> None:
    engine = _primed()
    for e in engine.comparison("TST").edges:
        assert math.isfinite(e.edge_bps)
        assert math.isfinite(e.gross_bps)


@settings(max_examples=200, deadline=None)
@given(quotes=st.lists(st.tuples(st.sampled_from(("mt5", "okx", "binance")), st.floats(90.0, 110.0),
                                 st.floats(0.0, 2.0)), max_size=30))
def test_update_refreshes_each_edge_as_recompute_does(quotes: list[tuple[Venue, float, float]]) -> None:
    """`update` computes the edges of the quote's book inline; `EdgeState.recompute` is the
    formula: after every quote, recomputing each valid edge gives the same floats, bit for bit."""
    engine = CompareEngine([_tst(okx_fee=5.0, bn_fee=7.5, mt5_fee=1.0)])
    symbols = {"mt5": "TSTUSD", "okx": "TST-USDT", "binance": "TSTUSDT"}
    for n, (venue, bid, spread) in enumerate(quotes, start=1):
        engine.update(_q(venue, symbols[venue], bid, bid + spread, recv_ns=n))
        for edge in engine.edges("TST"):
            if edge.valid:
                got = (edge.gross_bps, edge.edge_bps)
                assert edge.recompute() == got[1]
                assert (edge.gross_bps, edge.edge_bps) == got
