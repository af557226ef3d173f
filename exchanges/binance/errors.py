"""Binance's answers that are not successes, classed into the shared `ErrorKind`.

The rules, from the Binance error-code and general-info documents:

- HTTP 418: the IP is banned (2 minutes to 3 days): `halt`, with the wait from Retry-After.
- HTTP 429, -1003 (request weight), -1015 (too many new orders): `rate_limited`, with the
  wait from Retry-After (REST) or `retryAfter` (WebSocket API, a timestamp).
- -1021 (timestamp outside recvWindow or ahead of the server): `clock_skew`; the request was
  refused before it reached the engine, so it may go again after a resync.
- -1002, -1022, -2014, -2015, -4056: key, signature or permission: `auth`.
- HTTP 5xx, -1000 (unknown), -1006 (unexpected response), -1007 (timeout): the request may
  have executed: `unknown` (query by client order id, never send again). The docs name two
  5xx answers that did *not* execute: "Service Unavailable." and -1001 "Internal error;
  unable to process your request" (and -1008, server busy): `retryable`.
- -2010 "Duplicate order sent." (spot) and -4116 "ClientOrderId is duplicated." (USD-M): an
  order with our client order id is open on the venue: `unknown` (it exists; ask about it).
- HTTP 403 (web application firewall): `halt`.
- Everything else with a code (-1013 filter failures, -1100.. parameter errors, -2010
  insufficient balance, -2011 cancel rejected, -2013 no such order, -2019 margin, -4xxx):
  `rejected`: final, nothing happened. A 4xx without a readable body is `rejected` too, and
  anything else unreadable is `unknown`.
"""

from __future__ import annotations

from exchanges.venue import ErrorKind, VenueError

VENUE = "binance"

_AUTH = frozenset({-1002, -1022, -2014, -2015, -4056})
_UNKNOWN = frozenset({-1000, -1006, -1007})
_RETRYABLE = frozenset({-1001, -1008})
_RATE = frozenset({-1003, -1015})
DUPLICATE_CODES = frozenset({-4116})
NOT_FOUND_CODES = frozenset({-2013})
CANCEL_REJECTED = -2011
DUPLICATE_MSG = "Duplicate order sent."
UNKNOWN_ORDER_MSG = "Unknown order sent."


def classify(
    *, http_status: int | None, code: int | None, msg: str, retry_after_s: float | None = None
) -> VenueError:
    """One failure as a `VenueError` (its `code` is the Binance code, or `http-<status>`)."""
    kind = _kind(http_status, code, msg)
    label = str(code) if code is not None else f"http-{http_status}"
    return VenueError(VENUE, kind, label, msg[:300], retry_after_s=retry_after_s, http_status=http_status)


def _kind(http_status: int | None, code: int | None, msg: str) -> ErrorKind:
    if http_status == 418:
        return ErrorKind.HALT
    if http_status == 429 or code in _RATE:
        return ErrorKind.RATE_LIMITED
    if code == -1021:
        return ErrorKind.CLOCK_SKEW
    if code in _AUTH or http_status == 401:
        return ErrorKind.AUTH
    if is_duplicate_code(code, msg):
        return ErrorKind.UNKNOWN
    if code in _RETRYABLE or msg.strip() == "Service Unavailable.":
        return ErrorKind.RETRYABLE
    if code in _UNKNOWN:
        return ErrorKind.UNKNOWN
    if http_status is not None and http_status >= 500:
        return ErrorKind.UNKNOWN
    if http_status == 403:
        return ErrorKind.HALT
    if code is not None or (http_status is not None and 400 <= http_status < 500):
        return ErrorKind.REJECTED
    return ErrorKind.UNKNOWN


def is_duplicate_code(code: int | None, msg: str) -> bool:
    return code in DUPLICATE_CODES or (code == -2010 and msg.strip() == DUPLICATE_MSG)


def is_duplicate(error: VenueError) -> bool:
    return is_duplicate_code(_int(error.code), error.message)


def is_not_found(error: VenueError) -> bool:
    """The venue does not know the order (-2013 on a query)."""
    return _int(error.code) in NOT_FOUND_CODES


def is_not_open(error: VenueError) -> bool:
    """A cancel found no open order with that id (-2011 "Unknown order sent.")."""
    return _int(error.code) == CANCEL_REJECTED


def _int(label: str) -> int | None:
    try:
        return int(label)
    except ValueError:
        return None


__all__ = ["VENUE", "classify", "is_duplicate", "is_duplicate_code", "is_not_found", "is_not_open"]
