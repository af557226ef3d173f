"""The order benches' venues: the OKX and Binance spot simulators in this process, on
127.0.0.1:0, and our live gateways started and connected to them.

The simulators are the ones the gateway tests use (`sim/okx_server.py` with its private side,
`sim/binance_venue.py`): they check every signature and timestamp, match against the book
the bench publishes, and answer over REST and WebSocket. Two changes for a bench that sends
hundreds of orders a second, both on the simulated venue and both said in the results: the
OKX simulator's per-key request windows are off (OKX allows 60 orders per 2 s), and the
accounts are large enough never to refuse an order for balance or margin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from core.clock import Clock
from core.config import QuantarbConfig
from core.instruments import Instrument
from exchanges.binance.auth import Credentials
from exchanges.binance.endpoints import Endpoints, loopback
from exchanges.binance.gateway import BinanceGateway
from exchanges.binance.rest import BinanceRest
from exchanges.binance.wsapi import WsApi
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import OkxGateway, OkxGatewayConfig
from sim.binance_exchange import SimSymbol
from sim.binance_private import SimCredentials
from sim.binance_venue import BinanceVenueSim
from sim.market import SimTick
from sim.okx_accounts import spec_from_instrument
from sim.okx_server import OkxSimServer

# Bench-only credentials of the simulated accounts (nothing real).
OKX_KEY = "bench-okx-key"
OKX_SECRET = "BENCH0SECRET0NOT0A0REAL0KEY00000"
OKX_PASSPHRASE = "Bench-pass1"
BN_KEY = "benchBinanceKeyNotReal0000000000000000000000000000000000000000000"
BN_SECRET = "benchBinanceSecretNotReal000000000000000000000000000000000000000"
OKX_SYMBOL = "BTC-USDT-SWAP"
BN_SYMBOL = "BTCUSDT"
PAIR = "BTC"
# The BTC pair as the venues define it: OKX swap contracts of 0.01 BTC, Binance spot.
PAIR_CONFIG: dict[str, object] = {
    "name": PAIR,
    "instruments": {
        "okx": {"symbol": OKX_SYMBOL, "qty_per_contract": "0.01", "lot_step": "1", "min_qty": "1",
                "tick_size": "0.1"},
        "binance": {"symbol": BN_SYMBOL, "qty_per_contract": "1", "lot_step": "0.00001", "min_qty": "0.00001",
                    "tick_size": "0.01", "min_notional": "5"},
    },
}
BN_SPOT = SimSymbol(BN_SYMBOL, "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal(5))


@dataclass
class Venues:
    """The two simulated venues of one bench run."""

    okx: OkxSimServer
    binance: BinanceVenueSim
    clock: Clock

    @property
    def okx_port(self) -> int:
        return self.okx.port

    @property
    def binance_port(self) -> int:
        return self.binance.port

    def set_books(self, okx: tuple[float, float], binance: tuple[float, float], *, okx_size: float = 500.0,
                  binance_size: float = 5.0) -> None:
        """Both venues' top of book (OKX sizes in contracts); a new book frees taken sizes."""
        now = self.clock.time_ms()
        self.okx.publish(SimTick("okx", OKX_SYMBOL, okx[0], okx[1], okx_size, okx_size, now))
        self.binance.set_book(BN_SYMBOL, repr(binance[0]), repr(binance[1]), repr(binance_size), repr(binance_size))


@asynccontextmanager
async def simulated_venues(config: QuantarbConfig, clock: Clock) -> AsyncIterator[Venues]:
    """Both simulators started on 127.0.0.1:0 for the config's OKX and Binance instruments."""
    okx_insts = [i for p in config.build_pairs() for i in p.instruments if i.venue == "okx"]
    okx = OkxSimServer("127.0.0.1", 0, symbols=[i.symbol for i in okx_insts], clock=clock,
                       specs=[spec_from_instrument(i) for i in okx_insts], idle_timeout_s=600.0)
    okx.private.rate_limits = {}  # hundreds of orders a second: OKX's 60 per 2 s would refuse them
    okx.private.add_account(OKX_KEY, OKX_SECRET, OKX_PASSPHRASE, balances={"USDT": 10**9})
    binance = BinanceVenueSim(market="spot",
                              credentials=SimCredentials(BN_KEY, BN_SECRET, BN_ED25519_PUBLIC), clock=clock,
                              symbols=[BN_SPOT], balances={"USDT": Decimal(10**9), "BTC": Decimal(10**4)})
    async with okx, binance:
        yield Venues(okx, binance, clock)


def okx_credentials() -> OkxCredentials:
    return OkxCredentials(OKX_KEY, OKX_SECRET, OKX_PASSPHRASE)


def _ed25519_pair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair (private PEM, public PEM) for this run's simulated account."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


BN_ED25519_PRIVATE, BN_ED25519_PUBLIC = _ed25519_pair()


def binance_credentials() -> Credentials:
    return Credentials(BN_KEY, BN_SECRET, ed25519_private_pem=BN_ED25519_PRIVATE)


def binance_endpoints(venues: Venues) -> Endpoints:
    return loopback("spot", venues.binance.base_url)


@asynccontextmanager
async def okx_gateway(venues: Venues, clock: Clock, *, websocket: bool) -> AsyncIterator[OkxGateway]:
    """Our OKX gateway on the simulator, started: order entry over its private WebSocket
    (logged in, `orders` subscribed) or, with `websocket=False`, over REST with no stream."""
    config = OkxGatewayConfig(rest_url=venues.okx.rest_url, ws_private_url=venues.okx.private_ws_url,
                              ws_orders=websocket, stream=websocket, request_timeout_s=5.0)
    gateway = OkxGateway(okx_credentials(), clock, config)
    await gateway.start([OKX_SYMBOL])
    try:
        if websocket:
            await gateway.stream.wait_ready(5.0)
        yield gateway
    finally:
        await gateway.stop()


@asynccontextmanager
async def binance_gateway(venues: Venues, clock: Clock, *, websocket: bool) -> AsyncIterator[BinanceGateway]:
    """Our Binance spot gateway on the simulator, started: WebSocket API order entry (the
    session logged on once with the account's Ed25519 key, as docs/venues.md recommends, so
    no order carries a signature) or, with `websocket=False`, REST only (HMAC per request)."""
    endpoints = binance_endpoints(venues)
    creds = binance_credentials()
    rest = BinanceRest(endpoints, creds, clock, timeout_s=5.0)
    ws_api = WsApi(endpoints.ws_api_url, creds, clock, offset=rest.offset, gate=rest.gate,
                   timeout_s=5.0, logon=True) if websocket else None
    gateway = BinanceGateway(endpoints, creds, clock, rest=rest, ws_api=ws_api)
    try:
        await gateway.start()
        if websocket and not (ws_api is not None and ws_api.connected):
            raise RuntimeError("binance WebSocket API session did not open")
        yield gateway
    finally:
        await gateway.close()


def instrument(config: QuantarbConfig, venue: str) -> Instrument:
    return next(i for p in config.build_pairs() for i in p.instruments if i.venue == venue)


__all__ = [
    "BN_SYMBOL",
    "OKX_SYMBOL",
    "PAIR",
    "PAIR_CONFIG",
    "Venues",
    "binance_credentials",
    "binance_endpoints",
    "binance_gateway",
    "instrument",
    "okx_credentials",
    "okx_gateway",
    "simulated_venues",
]
