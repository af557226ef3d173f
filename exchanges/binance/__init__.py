"""Binance spot and USD-M order routing: signing, endpoints, parsers, the error map, the
gateway, the WebSocket API session and the private user data stream (docs/venues.md)."""

from exchanges.binance.auth import Credentials
from exchanges.binance.endpoints import BinanceMarket, Endpoints, loopback, production, testnet
from exchanges.binance.gateway import BinanceGateway

__all__ = ["BinanceGateway", "BinanceMarket", "Credentials", "Endpoints", "loopback", "production", "testnet"]
