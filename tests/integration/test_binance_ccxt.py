"""A widely used third-party client (ccxt) trades on the simulated Binance spot and USD-M venues
with only its base URLs changed: load markets, place, fetch and cancel an order, read balances.

If the simulator answered differently from Binance, ccxt (written against the real venue)
would fail here. Skipped when ccxt is not installed (it belongs in the `test` extra).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim
from tests.binance_support import KEY, SECRET

ccxt_async = pytest.importorskip("ccxt.async_support", reason="ccxt is not installed (test extra)")


def pointed_at(url_map: Any, host: str) -> Any:
    """The same URL map with every Binance host replaced by the simulator's (paths kept)."""
    if isinstance(url_map, dict):
        return {k: pointed_at(v, host) for k, v in url_map.items()}
    if isinstance(url_map, str):
        return re.sub(r"^https://[^/]+", f"http://{host}", re.sub(r"^wss://[^/]+", f"ws://{host}", url_map))
    return url_map


@pytest.mark.parametrize(("market", "cls", "symbol"), [
    ("spot", "binance", "BTC/USDT"),
    ("usdm", "binanceusdm", "BTC/USDT:USDT"),
])
async def test_ccxt_loads_markets_places_fetches_cancels_and_reads_balances(market: str, cls: str, symbol: str) -> None:
    sim = BinanceVenueSim(market=market, credentials=SimCredentials(KEY, SECRET))  # type: ignore[arg-type]
    async with sim:
        sim.set_book("BTCUSDT", "97000.0", "97000.2", "3", "5")
        exchange = getattr(ccxt_async, cls)({"apiKey": KEY, "secret": SECRET})
        exchange.urls["api"] = pointed_at(exchange.urls["api"], f"127.0.0.1:{sim.port}")
        try:
            markets = await exchange.load_markets()
            assert symbol in markets
            btc = markets[symbol]
            assert Decimal(str(btc["precision"]["price"])) == (Decimal("0.01") if market == "spot" else Decimal("0.1"))

            filled = await exchange.create_order(symbol, "limit", "buy", 0.01, 97001, {"timeInForce": "IOC"})
            assert filled["status"] == "closed" and filled["filled"] == pytest.approx(0.01)
            fetched = await exchange.fetch_order(filled["id"], symbol)
            assert fetched["status"] == "closed" and fetched["average"] == pytest.approx(97000.2)

            resting = await exchange.create_order(symbol, "limit", "buy", 0.01, 96000, {"timeInForce": "GTC"})
            assert resting["status"] == "open"
            cancelled = await exchange.cancel_order(resting["id"], symbol)
            assert cancelled["status"] == "canceled"

            balance = await exchange.fetch_balance()
            assert balance["USDT"]["total"] < 100_000  # the fill and its fee were paid
            assert sim.rest.orders_received == 2
        finally:
            await exchange.close()
