"""Where Binance spot and USD-M answer, and how the two markets differ, as data.

One gateway serves both markets; everything that differs is here: the REST paths and their
request weights (`/api/v3` vs `/fapi`), the order response type that carries the final state
of an IOC order (spot FULL with fills, USD-M RESULT without them), the client order id's legal
range, where the user data comes from (spot: the WebSocket API's
`userDataStream.subscribe.signature`, since the spot listenKey endpoints were retired on
2026-02-20; USD-M: a listenKey stream on the `/private` route of the 2026 URL split), and
the default request-weight limit until exchangeInfo says otherwise.

Production URLs are Binance's; the testnet ones are the documented testnets (spot
`testnet.binance.vision`, USD-M `testnet.binancefuture.com`; UNCONFIRMED after the 2026
changes, so every URL can be given explicitly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

BinanceMarket = Literal["spot", "usdm"]
HttpMethod = Literal["GET", "POST", "PUT", "DELETE"]


@dataclass(frozen=True, slots=True)
class Route:
    """One REST endpoint. `signed`: needs timestamp + signature (TRADE/USER_DATA); `keyed`: needs
    only the API key header (USER_STREAM)."""

    method: HttpMethod
    path: str
    weight: int
    signed: bool = True
    keyed: bool = True


@dataclass(frozen=True, slots=True)
class MarketApi:
    """The REST surface of one market."""

    market: BinanceMarket
    time: Route
    exchange_info: Route
    order_place: Route
    order_query: Route
    order_cancel: Route
    open_orders: Route
    trades: Route
    account: Route
    commission: Route
    balance: Route | None
    positions: Route | None
    listen_key_new: Route | None
    listen_key_keepalive: Route | None
    order_resp_type: str
    weight_limit: int
    client_id_re: re.Pattern[str]


def _public(method: HttpMethod, path: str, weight: int) -> Route:
    return Route(method, path, weight, signed=False, keyed=False)


SPOT_API = MarketApi(
    market="spot",
    time=_public("GET", "/api/v3/time", 1),
    exchange_info=_public("GET", "/api/v3/exchangeInfo", 20),
    order_place=Route("POST", "/api/v3/order", 1),
    order_query=Route("GET", "/api/v3/order", 4),
    order_cancel=Route("DELETE", "/api/v3/order", 1),
    open_orders=Route("GET", "/api/v3/openOrders", 6),
    trades=Route("GET", "/api/v3/myTrades", 20),
    account=Route("GET", "/api/v3/account", 20),
    commission=Route("GET", "/api/v3/account/commission", 20),
    balance=None,
    positions=None,
    listen_key_new=None,
    listen_key_keepalive=None,
    order_resp_type="FULL",
    weight_limit=6000,
    # The FIX/REST range; the docs give none for spot REST, so the strict one.
    client_id_re=re.compile(r"^[a-zA-Z0-9-_]{1,36}$"),
)

USDM_API = MarketApi(
    market="usdm",
    time=_public("GET", "/fapi/v1/time", 1),
    exchange_info=_public("GET", "/fapi/v1/exchangeInfo", 1),
    order_place=Route("POST", "/fapi/v1/order", 0),
    order_query=Route("GET", "/fapi/v1/order", 1),
    order_cancel=Route("DELETE", "/fapi/v1/order", 1),
    open_orders=Route("GET", "/fapi/v1/openOrders", 1),
    trades=Route("GET", "/fapi/v1/userTrades", 5),
    account=Route("GET", "/fapi/v2/account", 5),
    commission=Route("GET", "/fapi/v1/commissionRate", 20),
    balance=Route("GET", "/fapi/v2/balance", 5),
    positions=Route("GET", "/fapi/v2/positionRisk", 5),
    listen_key_new=Route("POST", "/fapi/v1/listenKey", 1, signed=False),
    listen_key_keepalive=Route("PUT", "/fapi/v1/listenKey", 1, signed=False),
    order_resp_type="RESULT",
    weight_limit=2400,
    client_id_re=re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$"),
)

MARKET_APIS: dict[BinanceMarket, MarketApi] = {"spot": SPOT_API, "usdm": USDM_API}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs of one market: REST, WebSocket API, and (USD-M) the private stream route."""

    api: MarketApi
    rest_url: str
    ws_api_url: str
    user_stream_url: str | None  # USD-M `.../private`; spot user data rides the WebSocket API

    @property
    def market(self) -> BinanceMarket:
        return self.api.market

    def user_stream(self, listen_key: str) -> str:
        """The USD-M user data stream of one listenKey (`<base>/private/ws/<listenKey>`)."""
        if self.user_stream_url is None:
            raise ValueError("spot user data comes over the WebSocket API, not a listenKey stream")
        return f"{self.user_stream_url}/ws/{listen_key}"


def production(market: BinanceMarket) -> Endpoints:
    if market == "spot":
        return Endpoints(SPOT_API, "https://api.binance.com", "wss://ws-api.binance.com:443/ws-api/v3", None)
    return Endpoints(USDM_API, "https://fapi.binance.com", "wss://ws-fapi.binance.com/ws-fapi/v1",
                     "wss://fstream.binance.com/private")


def testnet(market: BinanceMarket) -> Endpoints:
    if market == "spot":
        return Endpoints(SPOT_API, "https://testnet.binance.vision", "wss://ws-api.testnet.binance.vision/ws-api/v3",
                         None)
    return Endpoints(USDM_API, "https://testnet.binancefuture.com", "wss://testnet.binancefuture.com/ws-fapi/v1",
                     "wss://fstream.binancefuture.com/private")


def loopback(market: BinanceMarket, http_base: str) -> Endpoints:
    """A simulated venue that serves everything on one port (`sim.binance_venue`)."""
    ws_base = "ws" + http_base.removeprefix("http")
    if market == "spot":
        return Endpoints(SPOT_API, http_base, f"{ws_base}/ws-api/v3", None)
    return Endpoints(USDM_API, http_base, f"{ws_base}/ws-fapi/v1", f"{ws_base}/private")


__all__ = [
    "MARKET_APIS",
    "SPOT_API",
    "USDM_API",
    "BinanceMarket",
    "Endpoints",
    "MarketApi",
    "Route",
    "loopback",
    "production",
    "testnet",
]
