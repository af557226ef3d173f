"""Shared rig for the Binance gateway tests: a simulated venue on loopback and a gateway on it.

Both share one `ManualClock`, so signed timestamps, recvWindow checks, rate-limit minutes and
the not-found deadline are deterministic; only socket waits use real time, each bounded.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from core.clock import ManualClock
from core.models import Order, OrderPurpose, Side
from exchanges.binance.auth import Credentials
from exchanges.binance.endpoints import BinanceMarket, loopback
from exchanges.binance.gateway import BinanceGateway
from exchanges.binance.rest import BinanceRest
from exchanges.binance.wsapi import WsApi
from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim

KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"  # the docs' example key
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
T = 3.0  # the bound on every single wait
BID, ASK = "97000.0", "97000.2"
_ids = itertools.count(1)


def order(clock: ManualClock, *, side: Side = "buy", qty: str = "0.01", price: str = "97001.0",
          symbol: str = "BTCUSDT", cid: str | None = None) -> Order:
    return Order(client_order_id=cid or f"qat{next(_ids)}", group_id="g1", venue="binance", symbol=symbol,
                 side=side, qty=Decimal(qty), price=Decimal(price), purpose=OrderPurpose.ENTRY,
                 created_ms=clock.time_ms())


@dataclass
class Rig:
    clock: ManualClock
    sim: BinanceVenueSim
    gateway: BinanceGateway
    credentials: Credentials

    @property
    def market(self) -> BinanceMarket:
        return self.sim.market


@asynccontextmanager
async def rig(market: BinanceMarket, *, key: str = KEY, secret: str = SECRET, ws: bool = False,
              rest_timeout_s: float = 2.0, ws_timeout_s: float = 2.0, sim_pem: bytes | None = None,
              client_pem: bytes | None = None, logon: bool = False, ask_size: str = "5",
              bid_size: str = "3") -> AsyncIterator[Rig]:
    clock = ManualClock()
    sim = BinanceVenueSim(market=market, credentials=SimCredentials(KEY, SECRET, sim_pem), clock=clock)
    async with sim:
        sim.set_book("BTCUSDT", BID, ASK, bid_size, ask_size)
        endpoints = loopback(market, sim.base_url)
        credentials = Credentials(key, secret, client_pem)
        rest = BinanceRest(endpoints, credentials, clock, timeout_s=rest_timeout_s)
        ws_api = None
        if ws:
            ws_api = WsApi(endpoints.ws_api_url, credentials, clock, offset=rest.offset, gate=rest.gate,
                           timeout_s=ws_timeout_s, logon=logon)
        gateway = BinanceGateway(endpoints, credentials, clock, rest=rest, ws_api=ws_api, retry_delay_s=0.01,
                                 ws_retry_s=0.05)
        try:
            yield Rig(clock, sim, gateway, credentials)
        finally:
            await gateway.close()


async def wait_until(predicate: Callable[[], bool], what: str, within: float = T) -> None:
    """Poll until `predicate()`; fail with `what` when it does not happen within `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)
