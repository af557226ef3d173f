"""core.holdings: the portfolio per asset (net delta, drift, mark, money, held since) and the
portfolio's `opened_ms` (when a book became held)."""

from __future__ import annotations

from decimal import Decimal

from core.currency import RateBook
from core.holdings import Holding, holdings, unit_of
from core.instruments import Instrument
from core.models import Side
from core.portfolio import Portfolio
from tests.unit.test_portfolio import BIN_BTC, MT5_BTC, MT5_XAU, OKX_BTC, OKX_XAU

D = Decimal
T0 = 1_732_150_000_000
INSTRUMENTS = {i.key: i for i in (MT5_BTC, OKX_BTC, BIN_BTC, MT5_XAU, OKX_XAU)}


def _usd(usdt: str | None = "1") -> RateBook:
    rates = RateBook("USD")
    if usdt is not None:
        rates.set("USDT", D(usdt), T0, "given")
    return rates


class Book:
    """A portfolio of the test instruments with a counter for trade ids."""

    def __init__(self) -> None:
        self.p = Portfolio(INSTRUMENTS.values())
        self.n = 0

    def fill(self, inst: Instrument, side: Side, qty: str, price: str, ts_ms: int = T0) -> None:
        self.n += 1
        self.p.fill(venue=inst.venue, symbol=inst.symbol, side=side, qty=D(qty), price=D(price), fee=D(0),
                    fee_ccy="USD" if inst.venue == "mt5" else "USDT", ts_ms=ts_ms, trade_id=f"t{self.n}")

    def holdings(self, rates: RateBook | None = None) -> dict[str, Holding]:
        return {h.asset: h for h in holdings(self.p.positions(T0), INSTRUMENTS, rates or _usd())}


def test_a_hedge_nets_to_zero_and_each_leg_keeps_its_own_units() -> None:
    b = Book()
    b.fill(MT5_XAU, "buy", "0.01", "2600", T0)  # 1 oz
    b.fill(OKX_XAU, "sell", "1000", "2610", T0 + 500)  # 1 oz
    b.p.mark_at("mt5", "XAUUSD", D("2620"), T0)
    b.p.mark_at("okx", "XAUT-USDT-SWAP", D("2622"), T0)
    (h,) = holdings(b.p.positions(T0), INSTRUMENTS, _usd())
    assert h.asset == "XAU" and h.net == 0 and not h.drift and h.held
    assert [(leg.venue, leg.qty, leg.venue_qty, leg.unit) for leg in h.legs] == [
        ("mt5", D(1), D("0.01"), "lot"), ("okx", D(-1), D(-1000), "ct")]
    assert h.step == D(1)  # MT5's 0.01 lot of 100 oz is the coarser step (OKX: 1 contract = 0.001 oz)
    assert h.mark == D("2621")  # the mean of the two venues' marks
    assert h.unrealized == D(20) + D(-12)  # 1 x (2620 - 2600) + (-1) x (2622 - 2610), USDT at 1
    assert h.carry == 0
    assert h.held_since_ms == T0  # the earlier of the two legs


def test_drift_is_a_net_delta_of_at_least_the_coarsest_lot_step() -> None:
    b = Book()
    b.fill(MT5_BTC, "buy", "0.05", "60000")
    b.fill(BIN_BTC, "sell", "0.045", "60010")  # 0.005 BTC apart: less than MT5's 0.01 step
    b.p.mark_at("mt5", "BTCUSD", D("60000"), T0)
    b.p.mark_at("binance", "BTCUSDT", D("60000"), T0)
    h = b.holdings()["BTC"]
    assert h.net == D("0.005") and h.step == D("0.01") and not h.drift
    b.fill(BIN_BTC, "buy", "0.005", "60000")  # now 0.01 apart: a whole lot step
    assert b.holdings()["BTC"].drift


def test_dust_is_not_a_holding_and_a_flat_asset_is_left_out() -> None:
    b = Book()
    b.fill(BIN_BTC, "buy", "0.0005", "60000")  # under MT5's step, but Binance's own step is 0.001
    b.p.mark_at("binance", "BTCUSDT", D("60000"), T0)
    h = b.holdings()["BTC"]
    assert not h.held and h.held_since_ms is None
    b.fill(BIN_BTC, "sell", "0.0005", "60000")
    assert b.holdings() == {}


def test_money_is_missing_without_a_rate_or_a_mark_never_guessed() -> None:
    b = Book()
    b.fill(MT5_BTC, "buy", "0.01", "60000")
    b.fill(OKX_BTC, "sell", "1", "60100")
    b.p.mark_at("mt5", "BTCUSD", D("60050"), T0)
    h = b.holdings(_usd(None))["BTC"]
    assert h.unrealized is None  # OKX's USDT has no rate; its leg has no mark
    b.p.mark_at("okx", "BTC-USDT-SWAP", D("60050"), T0)
    assert b.holdings(_usd(None))["BTC"].unrealized is None  # still no USDT rate
    assert b.holdings(_usd("0.5"))["BTC"].unrealized == D("0.5") + D("0.5") * D("0.5")


def test_opened_ms_follows_the_position_through_adds_closes_and_reversals() -> None:
    b = Book()

    def opened() -> int | None:
        return b.p.position("mt5", "BTCUSD", T0).opened_ms

    assert opened() is None
    b.fill(MT5_BTC, "buy", "0.02", "60000", T0 + 1)
    assert opened() == T0 + 1
    b.fill(MT5_BTC, "buy", "0.01", "60000", T0 + 2)  # adding keeps the opening time
    b.fill(MT5_BTC, "sell", "0.01", "60000", T0 + 3)  # so does reducing
    assert opened() == T0 + 1
    b.fill(MT5_BTC, "sell", "0.05", "60000", T0 + 4)  # reversed: a new position
    assert opened() == T0 + 4
    b.fill(MT5_BTC, "buy", "0.03", "60000", T0 + 5)  # flat
    assert opened() is None
    assert b.p.position("mt5", "BTCUSD", T0).as_dict()["opened_ms"] is None


def test_units_are_named_only_when_they_are_not_base_units() -> None:
    assert (unit_of(MT5_XAU), unit_of(OKX_XAU), unit_of(BIN_BTC), unit_of(MT5_BTC)) == ("lot", "ct", "", "")
