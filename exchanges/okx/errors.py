"""OKX error codes onto the shared `ErrorKind` (exchanges/venue.py): what the gateway does next.

OKX answers business failures with HTTP 200 and a `code` (all failed: "1", partly: "2") plus a
per-item `sCode`; authentication and rate limits may come with 401/429. The map below is from
the OKX v5 error-code tables (venue-protocols.md B). Rules the gateway lives by:

- order entry (place): anything that may have reached the matching engine is `unknown`: ask by
  client order id, never send again. A 5xx, a timeout, OKX's own "order timed out" (51149),
  "system busy" (50013) and a duplicate clOrdId (51016: an order with that id exists) are
  unknown. An unmapped code is unknown too: a guess would be worse.
- reads and cancels: a transient failure is `retryable`, since repeating them changes nothing.
- `rate_limited` waits before the venue bans us; `clock_skew` resyncs the server time offset
  and retries; `auth` and `halt` stop trading on the venue until someone looks.
"""

from __future__ import annotations

from exchanges.venue import ErrorKind, VenueError

VENUE = "okx"

DUPLICATE_CL_ORD_ID = "51016"
ORDER_NOT_FOUND = "51603"
CANCEL_FAILED = "51400"  # filled, canceled or does not exist
ALREADY_CANCELED = "51401"
ALREADY_FINISHED = "51402"
RATE_LIMIT = "50011"
TIMESTAMP_EXPIRED = "50102"

_RATE_LIMITED = frozenset({"50011", "50061", "60014", "429"})
_CLOCK_SKEW = frozenset({"50102", "60006"})
_AUTH = frozenset({
    "50100",  # API frozen
    "50101",  # key does not match the environment (demo key on live, or the reverse)
    "50103", "50104", "50105", "50106", "50107",  # missing key / passphrase / header, wrong passphrase
    "50110",  # IP not on the key's allow-list
    "50111",  # invalid OK-ACCESS-KEY
    "50112",  # invalid OK-ACCESS-TIMESTAMP format
    "50113",  # invalid signature
    "50114",  # invalid authorization
    "50120",  # the key lacks the permission
    "60005", "60007", "60009", "60011", "60024",  # WebSocket: invalid key / sign, login failed, log in first
})  # fmt: skip
_HALT = frozenset({
    "50007",  # account blocked
    "50009",  # account suspended (liquidation)
    "51009",  # order placement function blocked by the platform
    "51024",  # trading account frozen
})  # fmt: skip
# May have reached the engine: on order entry these are `unknown`, on reads `retryable`.
_AMBIGUOUS = frozenset({"50001", "50004", "50013", "50026", "51149", "1", "2"})
_REJECTED = frozenset({
    "50000", "50002", "50014", "50015", "50016", "50024",  # empty body, bad JSON, missing / conflicting parameters
    "51000", "51001", "51002", "51004", "51006", "51008", "51010", "51020", "51023", "51119", "51121", "51131",
    "51137", "51138", "51201", "51202", "51205", "51400", "51401", "51402", "51603",
    "60012", "60018",
})  # fmt: skip


def classify(code: str, *, order_entry: bool, http_status: int | None = None) -> ErrorKind:
    """What kind of failure `code` is (an sCode or top-level code), for order entry or not."""
    if code in _RATE_LIMITED or http_status == 429:
        return ErrorKind.RATE_LIMITED
    if code in _CLOCK_SKEW:
        return ErrorKind.CLOCK_SKEW
    if code in _AUTH or http_status in (401, 403):
        return ErrorKind.AUTH
    if code in _HALT:
        return ErrorKind.HALT
    if code == DUPLICATE_CL_ORD_ID:
        return ErrorKind.UNKNOWN if order_entry else ErrorKind.REJECTED
    if code in _REJECTED:
        return ErrorKind.REJECTED
    if code.startswith("51") and code not in _AMBIGUOUS:
        return ErrorKind.REJECTED  # a trade-function refusal: the order was not accepted
    if http_status is not None and http_status >= 500:
        return ErrorKind.UNKNOWN if order_entry else ErrorKind.RETRYABLE
    return ErrorKind.UNKNOWN if order_entry else ErrorKind.RETRYABLE


def okx_error(
    code: str, message: str, *, order_entry: bool, http_status: int | None = None, retry_after_s: float | None = None
) -> VenueError:
    """A classed VenueError; a rate limit without a Retry-After waits one OKX window (2 s)."""
    kind = classify(code, order_entry=order_entry, http_status=http_status)
    if kind is ErrorKind.RATE_LIMITED and retry_after_s is None:
        retry_after_s = 2.0
    return VenueError(VENUE, kind, code, message[:200], retry_after_s=retry_after_s, http_status=http_status)


__all__ = [
    "ALREADY_CANCELED", "ALREADY_FINISHED", "CANCEL_FAILED", "DUPLICATE_CL_ORD_ID", "ORDER_NOT_FOUND",
    "RATE_LIMIT", "TIMESTAMP_EXPIRED", "VENUE", "classify", "okx_error",
]  # fmt: skip
