"""exchanges/venue.py: InstrumentSpec rounding and refusals, config mismatches, ClockOffset.

Properties (hypothesis): a rounded order is on the venue's grid, never worse than the limit
asked (a buy never pays more, a sell never takes less), never larger than asked; every
refusal is a `FilterRefusal` naming its filter; nothing else is ever raised.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.instruments import Instrument
from core.models import Side
from exchanges.venue import ClockOffset, ErrorKind, FilterRefusal, InstrumentSpec, VenueError

STEPS = st.sampled_from([Decimal(s) for s in ("1", "0.1", "0.01", "0.001", "0.00001", "0.00000001", "0.5", "5",
                                              "0.25", "10")])
FILTERS = {"positive", "lot_size", "tick_size", "min_qty", "max_qty", "min_notional"}


def amounts() -> st.SearchStrategy[Decimal]:
    """Decimals as they reach the gateway: plain ones, float-derived ones, and long ones."""
    plain = st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("1000000"), places=9)
    long = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1000000"), places=40)
    from_float = st.floats(min_value=1e-6, max_value=1e6).map(Decimal)
    return st.one_of(plain, long, from_float)


@st.composite
def specs(draw: st.DrawFn) -> InstrumentSpec:
    lot = draw(STEPS)
    return InstrumentSpec(
        venue="binance", symbol="BTCUSDT", tick_size=draw(STEPS), lot_size=lot,
        min_qty=lot * draw(st.integers(0, 3)), min_notional=Decimal(draw(st.integers(0, 10))),
        max_qty=draw(st.none() | st.just(Decimal(100000))), contract_value=draw(st.sampled_from(
            [Decimal(1), Decimal("0.01"), Decimal(100)])))


def spec(**kw: object) -> InstrumentSpec:
    base: dict[str, object] = {"venue": "binance", "symbol": "BTCUSDT", "tick_size": Decimal("0.01"),
                               "lot_size": Decimal("0.001"), "min_qty": Decimal("0.001"),
                               "min_notional": Decimal(5)}
    base.update(kw)
    return InstrumentSpec(**base)  # type: ignore[arg-type]


@given(specs(), st.sampled_from(["buy", "sell"]), amounts(), amounts())
@example(spec(lot_size=Decimal("0.001")), "buy", Decimal("1.0009999999999999999999999999999"), Decimal("97000"))
@example(spec(), "buy", Decimal("0.01"), Decimal("97000.12999999999999999999999999"))
@example(spec(), "sell", Decimal("0.01"), Decimal("97000.12000000000000000000000001"))
def test_rounded_orders_are_on_the_grid_and_never_worse_than_asked(
    s: InstrumentSpec, side: Side, qty: Decimal, price: Decimal
) -> None:
    try:
        q, p = s.round_order(side, qty, price)
    except FilterRefusal as refusal:
        assert refusal.filter_name in FILTERS
        assert refusal.symbol == "BTCUSDT" and refusal.filter_name in str(refusal)
        return
    with localcontext() as exact:
        exact.prec = 2000  # the checks themselves must not round
        assert q % s.lot_size == 0 and p % s.tick_size == 0
        assert 0 < q <= qty and q >= s.min_qty
        assert p > 0
        assert (p <= price) if side == "buy" else (p >= price)
        assert p - price < s.tick_size if side == "sell" else price - p < s.tick_size  # the nearest allowed price
        assert qty - q < s.lot_size
        assert q * s.contract_value * p >= s.min_notional


@pytest.mark.parametrize(("qty", "price", "name"), [
    ("0", "100", "positive"),
    ("1", "-1", "positive"),
    ("NaN", "100", "positive"),
    ("1", "Infinity", "positive"),
    ("sNaN", "100", "positive"),
    ("0.0004", "10000", "lot_size"),  # below one lot: rounds to nothing
    ("1", "0.004", "tick_size"),  # a buy below one tick would be sent at price 0
    ("0.002", "1", "min_notional"),
])
def test_refusals_name_their_filter(qty: str, price: str, name: str) -> None:
    s = spec(min_qty=Decimal(0))
    with pytest.raises(FilterRefusal) as refused:
        s.round_order("buy", Decimal(qty), Decimal(price))
    assert refused.value.filter_name == name


def test_min_and_max_quantity() -> None:
    s = spec(min_qty=Decimal("0.01"), max_qty=Decimal(5), min_notional=Decimal(0))
    with pytest.raises(FilterRefusal, match="min_qty"):
        s.round_order("buy", Decimal("0.009"), Decimal(100))
    with pytest.raises(FilterRefusal, match="max_qty"):
        s.round_order("sell", Decimal("5.001"), Decimal(100))
    assert s.round_order("sell", Decimal("4.9999"), Decimal("100.001")) == (Decimal("4.999"), Decimal("100.01"))


def test_contract_value_counts_in_the_notional() -> None:
    swap = spec(lot_size=Decimal(1), min_qty=Decimal(1), contract_value=Decimal("0.01"), min_notional=Decimal(10))
    assert swap.round_order("buy", Decimal(2), Decimal(600)) == (Decimal(2), Decimal(600))  # 2 * 0.01 * 600 = 12
    with pytest.raises(FilterRefusal, match="min_notional"):
        swap.round_order("buy", Decimal(1), Decimal(600))


@pytest.mark.parametrize("field", ["tick_size", "lot_size", "contract_value"])
@pytest.mark.parametrize("bad", ["0", "-1", "NaN", "Infinity"])
def test_a_spec_without_a_usable_grid_is_refused_when_built(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        spec(**{field: Decimal(bad)})


@pytest.mark.parametrize(("field", "bad"), [("min_qty", "-1"), ("min_notional", "-1"), ("max_qty", "0"),
                                            ("min_qty", "NaN")])
def test_bounds_must_be_sensible(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        spec(**{field: Decimal(bad)})


def _inst(**kw: object) -> Instrument:
    base: dict[str, object] = {"venue": "binance", "symbol": "BTCUSDT", "pair": "BTC", "qty_per_unit": Decimal(1),
                               "tick_size": Decimal("0.01"), "lot_step": Decimal("0.001"),
                               "min_qty": Decimal("0.001"), "taker_fee_bps": 5.0}
    base.update(kw)
    return Instrument(**base)  # type: ignore[arg-type]


def test_mismatches_list_every_difference_and_nothing_else() -> None:
    s = spec()
    assert s.mismatches(_inst()) == []
    assert s.mismatches(_inst(tick_size=Decimal("0.010"))) == []  # equal values in another notation
    problems = s.mismatches(_inst(tick_size=Decimal("0.1"), lot_step=Decimal("0.01"), qty_per_unit=Decimal(2)))
    assert problems == [
        "binance BTCUSDT: tick_size is 0.1 in the config, 0.01 on the venue",
        "binance BTCUSDT: lot_step is 0.01 in the config, 0.001 on the venue",
        "binance BTCUSDT: qty_per_unit is 2 in the config, 1 on the venue",
    ]
    [min_qty] = s.mismatches(_inst(min_qty=Decimal("0.002")))
    assert "min_qty is 0.002 in the config, 0.001 on the venue" in min_qty


@given(st.integers(0, 2**42), st.integers(0, 10_000), st.integers(-(10**7), 10**7))
def test_clock_offset_puts_the_server_reading_at_the_middle_of_the_round_trip(sent: int, rtt: int, skew: int) -> None:
    offset = ClockOffset()
    assert not offset.synced and offset.venue_ms(sent) == sent
    received = sent + rtt
    offset.update(sent + rtt // 2 + skew, sent, received)
    assert offset.synced
    assert offset.offset_ms == skew + (rtt // 2 - (2 * sent + rtt) // 2 + sent)
    assert abs(offset.venue_ms((sent + received) // 2) - (sent + rtt // 2 + skew)) <= 1


def test_venue_errors_carry_their_class_and_wait() -> None:
    error = VenueError("binance", ErrorKind.RATE_LIMITED, "-1003", "Too much request weight used",
                       retry_after_s=2.0, http_status=429)
    assert str(error) == "binance rate_limited -1003: Too much request weight used"
    assert (error.kind, error.retry_after_s, error.http_status) == (ErrorKind.RATE_LIMITED, 2.0, 429)
