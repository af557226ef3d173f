"""The OKX error map: what the gateway does next for each code (retryable, rejected, unknown,
rate limited, clock skew, auth, halt)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchanges.okx.errors import classify, okx_error
from exchanges.venue import ErrorKind

R, J, U, L, C, A, H = (ErrorKind.RETRYABLE, ErrorKind.REJECTED, ErrorKind.UNKNOWN, ErrorKind.RATE_LIMITED,
                       ErrorKind.CLOCK_SKEW, ErrorKind.AUTH, ErrorKind.HALT)


@pytest.mark.parametrize(
    ("code", "entry", "read"),
    [
        ("50011", L, L), ("50061", L, L), ("60014", L, L),
        ("50102", C, C), ("60006", C, C),
        ("50111", A, A), ("50113", A, A), ("50105", A, A), ("50103", A, A), ("50101", A, A), ("60009", A, A),
        ("50007", H, H), ("51024", H, H),
        ("51016", U, J),  # a duplicate id on entry: that order exists, ask for it
        ("51149", U, R), ("50013", U, R), ("50001", U, R), ("50004", U, R),
        ("51000", J, J), ("51001", J, J), ("51008", J, J), ("51020", J, J), ("51121", J, J), ("51131", J, J),
        ("51400", J, J), ("51603", J, J), ("51999", J, J),  # any other trade-function refusal
        ("99999", U, R),  # unmapped: never guessed to be harmless on order entry
    ],
)
def test_codes(code: str, entry: ErrorKind, read: ErrorKind) -> None:
    assert classify(code, order_entry=True) is entry
    assert classify(code, order_entry=False) is read


def test_http_status_decides_when_the_body_does_not() -> None:
    assert classify("", order_entry=True, http_status=429) is L
    assert classify("", order_entry=False, http_status=401) is A
    assert classify("", order_entry=True, http_status=503) is U
    assert classify("", order_entry=False, http_status=503) is R


def test_rate_limit_waits_one_window_when_the_venue_gives_no_retry_after() -> None:
    assert okx_error("50011", "Too Many Requests", order_entry=True).retry_after_s == 2.0
    assert okx_error("50011", "x", order_entry=True, retry_after_s=7.5).retry_after_s == 7.5
    assert okx_error("51000", "x", order_entry=True).retry_after_s is None


@given(st.text(max_size=12), st.booleans(), st.one_of(st.none(), st.integers(100, 599)), st.text(max_size=500))
def test_every_code_gets_a_kind_and_a_bounded_message(code: str, entry: bool, status: int | None, msg: str) -> None:
    err = okx_error(code, msg, order_entry=entry, http_status=status)
    assert err.kind in ErrorKind
    assert len(err.message) <= 200
    assert err.code == code and err.venue == "okx"
