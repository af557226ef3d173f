"""Perpetual funding settlements from the venues' public REST endpoints.

- OKX `GET /api/v5/public/funding-rate-history?instId=...&before=...` (settled periods, newest
  first): `fundingTime` (ms, string), `realizedRate` (the rate charged; `fundingRate` when
  empty). No mark price: the holder's position value is taken at the book's mid.
- Binance USD-M `GET /fapi/v1/fundingRate?symbol=...&startTime=...` (oldest first):
  `fundingTime` (ms), `fundingRate`, `markPrice` (the mark the settlement used).

Bad bodies raise `InvalidResponse` (nothing is returned from them); a venue's error body
raises `VenueError`, as `feeds.rest_parsers` does for quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import msgspec

from core.models import Venue
from feeds.normalizers import DropReason
from feeds.rest_parsers import InvalidResponse, VenueError

OKX_HISTORY_PATH = "/api/v5/public/funding-rate-history"
BINANCE_HISTORY_PATH = "/fapi/v1/fundingRate"


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """One funding time of one perpetual: the rate charged and, where the venue gives it, the mark."""

    venue: Venue
    symbol: str
    funding_ms: int
    rate: Decimal
    mark: Decimal | None


def _bad(msg: str, reason: DropReason = DropReason.MALFORMED) -> InvalidResponse:
    return InvalidResponse("funding history", reason, msg)


def _decimal(value: Any, name: str, *, positive: bool = False) -> Decimal:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} {value!r} is not a numeric string")
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise _bad(f"{name} {value!r} is not a number") from None
    if not out.is_finite() or (positive and out <= 0):
        raise _bad(f"{name} {value!r} is out of range")
    return out


def _ms(value: Any, name: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _bad(f"{name} {value!r} is not a positive ms timestamp")
    return value


def _decode(body: bytes | str) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _bad(f"not JSON: {exc}") from None


def parse_okx_funding_history(body: bytes | str, inst_id: str) -> list[FundingSettlement]:
    """Settlements of `inst_id`, oldest first."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise _bad("not an object")
    code = doc.get("code")
    if code != "0":
        raise VenueError(str(code), str(doc.get("msg", "")))
    data = doc.get("data")
    if not isinstance(data, list):
        raise _bad("data is not a list")
    out: list[FundingSettlement] = []
    for row in data:
        if not isinstance(row, dict) or row.get("instId") != inst_id:
            raise _bad(f"entry {row!r} is not one of {inst_id}")
        raw = row.get("realizedRate") or row.get("fundingRate")
        out.append(FundingSettlement("okx", inst_id, _ms(row.get("fundingTime"), "fundingTime"),
                                     _decimal(raw, "realizedRate"), None))
    return sorted(out, key=lambda s: s.funding_ms)


def parse_binance_funding_history(body: bytes | str, symbol: str) -> list[FundingSettlement]:
    """Settlements of `symbol`, oldest first."""
    doc = _decode(body)
    if isinstance(doc, dict) and "code" in doc:
        raise VenueError(str(doc.get("code")), str(doc.get("msg", "")))
    if not isinstance(doc, list):
        raise _bad("not a list")
    out: list[FundingSettlement] = []
    for row in doc:
        if not isinstance(row, dict) or row.get("symbol") != symbol:
            raise _bad(f"entry {row!r} is not one of {symbol}")
        mark = row.get("markPrice")
        out.append(FundingSettlement("binance", symbol, _ms(row.get("fundingTime"), "fundingTime"),
                                     _decimal(row.get("fundingRate"), "fundingRate"),
                                     _decimal(mark, "markPrice", positive=True) if mark not in (None, "") else None))
    return sorted(out, key=lambda s: s.funding_ms)


async def fetch_settlements(client: httpx.AsyncClient, venue: Venue, symbol: str,
                            after_ms: int) -> list[FundingSettlement]:
    """Settlements of one perpetual after `after_ms` (exclusive), oldest first, from the client's
    base URL (the venue's public REST)."""
    if venue == "okx":
        resp = await client.get(OKX_HISTORY_PATH, params={"instId": symbol, "before": str(after_ms), "limit": "100"})
        rows = parse_okx_funding_history(resp.content, symbol)
    elif venue == "binance":
        resp = await client.get(BINANCE_HISTORY_PATH,
                                params={"symbol": symbol, "startTime": str(after_ms + 1), "limit": "1000"})
        rows = parse_binance_funding_history(resp.content, symbol)
    else:
        raise ValueError(f"{venue} has no perpetual funding")
    return [r for r in rows if r.funding_ms > after_ms]
