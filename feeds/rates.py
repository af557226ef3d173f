"""A currency book's best bid and ask, exactly, from the venues' public REST tickers.

The rate source (`engine.rates`) values USDT, USDC, ... in the account currency from the mid of
a currency book (`USDC-USDT`, `USDTUSD`). Prices are read as decimals, not floats: a rate is
multiplied into every amount of that currency.

- OKX `GET /api/v5/market/ticker?instId=...`: `{"code":"0","data":[{"instId","bidPx","askPx",
  "ts",...}]}` (every value a string).
- Binance spot `GET /api/v3/ticker/bookTicker?symbol=...`: `{"symbol","bidPrice","bidQty",
  "askPrice","askQty"}`; USD-M `GET /fapi/v1/ticker/bookTicker` adds `"time"`.

Bad bodies raise `InvalidResponse` (a crossed or empty book included); a venue's error body
raises `VenueError`, as `feeds.rest_parsers` does for quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import httpx
import msgspec

from core.models import Venue
from feeds.normalizers import DropReason
from feeds.rest_parsers import InvalidResponse, VenueError

OKX_TICKER_PATH = "/api/v5/market/ticker"
BINANCE_TICKER_PATH: dict[str, str] = {"spot": "/api/v3/ticker/bookTicker", "usdm": "/fapi/v1/ticker/bookTicker"}
BinanceMarket = Literal["spot", "usdm"]


@dataclass(frozen=True, slots=True)
class BookTop:
    """The best bid and ask of one book (0 < bid <= ask)."""

    bid: Decimal
    ask: Decimal

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


def _bad(msg: str, reason: DropReason = DropReason.MALFORMED) -> InvalidResponse:
    return InvalidResponse("rate book", reason, msg)


def _price(value: Any, name: str) -> Decimal:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} {str(value)[:40]!r} is not a numeric string")
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise _bad(f"{name} {value[:40]!r} is not a number") from None
    if not out.is_finite() or out <= 0:
        raise _bad(f"{name} {value[:40]!r} is not a positive price", DropReason.NON_POSITIVE)
    return out


def _top(bid_raw: Any, ask_raw: Any, symbol: str) -> BookTop:
    bid, ask = _price(bid_raw, "bid"), _price(ask_raw, "ask")
    if ask < bid:
        raise _bad(f"{symbol} book {bid}/{ask} is crossed", DropReason.CROSSED)
    return BookTop(bid, ask)


def _decode(body: bytes | str) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _bad(f"not JSON: {exc}") from None


def parse_okx_rate_ticker(body: bytes | str, inst_id: str) -> BookTop:
    """The top of `inst_id`'s book from an OKX ticker body."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise _bad("not an object")
    code = doc.get("code")
    if code != "0":
        raise VenueError(str(code)[:40], str(doc.get("msg", ""))[:200], "okx")
    data = doc.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise _bad("data is not a list of one ticker")
    row = data[0]
    if row.get("instId") != inst_id:
        raise _bad(f"ticker of {str(row.get('instId'))[:40]!r}, not {inst_id}")
    return _top(row.get("bidPx"), row.get("askPx"), inst_id)


def parse_binance_rate_ticker(body: bytes | str, symbol: str) -> BookTop:
    """The top of `symbol`'s book from a Binance spot or USD-M book ticker body."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise _bad("not an object")
    if "code" in doc:
        raise VenueError(str(doc.get("code"))[:40], str(doc.get("msg", ""))[:200], "binance")
    if doc.get("symbol") != symbol:
        raise _bad(f"book ticker of {str(doc.get('symbol'))[:40]!r}, not {symbol}")
    return _top(doc.get("bidPrice"), doc.get("askPrice"), symbol)


async def fetch_book_top(client: httpx.AsyncClient, venue: Venue, symbol: str,
                         binance_market: BinanceMarket = "spot") -> BookTop:
    """One book's top from the client's base URL (the venue's public REST)."""
    if venue == "okx":
        resp = await client.get(OKX_TICKER_PATH, params={"instId": symbol})
        return parse_okx_rate_ticker(resp.content, symbol)
    if venue == "binance":
        resp = await client.get(BINANCE_TICKER_PATH[binance_market], params={"symbol": symbol})
        return parse_binance_rate_ticker(resp.content, symbol)
    raise ValueError(f"{venue} has no public REST ticker")
