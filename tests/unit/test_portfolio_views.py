"""core.portfolio's per-instant views: the risk loop's pass reads every book three times at
the same instant (venue equity, equity, holdings), so a book keeps its view until it changes.

The property test plays random sequences of every input (fills, marks with the same quote
again and with new ones, exact marks, funding computed and reported, swap booked and
accrued) interleaved with reads at the same and at later instants, and checks that every
view read equals the full recomputation, field by field and digit for digit (repr keeps a
Decimal's exponent), and that the equity built from them does too.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.currency import RateBook
from core.instruments import Instrument
from core.portfolio import Portfolio

D = Decimal
T0 = 1_732_150_000_000

MT5_XAU = Instrument(venue="mt5", symbol="XAUUSD", pair="XAU", qty_per_unit=D(100), tick_size=D("0.01"),
                     lot_step=D("0.01"), min_qty=D("0.01"), taker_fee_bps=0.0)
OKX_XAU = Instrument(venue="okx", symbol="XAUT-USDT-SWAP", pair="XAU", qty_per_unit=D("0.001"),
                     tick_size=D("0.1"), lot_step=D(1), min_qty=D(1), taker_fee_bps=5.0)
BIN_BTC = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=D(1), tick_size=D("0.1"),
                     lot_step=D("0.001"), min_qty=D("0.001"), taker_fee_bps=5.0)
INSTRUMENTS = (MT5_XAU, OKX_XAU, BIN_BTC)
PRICE = {"XAU": 2650.0, "BTC": 60000.0}

prices = st.floats(min_value=0.95, max_value=1.05, allow_nan=False).map(lambda f: round(f, 4))
inst = st.sampled_from(INSTRUMENTS)
step = st.one_of(
    st.tuples(st.just("fill"), inst, st.sampled_from(("buy", "sell")), st.integers(1, 50), prices),
    st.tuples(st.just("mark"), inst, prices, st.floats(0.0, 0.002)),
    st.tuples(st.just("mark_again"), inst),
    st.tuples(st.just("mark_at"), inst, prices),
    st.tuples(st.just("funding"), inst, st.integers(0, 3), st.sampled_from(("0.0001", "-0.0002"))),
    st.tuples(st.just("funding_reported"), inst, st.integers(0, 3), st.sampled_from(("1.5", "-0.25"))),
    st.tuples(st.just("swap"), inst, st.integers(0, 3), st.sampled_from(("-0.7", "0.3"))),
    st.tuples(st.just("swap_accrued"), inst, st.sampled_from(("-1.25", "0.5"))),
    st.tuples(st.just("read"), st.booleans()),
    st.tuples(st.just("later"), st.integers(0, 2_000)),
)


def _reference(p: Portfolio, now_ms: int) -> list[str]:
    """Every book's view computed afresh (no cache), as text that keeps each Decimal's digits."""
    return [repr(p._new_view(b, now_ms)) for b in p._sorted]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_views_read_at_one_instant_are_the_full_recomputation(steps: list[tuple[object, ...]]) -> None:
    p = Portfolio(INSTRUMENTS)
    rates = RateBook("USD")
    rates.set("USDT", D("0.9995"), T0, "given")
    now = T0
    fills = 0
    last_quote: dict[tuple[str, str], tuple[float, float]] = {}
    for s in steps:
        kind = s[0]
        if kind == "fill":
            _, i, side, qty, f = s
            assert isinstance(i, Instrument) and isinstance(qty, int) and isinstance(f, float)
            fills += 1
            p.fill(venue=i.venue, symbol=i.symbol, side="buy" if side == "buy" else "sell",
                   qty=i.lot_step * qty, price=D(repr(round(PRICE[i.pair] * f, 2))), fee=D("0.01"),
                   fee_ccy="USD" if i.venue == "mt5" else "USDT", ts_ms=now, trade_id=f"t{fills}")
        elif kind == "mark":
            _, i, f, spread = s
            assert isinstance(i, Instrument) and isinstance(f, float) and isinstance(spread, float)
            bid = round(PRICE[i.pair] * f, 2)
            quote = (bid, bid + round(bid * spread, 2))
            last_quote[i.key] = quote
            p.mark(i.venue, i.symbol, quote[0], quote[1], now)
        elif kind == "mark_again":  # the same quote objects again (the risk loop's second read)
            _, i = s
            assert isinstance(i, Instrument)
            if i.key in last_quote:
                p.mark(i.venue, i.symbol, *last_quote[i.key], now)
        elif kind == "mark_at":
            _, i, f = s
            assert isinstance(i, Instrument) and isinstance(f, float)
            p.mark_at(i.venue, i.symbol, D(repr(round(PRICE[i.pair] * f, 2))), now)
        elif kind == "funding":
            _, i, n, rate = s
            assert isinstance(i, Instrument) and isinstance(n, int) and isinstance(rate, str)
            p.accrue_funding(i.venue, i.symbol, T0 + n * 28_800_000, D(rate), D(repr(PRICE[i.pair])))
        elif kind == "funding_reported":
            _, i, n, amount = s
            assert isinstance(i, Instrument) and isinstance(n, int) and isinstance(amount, str)
            p.book_funding(i.venue, i.symbol, T0 + n * 28_800_000, D(amount), "USDT")
        elif kind == "swap":
            _, i, n, amount = s
            assert isinstance(i, Instrument) and isinstance(n, int) and isinstance(amount, str)
            p.book_swap(i.venue, i.symbol, f"deal{n}", D(amount), "USD")
        elif kind == "swap_accrued":
            _, i, amount = s
            assert isinstance(i, Instrument) and isinstance(amount, str)
            p.accrued_swap(i.venue, i.symbol, D(amount), "USD", now)
        elif kind == "later":
            _, dt = s
            assert isinstance(dt, int)
            now += dt
        else:
            _, flat = s
            assert isinstance(flat, bool)
            views = p.positions(now, include_flat=True)
            assert [repr(v) for v in views] == _reference(p, now)
            assert [repr(v) for v in p.positions(now, include_flat=flat)] == [
                repr(p._new_view(b, now)) for b in p._sorted if flat or b.fills or b.qty or b.carry]
            for v in views:
                assert repr(p.position(v.venue, v.symbol, now)) == repr(v)
        # The equity (built from the views) after every step, against a cache-free rebuild.
        fresh = Portfolio(INSTRUMENTS)
        for mine, theirs in zip(p._sorted, fresh._sorted, strict=True):
            for name in mine.__slots__:
                if name not in ("view", "view_ms"):
                    setattr(theirs, name, getattr(mine, name))
        assert repr(p.equity(rates, now)) == repr(fresh.equity(rates, now))
        assert [repr(v) for v in p.positions(now, include_flat=True)] == _reference(p, now)


def test_a_quote_marked_again_at_the_same_instant_changes_nothing() -> None:
    p = Portfolio(INSTRUMENTS)
    bid, ask = 2650.5, 2651.0
    assert p.mark("mt5", "XAUUSD", bid, ask, T0) is True
    first = p.position("mt5", "XAUUSD", T0)
    assert p.mark("mt5", "XAUUSD", bid, ask, T0) is False
    assert p.position("mt5", "XAUUSD", T0) is first  # the same view: nothing changed
    assert p.mark("mt5", "XAUUSD", bid, ask, T0 + 1) is True  # a later instant is a new mark
    assert p.position("mt5", "XAUUSD", T0 + 1).mark_ts_ms == T0 + 1
    assert p.mark("mt5", "XAUUSD", 2650.25, ask, T0 + 1) is True  # a new quote at the same instant
    assert p.position("mt5", "XAUUSD", T0 + 1).mark == (D("2650.25") + D("2651.0")) / 2 * MT5_XAU.price_scale
