"""What a Binance key may do: `GET /sapi/v1/account/apiRestrictions` (Wallet API, USER_DATA).

`quantarb doctor` reads it before trading (the gateway never does): reading, spot trading
(`enableSpotAndMarginTrading`), USD-M futures (`enableFutures`), withdrawals
(`enableWithdrawals`) and whether the key is tied to IP addresses (`ipRestrict`).

The endpoint lives on the spot host only (`api.binance.com`), for USD-M keys too; the
testnets do not serve `/sapi` at all. `restrictions_url` says where to ask, or None when
there is nowhere to ask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import msgspec

from core.clock import Clock
from exchanges.binance import errors
from exchanges.binance.auth import Credentials
from exchanges.binance.endpoints import BinanceMarket, Endpoints, Route, production, testnet
from exchanges.binance.parsers import ParseError
from exchanges.binance.rest import BinanceRest
from exchanges.venue import ErrorKind, VenueError

API_RESTRICTIONS = Route("GET", "/sapi/v1/account/apiRestrictions", 1)
SPOT_HOST = "https://api.binance.com"


@dataclass(frozen=True, slots=True)
class ApiRestrictions:
    """The key's switches as the venue reports them."""

    reading: bool
    spot_trading: bool
    futures: bool
    withdrawals: bool
    ip_restricted: bool

    def can_trade(self, market: BinanceMarket) -> bool:
        return self.spot_trading if market == "spot" else self.futures


class _Restrictions(msgspec.Struct):
    ipRestrict: bool
    enableReading: bool
    enableWithdrawals: bool
    enableSpotAndMarginTrading: bool
    enableFutures: bool


def parse_api_restrictions(raw: bytes | str) -> ApiRestrictions:
    """The body of a 200 answer -> ApiRestrictions; ParseError naming what is wrong."""
    try:
        body = msgspec.json.decode(raw, type=_Restrictions)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ParseError(f"apiRestrictions: {exc}") from None
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise ParseError(f"apiRestrictions: {type(exc).__name__}") from None
    return ApiRestrictions(
        reading=body.enableReading,
        spot_trading=body.enableSpotAndMarginTrading,
        futures=body.enableFutures,
        withdrawals=body.enableWithdrawals,
        ip_restricted=body.ipRestrict,
    )


def restrictions_url(endpoints: Endpoints, *, is_testnet: bool) -> str | None:
    """Where the key's restrictions can be read: None on a testnet (no `/sapi` there); the spot
    host for Binance's own USD-M host; else the configured REST base (a spot host, or a proxy
    or simulator that serves both)."""
    if is_testnet or endpoints.rest_url.rstrip("/") == testnet(endpoints.market).rest_url:
        return None
    if endpoints.rest_url.rstrip("/") == production("usdm").rest_url:
        return SPOT_HOST
    return endpoints.rest_url


async def api_restrictions(rest: BinanceRest, credentials: Credentials, clock: Clock, base_url: str,
                           *, timeout_s: float) -> ApiRestrictions:
    """Ask the venue at `base_url` (signed, on `rest`'s clock offset); VenueError on failure."""
    endpoints = dataclasses.replace(rest.endpoints, rest_url=base_url)
    client = BinanceRest(endpoints, credentials, clock, offset=rest.offset, recv_window_ms=rest.recv_window_ms,
                         timeout_s=timeout_s)
    try:
        body = await client.call(API_RESTRICTIONS)
    finally:
        await client.aclose()
    try:
        return parse_api_restrictions(body)
    except ParseError as exc:
        raise VenueError(errors.VENUE, ErrorKind.UNKNOWN, "parse", str(exc)) from None


__all__ = ["API_RESTRICTIONS", "SPOT_HOST", "ApiRestrictions", "api_restrictions", "parse_api_restrictions",
           "restrictions_url"]
