"""OpportunityPipeline: one Decision per accepted quote, one rule per test, on a ManualClock."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, localcontext

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.compare import CompareEngine, EdgeState
from core.config import (
    BinanceInstrumentConfig,
    Mt5InstrumentConfig,
    OkxInstrumentConfig,
    PairConfig,
    PairInstruments,
    RiskConfig,
    StrategyConfig,
    demo_config,
)
from core.instruments import Instrument, Pair
from core.models import Decision, Outcome, Quote, Reason, TradingState, Venue
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate

D = Decimal
MS = 1_000_000  # ns per ms

OKX_BTC = "BTC-USDT-SWAP"
BN_BTC = "BTCUSDT"
MT5_BTC = "BTCUSD"


# -- fixtures ----------------------------------------------------------------------------------

def btc(*, mt5: bool = False, bn_min_notional: str = "0") -> Pair:
    """OKX swap (1 contract = 0.01 BTC, tick 0.1, 5 bps) against Binance (1 BTC, step 0.001,
    tick 0.1, 5 bps), optionally MT5 BTCUSD (1 lot = 1 BTC, step 0.01, tick 0.01, 0 bps)."""
    return PairConfig(
        name="BTC",
        instruments=PairInstruments(
            mt5=Mt5InstrumentConfig(symbol=MT5_BTC, qty_per_lot=D(1), lot_step=D("0.01"),
                                    min_qty=D("0.01")) if mt5 else None,
            okx=OkxInstrumentConfig(symbol=OKX_BTC, qty_per_contract=D("0.01"), lot_step=D(1),
                                    min_qty=D(1), tick_size=D("0.1")),
            binance=BinanceInstrumentConfig(symbol=BN_BTC, lot_step=D("0.001"), min_qty=D("0.001"),
                                            tick_size=D("0.1"), min_notional=D(bn_min_notional)),
        ),
    ).to_pair()


def xau(*, mt5_min_lots: str = "0.01") -> Pair:
    """MT5 XAUUSD (1 lot = 100 oz, step 0.01 lot, tick 0.01, 0 bps) against Binance PAXGUSDT
    (1 unit = 1 oz, step 0.001, tick 0.01, 5 bps)."""
    return PairConfig(
        name="XAU",
        instruments=PairInstruments(
            mt5=Mt5InstrumentConfig(symbol="XAUUSD", qty_per_lot=D(100), lot_step=D("0.01"),
                                    min_qty=D(mt5_min_lots)),
            binance=BinanceInstrumentConfig(symbol="PAXGUSDT", lot_step=D("0.001"), min_qty=D("0.001")),
        ),
    ).to_pair()


class Rig:
    def __init__(
        self,
        pairs: list[Pair] | None = None,
        *,
        threshold_bps: float = 8.0,
        persistence_ms: int = 0,
        cooldown_ms: int = 3000,
        max_quote_age_ms: int = 1500,
        max_leg_notional: str = "5000",
        max_open_groups: int = 3,
        max_edge_bps: float = 300.0,
        max_quote_deviation_bps: float = 500.0,
        guard: bool = True,
    ) -> None:
        self.clock = ManualClock()
        strategy = StrategyConfig(threshold_bps=threshold_bps, persistence_ms=persistence_ms,
                                  cooldown_ms=cooldown_ms, max_quote_age_ms=max_quote_age_ms,
                                  max_edge_bps=max_edge_bps, max_quote_deviation_bps=max_quote_deviation_bps)
        # Exposure limits far away: these tests are about sizing and the pipeline's rules.
        risk = RiskConfig(max_leg_notional=D(max_leg_notional), max_open_groups=max_open_groups,
                          max_gross_exposure=D(max_leg_notional) * 10)
        self.gate = RiskGate.from_config(self.clock, risk)
        self.engine = CompareEngine(pairs if pairs is not None else [btc()])
        self.pipe = OpportunityPipeline(self.engine, strategy, risk, self.gate, self.clock)
        if not guard:
            # No configuration turns the price guard off; the sizing tests below feed absurd
            # magnitudes on purpose, to show that sizing itself never raises on them.
            self.engine.set_guard(math.inf, 0)
            self.pipe.tolerance = math.inf
            self.pipe.max_edge_bps = math.inf

    def q(self, venue: Venue, symbol: str, bid: float, ask: float,
          sizes: tuple[float, float] = (100.0, 100.0)) -> Decision | None:
        """Post a quote received now; `sizes` is (bid size, ask size) in venue units."""
        quote = Quote(venue, symbol, bid, ask, sizes[0], sizes[1],
                      venue_ts_ms=self.clock.time_ms(), recv_ns=self.clock.monotonic_ns())
        return self.pipe.on_quote(quote)

    # Canned BTC quotes. okx -> binance: buy OKX at 60000.0, sell Binance at 60200.0:
    #   cost = 60000 * 1.0005 = 60030; keep = 60200 * 0.9995 = 60169.9
    #   edge = 60169.9 / 60030 - 1 = 139.9 / 60030 = 23.3050 bps  (>= 8)
    def okx(self, bid: float = 59990.0, ask: float = 60000.0) -> Decision | None:
        return self.q("okx", OKX_BTC, bid, ask, (100.0, 100.0))  # 100 contracts = 1 BTC each side

    def bn(self, bid: float = 60200.0, ask: float = 60210.0) -> Decision | None:
        return self.q("binance", BN_BTC, bid, ask, (1.0, 1.0))

    def bn_low(self) -> Decision | None:
        # binance -> okx: buy Binance at 59800 * 1.0005 = 59829.9, sell OKX at 59990 * 0.9995
        #   = 59960.005: edge = 130.105 / 59829.9 = 21.746 bps; okx -> binance is negative
        return self.bn(59790.0, 59800.0)

    def bn_flat(self) -> Decision | None:
        # okx -> binance: 60100 * 0.9995 = 60069.95; 60069.95 / 60030 - 1 = 39.95 / 60030 = 6.655 bps (< 8)
        return self.bn(60100.0, 60110.0)

    def edge(self, pair: str, buy: str, sell: str) -> EdgeState:
        for e in self.engine.edges(pair):
            if (e.buy.venue, e.sell.venue) == (buy, sell):
                return e
        raise AssertionError(f"no edge {buy}->{sell}")


def _intent(d: Decision | None) -> Decision:
    assert d is not None
    assert d.outcome is Outcome.INTENT, d.reason
    assert d.reason == Reason.OK
    assert d.intent is not None
    return d


def _blocked(d: Decision | None, reason: str) -> Decision:
    assert d is not None
    assert d.outcome is Outcome.BLOCKED
    assert d.reason == reason
    assert d.intent is None
    return d


# -- the happy path, by hand -----------------------------------------------------------------

def test_first_quote_has_no_counter_quote() -> None:
    rig = Rig()
    d = _blocked(rig.okx(), Reason.NO_COUNTER_QUOTE)
    assert (d.pair, d.buy_venue, d.sell_venue) == ("BTC", None, None)


def test_intent_on_okx_contracts_against_binance() -> None:
    rig = Rig()
    rig.okx()
    d = _intent(rig.bn())
    intent = d.intent
    assert intent is not None
    assert (d.pair, d.buy_venue, d.sell_venue) == ("BTC", "okx", "binance")
    # 139.9 / 60030 * 10_000 = 23.30501 bps
    assert d.edge_bps == pytest.approx(23.3050141596, abs=1e-6)
    assert intent.expected_edge_bps == d.edge_bps
    # size = min(ask on OKX 100 contracts = 1 BTC, bid on Binance 1 BTC, 5000 / 60000 = 0.08333 BTC)
    #      = 0.08333 BTC, down to the common step lcm(0.01, 0.001) = 0.01 -> 0.08 BTC
    assert intent.base_qty == D("0.08")
    # OKX: 0.08 / 0.01 = 8 contracts; Binance: 0.080 BTC
    assert (intent.buy.venue, intent.buy.symbol, intent.buy.side) == ("okx", OKX_BTC, "buy")
    assert str(intent.buy.quantity) == "8"
    assert (intent.sell.venue, intent.sell.symbol, intent.sell.side) == ("binance", BN_BTC, "sell")
    assert str(intent.sell.quantity) == "0.080"
    assert intent.buy.base_qty == intent.sell.base_qty == D("0.08")
    # limits on the 0.1 tick, already on it
    assert str(intent.buy.limit_price) == "60000.0"
    assert str(intent.sell.limit_price) == "60200.0"
    assert (intent.buy_price, intent.sell_price) == (60000.0, 60200.0)
    assert intent.created_ms == rig.clock.time_ms()
    assert rig.pipe.in_flight == {"BTC"}


def test_below_threshold() -> None:
    rig = Rig()
    rig.okx()
    d = _blocked(rig.bn_flat(), Reason.BELOW_THRESHOLD)
    # the best edge is reported: okx -> binance at 6.655 bps
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")
    assert d.edge_bps == pytest.approx(39.95 / 60030 * 10_000, abs=1e-9)
    assert rig.pipe.intents == 0


def test_threshold_is_net_of_fees_not_gross() -> None:
    # gross (60100 - 60000) / 60000 = 16.7 bps clears 8, but net of 2 x 5 bps it is 6.655: blocked
    rig = Rig()
    rig.okx()
    d = _blocked(rig.bn_flat(), Reason.BELOW_THRESHOLD)
    assert rig.edge("BTC", "okx", "binance").gross_bps == pytest.approx(100 / 60000 * 10_000)
    assert d.edge_bps < 8.0


# -- stale quotes ------------------------------------------------------------------------------

def test_stale_guard_boundary_on_the_buy_leg() -> None:
    # OKX (buy leg) quoted at t0; Binance at t0 + 1500 ms: OKX is exactly max_quote_age old -> fresh
    rig = Rig(max_quote_age_ms=1500)
    rig.okx()
    rig.clock.advance(ms=1500)
    _intent(rig.bn())


def test_stale_buy_leg_one_ns_over_blocks() -> None:
    rig = Rig(max_quote_age_ms=1500)
    rig.okx()
    rig.clock.advance(ms=1500, ns=1)  # 1_500_000_001 ns > 1_500_000_000 ns
    d = _blocked(rig.bn(), Reason.STALE_QUOTE)
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")


def test_stale_guard_boundary_on_the_sell_leg() -> None:
    rig = Rig(max_quote_age_ms=1500)
    rig.bn()
    rig.clock.advance(ms=1500)
    _intent(rig.okx())


def test_stale_sell_leg_one_ns_over_blocks() -> None:
    rig = Rig(max_quote_age_ms=1500)
    rig.bn()
    rig.clock.advance(ms=1500, ns=1)
    _blocked(rig.okx(), Reason.STALE_QUOTE)


def test_staleness_uses_local_receive_time_not_venue_time() -> None:
    rig = Rig(max_quote_age_ms=1500)
    rig.okx()
    # a venue timestamp an hour old, received now: fresh
    q = Quote("binance", BN_BTC, 60200.0, 60210.0, 1.0, 1.0, venue_ts_ms=rig.clock.time_ms() - 3_600_000,
              recv_ns=rig.clock.monotonic_ns())
    _intent(rig.pipe.on_quote(q))


# -- persistence -------------------------------------------------------------------------------

def test_persistence_blocks_until_the_edge_held_long_enough() -> None:
    rig = Rig(persistence_ms=100)
    rig.okx()
    _blocked(rig.bn(), Reason.PERSISTING)          # t0: over threshold since t0
    rig.clock.advance(ns=100 * MS - 1)               # t0 + 99.999999 ms
    _blocked(rig.bn(), Reason.PERSISTING)
    rig.clock.advance(ns=1)                          # t0 + 100 ms exactly
    _intent(rig.bn())


def test_persistence_resets_when_the_edge_drops_below_threshold() -> None:
    rig = Rig(persistence_ms=100)
    rig.okx()
    _blocked(rig.bn(), Reason.PERSISTING)          # t0
    rig.clock.advance(ms=60)
    _blocked(rig.bn_flat(), Reason.BELOW_THRESHOLD)  # t0 + 60: 6.655 bps, timer reset
    rig.clock.advance(ms=10)
    _blocked(rig.bn(), Reason.PERSISTING)          # t0 + 70: over again, since t0 + 70
    rig.clock.advance(ms=30)
    _blocked(rig.bn(), Reason.PERSISTING)          # t0 + 100: would trade had it not reset
    rig.clock.advance(ns=70 * MS - 1)
    _blocked(rig.bn(), Reason.PERSISTING)          # t0 + 169.999999
    rig.clock.advance(ns=1)
    _intent(rig.bn())                                # t0 + 170 = (t0 + 70) + 100


def test_zero_persistence_trades_at_once() -> None:
    rig = Rig(persistence_ms=0)
    rig.okx()
    _intent(rig.bn())


# -- in flight -----------------------------------------------------------------------------

def test_in_flight_blocks_the_pair_until_release() -> None:
    rig = Rig(max_quote_age_ms=60_000, cooldown_ms=3000)
    rig.okx()
    _intent(rig.bn())
    rig.clock.advance(ms=5000)                       # cooldown (3 s) long over
    _blocked(rig.bn(), Reason.IN_FLIGHT)
    # the other direction of the same pair is in flight too
    _blocked(rig.bn_low(), Reason.IN_FLIGHT)
    rig.pipe.release("BTC")
    assert rig.pipe.in_flight == set()
    _intent(rig.bn_low())


def test_in_flight_is_per_pair() -> None:
    rig = Rig([btc(), xau()], max_quote_age_ms=60_000)
    rig.okx()
    _intent(rig.bn())
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (1.0, 1.0))
    # buy PAXG at 2650 * 1.0005 = 2651.325, sell MT5 at 2660: 8.675 / 2651.325 = 32.72 bps
    d = _intent(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 10.0)))
    assert d.pair == "XAU"
    assert rig.pipe.in_flight == {"BTC", "XAU"}


def test_release_of_an_idle_pair_is_harmless() -> None:
    rig = Rig()
    rig.pipe.release("BTC")
    rig.pipe.release("NOPE")
    assert rig.pipe.in_flight == set()


# -- cooldown ------------------------------------------------------------------------------

def test_cooldown_per_direction_expires_at_exactly_cooldown_ms() -> None:
    rig = Rig(max_quote_age_ms=60_000, cooldown_ms=3000)
    rig.okx()
    _intent(rig.bn())                                # t0
    rig.pipe.release("BTC")
    rig.clock.advance(ns=3000 * MS - 1)              # t0 + 2999.999999 ms
    _blocked(rig.bn(), Reason.COOLDOWN)
    rig.clock.advance(ns=1)                          # t0 + 3000 ms
    _intent(rig.bn())


def test_cooldown_does_not_cover_the_reverse_direction() -> None:
    rig = Rig(max_quote_age_ms=60_000, cooldown_ms=3000)
    rig.okx()
    _intent(rig.bn())                                # okx -> binance at t0
    rig.pipe.release("BTC")
    rig.clock.advance(ms=1)
    d = _intent(rig.bn_low())                        # binance -> okx at t0 + 1 ms: not cooled down
    assert (d.buy_venue, d.sell_venue) == ("binance", "okx")
    assert d.edge_bps == pytest.approx(130.105 / 59829.9 * 10_000, abs=1e-6)
    rig.pipe.release("BTC")
    rig.clock.advance(ms=1)
    # but okx -> binance still is (t0 + 2 ms < t0 + 3000 ms)
    d = _blocked(rig.bn(), Reason.COOLDOWN)
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")


def test_zero_cooldown() -> None:
    rig = Rig(cooldown_ms=0)
    rig.okx()
    _intent(rig.bn())
    rig.pipe.release("BTC")
    _intent(rig.bn())


# -- trading state -----------------------------------------------------------------------

def test_kill_is_effective_on_the_very_next_quote() -> None:
    rig = Rig(cooldown_ms=0)
    rig.okx()
    _intent(rig.bn())
    rig.pipe.release("BTC")
    rig.gate.kill("operator")
    d = _blocked(rig.bn(), Reason.HALTED)
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")
    _blocked(rig.okx(), Reason.HALTED)
    assert rig.pipe.in_flight == set()
    rig.gate.rearm("checked")
    _intent(rig.bn())


def test_halted_before_the_first_edge() -> None:
    rig = Rig()
    rig.okx()
    rig.gate.kill("")
    _blocked(rig.bn(), Reason.HALTED)
    assert rig.pipe.intents == 0


def test_pause_and_resume() -> None:
    rig = Rig(cooldown_ms=0)
    rig.okx()
    rig.gate.pause("lunch")
    _blocked(rig.bn(), Reason.PAUSED)
    rig.gate.resume()
    _intent(rig.bn())


def test_reducing_blocks_new_groups() -> None:
    rig = Rig()
    rig.okx()
    rig.gate.state = TradingState.REDUCING
    _blocked(rig.bn(), Reason.REDUCING)


def test_halted_edges_below_threshold_still_report_below_threshold() -> None:
    rig = Rig()
    rig.okx()
    rig.gate.kill("x")
    _blocked(rig.bn_flat(), Reason.BELOW_THRESHOLD)


# -- risk ------------------------------------------------------------------------------------

def test_risk_max_open_groups() -> None:
    rig = Rig([btc(), xau()], max_open_groups=1, max_quote_age_ms=60_000)
    rig.okx()
    _intent(rig.bn())
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (1.0, 1.0))
    d = _blocked(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 10.0)), "risk:max_open_groups")
    assert d.pair == "XAU"
    rig.pipe.release("BTC")
    _intent(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 10.0)))


# -- sizing, by hand ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mt5_bid_lots", "paxg_ask_oz", "cap", "oz", "lots", "paxg"),
    [
        # min(ask 10 oz, bid 0.2 lot = 20 oz, 20000 / 2650 = 7.547 oz) = 7.547 -> step 1 oz -> 7 oz
        (0.2, 10.0, "20000", "7", "0.07", "7.000"),
        # the MT5 book binds: 0.05 lot = 5 oz < 7.547 < 10
        (0.05, 10.0, "20000", "5", "0.05", "5.000"),
        # the PAXG book binds: 3.9 oz -> floor to 1 oz -> 3 oz
        (1.0, 3.9, "20000", "3", "0.03", "3.000"),
        # 0.29 lot * 100 = 29 oz (28.999999999999996 in binary floats: must still be 29)
        (0.29, 100.0, "1000000", "29", "0.29", "29.000"),
        # 0.57 lot = 57 oz
        (0.57, 100.0, "1000000", "57", "0.57", "57.000"),
        # the cap lands exactly on a step: 18620 / 2660 (the larger leg's price) = 7 oz -> 7, not 6
        (1.0, 100.0, "18620", "7", "0.07", "7.000"),
    ],
)
def test_size_buy_paxg_sell_mt5_lots(
    *, mt5_bid_lots: float, paxg_ask_oz: float, cap: str, oz: str, lots: str, paxg: str
) -> None:
    rig = Rig([xau()], max_leg_notional=cap)
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (mt5_bid_lots, 1.0))
    # buy PAXG at 2650 * 1.0005 = 2651.325, sell MT5 (0 bps) at 2660: 8.675 / 2651.325 = 32.72 bps
    d = _intent(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, paxg_ask_oz)))
    intent = d.intent
    assert intent is not None
    assert d.edge_bps == pytest.approx(8.675 / 2651.325 * 10_000, abs=1e-6)
    assert intent.base_qty == D(oz)
    assert (intent.buy.venue, intent.buy.side, str(intent.buy.quantity)) == ("binance", "buy", paxg)
    assert (intent.sell.venue, intent.sell.side, str(intent.sell.quantity)) == ("mt5", "sell", lots)
    assert str(intent.buy.limit_price) == "2650.00"
    assert str(intent.sell.limit_price) == "2660.00"
    # both legs fit the cap: the sell leg at 2660 is the larger one
    assert intent.base_qty * D("2660") <= D(cap)


def test_size_when_the_cap_is_exactly_a_whole_number_of_steps() -> None:
    # cap 18620.07 = 7 * 2660.01 (the sell leg, the larger one): 7 oz is allowed (in binary
    # floats 18620.07 / 2660.01 is 6.999999999999999, which would floor to 6)
    rig = Rig([xau()], max_leg_notional="18620.07")
    rig.q("mt5", "XAUUSD", 2660.01, 2660.50, (1.0, 1.0))
    d = _intent(rig.q("binance", "PAXGUSDT", 2649.00, 2650.01, (10.0, 10.0)))
    assert d.intent is not None
    assert d.intent.base_qty == D(7)
    assert str(d.intent.sell.quantity) == "0.07"
    # 7 * 2660.01 = 18620.07 <= 18620.07
    assert d.intent.base_qty * D("2660.01") == D("18620.07")


def test_size_buy_mt5_lots_sell_paxg() -> None:
    rig = Rig([xau()], max_leg_notional="20000")
    # MT5 ask 2650.00 with 0.5 lot = 50 oz; PAXG bid 2660.00 with 12.3456 oz
    rig.q("mt5", "XAUUSD", 2649.50, 2650.00, (1.0, 0.5))
    d = _intent(rig.q("binance", "PAXGUSDT", 2660.00, 2660.50, (12.3456, 1.0)))
    intent = d.intent
    assert intent is not None
    # buy MT5 at 2650 (0 bps), sell PAXG at 2660 * 0.9995 = 2658.67: 8.67 / 2650 = 32.717 bps
    assert (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    assert d.edge_bps == pytest.approx(8.67 / 2650 * 10_000, abs=1e-6)
    # min(50, 12.3456, 20000 / 2650 = 7.547) -> 7 oz = 0.07 lot bought on MT5, 7.000 PAXG sold
    assert intent.base_qty == D(7)
    assert str(intent.buy.quantity) == "0.07"
    assert str(intent.sell.quantity) == "7.000"


def test_size_on_a_non_decimal_common_step() -> None:
    # OKX contracts of 0.04 and Binance steps of 0.06: common step lcm = 0.12
    pair = Pair("T", (
        Instrument("okx", "T-SWAP", "T", D("0.04"), D("0.01"), D(1), D(1), 0.0),
        Instrument("binance", "TUSDT", "T", D(1), D("0.01"), D("0.06"), D("0.06"), 0.0),
    ))
    rig = Rig([pair])
    # OKX ask 100.00 with 100 contracts = 4 base; Binance bid 101.00 with 0.5 base (edge 100 bps)
    rig.q("okx", "T-SWAP", 99.0, 100.0, (100.0, 100.0))
    d = _intent(rig.q("binance", "TUSDT", 101.0, 102.0, (0.5, 1.0)))
    intent = d.intent
    assert intent is not None
    # min(4, 0.5, 5000 / 100 = 50) = 0.5 -> floor to 0.12: 4 * 0.12 = 0.48
    assert intent.base_qty == D("0.48")
    # OKX 0.48 / 0.04 = 12 contracts; Binance 0.48 = 8 steps of 0.06
    assert str(intent.buy.quantity) == "12"
    assert str(intent.sell.quantity) == "0.48"


def test_limit_prices_are_rounded_onto_the_tick_away_from_the_quote() -> None:
    rig = Rig()
    rig.q("okx", OKX_BTC, 59990.0, 60000.04, (5.0, 5.0))          # off-tick ask (tick 0.1)
    d = _intent(rig.q("binance", BN_BTC, 60200.07, 60210.0, (1.0, 1.0)))
    intent = d.intent
    assert intent is not None
    # buy up 60000.04 -> 60000.1, sell down 60200.07 -> 60200.0
    assert str(intent.buy.limit_price) == "60000.1"
    assert str(intent.sell.limit_price) == "60200.0"
    # OKX ask 5 contracts = 0.05 BTC < 5000 / 60000.04 = 0.0833: 0.05 BTC = 5 contracts, 0.050 BTC
    assert intent.base_qty == D("0.05")
    assert (str(intent.buy.quantity), str(intent.sell.quantity)) == ("5", "0.050")


def test_size_too_small_below_the_common_step() -> None:
    rig = Rig([xau()], max_leg_notional="20000")
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (1.0, 1.0))
    # PAXG ask 0.9 oz: above Binance's 0.001 minimum, below MT5's 0.01 lot = 1 oz -> 0 steps
    _blocked(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 0.9)), Reason.SIZE_TOO_SMALL)
    assert rig.pipe.in_flight == set()


def test_size_too_small_below_the_larger_minimum() -> None:
    rig = Rig([xau(mt5_min_lots="0.05")], max_leg_notional="20000")
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (1.0, 1.0))
    # 4.5 oz -> 4 oz: a whole number of steps (1 oz) but under MT5's 0.05 lot = 5 oz minimum
    _blocked(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 4.5)), Reason.SIZE_TOO_SMALL)
    # 5.2 oz -> 5 oz = 0.05 lot: tradable on both
    d = _intent(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 5.2)))
    assert d.intent is not None
    assert str(d.intent.sell.quantity) == "0.05"


def test_size_too_small_when_the_notional_cap_binds_under_one_step() -> None:
    rig = Rig([xau()], max_leg_notional="2000")
    rig.q("mt5", "XAUUSD", 2660.00, 2660.50, (1.0, 1.0))
    # 2000 / 2650 = 0.7547 oz < 1 oz step
    _blocked(rig.q("binance", "PAXGUSDT", 2649.00, 2650.00, (10.0, 10.0)), Reason.SIZE_TOO_SMALL)


def test_size_too_small_when_an_empty_level_is_quoted() -> None:
    rig = Rig()
    rig.q("okx", OKX_BTC, 59990.0, 60000.0, (100.0, 0.0))
    _blocked(rig.bn(), Reason.SIZE_TOO_SMALL)


def test_min_notional() -> None:
    # MT5 BTCUSD (step 0.01 BTC) against Binance with a 1000 USDT minimum notional
    rig = Rig([btc(mt5=True, bn_min_notional="1000")], cooldown_ms=0)
    rig.q("mt5", MT5_BTC, 59990.0, 60000.0, (1.0, 0.015))
    # 0.015 -> 0.01 BTC * 60000 = 600 < 1000
    _blocked(rig.bn(), Reason.SIZE_TOO_SMALL)
    # the next MT5 quote re-judges the edge: 0.025 -> 0.02 BTC * 60000 = 1200 >= 1000
    d = _intent(rig.q("mt5", MT5_BTC, 59990.0, 60000.0, (1.0, 0.025)))
    assert d.intent is not None
    assert (d.buy_venue, d.intent.base_qty, str(d.intent.buy.quantity)) == ("mt5", D("0.02"), "0.02")


def test_absurd_magnitudes_do_not_raise() -> None:
    # A sell bid of 1e300 (a feed bug, say) passes as a book and makes a huge edge. The sell
    # limit on the 0.1 tick needs 302 digits; the default 28-digit context raised here.
    # Both legs must fit max_leg_notional, so at that price not even one step fits.
    # (The price guard refuses such a quote first: test_absurd_price_is_refused_by_the_guard.)
    rig = Rig(guard=False)
    rig.okx()
    d = rig.bn(1e300, 1e300)
    assert d is not None and d.intent is None
    assert d.reason == Reason.SIZE_TOO_SMALL


def test_denormal_ask_with_unbounded_depth_does_not_raise() -> None:
    # ask 5e-324 with an infinite depth on the buy leg and 1e300 BTC bid on the sell leg:
    # the sell leg's price caps the size (5000 / 60200 = 0.083 -> 0.08 BTC). (Guard off: it
    # would refuse the Binance quote as an outlier against OKX's 5e-324.)
    rig = Rig(guard=False)
    rig.q("okx", OKX_BTC, 5e-324, 5e-324, (0.0, float("inf")))
    d = _intent(rig.q("binance", BN_BTC, 60200.0, 60210.0, (1e300, 1.0)))
    assert d.intent is not None
    assert d.intent.base_qty == D("0.08")
    assert d.intent.buy.quantity == D("8")
    assert "E" not in str(d.intent.buy.quantity)
    # buy limit: 5e-324 up to the 0.1 tick
    assert str(d.intent.buy.limit_price) == "0.1"


# -- several edges over threshold -----------------------------------------------------------

def _three_venues() -> Rig:
    rig = Rig([btc(mt5=True)])
    rig.q("mt5", MT5_BTC, 59990.0, 60000.0, (1.0, 1.0))
    rig.q("okx", OKX_BTC, 59995.0, 60000.0, (100.0, 100.0))
    return rig


def test_best_of_two_edges_gets_the_intent() -> None:
    rig = _three_venues()
    # mt5 -> binance: 60300 * 0.9995 / 60000 - 1 = 60269.85 / 60000 - 1 = 44.975 bps
    # okx -> binance: 60269.85 / 60030 - 1 = 239.85 / 60030 = 39.955 bps
    d = _intent(rig.q("binance", BN_BTC, 60300.0, 60310.0, (1.0, 1.0)))
    assert (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    assert d.edge_bps == pytest.approx(44.975, abs=1e-6)
    assert rig.edge("BTC", "okx", "binance").edge_bps == pytest.approx(239.85 / 60030 * 10_000, abs=1e-6)


def test_next_best_edge_trades_when_the_best_is_blocked() -> None:
    rig = Rig([btc(mt5=True)])
    rig.q("mt5", MT5_BTC, 59990.0, 60000.0, (1.0, 0.0))  # best buy venue, but nothing on its ask
    rig.q("okx", OKX_BTC, 59995.0, 60000.0, (100.0, 100.0))
    d = _intent(rig.q("binance", BN_BTC, 60300.0, 60310.0, (1.0, 1.0)))
    assert (d.buy_venue, d.sell_venue) == ("okx", "binance")
    assert rig.edge("BTC", "mt5", "binance").last_reason == Reason.SIZE_TOO_SMALL
    assert rig.pipe.reasons == Counter({Reason.NO_COUNTER_QUOTE: 1, Reason.BELOW_THRESHOLD: 1,
                                        Reason.OK: 1})


def test_all_over_threshold_blocked_reports_the_best_and_its_reason() -> None:
    rig = _three_venues()
    rig.gate.kill("x")
    d = _blocked(rig.q("binance", BN_BTC, 60300.0, 60310.0, (1.0, 1.0)), Reason.HALTED)
    assert (d.buy_venue, d.sell_venue) == ("mt5", "binance")
    assert d.edge_bps == pytest.approx(44.975, abs=1e-6)
    assert rig.pipe.reasons[Reason.HALTED] == 1


# -- decisions and counters ----------------------------------------------------------------

def test_one_decision_per_accepted_quote_and_counters_add_up() -> None:
    rig = Rig(max_quote_age_ms=60_000)
    results = [
        rig.q("okx", "NOPE", 1.0, 2.0),          # unknown: None
        rig.okx(),                                # no_counter_quote
        rig.q("binance", BN_BTC, 2.0, 1.0),      # crossed: None
        rig.bn_flat(),                            # below_threshold
        rig.bn(),                                 # intent
        rig.bn(),                                 # in_flight
        rig.q("binance", BN_BTC, float("nan"), 1.0),  # refused: None
        rig.bn_flat(),                            # below_threshold
    ]
    decisions = [r for r in results if r is not None]
    assert [r is None for r in results] == [True, False, True, False, False, False, True, False]
    p = rig.pipe
    assert (p.quotes, p.decisions, p.intents) == (8, 5, 1)
    assert rig.engine.unknown + rig.engine.rejected == 3
    assert p.quotes == p.decisions + rig.engine.unknown + rig.engine.rejected
    assert p.reasons == Counter({Reason.NO_COUNTER_QUOTE: 1, Reason.BELOW_THRESHOLD: 2,
                                 Reason.OK: 1, Reason.IN_FLIGHT: 1})
    assert sum(p.reasons.values()) == p.decisions
    assert sum(d.outcome is Outcome.INTENT for d in decisions) == p.intents == p.reasons[Reason.OK]
    assert all(d.ts_ms == rig.clock.time_ms() for d in decisions)


# -- property: garbage in, invariants out -----------------------------------------------------

_GARBAGE = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 1e300, 1e-300, 5e-324, 1e308]
_ABSURD = [1e300, 1e308, 1e-300, 5e-324, 1e15, 1e-15]  # finite and positive: a "valid" book
_DEMO_PAIRS = demo_config().build_pairs()
_INSTRUMENTS = [(i.venue, i.symbol, i.pair) for p in _DEMO_PAIRS for i in p.instruments]
_MID = {"XAU": 2650.0, "BTC": 60000.0, "ETH": 3000.0}
_VENUES: tuple[Venue, ...] = ("mt5", "okx", "binance")


def _venue(name: object) -> Venue:
    for venue in _VENUES:
        if venue == name:
            return venue
    raise AssertionError(f"not a venue: {name!r}")


def _quote_action(instruments: Sequence[tuple[str, str, str]]) -> st.SearchStrategy[tuple[object, ...]]:
    @st.composite
    def action(draw: st.DrawFn) -> tuple[object, ...]:
        venue, symbol, pair = draw(st.sampled_from([*instruments, ("okx", "NOPE-SWAP", "BTC")]))
        mid = _MID[pair] * draw(st.floats(0.99, 1.01))
        half = draw(st.floats(-0.0002, 0.001))   # negative: crossed book
        inst = next((i for p in _DEMO_PAIRS for i in p.instruments if i.key == (venue, symbol)), None)
        unit = float(inst.qty_per_unit) if inst is not None else 1.0
        # sizes in venue units: up to 3 base units, or lot counts that are inexact in binary
        sizes = st.one_of(st.floats(0, 3.0).map(lambda x: x / unit), st.sampled_from([0.29, 0.57, 1.13, 2.01]))
        fields = [mid * (1 - half), mid * (1 + half), draw(sizes), draw(sizes)]
        garbage = st.sampled_from(_GARBAGE)
        if draw(st.integers(0, 4)) == 0:
            fields[0] = fields[1] = draw(st.sampled_from(_ABSURD))  # 1e300 / 1e300 is a book
        for k in range(4):
            if draw(st.integers(0, 11)) == 0:
                fields[k] = draw(garbage)
        return ("quote", venue, symbol, *fields)

    return action()


@st.composite
def _scenario(draw: st.DrawFn) -> list[tuple[object, ...]]:
    # one pair (dense: most quotes meet a counter quote) or all three
    names = draw(st.sampled_from([("BTC",), ("XAU",), ("ETH",), ("BTC", "XAU", "ETH")]))
    instruments = [x for x in _INSTRUMENTS if x[2] in names]
    quote = _quote_action(instruments)
    other = st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 2_000)),
        st.tuples(st.just("release"), st.sampled_from(names)),
        # halts and pauses are rarer than what undoes them, so most of the time is active
        st.tuples(st.sampled_from(["kill", "rearm", "rearm", "rearm", "pause", "resume", "resume"])),
    )
    return draw(st.lists(st.one_of(quote, quote, quote, quote, other), min_size=20, max_size=100))


def _on_grid(x: Decimal, step: Decimal) -> bool:
    with localcontext() as ctx:
        ctx.prec = 2000
        return x % step == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=_scenario(),
    persistence_ms=st.sampled_from([0, 50]),
    cooldown_ms=st.sampled_from([0, 300]),
    cap=st.sampled_from(["100", "5000", "1000000"]),
    max_open_groups=st.integers(1, 3),
    auto_release=st.booleans(),
    guard=st.sampled_from([None, (20.0, 50.0), (300.0, 500.0), (60.0, 30.0)]),
)
@example(  # a sell bid of 1e300 once made the sell limit price raise decimal.InvalidOperation
    actions=[("quote", "okx", "BTC-USDT-SWAP", 60000.0, 60000.0, 0.0, 100.0),
             ("quote", "mt5", "BTCUSD", 1e300, 1e300, 1.0, 0.0)],
    persistence_ms=0, cooldown_ms=0, cap="5000", max_open_groups=1, auto_release=False, guard=None,
)
@example(  # a NaN depth on the sell leg was ignored by min(): the intent exceeded the book
    actions=[("quote", "binance", "BTCUSDT", 59990.0, 60000.0, 1.0, 1.0),
             ("quote", "okx", "BTC-USDT-SWAP", 60300.0, 60310.0, float("nan"), 1.0)],
    persistence_ms=0, cooldown_ms=0, cap="5000", max_open_groups=1, auto_release=False, guard=None,
)
@example(  # issue 13: MT5 XAUUSD at 100.0/100.1 while OKX and Binance show ~2650
    actions=[("quote", "okx", "XAUT-USDT-SWAP", 2650.0, 2650.5, 1000.0, 1000.0),
             ("quote", "binance", "PAXGUSDT", 2650.2, 2650.6, 1.0, 1.0),
             ("quote", "mt5", "XAUUSD", 100.0, 100.1, 1.0, 1.0)],
    persistence_ms=0, cooldown_ms=0, cap="5000", max_open_groups=3, auto_release=False,
    guard=(300.0, 500.0),
)
def test_pipeline_invariants_under_random_quotes(
    *,
    actions: list[tuple[object, ...]],
    persistence_ms: int,
    cooldown_ms: int,
    cap: str,
    max_open_groups: int,
    auto_release: bool,
    guard: tuple[float, float] | None,
) -> None:
    """`guard`: (max_edge_bps, max_quote_deviation_bps), or None for the guard switched off
    (sizing must survive absurd books on its own). With the guard on, no intent ever has an
    edge above the ceiling, or legs whose latest quotes (as sent) are further apart than the
    bound."""
    ceiling, bound = guard if guard is not None else (300.0, 500.0)
    rig = Rig(list(_DEMO_PAIRS), persistence_ms=persistence_ms, cooldown_ms=cooldown_ms,
              max_leg_notional=cap, max_open_groups=max_open_groups, max_edge_bps=ceiling,
              max_quote_deviation_bps=bound, guard=guard is not None)
    max_notional = D(cap)
    intents = 0
    sent: dict[tuple[object, object], tuple[float, float]] = {}  # latest quote taken per instrument
    for action in actions:
        kind = action[0]
        if kind == "advance":
            ms = action[1]
            assert isinstance(ms, int)
            rig.clock.advance(ms=ms)
        elif kind == "release":
            pair = action[1]
            assert isinstance(pair, str)
            rig.pipe.release(pair)
        elif kind == "kill":
            rig.gate.kill("prop")
        elif kind == "rearm":
            rig.gate.rearm("prop")
        elif kind == "pause":
            rig.gate.pause()
        elif kind == "resume":
            rig.gate.resume()
        else:
            _, venue, symbol, bid, ask, bid_size, ask_size = action
            assert isinstance(symbol, str)
            assert isinstance(bid, float) and isinstance(ask, float)
            assert isinstance(bid_size, float) and isinstance(ask_size, float)
            state = rig.gate.state
            in_flight = set(rig.pipe.in_flight)
            refused = rig.engine.unknown + rig.engine.rejected
            d = rig.q(_venue(venue), symbol, bid, ask, (bid_size, ask_size))
            now_refused = rig.engine.unknown + rig.engine.rejected
            assert (d is None) == (now_refused == refused + 1)
            if d is not None:
                sent[(venue, symbol)] = (float(bid), float(ask))
            if d is None or d.outcome is not Outcome.INTENT:
                continue
            intents += 1
            if guard is not None:
                assert d.intent is not None
                assert d.intent.expected_edge_bps <= ceiling
                b_bid, b_ask = sent[(d.intent.buy.venue, d.intent.buy.symbol)]
                s_bid, s_ask = sent[(d.intent.sell.venue, d.intent.sell.symbol)]
                m1, m2 = b_bid / 2 + b_ask / 2, s_bid / 2 + s_ask / 2  # demo price scales are 1
                assert abs(m1 - m2) <= bound / 10_000 * min(m1, m2) * (1 + 1e-12), (m1, m2)
            assert state is TradingState.ACTIVE
            intent = d.intent
            assert intent is not None
            assert intent.pair not in in_flight
            assert intent.expected_edge_bps >= 8.0
            assert (d.buy_venue, d.sell_venue) == (intent.buy.venue, intent.sell.venue)
            edge = rig.edge(intent.pair, intent.buy.venue, intent.sell.venue)
            bq = intent.base_qty
            assert intent.buy.base_qty == intent.sell.base_qty == bq
            assert bq > 0
            assert _on_grid(bq, edge.step)
            assert bq >= edge.min_base_qty
            # never more than the top of book on either side
            assert float(bq) <= edge.buy.ask_qty * (1 + 1e-12)
            assert float(bq) <= edge.sell.bid_qty * (1 + 1e-12)
            # buy-leg notional within the cap
            assert bq * D(repr(intent.buy_price)) <= max_notional * (1 + D("1e-12"))
            for leg, inst, raw in ((intent.buy, edge.buy.inst, edge.buy.raw_ask),
                                   (intent.sell, edge.sell.inst, edge.sell.raw_bid)):
                with localcontext() as ctx:
                    ctx.prec = 2000
                    assert leg.quantity * inst.qty_per_unit == bq
                assert _on_grid(leg.quantity, inst.lot_step)
                assert leg.quantity >= inst.min_qty
                assert _on_grid(leg.limit_price, inst.tick_size)
                assert "E" not in str(leg.limit_price)
                assert "E" not in str(leg.quantity)
                if leg.side == "buy":
                    assert leg.limit_price >= D(repr(raw))
                else:
                    assert leg.limit_price <= D(repr(raw))
            assert math.isfinite(intent.buy_price)
            if auto_release:  # the group settled at once: the pair may trade again
                rig.pipe.release(intent.pair)
    p = rig.pipe
    assert p.intents == intents == p.reasons[Reason.OK]
    assert sum(p.reasons.values()) == p.decisions
    assert p.quotes == p.decisions + rig.engine.unknown + rig.engine.rejected
