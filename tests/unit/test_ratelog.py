"""Peer-provoked log lines are rate limited: one per kind per interval, with a count of the rest."""

from __future__ import annotations

import logging

import pytest

from mt5_bridge.ratelog import RateLimitedLog, RateLimitFilter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    events = RateLimitedLog(logging.getLogger("t.ratelog"), interval_s=10.0, monotonic=clock)
    caplog.set_level(logging.WARNING, "t.ratelog")
    assert events.warning("disconnect", "client %s went away", "a") is True
    for i in range(499):
        clock.now += 0.001
        assert events.warning("disconnect", "client %s went away", i) is False
    assert events.warning("timeout", "timed out") is True  # another kind has its own window
    assert [r.getMessage() for r in caplog.records] == ["client a went away", "timed out"]
    clock.now = 110.0  # exactly one interval after the first line
    assert events.warning("disconnect", "client %s went away", "b") is True
    assert caplog.records[-1].getMessage() == "client b went away (499 more like this in the last 10s)"
    clock.now += 10.0
    assert events.warning("disconnect", "client %s went away", "c") is True
    assert caplog.records[-1].getMessage() == "client c went away"  # nothing left out since


def test_the_filter_limits_a_library_logger_by_message_template() -> None:
    clock = Clock()
    logger = logging.getLogger("t.ratelog.filter")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    logger.addFilter(RateLimitFilter(interval_s=10.0, monotonic=clock))
    try:
        for _ in range(200):
            logger.warning("Invalid HTTP request received.")
        logger.warning("Exception in ASGI application")
        logger.error("Exception in ASGI application")  # another level: its own window
        clock.now += 10.0
        logger.warning("Invalid HTTP request received.")
        logger.warning("value %d%%", 5)
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "Invalid HTTP request received.",
        "Exception in ASGI application",
        "Exception in ASGI application",
        "Invalid HTTP request received. (199 more like this in the last 10s)",
        "value 5%",
    ]
