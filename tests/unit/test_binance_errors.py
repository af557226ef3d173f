"""The Binance error map (errors.classify) and the REST client's rate gate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from exchanges.binance.errors import classify, is_duplicate, is_not_found, is_not_open
from exchanges.binance.rest import RateGate
from exchanges.venue import ErrorKind

K = ErrorKind


@pytest.mark.parametrize(("status", "code", "msg", "kind"), [
    (418, -1003, "Way too much request weight used; IP banned until 1659146400000.", K.HALT),
    (429, -1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE.", K.RATE_LIMITED),
    (400, -1015, "Too many new orders; current limit is 100 orders per 10 SECOND.", K.RATE_LIMITED),
    (400, -1021, "Timestamp for this request is outside of the recvWindow.", K.CLOCK_SKEW),
    (400, -1022, "Signature for this request is not valid.", K.AUTH),
    (401, -2014, "API-key format invalid.", K.AUTH),
    (401, -2015, "Invalid API-key, IP, or permissions for action.", K.AUTH),
    (503, None, "Unknown error, please check your request or try again later.", K.UNKNOWN),
    (503, None, "Service Unavailable.", K.RETRYABLE),
    (500, -1001, "Internal error; unable to process your request. Please try again.", K.RETRYABLE),
    (400, -1008, "Server is currently overloaded with other requests. Please try again in a few minutes.",
     K.RETRYABLE),
    (408, -1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
     K.UNKNOWN),
    (400, -1006, "An unexpected response was received from the message bus. Execution status unknown.", K.UNKNOWN),
    (400, -2010, "Duplicate order sent.", K.UNKNOWN),
    (400, -4116, "ClientOrderId is duplicated.", K.UNKNOWN),
    (400, -2010, "Account has insufficient balance for requested action.", K.REJECTED),
    (400, -1013, "Filter failure: LOT_SIZE", K.REJECTED),
    (400, -1121, "Invalid symbol.", K.REJECTED),
    (400, -2011, "Unknown order sent.", K.REJECTED),
    (400, -2013, "Order does not exist.", K.REJECTED),
    (400, -2019, "Margin is insufficient.", K.REJECTED),
    (400, -4164, "Order's notional must be no smaller than 100 (unless you choose reduce only).", K.REJECTED),
    (403, None, "<html>WAF</html>", K.HALT),
    (404, None, "(empty body)", K.REJECTED),
    (None, None, "??", K.UNKNOWN),
])
def test_classify(status: int | None, code: int | None, msg: str, kind: ErrorKind) -> None:
    error = classify(http_status=status, code=code, msg=msg, retry_after_s=3.0)
    assert error.kind is kind
    assert error.code == (str(code) if code is not None else f"http-{status}")
    assert error.retry_after_s == 3.0 and error.http_status == status


def test_the_predicates_the_gateway_acts_on() -> None:
    dup = classify(http_status=400, code=-2010, msg="Duplicate order sent.")
    assert is_duplicate(dup) and not is_duplicate(classify(http_status=400, code=-2010, msg="Market is closed."))
    assert is_not_found(classify(http_status=400, code=-2013, msg="Order does not exist."))
    assert is_not_open(classify(http_status=400, code=-2011, msg="Unknown order sent."))


@given(st.one_of(st.none(), st.integers(100, 599)), st.one_of(st.none(), st.integers(-10_000, 10_000)),
       st.text(max_size=400))
def test_classify_always_answers_one_kind_and_a_bounded_message(status: int | None, code: int | None, msg: str) -> None:
    error = classify(http_status=status, code=code, msg=msg)
    assert error.kind in set(ErrorKind)
    assert len(error.message) <= 300


def test_rate_gate_honours_retry_after_then_lets_requests_go() -> None:
    clock = ManualClock(1_000_000)
    gate = RateGate(clock, 6000)
    assert gate.wait_s(1) == (0.0, False)
    assert gate.observe(429, {"retry-after": "2", "x-mbx-used-weight-1m": "6100"}) == 2.0
    assert gate.wait_s(1) == (2.0, False)
    clock.advance(ms=1500)
    assert gate.wait_s(1) == (0.5, False)
    clock.advance(ms=500)
    wait, banned = gate.wait_s(1)
    assert not banned
    # Still over the minute's weight (6100 of 6000): wait for the next minute, not hammer the venue.
    assert wait == pytest.approx((60_000 - (1_002_000 % 60_000)) / 1000)


def test_rate_gate_stops_short_of_the_limit_before_the_venue_refuses() -> None:
    clock = ManualClock(60_000 * 100)
    gate = RateGate(clock, 1000, safety=0.9)
    gate.observe(200, {"x-mbx-used-weight-1m": "890"})
    assert gate.wait_s(10) == (0.0, False)
    assert gate.wait_s(11) == (60.0, False)  # 901 > 900: wait for the minute to roll
    clock.advance(ms=60_000)
    assert gate.wait_s(11) == (0.0, False)


def test_a_ban_is_remembered_as_a_ban_until_it_ends() -> None:
    clock = ManualClock(0)
    gate = RateGate(clock, 6000)
    gate.observe(418, {"retry-after": "120"})
    assert gate.wait_s(1) == (120.0, True)
    clock.advance(ms=120_000)
    assert gate.wait_s(1) == (0.0, False)


def test_a_missing_or_garbled_retry_after_still_waits() -> None:
    clock = ManualClock(0)
    gate = RateGate(clock, 6000)
    assert gate.observe(429, {"retry-after": "soon"}) == 60.0
    assert gate.wait_s(1)[0] == 60.0
