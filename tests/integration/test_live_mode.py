"""Live mode end to end over loopback: the runtime builds the OKX and Binance (USD-M) gateways
from the config and the secrets, checks the venues' specs, reconciles before trading, trades a
hedged group whose orders and fills agree one for one with what the simulated venues report,
quarantines an order placed behind its back, and halts on a position the ledger does not have.

The venues are the simulators of `sim/` in this process, on 127.0.0.1:0, with real sockets;
quotes reach the engine through its own feeds from the simulators' public streams.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.clock import RealClock
from core.config import QuantarbConfig
from core.models import GroupState, Order, OrderPurpose, OrderState, TradingState
from engine.errors import RuntimeFailure
from engine.live_venues import build_okx
from engine.runtime import Runtime
from engine.settings import Secrets
from sim.binance_exchange import SimSymbol
from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim
from sim.market import SimTick
from sim.okx_accounts import spec_from_instrument
from sim.okx_server import OkxSimServer

OKX_KEY, OKX_SECRET, OKX_PASS = "live-test-okx-key", "LIVE0TEST0SECRET0000000000000000", "Live-pass1"
BN_KEY = "liveTestBinanceKey000000000000000000000000000000000000000000000"
BN_SECRET = "liveTestBinanceSecret0000000000000000000000000000000000000000000"
OKX_SYM, BN_SYM = "BTC-USDT-SWAP", "BTCUSDT"
BOUND_S = 20.0
PAIR: dict[str, Any] = {
    "name": "BTC",
    "instruments": {
        "okx": {"symbol": OKX_SYM, "qty_per_contract": "0.01", "lot_step": "1", "min_qty": "1", "tick_size": "0.1"},
        "binance": {"symbol": BN_SYM, "qty_per_contract": "1", "lot_step": "0.001", "min_qty": "0.001",
                    "tick_size": "0.1", "min_notional": "100"},
    },
}
BN_SPEC = SimSymbol(BN_SYM, "BTC", "USDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("100"))
SECRETS = Secrets(okx_api_key=SecretStr(OKX_KEY), okx_api_secret=SecretStr(OKX_SECRET),
                  okx_api_passphrase=SecretStr(OKX_PASS), binance_api_key=SecretStr(BN_KEY),
                  binance_api_secret=SecretStr(BN_SECRET))


@dataclass
class Venues:
    """Both venues' books, republished every 50 ms with a size that alternates, so their
    streams push as live venues do (a quiet book would trip the stale-quote breakers)."""

    okx: OkxSimServer
    binance: BinanceVenueSim
    okx_book: tuple[float, float] = (97000.0, 97000.1)
    bn_book: tuple[float, float] = (97000.0, 97000.1)
    beat: int = 0

    def books(self, okx: tuple[float, float], binance: tuple[float, float]) -> None:
        self.okx_book, self.bn_book = okx, binance
        self.publish()

    def publish(self) -> None:
        self.beat += 1
        size = 5 + self.beat % 2
        now = self.okx.clock.time_ms()
        self.okx.publish(SimTick("okx", OKX_SYM, self.okx_book[0], self.okx_book[1], 100.0 * size, 100.0 * size, now))
        self.binance.set_book(BN_SYM, repr(self.bn_book[0]), repr(self.bn_book[1]), str(size), str(size))

    def calm(self) -> None:
        self.books((97000.0, 97000.1), (97000.0, 97000.1))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.publish()


def live_config(v: Venues, ledger: Path, **pair_changes: Any) -> QuantarbConfig:
    pair = {**PAIR, "instruments": {k: {**i, **pair_changes.get(k, {})} for k, i in PAIR["instruments"].items()}}
    okx_http = v.okx.rest_url
    bn_http = v.binance.base_url
    bn_ws = "ws" + bn_http.removeprefix("http")
    return QuantarbConfig.model_validate({
        "engine": {"execution": "live", "ledger": str(ledger), "reconcile_interval_s": 3600},
        "venues": {
            "okx": {"rest_url": okx_http, "ws_url": v.okx.ws_url, "private_ws_url": v.okx.private_ws_url},
            "binance": {"market": "usdm", "ws_url": bn_ws, "rest_url": bn_http, "trade_rest_url": bn_http,
                        "ws_api_url": f"{bn_ws}/ws-fapi/v1", "user_stream_url": f"{bn_ws}/private"},
        },
        "pairs": [pair],
        "strategy": {"threshold_bps": 5, "cooldown_ms": 60_000, "persistence_ms": 0},
        "risk": {"max_leg_notional": "2000", "max_open_groups": 1, "max_gross_exposure": "100000",
                 "daily_loss_limit": "100000"},
    })


@asynccontextmanager
async def venues() -> AsyncIterator[Venues]:
    clock = RealClock()
    cfg = QuantarbConfig.model_validate({"venues": {"okx": {}, "binance": {"market": "usdm"}}, "pairs": [PAIR]})
    okx_inst = next(i for p in cfg.build_pairs() for i in p.instruments if i.venue == "okx")
    okx = OkxSimServer("127.0.0.1", 0, symbols=[OKX_SYM], clock=clock, specs=[spec_from_instrument(okx_inst)],
                       idle_timeout_s=600.0)
    okx.private.add_account(OKX_KEY, OKX_SECRET, OKX_PASS, balances={"USDT": 10**6})
    binance = BinanceVenueSim(market="usdm", credentials=SimCredentials(BN_KEY, BN_SECRET), clock=clock,
                              symbols=[BN_SPEC], balances={"USDT": Decimal(10**6)})
    async with okx, binance:
        v = Venues(okx, binance)
        v.calm()
        beat = asyncio.create_task(v.run())
        try:
            yield v
        finally:
            beat.cancel()


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {BOUND_S} s waiting for {what}")
        await asyncio.sleep(0.02)


def state_of(rt: Runtime) -> TradingState:
    return rt.gate.state


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def manual_order(venue: str, cid: str, side: str, qty: str, price: str, symbol: str) -> Order:
    return Order(client_order_id=cid, group_id="", venue=venue, symbol=symbol,  # type: ignore[arg-type]
                 side=side, qty=Decimal(qty), price=Decimal(price), purpose=OrderPurpose.ENTRY,  # type: ignore[arg-type]
                 created_ms=RealClock().time_ms())


async def test_live_mode_trades_through_the_gateways_and_reconciles(tmp_path: Path) -> None:
    ledger = tmp_path / "live.db"
    async with venues() as v:
        rt = Runtime(live_config(v, ledger), is_demo=False, secrets=SECRETS, serve_operator_api=False)
        assert rt.mode == "live"
        assert {type(g).__name__ for g in rt.gateways.values()} == {"OkxGateway", "BinanceGateway"}
        await rt.start()
        try:
            assert rt.reconciler is not None
            await until(lambda: rt.reconciler is not None and rt.reconciler.passes == 1, "the first reconciliation")
            await until(lambda: rt.gate.state is TradingState.ACTIVE, "trading allowed after reconciling")
            assert rt.view.status()["reconcile"]["venues"]["okx"]["ok"] is True

            # OKX's bid jumps 40 bps: buy Binance, sell OKX, both through the live gateways.
            v.books((97390.0, 97390.1), (97000.0, 97000.1))
            try:
                await until(lambda: any(g.state is GroupState.HEDGED for g in rt.orchestrator.closed),
                            "a hedged group")
            except AssertionError:
                raise AssertionError([(e.kind, e.text) for e in rt.events.recent(40)]
                                     + [repr(f.health) for f in rt.feeds]) from None
            v.calm()
            await rt.journal.flush() if rt.journal is not None else None

            # One for one: every order and fill in the ledger is one the venues have, and back.
            okx_account = v.okx.private.accounts[OKX_KEY]
            okx_orders = {cid for cid in okx_account.by_cl_ord_id}
            okx_fills = {f.trade_id for f in okx_account.fills}
            bn_orders = {o.client_order_id for o in v.binance.exchange.orders.values()}
            ledger_orders = {(r[0], r[1]) for r in rows(ledger, "SELECT venue, client_order_id FROM orders")}
            assert ledger_orders == {("okx", c) for c in okx_orders} | {("binance", c) for c in bn_orders}
            ledger_okx_fills = {r[0] for r in rows(ledger, "SELECT venue_trade_id FROM fills WHERE venue = 'okx'")}
            assert ledger_okx_fills == okx_fills and okx_fills
            bn_trades = {f"usdm:{BN_SYM}:{t.trade_id}" for o in v.binance.exchange.orders.values() for t in o.trades}
            ledger_bn_fills = {r[0] for r in rows(ledger, "SELECT venue_trade_id FROM fills WHERE venue = 'binance'")}
            assert ledger_bn_fills == bn_trades and bn_trades

            # An order placed behind quantarb's back (a resting GTC buy, as from the venue's web
            # page: our gateway sends only IOC) is quarantined by the next pass.
            v.binance.exchange.new_order({"symbol": BN_SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                          "quantity": "0.01", "price": "90000.0", "newClientOrderId": "manual1"})
            await rt.reconciler.run_once()
            assert list(rt.reconciler.quarantined) == [("binance", "manual1")]
            assert rt.view.snapshot().quarantined == ("binance manual1",)  # the risk screen's line
            assert rt.view.status()["reconcile"]["quarantined"][0]["client_order_id"] == "manual1"
            assert rt.gate.state is TradingState.ACTIVE  # reported, not a halt

            # A position the ledger does not have: halt with the difference.
            okx = build_okx(rt.config.venues.okx, SECRETS, RealClock())  # type: ignore[arg-type]
            await okx.start([OKX_SYM])
            try:
                filled = await okx.place(manual_order("okx", "manual2", "buy", "3", "97100.0", OKX_SYM))
                assert filled.state is OrderState.FILLED, filled.reason
            finally:
                await okx.stop()
            await rt.reconciler.run_once()
            assert state_of(rt) is TradingState.HALTED
            assert "position differs: okx BTC-USDT-SWAP" in rt.gate.reason and "difference 3" in rt.gate.reason
        finally:
            await rt.stop()


async def test_live_mode_refuses_to_start_when_the_config_differs_from_the_venue(tmp_path: Path) -> None:
    async with venues() as v:
        config = live_config(v, tmp_path / "l.db", binance={"lot_step": "0.01", "min_qty": "0.01"})
        rt = Runtime(config, is_demo=False, secrets=SECRETS, serve_operator_api=False)
        with pytest.raises(RuntimeFailure, match=r"binance: the config's instruments differ .*lot_step"):
            await rt.start()


def test_live_mode_without_keys_names_the_missing_variable(tmp_path: Path) -> None:
    config = QuantarbConfig.model_validate({
        "engine": {"execution": "live", "ledger": str(tmp_path / "l.db")},
        "venues": {"okx": {}, "binance": {"market": "usdm"}}, "pairs": [PAIR]})
    with pytest.raises(RuntimeFailure, match="QUANTARB_OKX_API_KEY"):
        Runtime(config, is_demo=False, secrets=Secrets(), serve_operator_api=False)
