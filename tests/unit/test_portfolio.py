"""core.portfolio: positions, realized/unrealized PnL, fees and carry, equity in one currency.

The property test plays random trading days (hedge groups with partial fills, broken and
failed groups, compensation, flatten, late and repeated fills, funding, swap) into a Portfolio
and checks its equity against the cash flows summed independently, plus the positions at
their marks, to the cent. The worked examples apply the venues' documented funding formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.carry import funding_payment
from core.currency import RateBook, quote_currency, rate_pair
from core.instruments import Instrument
from core.models import Side, Venue
from core.portfolio import Portfolio

D = Decimal
T0 = 1_732_150_000_000

MT5_BTC = Instrument(venue="mt5", symbol="BTCUSD", pair="BTC", qty_per_unit=D(1), tick_size=D("0.01"),
                     lot_step=D("0.01"), min_qty=D("0.01"), taker_fee_bps=0.0)
OKX_BTC = Instrument(venue="okx", symbol="BTC-USDT-SWAP", pair="BTC", qty_per_unit=D("0.01"), tick_size=D("0.1"),
                     lot_step=D(1), min_qty=D(1), taker_fee_bps=5.0)
BIN_BTC = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=D(1), tick_size=D("0.1"),
                     lot_step=D("0.001"), min_qty=D("0.001"), taker_fee_bps=5.0)
MT5_XAU = Instrument(venue="mt5", symbol="XAUUSD", pair="XAU", qty_per_unit=D(100), tick_size=D("0.01"),
                     lot_step=D("0.01"), min_qty=D("0.01"), taker_fee_bps=0.0)
OKX_XAU = Instrument(venue="okx", symbol="XAUT-USDT-SWAP", pair="XAU", qty_per_unit=D("0.001"),
                     tick_size=D("0.1"), lot_step=D(1), min_qty=D(1), taker_fee_bps=5.0)
# A venue unit of 1000 base units quoted per 1000 (as `1000PEPEUSDT`): price_scale normalizes it.
BIN_PEPE = Instrument(venue="binance", symbol="1000PEPEUSDC", pair="PEPE", qty_per_unit=D(1000),
                      tick_size=D("0.0001"), lot_step=D(1), min_qty=D(1), taker_fee_bps=5.0, price_scale=D("0.001"))
OKX_PEPE = Instrument(venue="okx", symbol="PEPE-USDT-SWAP", pair="PEPE", qty_per_unit=D(10_000_000),
                      tick_size=D("0.0000001"), lot_step=D("0.1"), min_qty=D("0.1"), taker_fee_bps=5.0)
INSTRUMENTS = (MT5_BTC, OKX_BTC, BIN_BTC, MT5_XAU, OKX_XAU, BIN_PEPE, OKX_PEPE)
BY_PAIR: dict[str, tuple[Instrument, ...]] = {
    pair: tuple(i for i in INSTRUMENTS if i.pair == pair) for pair in ("BTC", "XAU", "PEPE")
}
PRICE: dict[str, D] = {"BTC": D("60000"), "XAU": D("2650"), "PEPE": D("0.00001234")}
FEE_CCY: dict[Venue, str] = {"mt5": "USD", "okx": "USDT", "binance": "USDT"}


# -- the independent bookkeeping ------------------------------------------------------------------
@dataclass
class Cash:
    """What the property test sums on its own: cash per currency, net base units per book."""

    flows: dict[str, D]
    positions: dict[tuple[Venue, str], D]
    seen: set[tuple[Venue, str]]
    books: dict[tuple[Venue, str], D]  # each book's own cash flow (before fees)

    def add(self, ccy: str, amount: D) -> None:
        self.flows[ccy] = self.flows.get(ccy, D(0)) + amount


@dataclass(frozen=True)
class FillStep:
    inst: Instrument
    side: Side
    qty: D  # venue units
    price: D  # venue price
    fee: D
    fee_ccy: str
    trade_id: str


@dataclass(frozen=True)
class FundingStep:
    inst: Instrument
    rate: D
    mark: D  # venue price


@dataclass(frozen=True)
class SwapStep:
    inst: Instrument
    deal: str
    amount: D


@dataclass(frozen=True)
class AccruedStep:
    inst: Instrument
    amount: D


Step = FillStep | FundingStep | SwapStep | AccruedStep


def apply(p: Portfolio, cash: Cash, f: FillStep, ts: int) -> None:
    applied = p.fill(venue=f.inst.venue, symbol=f.inst.symbol, side=f.side, qty=f.qty, price=f.price, fee=f.fee,
                     fee_ccy=f.fee_ccy, ts_ms=ts, trade_id=f.trade_id)
    repeat = (f.inst.venue, f.trade_id) in cash.seen
    assert applied is not repeat
    if repeat:
        return
    cash.seen.add((f.inst.venue, f.trade_id))
    ccy = quote_currency(f.inst.venue, f.inst.symbol)
    assert ccy is not None
    base = f.qty * f.inst.qty_per_unit
    money = base * f.price * f.inst.price_scale
    cash.add(ccy, money if f.side == "sell" else -money)
    cash.add(f.fee_ccy, -f.fee)
    signed = base if f.side == "buy" else -base
    cash.positions[f.inst.key] = cash.positions.get(f.inst.key, D(0)) + signed
    cash.books[f.inst.key] = cash.books.get(f.inst.key, D(0)) + (money if f.side == "sell" else -money)


prices = st.integers(-300, 300).map(lambda bps: D(10_000 + bps) / 10_000)
fees = st.integers(0, 500).map(lambda c: D(c) / 100)


@st.composite
def trading_day(draw: st.DrawFn) -> list[Step]:
    """The steps of a day. Fills come from hedge groups (entry legs in 1-3 partial fills, some
    broken and unwound, some failed with a leg filled 10x), flatten, late and repeated fills;
    funding on the perpetuals, swap booked and accrued on MT5."""
    steps: list[Step] = []
    fills: list[FillStep] = []
    held: dict[tuple[Venue, str], D] = {}  # venue units, to size flatten
    n = 0

    def fill(inst: Instrument, side: Side, lots: int, late: bool = False) -> FillStep:
        nonlocal n
        n += 1
        qty = inst.lot_step * lots
        price = (PRICE[inst.pair] * draw(prices) / inst.price_scale).quantize(inst.tick_size)
        fee_ccy = "BNB" if inst.venue == "binance" and draw(st.integers(0, 9)) == 0 else FEE_CCY[inst.venue]
        step = FillStep(inst, side, qty, price, draw(fees), fee_ccy, f"t{n}{'late' if late else ''}")
        held[inst.key] = held.get(inst.key, D(0)) + (qty if side == "buy" else -qty)
        return step

    def legs(inst: Instrument, side: Side, lots: int) -> None:
        parts = draw(st.integers(1, 3))
        for i in range(parts):
            share = lots // parts + (1 if i < lots % parts else 0)
            if share:
                f = fill(inst, side, share)
                fills.append(f)
                steps.append(f)

    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["hedged", "broken", "failed", "flatten", "late", "repeat", "funding",
                                     "swap", "accrued"]))
        pair = draw(st.sampled_from(sorted(BY_PAIR)))
        a, b = draw(st.permutations(BY_PAIR[pair]))[:2]
        lots = draw(st.integers(1, 40))
        if kind in ("hedged", "broken", "failed"):
            # Entry legs in base units that match within the coarser step: size both from one base qty.
            base = max(a.base_step, b.base_step) * lots
            legs(a, "buy", int(base / a.base_step))
            if kind == "hedged":
                legs(b, "sell", int(base / b.base_step))
            elif kind == "broken":  # the sell leg partly filled, then unwound on the buy venue
                part = int(base / b.base_step) // 2
                legs(b, "sell", part)
                legs(a, "sell", int((base - part * b.base_step) / a.base_step))
            else:  # failed: the sell leg filled ten times its size, nothing repaired it
                legs(b, "sell", int(base / b.base_step) * 10)
        elif kind == "flatten":
            for key, qty in sorted(held.items()):
                if qty:
                    inst = next(i for i in INSTRUMENTS if i.key == key)
                    f = fill(inst, "sell" if qty > 0 else "buy", int(abs(qty) / inst.lot_step))
                    fills.append(f)
                    steps.append(f)
        elif kind == "late":  # a fill of an earlier order arrives after everything else
            f = fill(a, draw(st.sampled_from(["buy", "sell"])), lots, late=True)
            fills.append(f)
            steps.append(f)
        elif kind == "repeat" and fills:  # the venue delivers a fill again
            steps.append(draw(st.sampled_from(fills)))
        elif kind == "funding" and a.venue != "mt5":
            rate = D(draw(st.integers(-300, 300))) / 1_000_000
            steps.append(FundingStep(a, rate, (PRICE[a.pair] * draw(prices) / a.price_scale).quantize(a.tick_size)))
        elif kind == "swap" and a.venue == "mt5":
            steps.append(SwapStep(a, f"d{len(steps)}", D(draw(st.integers(-500, 100))) / 100))
        elif kind == "accrued" and a.venue == "mt5":
            steps.append(AccruedStep(a, D(draw(st.integers(-500, 100))) / 100))
    return steps


@settings(max_examples=300, deadline=None)
@given(day=trading_day(), marks=st.lists(prices, min_size=len(INSTRUMENTS), max_size=len(INSTRUMENTS)),
       usdt=st.integers(9_900, 10_100), usdc=st.integers(9_900, 10_100), bnb=st.none() | st.integers(500, 700))
def test_equity_is_the_cash_flows_plus_positions_at_their_marks(
    day: list[Step], marks: list[D], usdt: int, usdc: int, bnb: int | None,
) -> None:
    p = Portfolio(INSTRUMENTS)
    cash = Cash({}, {}, set(), {})
    accrued: dict[tuple[Venue, str], D] = {}
    ts = T0
    for step in day:
        ts += 1000
        inst = step.inst
        if isinstance(step, FillStep):
            apply(p, cash, step, ts)
            if cash.positions.get(inst.key, D(0)) == 0:
                accrued.pop(inst.key, None)  # flat: nothing accrues any more
        elif isinstance(step, FundingStep):
            booked = p.accrue_funding(inst.venue, inst.symbol, ts, step.rate, step.mark)
            paid = -(cash.positions.get(inst.key, D(0)) * step.mark * inst.price_scale * step.rate)
            assert booked == paid
            cash.add(quote_currency(inst.venue, inst.symbol) or "?", paid)
        elif isinstance(step, SwapStep):
            assert p.book_swap(inst.venue, inst.symbol, step.deal, step.amount, "USD")
            cash.add("USD", step.amount)
        elif p.accrued_swap(inst.venue, inst.symbol, step.amount, "USD", ts):
            accrued[inst.key] = step.amount
        else:
            assert cash.positions.get(inst.key, D(0)) == 0
    mark_px: dict[tuple[Venue, str], D] = {}
    for i, move in zip(INSTRUMENTS, marks, strict=True):
        mid = (PRICE[i.pair] * move / i.price_scale).quantize(i.tick_size)
        p.mark(i.venue, i.symbol, float(mid - i.tick_size), float(mid + i.tick_size), ts)
        mark_px[i.key] = mid * i.price_scale
    rates = RateBook("USD")
    rates.set("USDT", D(usdt) / 10_000, ts, "test")
    rates.set("USDC", D(usdc) / 10_000, ts, "test")
    if bnb is not None:
        rates.set("BNB", D(bnb), ts, "test")

    # Independently: every currency's cash flows, fees and carry, plus positions at their marks.
    worth = dict(cash.flows)
    for key, qty in cash.positions.items():
        ccy = quote_currency(*key) or "?"
        worth[ccy] = worth.get(ccy, D(0)) + qty * mark_px[key]
    for amount in accrued.values():
        worth["USD"] += amount
    equity = p.equity(rates, ts)
    for ccy, amount in worth.items():
        parts = equity.by_currency.get(ccy)
        if parts is None:
            assert amount == 0
            continue
        assert parts.total is not None and abs(parts.total - amount) < D("1e-9"), ccy
    expected = D(0)
    missing = []
    for ccy, amount in worth.items():
        converted = rates.convert(amount, ccy)
        if converted is None:
            if amount or equity.by_currency[ccy].fees:
                missing.append(ccy)
            continue
        expected += converted
    if missing:
        assert equity.total is None and set(missing) <= set(equity.missing_rates) == {"BNB"}
    else:
        assert equity.total is not None
        assert abs(equity.total - expected) < D("1e-9")  # to the cent, and far beyond
        assert equity.missing_rates == () and equity.missing_marks == ()
    # Positions in base units are the fills' net, whatever the venue's units; a flat book's
    # realized PnL is exactly its cash flow.
    for v in p.positions(ts):
        assert v.qty == cash.positions.get((v.venue, v.symbol), D(0))
        if v.qty == 0:
            assert v.realized == cash.books.get((v.venue, v.symbol), D(0)) and v.unrealized == 0 and v.avg_price is None
        assert v.venue_qty * next(i for i in INSTRUMENTS if i.key == (v.venue, v.symbol)).qty_per_unit == v.qty
    # Net per asset is the sum across venues.
    for asset, net in p.net_by_asset().items():
        assert net == sum((q for k, q in cash.positions.items()
                           if next(i for i in INSTRUMENTS if i.key == k).pair == asset), D(0))


# -- average cost, realized and unrealized ----------------------------------------------------------
def trade(p: Portfolio, inst: Instrument, side: Side, qty: str, price: str, tid: str, fee: str = "0") -> None:
    assert p.fill(venue=inst.venue, symbol=inst.symbol, side=side, qty=D(qty), price=D(price), fee=D(fee),
                  fee_ccy=FEE_CCY[inst.venue], ts_ms=T0, trade_id=tid)


def test_average_price_partial_close_and_flip() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, BIN_BTC, "buy", "1", "100", "a")
    trade(p, BIN_BTC, "buy", "3", "200", "b")
    v = p.position("binance", "BTCUSDT", T0)
    assert (v.qty, v.avg_price, v.realized) == (D(4), D(175), D(0))
    trade(p, BIN_BTC, "sell", "1", "195", "c")  # closes 1 at 195 against 175
    v = p.position("binance", "BTCUSDT", T0)
    assert (v.qty, v.avg_price, v.realized) == (D(3), D(175), D(20))
    trade(p, BIN_BTC, "sell", "5", "150", "d")  # closes 3 (-75), opens 2 short at 150
    v = p.position("binance", "BTCUSDT", T0)
    assert (v.qty, v.avg_price, v.realized) == (D(-2), D(150), D(-55))
    trade(p, BIN_BTC, "buy", "2", "160", "e")  # closes the short: -20
    v = p.position("binance", "BTCUSDT", T0)
    assert (v.qty, v.avg_price, v.realized, v.unrealized) == (D(0), None, D(-75), D(0))


def test_units_are_normalized_to_base_units_and_prices() -> None:
    """The same ounce of gold is 0.01 lot on MT5 and 1000 contracts on OKX."""
    p = Portfolio(INSTRUMENTS)
    trade(p, MT5_XAU, "buy", "0.01", "2650", "m1", fee="0.07")
    trade(p, OKX_XAU, "sell", "1000", "2652.5", "o1", fee="0.13")
    mt5, okx = p.position("mt5", "XAUUSD", T0), p.position("okx", "XAUT-USDT-SWAP", T0)
    assert (mt5.qty, mt5.venue_qty, okx.qty, okx.venue_qty) == (D(1), D("0.01"), D(-1), D(-1000))
    assert p.net_by_asset()["XAU"] == 0
    p.mark("mt5", "XAUUSD", 2660.0, 2660.2, T0 + 250)
    p.mark("okx", "XAUT-USDT-SWAP", 2661.0, 2661.2, T0 + 400)
    mt5, okx = p.position("mt5", "XAUUSD", T0 + 1000), p.position("okx", "XAUT-USDT-SWAP", T0 + 1000)
    assert (mt5.mark, mt5.unrealized, mt5.mark_age_ms) == (D("2660.1"), D("10.1"), 750)
    assert (okx.mark, okx.unrealized, okx.mark_age_ms) == (D("2661.1"), D("-8.6"), 600)
    rates = RateBook("USD")
    rates.set("USDT", D("0.999"), T0, "test")
    e = p.equity(rates, T0 + 1000)
    assert e.unrealized == D("10.1") + D("-8.6") * D("0.999")
    assert e.fees == D("0.07") + D("0.13") * D("0.999")
    assert e.total == D("10.1") - D("0.07") + (D("-8.6") - D("0.13")) * D("0.999")


def test_price_scale() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, BIN_PEPE, "buy", "2", "0.0123", "p1")  # 2000 PEPE at 0.0123 per 1000
    v = p.position("binance", "1000PEPEUSDC", T0)
    assert (v.qty, v.avg_price, v.quote_ccy) == (D(2000), D("0.0000123"), "USDC")


def test_a_missing_rate_or_mark_is_missing_never_one() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, OKX_BTC, "buy", "10", "60000", "o1", fee="0.3")
    trade(p, MT5_BTC, "sell", "0.1", "60100", "m1", fee="0.7")
    p.mark("mt5", "BTCUSD", 60000.0, 60002.0, T0)
    e = p.equity(RateBook("USD"), T0)
    assert e.missing_marks == (("okx", "BTC-USDT-SWAP"),)
    assert e.unrealized is None and e.total is None
    assert e.by_currency["USD"].total == D("9.9") - D("0.7")  # USD alone is known
    p.mark("okx", "BTC-USDT-SWAP", 60000.0, 60002.0, T0)
    e = p.equity(RateBook("USD"), T0)
    assert e.missing_rates == ("USDT",) and e.fees is None and e.total is None
    doc = e.as_dict()
    assert doc["total"] is None and doc["missing_rates"] == ["USDT"] and doc["by_currency"]["USDT"]["total"] == "-0.2"


def test_repeated_fills_are_ignored() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, OKX_BTC, "buy", "10", "60000", "o1")
    assert not p.fill(venue="okx", symbol="BTC-USDT-SWAP", side="buy", qty=D(10), price=D(60000), fee=D(0),
                      fee_ccy="USDT", ts_ms=T0, trade_id="o1")
    assert p.position("okx", "BTC-USDT-SWAP", T0).qty == D("0.1")


bad_fills = st.fixed_dictionaries({
    "venue": st.sampled_from(["okx", "mt5", "binance", "kraken"]),
    "symbol": st.sampled_from(["BTC-USDT-SWAP", "BTCUSD", "ETHUSDT", ""]),
    "side": st.sampled_from(["buy", "sell", "hold"]),
    "qty": st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-5, max_value=5)
    | st.sampled_from([D("NaN"), D("Infinity"), D(0)]),
    "price": st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-5, max_value=70_000)
    | st.sampled_from([D("NaN"), D("-Infinity")]),
    "fee": st.sampled_from([D("0.1"), D("NaN"), D("-0.02")]),
    "fee_ccy": st.sampled_from(["USDT", ""]),
    "trade_id": st.sampled_from(["x1", "", "o1"]),
})


@settings(max_examples=400, deadline=None)
@given(args=bad_fills)
def test_a_refused_input_changes_nothing(args: dict[str, object]) -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, OKX_BTC, "buy", "10", "60000", "o1", fee="0.3")
    before = [v.as_dict() for v in p.positions(T0, include_flat=True)]
    try:
        applied = p.fill(ts_ms=T0, **args)  # type: ignore[arg-type]
    except ValueError:
        assert [v.as_dict() for v in p.positions(T0, include_flat=True)] == before
        return
    # Accepted only when every field is valid; the repeat of o1 changes nothing either.
    assert args["side"] in ("buy", "sell") and args["fee_ccy"] and args["trade_id"]
    qty, price = args["qty"], args["price"]
    assert isinstance(qty, D) and isinstance(price, D) and qty > 0 and price > 0
    if not applied:
        assert [v.as_dict() for v in p.positions(T0, include_flat=True)] == before


@pytest.mark.parametrize(("bid", "ask"), [(0.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))])
def test_a_bad_mark_is_refused(bid: float, ask: float) -> None:
    p = Portfolio(INSTRUMENTS)
    with pytest.raises(ValueError):
        p.mark("okx", "BTC-USDT-SWAP", bid, ask, T0)
    assert p.position("okx", "BTC-USDT-SWAP", T0).mark is None


def test_an_unknown_quote_currency_must_be_given() -> None:
    us500 = Instrument(venue="mt5", symbol="US500", pair="SPX", qty_per_unit=D(1), tick_size=D("0.1"),
                       lot_step=D("0.1"), min_qty=D("0.1"), taker_fee_bps=0.0)
    with pytest.raises(ValueError, match="US500"):
        Portfolio([us500])
    p = Portfolio([us500], quote_ccy={("mt5", "US500"): "USD"})
    assert p.position("mt5", "US500", T0).quote_ccy == "USD"


# -- funding: the venues' documented formula ------------------------------------------------------
def test_okx_funding_worked_example() -> None:
    """OKX: funding fee = position value x funding rate; positive rate, longs pay shorts. 100
    BTC-USDT-SWAP contracts (ctVal 0.01 BTC) are 1 BTC: at a 60,000 mark and 0.01 %, 6 USDT."""
    p = Portfolio(INSTRUMENTS)
    trade(p, OKX_BTC, "buy", "100", "59990", "o1")
    assert p.accrue_funding("okx", "BTC-USDT-SWAP", T0 + 8 * 3_600_000, D("0.0001"), D("60000")) == D(-6)
    short = Portfolio(INSTRUMENTS)
    trade(short, OKX_BTC, "sell", "100", "59990", "o1")
    assert short.accrue_funding("okx", "BTC-USDT-SWAP", T0 + 8 * 3_600_000, D("0.0001"), D("60000")) == D(6)
    assert p.position("okx", "BTC-USDT-SWAP", T0).carry == {"USDT": D(-6)}
    # One funding time is booked once.
    assert p.accrue_funding("okx", "BTC-USDT-SWAP", T0 + 8 * 3_600_000, D("0.0001"), D("60000")) is None


def test_binance_funding_worked_example() -> None:
    """Binance USD-M: funding amount = nominal value x funding rate, nominal = mark price x size.
    A negative rate: shorts pay longs. Short 0.5 BTC at mark 64,000 and -0.0125 %: pays 4 USDT."""
    p = Portfolio(INSTRUMENTS)
    trade(p, BIN_BTC, "sell", "0.5", "64010", "b1")
    assert p.accrue_funding("binance", "BTCUSDT", T0, D("-0.000125"), D("64000")) == D(-4)
    assert funding_payment(D("0.5"), D(64000), D("-0.000125")) == D(4)  # the long receives it


def test_funding_is_charged_only_on_the_position_held_at_the_funding_time() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, BIN_BTC, "buy", "1", "60000", "b1")
    trade(p, BIN_BTC, "sell", "1", "60010", "b2")  # closed before the funding time
    assert p.accrue_funding("binance", "BTCUSDT", T0, D("0.0003"), D("60000")) == 0
    trade(p, BIN_BTC, "buy", "2", "60000", "b3")  # opened after it
    assert p.position("binance", "BTCUSDT", T0).carry == {"USDT": D(0)}


def test_reported_funding_replaces_the_computed_amount() -> None:
    p = Portfolio(INSTRUMENTS)
    trade(p, OKX_BTC, "buy", "100", "60000", "o1")
    assert p.accrue_funding("okx", "BTC-USDT-SWAP", T0, D("0.0001"), D("60000")) == D(-6)
    assert p.book_funding("okx", "BTC-USDT-SWAP", T0, D("-6.0012"), "USDT")  # the venue's bill
    assert not p.book_funding("okx", "BTC-USDT-SWAP", T0, D("-6.0012"), "USDT")
    assert p.accrue_funding("okx", "BTC-USDT-SWAP", T0, D("0.0001"), D("60000")) is None
    assert p.position("okx", "BTC-USDT-SWAP", T0).carry == {"USDT": D("-6.0012")}


def test_mt5_swap_booked_on_deals_and_accrued_on_open_positions() -> None:
    p = Portfolio(INSTRUMENTS)
    p_ts = T0 + 1000
    trade(p, MT5_XAU, "buy", "0.1", "2650", "m1")
    assert p.accrued_swap("mt5", "XAUUSD", D("-1.50"), "USD", p_ts)
    assert p.accrued_swap("mt5", "XAUUSD", D("-3.00"), "USD", p_ts + 86_400_000)  # replaces, not adds
    assert p.position("mt5", "XAUUSD", p_ts).carry == {"USD": D("-3.00")}
    p.fill(venue="mt5", symbol="XAUUSD", side="sell", qty=D("0.1"), price=D("2651"), fee=D("0.7"), fee_ccy="USD",
           ts_ms=p_ts + 90_000_000, trade_id="m2")
    assert p.book_swap("mt5", "XAUUSD", "m2", D("-3.00"), "USD")  # the closing deal's DEAL_SWAP
    assert not p.book_swap("mt5", "XAUUSD", "m2", D("-3.00"), "USD")
    # Flat: the accrual went with the position, and a stale report cannot bring it back.
    assert not p.accrued_swap("mt5", "XAUUSD", D("-3.00"), "USD", p_ts + 86_400_000)
    v = p.position("mt5", "XAUUSD", p_ts)
    assert v.carry == {"USD": D("-3.00")}
    e = p.equity(RateBook("USD"), p_ts)
    assert (e.realized, e.fees, e.carry, e.total) == (D(10), D("0.7"), D(-3), D("6.3"))


# -- currencies ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("venue", "symbol", "ccy"), [
    ("okx", "BTC-USDT-SWAP", "USDT"), ("okx", "BTC-USD-SWAP", "USD"), ("okx", "ETH-USDC", "USDC"),
    ("binance", "BTCUSDT", "USDT"), ("binance", "BTCFDUSD", "FDUSD"), ("binance", "ETHBTC", "BTC"),
    ("mt5", "XAUUSD", "USD"), ("mt5", "BTCUSD.m", "USD"), ("mt5", "EURJPY_i", "JPY"), ("mt5", "US500", None),
    ("binance", "USDT", None), ("okx", "BTC", None),
])
def test_quote_currency(venue: Venue, symbol: str, ccy: str | None) -> None:
    assert quote_currency(venue, symbol) == ccy


def test_rates_from_books_and_one_hop() -> None:
    rates = RateBook("USD")
    assert rate_pair("binance", "USDCUSDT") == ("USDC", "USDT")
    assert rate_pair("mt5", "USDTUSD") == ("USDT", "USD")
    assert rate_pair("binance", "BTCUSDT") == ("BTC", "USDT")
    assert not rates.from_book("USDC", "USDT", D("1.0001"), D("1.0003"), T0, "binance:USDCUSDT")  # no path yet
    assert rates.rate("USDC") is None and rates.convert(D(5), "USDC") is None
    assert rates.from_book("USDT", "USD", D("0.9991"), D("0.9993"), T0, "mt5:USDTUSD")
    assert rates.from_book("USDC", "USDT", D("1.0001"), D("1.0003"), T0, "binance:USDCUSDT")
    usdc = rates.rate("USDC")
    assert usdc is not None and usdc.value == D("1.0002") * D("0.9992") and usdc.source == "binance:USDCUSDT"
    assert rates.convert(D(10), "USD") == D(10)
    with pytest.raises(ValueError):
        rates.from_book("USDT", "USD", D("1.1"), D("1.0"), T0, "crossed")
    with pytest.raises(ValueError):
        rates.set("USDT", D(0), T0, "zero")
    assert rates.rate("USDT") is not None and rates.rate("USDT").value == D("0.9992")  # type: ignore[union-attr]


# -- bounded memory of fill ids (issue 19) ---------------------------------------------------------
def _fill(p: Portfolio, tid: str) -> bool:
    return p.fill(venue="binance", symbol="BTCUSDT", side="buy", qty=D(1), price=D(100), fee=D(0),
                  fee_ccy=FEE_CCY["binance"], ts_ms=T0, trade_id=tid)


def test_a_bounded_portfolio_deduplicates_the_newest_fill_ids_and_forgets_the_oldest() -> None:
    p = Portfolio(INSTRUMENTS)
    p.keep_recent_trades(3)
    assert [_fill(p, t) for t in ("a", "b", "c", "d")] == [True] * 4  # "a" forgotten
    assert [_fill(p, t) for t in ("b", "c", "d")] == [False] * 3  # the newest three: repeats refused
    assert _fill(p, "a") is True  # an id older than the bound counts again (the ledger refuses it)
    assert p.position("binance", "BTCUSDT", T0).qty == D(5)


def test_bounding_a_fed_portfolio_keeps_its_newest_ids_in_the_order_they_came() -> None:
    p = Portfolio(INSTRUMENTS)  # as restored from the ledger, every id kept
    for t in ("z", "a", "m", "b"):
        assert _fill(p, t)
    p.keep_recent_trades(2)
    assert [_fill(p, t) for t in ("m", "b")] == [False, False]
    assert _fill(p, "z") is True  # the oldest went first, whatever their sort order
    with pytest.raises(ValueError, match="limit 0"):
        p.keep_recent_trades(0)


def test_with_an_age_bound_ids_booked_longer_ago_than_it_before_the_newest_are_forgotten() -> None:
    p = Portfolio(INSTRUMENTS)
    p.keep_recent_trades(100, max_age_ms=60_000)

    def at(tid: str, booked_ms: int) -> bool:
        return p.fill(venue="binance", symbol="BTCUSDT", side="buy", qty=D(1), price=D(100), fee=D(0),
                      fee_ccy=FEE_CCY["binance"], ts_ms=T0, trade_id=tid, booked_ms=booked_ms)

    assert [at("a", 0), at("b", 30_000), at("c", 60_000)] == [True] * 3
    assert at("a", 60_000) is False  # booked exactly 60 s before the newest: still remembered
    assert at("d", 60_001) is True  # "a" is now older than the bound
    assert at("a", 60_001) is True  # forgotten: counted again (the ledger refuses it)
    assert [at("b", 60_001), at("c", 60_001), at("d", 60_001)] == [False] * 3
    assert p.position("binance", "BTCUSDT", T0).qty == D(5)
    with pytest.raises(ValueError, match="max_age_ms -1"):
        p.keep_recent_trades(1, max_age_ms=-1)


def test_an_age_bound_on_a_fed_portfolio_ages_its_ids_from_their_fill_times() -> None:
    p = Portfolio(INSTRUMENTS)  # restored from the ledger: each id booked at its fill's time
    for n, tid in enumerate(("old", "mid", "new")):
        assert p.fill(venue="binance", symbol="BTCUSDT", side="buy", qty=D(1), price=D(100), fee=D(0),
                      fee_ccy=FEE_CCY["binance"], ts_ms=T0 + n * 40_000, trade_id=tid)
    p.keep_recent_trades(100, max_age_ms=60_000)  # the newest at T0 + 80 s: "old" is 80 s older
    assert [_fill(p, t) for t in ("mid", "new")] == [False, False]
    assert _fill(p, "old") is True


def test_restored_ids_count_as_booked_at_the_restore_on_the_engine_s_clock() -> None:
    """A fill in the ledger stamped ahead of our clock (a venue's clock) must not hold the window
    open: with `now_ms`, the restored ids are as old as the restore."""
    p = Portfolio(INSTRUMENTS)
    assert p.fill(venue="binance", symbol="BTCUSDT", side="buy", qty=D(1), price=D(100), fee=D(0),
                  fee_ccy=FEE_CCY["binance"], ts_ms=T0 + 10**12, trade_id="future")  # ~30 years ahead
    p.keep_recent_trades(100, max_age_ms=60_000, now_ms=T0)

    def at(tid: str, booked_ms: int) -> bool:
        return p.fill(venue="binance", symbol="BTCUSDT", side="buy", qty=D(1), price=D(100), fee=D(0),
                      fee_ccy=FEE_CCY["binance"], ts_ms=T0, trade_id=tid, booked_ms=booked_ms)

    assert at("future", T0 + 60_000) is False  # still within a minute of the restore
    assert at("a", T0 + 60_001) is True  # now "future" is older than the bound: gone
    assert at("future", T0 + 60_001) is True
    # The clock steps back a minute: measured from the latest booking, nothing young is dropped.
    assert at("b", T0 + 1) is True
    assert [at(t, T0 + 2) for t in ("a", "future", "b")] == [False, False, False]


def test_the_running_engine_s_portfolio_keeps_the_documented_number_of_fill_ids() -> None:
    """docs/architecture.md, "Memory: what is kept": the newest RECENT_FILLS_KEPT ids."""
    from core.config import MoneyConfig
    from core.models import Fill, Order, OrderPurpose
    from engine.equity import RECENT_FILLS_KEPT, RunningEquity

    assert RECENT_FILLS_KEPT == 10_000
    equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: None)
    order = Order(client_order_id="qa-1", group_id="", venue="binance", symbol="BTCUSDT", side="buy", qty=D(1),
                  price=D(100), purpose=OrderPurpose.ENTRY, created_ms=T0)

    def fill(n: int) -> None:
        equity.on_fill(order, Fill(venue="binance", venue_trade_id=f"t{n}", client_order_id="qa-1", qty=D(1),
                                   price=D(100), fee=D(0), fee_ccy="USDT", ts_ms=T0 + n))

    def held() -> Decimal:
        return sum((p.qty for p in equity.positions(T0) if p.symbol == "BTCUSDT"), D(0))

    for n in range(RECENT_FILLS_KEPT + 1):
        fill(n)
    fill(RECENT_FILLS_KEPT - 5)  # within the bound: a repeat
    assert held() == RECENT_FILLS_KEPT + 1
    fill(0)  # the oldest, forgotten
    assert held() == RECENT_FILLS_KEPT + 2


def test_the_running_engine_forgets_fill_ids_booked_more_than_the_documented_age_ago_on_its_clock() -> None:
    """docs/architecture.md, "Memory: what is kept": ids booked in the last RECENT_FILLS_MAX_AGE_MS,
    aged on the engine's clock (not the venue's fill time, which a venue may get wrong)."""
    from core.config import MoneyConfig
    from core.models import Fill, Order, OrderPurpose
    from engine.equity import RECENT_FILLS_MAX_AGE_MS, RunningEquity

    assert RECENT_FILLS_MAX_AGE_MS == 600_000
    now = [T0]
    equity = RunningEquity(INSTRUMENTS, MoneyConfig(rates={"USDT": D(1)}), lambda v, s: None, now_ms=lambda: now[0])
    order = Order(client_order_id="qa-1", group_id="", venue="binance", symbol="BTCUSDT", side="buy", qty=D(1),
                  price=D(100), purpose=OrderPurpose.ENTRY, created_ms=T0)

    def fill(tid: str) -> None:  # the venue stamps every fill far in the future: ignored for ageing
        equity.on_fill(order, Fill(venue="binance", venue_trade_id=tid, client_order_id="qa-1", qty=D(1),
                                   price=D(100), fee=D(0), fee_ccy="USDT", ts_ms=T0 + 10**12))

    def held() -> Decimal:
        return sum((p.qty for p in equity.positions(T0) if p.symbol == "BTCUSDT"), D(0))

    fill("a")
    now[0] += RECENT_FILLS_MAX_AGE_MS
    fill("b")
    fill("a")  # booked exactly the bound ago: a repeat
    assert held() == 2
    now[0] += 1
    fill("c")  # "a" is older than the bound now
    fill("b")
    assert held() == 3
    fill("a")  # forgotten: counted again
    assert held() == 4
