"""A widely used third-party client (ccxt) against the OKX simulator, only its URLs changed.

If the simulator lets ccxt load markets, read balances, place, query and cancel orders, then it
is faithful to the OKX documentation beyond what our own gateway happens to use. Skipped when
ccxt is not installed (it belongs in the test extra).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.clock import RealClock
from sim.okx_server import OkxSimServer
from tests.okx_support import KEY, PASSPHRASE, SECRET, SPECS, tick

ccxt = pytest.importorskip("ccxt")


def _client(server: OkxSimServer) -> Any:
    exchange = ccxt.okx({"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE, "timeout": 5000})
    exchange.hostname = f"127.0.0.1:{server.port}"
    exchange.urls["api"] = {"rest": "http://{hostname}"}
    return exchange


async def test_ccxt_loads_markets_trades_queries_cancels_and_reads_balances() -> None:
    clock = RealClock()  # ccxt signs with the machine's clock
    server = OkxSimServer("127.0.0.1", 0, symbols=[s.inst_id for s in SPECS], clock=clock, specs=SPECS)
    server.private.add_account(KEY, SECRET, PASSPHRASE)
    async with server:
        server.publish(tick(clock=None))
        exchange = _client(server)

        def session() -> dict[str, Any]:
            markets = exchange.load_markets()
            before = exchange.fetch_balance()
            filled = exchange.create_order("BTC/USDT:USDT", "limit", "buy", 2, 97001, {"timeInForce": "IOC"})
            queried = exchange.fetch_order(filled["id"], "BTC/USDT:USDT")
            resting = exchange.create_order("BTC/USDT:USDT", "limit", "buy", 1, 90000)
            cancelled = exchange.cancel_order(resting["id"], "BTC/USDT:USDT")
            after_cancel = exchange.fetch_order(resting["id"], "BTC/USDT:USDT")
            return {"markets": markets, "before": before, "filled": filled, "queried": queried,
                    "cancelled": cancelled, "after_cancel": after_cancel, "after": exchange.fetch_balance()}

        got = await asyncio.to_thread(session)
    markets = got["markets"]
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT"} <= set(markets)
    btc = markets["BTC/USDT:USDT"]
    assert (btc["id"], btc["contractSize"], btc["precision"]["price"], btc["limits"]["amount"]["min"]) == (
        "BTC-USDT-SWAP", 0.01, 0.1, 1.0)
    assert got["before"]["USDT"]["total"] == 100_000.0
    queried = got["queried"]
    assert (queried["status"], queried["filled"], queried["average"]) == ("closed", 2.0, 97000.1)
    assert queried["clientOrderId"] == got["filled"]["clientOrderId"]
    assert got["cancelled"]["id"] == got["after_cancel"]["id"]
    assert got["after_cancel"]["status"] == "canceled"
    assert got["after"]["USDT"]["total"] < 100_000.0  # the fee was charged
