"""REST market-data bodies to `Quote`s: the fallback when a WebSocket feed is down or stale.

- `parse_okx_ticker_response(body, recv_ns)` reads `GET /api/v5/market/ticker` (and the
  list endpoint `/api/v5/market/tickers`, same entry shape).
- `parse_binance_book_ticker(body, venue_ts_ms_key, recv_ns)` reads spot
  `GET /api/v3/ticker/bookTicker` (no timestamp: pass `venue_ts_ms_key=None`) and USD-M
  `GET /fapi/v1/ticker/bookTicker` (pass `"time"`), as one object or a list of them.

Both take an optional keyword `symbols`: when given, entries for other symbols are skipped
before validation (a list endpoint returns every symbol, halted ones included).

Only two exceptions ever leave these functions:

- `VenueError(code, msg)`: the venue answered with an error (OKX `code` other than "0",
  including the numeric `code` of a 404; a Binance `{"code": -1121, "msg": ...}` body).
- `InvalidResponse` (a `ValueError`): the body is not what the endpoint documents: not
  JSON, the wrong shape, or an entry that fails the same validation as the WebSocket
  normalizers (`reason` is the `DropReason`, the message names the symbol).

Validation rules (numeric strings, `0 < bid <= ask`, sizes >= 0, finite values, ms
timestamps >= 0, absent timestamp = 0) are those of `feeds.normalizers`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from core.models import Quote, Venue
from feeds.normalizers import DropReason, build_quote

_decode = msgspec.json.Decoder().decode
_OKX_KEYS = ("bidPx", "askPx", "bidSz", "askSz", "ts")
_BN_KEYS = ("bidPrice", "askPrice", "bidQty", "askQty")


class VenueError(Exception):
    """The venue refused the request: its own error code (as a string) and message."""

    def __init__(self, code: str, msg: str, venue: Venue | None = None) -> None:
        self.code = code
        self.msg = msg
        self.venue = venue
        where = f"{venue} " if venue else ""
        super().__init__(f"{where}error {code}: {msg}" if msg else f"{where}error {code}")


class InvalidResponse(ValueError):
    """A REST body that does not have the documented shape or holds an invalid quote."""

    def __init__(self, what: str, reason: DropReason, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{what}: {reason.value}: {detail}")


def _text(value: Any) -> str:
    """A venue code or message as text (a non-scalar is shown by its type name only)."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) else type(value).__name__


def _load(body: bytes | str, what: str) -> Any:
    try:
        return _decode(body)
    except Exception as exc:  # DecodeError, RecursionError (deep nesting), UnicodeError, TypeError
        preview = body[:80] if isinstance(body, bytes | str) else type(body).__name__
        raise InvalidResponse(what, DropReason.MALFORMED, f"body is not JSON ({exc}): {preview!r}") from None


def _checked(result: Quote | DropReason, what: str, symbol: str, entry: dict[str, Any], keys: tuple[str, ...]) -> Quote:
    if isinstance(result, Quote):
        return result
    shown = ", ".join(f"{k}={_short(entry.get(k))}" for k in keys)
    raise InvalidResponse(what, result, f"{symbol}: {shown}")


def _entry_symbol(entry: dict[str, Any], key: str, what: str) -> str:
    """The symbol of one body entry under `key`; a missing or non-string one is refused."""
    symbol = entry.get(key)
    if symbol is None or symbol == "":
        raise InvalidResponse(what, DropReason.MISSING_FIELD, f"an entry has no {key}")
    if not isinstance(symbol, str):
        raise InvalidResponse(what, DropReason.MALFORMED, f"{key} is {_short(symbol)}")
    return symbol


def _short(value: Any) -> str:
    if value is None or isinstance(value, str | int | float):
        return repr(value)[:40]
    return type(value).__name__


def parse_okx_ticker_response(
    body: bytes | str, recv_ns: int, *, symbols: Collection[str] | None = None
) -> list[Quote]:
    """Quotes from an OKX ticker(s) body: `{"code": "0", "msg": "", "data": [{...}]}`."""
    what = "OKX ticker response"
    obj = _load(body, what)
    if not isinstance(obj, dict):
        raise InvalidResponse(what, DropReason.MALFORMED, f"expected a JSON object, got {type(obj).__name__}")
    if "code" not in obj:
        raise InvalidResponse(what, DropReason.MISSING_FIELD, "no 'code' field")
    code = obj["code"]
    if isinstance(code, bool) or not isinstance(code, str | int):
        raise InvalidResponse(what, DropReason.MALFORMED, f"'code' is {_short(code)}")
    if str(code) != "0":
        raise VenueError(str(code), _text(obj.get("msg", "")), "okx")
    data = obj.get("data")
    if data is None:
        raise InvalidResponse(what, DropReason.MISSING_FIELD, "no 'data' field")
    if not isinstance(data, list):
        raise InvalidResponse(what, DropReason.MALFORMED, "'data' is not an array")
    quotes: list[Quote] = []
    for entry in data:
        if not isinstance(entry, dict):
            raise InvalidResponse(what, DropReason.MALFORMED, "a data entry is not an object")
        symbol = _entry_symbol(entry, "instId", what)
        if symbols is not None and symbol not in symbols:
            continue
        result = build_quote(
            "okx",
            symbol,
            bid=entry.get("bidPx"),
            ask=entry.get("askPx"),
            bid_size=entry.get("bidSz"),
            ask_size=entry.get("askSz"),
            ts=entry.get("ts"),
            recv_ns=recv_ns,
        )
        quotes.append(_checked(result, what, symbol, entry, _OKX_KEYS))
    return quotes


def parse_binance_book_ticker(
    body: bytes | str, venue_ts_ms_key: str | None, recv_ns: int, *, symbols: Collection[str] | None = None
) -> list[Quote]:
    """Quotes from a Binance bookTicker body, one object or a list of them.

    `venue_ts_ms_key` names the millisecond timestamp field (`"time"` on USD-M; None on
    spot, which has none); when the named field is absent the quote's `venue_ts_ms` is 0.
    """
    what = "Binance bookTicker response"
    obj = _load(body, what)
    if isinstance(obj, dict):
        if "symbol" not in obj and "code" in obj and "msg" in obj:
            raise VenueError(_text(obj["code"]), _text(obj["msg"]), "binance")
        entries: list[Any] = [obj]
    elif isinstance(obj, list):
        entries = obj
    else:
        raise InvalidResponse(what, DropReason.MALFORMED, f"expected an object or an array, got {type(obj).__name__}")
    quotes: list[Quote] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidResponse(what, DropReason.MALFORMED, "an entry is not an object")
        symbol = _entry_symbol(entry, "symbol", what)
        if symbols is not None and symbol not in symbols:
            continue
        ts = entry.get(venue_ts_ms_key) if venue_ts_ms_key is not None else None
        result = build_quote(
            "binance",
            symbol,
            bid=entry.get("bidPrice"),
            ask=entry.get("askPrice"),
            bid_size=entry.get("bidQty"),
            ask_size=entry.get("askQty"),
            ts=ts,
            recv_ns=recv_ns,
        )
        keys = _BN_KEYS if venue_ts_ms_key is None else (*_BN_KEYS, venue_ts_ms_key)
        quotes.append(_checked(result, what, symbol, entry, keys))
    return quotes


__all__ = ["InvalidResponse", "VenueError", "parse_binance_book_ticker", "parse_okx_ticker_response"]
