"""Instrument normalization: venue units <-> base units, lot steps, ticks, common steps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.config import (
    BinanceInstrumentConfig,
    Mt5InstrumentConfig,
    OkxInstrumentConfig,
    PairConfig,
    PairInstruments,
)
from core.instruments import Instrument, Pair, ceil_to, common_step, floor_to
from core.models import Side

D = Decimal


def _xau() -> Pair:
    """MT5 XAUUSD: 1 lot = 100 oz, lot step 0.01; Binance PAXGUSDT: 1 unit = 1 oz, step 0.001."""
    return PairConfig(
        name="XAU",
        instruments=PairInstruments(
            mt5=Mt5InstrumentConfig(symbol="XAUUSD", qty_per_lot=D(100), lot_step=D("0.01"),
                                    min_qty=D("0.01")),
            binance=BinanceInstrumentConfig(symbol="PAXGUSDT", qty_per_contract=D(1),
                                            lot_step=D("0.001"), min_qty=D("0.001")),
        ),
    ).to_pair()


def _btc() -> Pair:
    """OKX BTC-USDT-SWAP: 1 contract = 0.01 BTC, step 1 contract, tick 0.1; Binance BTCUSDT: 1 BTC."""
    return PairConfig(
        name="BTC",
        instruments=PairInstruments(
            okx=OkxInstrumentConfig(symbol="BTC-USDT-SWAP", qty_per_contract=D("0.01"), lot_step=D(1),
                                    min_qty=D(1), tick_size=D("0.1")),
            binance=BinanceInstrumentConfig(symbol="BTCUSDT", qty_per_contract=D(1),
                                            lot_step=D("0.001"), min_qty=D("0.001"), tick_size=D("0.1")),
        ),
    ).to_pair()


def _inst(**kw: Any) -> Instrument:
    base: dict[str, Any] = {
        "venue": "binance", "symbol": "X", "pair": "X", "qty_per_unit": D(1), "tick_size": D("0.01"),
        "lot_step": D("0.001"), "min_qty": D("0.001"), "taker_fee_bps": 5.0,
    }
    base.update(kw)
    return Instrument(**base)


# -- config -> instrument -------------------------------------------------------------------

def test_config_builds_instruments_with_their_units() -> None:
    pair = _xau()
    mt5 = pair.instrument("mt5")
    paxg = pair.instrument("binance")
    assert (mt5.symbol, mt5.pair, mt5.qty_per_unit, mt5.lot_step) == ("XAUUSD", "XAU", D(100), D("0.01"))
    assert (paxg.symbol, paxg.qty_per_unit, paxg.lot_step) == ("PAXGUSDT", D(1), D("0.001"))
    # default fees: MT5 0 bps (spread-only broker), Binance 5 bps = 0.0005 as a fraction
    assert mt5.fee_f == 0.0
    assert paxg.fee_f == pytest.approx(0.0005)
    assert pair.venues == ("mt5", "binance")


# -- MT5 lot of 100 oz against a 1-oz token --------------------------------------------------

def test_mt5_two_lots_are_two_hundred_oz() -> None:
    mt5 = _xau().instrument("mt5")
    # 2 lots * 100 oz/lot = 200 oz
    assert mt5.to_base_qty(D(2)) == D(200)
    # 0.01 lot * 100 oz/lot = 1 oz
    assert mt5.to_base_qty(D("0.01")) == D(1)


def test_mt5_base_step_and_min_are_in_oz() -> None:
    mt5 = _xau().instrument("mt5")
    # lot step 0.01 lot * 100 oz = 1 oz; min 0.01 lot * 100 = 1 oz
    assert mt5.base_step == D(1)
    assert mt5.base_min_qty == D(1)


def test_mt5_250_oz_is_2_50_lots() -> None:
    mt5 = _xau().instrument("mt5")
    # 250 oz / 100 oz per lot = 2.5 lots, already on the 0.01 step, two decimals kept
    lots = mt5.to_venue_qty(D(250))
    assert lots == D("2.5")
    assert str(lots) == "2.50"


@pytest.mark.parametrize(
    ("oz", "lots"),
    [
        ("250.7", "2.50"),   # 2.507 lots -> floor to 0.01 -> 2.50 (never over-trade)
        ("250.999", "2.50"),  # 2.50999 -> 2.50
        ("251", "2.51"),     # exactly 2.51
        ("0.999", "0.00"),   # 0.00999 lots is less than one step
        ("1", "0.01"),       # one step
    ],
)
def test_mt5_base_to_lots_floors_to_lot_step(oz: str, lots: str) -> None:
    mt5 = _xau().instrument("mt5")
    got = mt5.to_venue_qty(D(oz))
    assert got == D(lots)
    assert str(got) == lots


def test_mt5_huge_base_qty_converts_exactly() -> None:
    mt5 = _xau().instrument("mt5")
    # (10^40 + 0.5) oz -> floor to 1 oz -> 10^40 oz / 100 = 10^38 lots (41 digits: beyond 28)
    lots = mt5.to_venue_qty(D(10) ** 40 + D("0.5"))
    assert lots == D(10) ** 38
    assert str(lots) == "1" + "0" * 38 + ".00"


def test_token_base_to_units_floors_to_0_001() -> None:
    paxg = _xau().instrument("binance")
    # 7.0009 oz / 1 oz per unit = 7.0009 -> floor to 0.001 -> 7.000
    assert str(paxg.to_venue_qty(D("7.0009"))) == "7.000"


# -- OKX contract of 0.01 BTC against 1 BTC -----------------------------------------------

def test_okx_seven_contracts_are_0_07_btc() -> None:
    okx = _btc().instrument("okx")
    # 7 contracts * 0.01 BTC = 0.07 BTC
    assert okx.to_base_qty(D(7)) == D("0.07")
    assert okx.base_step == D("0.01")


def test_okx_btc_to_contracts_floors_to_whole_contracts() -> None:
    okx = _btc().instrument("okx")
    # 0.079 BTC / 0.01 = 7.9 contracts -> floor to step 1 -> 7
    got = okx.to_venue_qty(D("0.079"))
    assert got == D(7)
    assert str(got) == "7"
    # 0.07 BTC is exactly 7 contracts
    assert str(okx.to_venue_qty(D("0.070"))) == "7"


def test_binance_btc_is_its_own_unit() -> None:
    bn = _btc().instrument("binance")
    # 1 BTC per unit: 0.07 BTC -> 0.070 (three decimals of the 0.001 step)
    assert str(bn.to_venue_qty(D("0.07"))) == "0.070"
    assert bn.to_base_qty(D("0.07")) == D("0.07")


# -- common_step (LCM of two decimal steps) -----------------------------------------------

@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # MT5 0.01 lot * 100 oz = 1 oz against PAXG 0.001 oz: 1 = 1000 * 0.001 -> 1
        (D("0.01") * D(100), D("0.001"), D(1)),
        # OKX 0.01 BTC contract against Binance 0.001 BTC: 0.01 = 10 * 0.001 -> 0.01
        (D("0.01"), D("0.001"), D("0.01")),
        # 0.04 = 4/100, 0.06 = 6/100: lcm(4, 6) = 12 -> 0.12 (3 * 0.04 = 2 * 0.06)
        (D("0.04"), D("0.06"), D("0.12")),
        # 0.25 = 25/100, 0.1 = 10/100: lcm(25, 10) = 50 -> 0.5
        (D("0.25"), D("0.1"), D("0.5")),
        # equal steps: the step itself
        (D("0.001"), D("0.001"), D("0.001")),
        # 0.5 and 0.2: lcm(5, 2)/10 = 1
        (D("0.5"), D("0.2"), D(1)),
    ],
)
def test_common_step(a: Decimal, b: Decimal, expected: Decimal) -> None:
    got = common_step(a, b)
    assert got == expected
    assert common_step(b, a) == expected
    # a whole number of both steps
    assert (got / a) == (got / a).to_integral_value()
    assert (got / b) == (got / b).to_integral_value()


# -- floor_to / ceil_to --------------------------------------------------------------------

def test_floor_and_ceil_to_step() -> None:
    # 2650.017 on a 0.01 grid: floor 2650.01, ceil 2650.02
    assert str(floor_to(D("2650.017"), D("0.01"))) == "2650.01"
    assert str(ceil_to(D("2650.017"), D("0.01"))) == "2650.02"
    # already on the grid: unchanged both ways, step's exponent kept
    assert str(floor_to(D("2650.1"), D("0.01"))) == "2650.10"
    assert str(ceil_to(D("2650.1"), D("0.01"))) == "2650.10"
    # non-power-of-ten step: 0.5 on a 0.12 grid -> 4 * 0.12 = 0.48 down, 5 * 0.12 = 0.60 up
    assert floor_to(D("0.5"), D("0.12")) == D("0.48")
    assert ceil_to(D("0.5"), D("0.12")) == D("0.60")


def test_floor_and_ceil_of_negative_values() -> None:
    # floor goes toward -inf, ceil toward +inf: -2650.017 -> -2650.02 / -2650.01
    assert str(floor_to(D("-2650.017"), D("0.01"))) == "-2650.02"
    assert str(ceil_to(D("-2650.017"), D("0.01"))) == "-2650.01"
    assert str(floor_to(D("-0.5"), D("0.12"))) == "-0.60"


def test_floor_and_ceil_to_large_values_stay_exact() -> None:
    # 10^30 + 0.005 has 34 significant digits, more than the default 28-digit context:
    # floor to 0.01 must give 10^30 + 0.00 and ceil 10^30 + 0.01, without raising.
    big = D(10) ** 30 + D("0.005")
    assert floor_to(big, D("0.01")) == D(10) ** 30
    assert ceil_to(big, D("0.01")) == D(10) ** 30 + D("0.01")
    # the same at float magnitudes: 10^300 + 0.005 has 303 significant digits
    huge = D(10) ** 300 + D("0.005")
    assert floor_to(huge, D("0.01")) == D(10) ** 300
    assert ceil_to(huge, D("0.01")) == D(10) ** 300 + D("0.01")
    # a float-sized absurd price: 1e300 on a 0.01 grid is itself
    assert floor_to(D("1E+300"), D("0.01")) == D("1E+300")
    assert "E" not in str(ceil_to(D("1E+300"), D("0.01")))


# -- limit prices -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tick", "price", "side", "expected"),
    [
        ("0.01", 2650.001, "buy", "2650.01"),   # buy rounds up: 2650.001 -> 2650.01
        ("0.01", 2650.009, "sell", "2650.00"),  # sell rounds down: 2650.009 -> 2650.00
        ("0.01", 2650.31, "buy", "2650.31"),    # on tick: unchanged
        ("0.01", 2650.31, "sell", "2650.31"),
        ("0.1", 60000.05, "buy", "60000.1"),    # OKX 0.1 tick
        ("0.1", 60000.05, "sell", "60000.0"),
        ("1", 99.5, "buy", "100"),              # 99.5 -> 100, not '1E+2'
        ("1", 100.0, "sell", "100"),            # float 100.0 on a unit tick -> '100'
        ("5", 103.0, "sell", "100"),            # 103 -> 20 * 5 = 100
        ("5", 101.0, "buy", "105"),             # 101 -> 21 * 5 = 105
        ("10", 95.0, "buy", "100"),             # 9.5 ticks -> 10 ticks of 10 = 100
        ("0.01", 1e-05, "buy", "0.01"),         # repr '1e-05' -> up to one tick
        ("0.01", 1e16, "sell", "10000000000000000.00"),  # repr '1e+16': no exponent out
    ],
)
def test_limit_price_rounds_to_tick_away_from_the_quote(
    tick: str, price: float, side: Side, expected: str
) -> None:
    inst = _inst(tick_size=D(tick))
    got = inst.limit_price(price, side)
    assert str(got) == expected
    assert "E" not in str(got)
    # on the tick grid
    assert got % D(tick) == 0
    # a buy limit never below the quote, a sell limit never above it
    if side == "buy":
        assert got >= D(repr(price))
    else:
        assert got <= D(repr(price))


def test_price_scale_normalizes_venue_prices() -> None:
    # a venue that quotes per 100 oz: 265010 per 100 oz * 0.01 = 2650.10 per oz
    inst = _inst(price_scale=D("0.01"))
    assert inst.normalized_price(D(265010)) == D("2650.10")
    assert inst.price_scale_f == pytest.approx(0.01)


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kw",
    [
        {"qty_per_unit": D(0)},
        {"qty_per_unit": D(-1)},
        {"price_scale": D(0)},
        {"tick_size": D(0)},
        {"lot_step": D(0)},
        {"lot_step": D("-0.001")},
    ],
)
def test_instrument_refuses_non_positive_units(kw: dict[str, Decimal]) -> None:
    with pytest.raises(ValueError):
        _inst(**kw)


def test_pair_needs_two_distinct_venues() -> None:
    a = _inst(venue="okx", symbol="A")
    b = _inst(venue="binance", symbol="B")
    with pytest.raises(ValueError, match="two venues"):
        Pair("X", (a,))
    with pytest.raises(ValueError, match="one instrument per venue"):
        Pair("X", (a, _inst(venue="okx", symbol="C")))
    pair = Pair("X", (a, b))
    assert pair.instrument("binance") is b
    with pytest.raises(KeyError):
        pair.instrument("mt5")
