"""Free margin per paper venue (engine/accounts.py, issue 16 Deliver 6): a derivatives account
holds initial margin = position notional / leverage (OKX USDT-margined swaps, Binance USD-M,
CFDs); a spot account has no leverage, so what it bought is paid in full."""

from __future__ import annotations

from decimal import Decimal

from core.clock import ManualClock
from core.config import PaperConfig
from core.instruments import Instrument
from core.risk import RiskGate
from engine.accounts import Accounts
from exchanges.paper import PaperGateway

D = Decimal
SPOT = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=D(1), tick_size=D("0.1"),
                  lot_step=D("0.001"), min_qty=D("0.001"), taker_fee_bps=10.0)
SWAP = Instrument(venue="okx", symbol="BTC-USDT-SWAP", pair="BTC", qty_per_unit=D("0.01"), tick_size=D("0.1"),
                  lot_step=D(1), min_qty=D(1), taker_fee_bps=5.0)


def test_spot_pays_in_full_and_derivatives_hold_notional_over_leverage() -> None:
    clock = ManualClock()
    gate = RiskGate(clock)
    gate.exposure.set_position("binance", "BTC", D("0.5"), D(60_000))  # 30,000 of BTC bought
    gate.exposure.set_position("okx", "BTC", D("-0.5"), D(60_000))  # 30,000 short on the swap
    gateways = {
        "binance": PaperGateway("binance", {"BTCUSDT": SPOT}, lambda v, s: None, clock,
                                spot_inventory={"BTC": D("0.5")}),
        "okx": PaperGateway("okx", {"BTC-USDT-SWAP": SWAP}, lambda v, s: None, clock),
    }
    paper = PaperConfig(balance=D(100_000), leverage=D(10))
    accounts = Accounts(gateways, paper, gate, lambda: {"binance": D(-12), "okx": D(0)}, None)  # type: ignore[arg-type]
    margin = accounts.free_margin()
    assert margin["binance"] == D(100_000) - 12 - D(30_000)
    assert margin["okx"] == D(100_000) - D(3_000)


def test_balances_show_each_paper_account() -> None:
    clock = ManualClock()
    gate = RiskGate(clock)
    gate.exposure.set_position("okx", "BTC", D("-0.5"), D(60_000))
    gateways = {"okx": PaperGateway("okx", {"BTC-USDT-SWAP": SWAP}, lambda v, s: None, clock),
                "binance": PaperGateway("binance", {"BTCUSDT": SPOT}, lambda v, s: None, clock, spot_inventory={})}
    accounts = Accounts(gateways, PaperConfig(balance=D(1_000), leverage=D(5)), gate,  # type: ignore[arg-type]
                        lambda: {"okx": D(25), "binance": None}, None)
    by_venue = {b.venue: b for b in accounts.balances()}
    okx = by_venue["okx"]
    assert (okx.source, okx.balance, okx.equity, okx.margin, okx.free) == ("paper", D(1_000), D(1_025), D(6_000),
                                                                          D(-4_975))
    binance = by_venue["binance"]  # its equity is missing (a rate or a mark): never guessed
    assert binance.source == "paper spot" and binance.equity is None and binance.free is None
