"""FeedErrorLog: a failing feed's cause in the log, once per distinct error and period."""

from __future__ import annotations

from core.clock import ManualClock
from engine.events import EngineEvent, EventLog
from engine.feed_log import FeedErrorLog


def _log() -> tuple[FeedErrorLog, list[EngineEvent], ManualClock]:
    clock = ManualClock()
    events = EventLog()
    seen: list[EngineEvent] = []
    events.subscribe(seen.append)
    return FeedErrorLog(events, clock, repeat_s=60), seen, clock


DNS = "gaierror: [Errno -2] Name or service not known"
REST = "ConnectError: [Errno -2] Name or service not known"


def test_each_distinct_error_is_said_once_per_period_with_the_count_since() -> None:
    log, seen, clock = _log()
    log.feed_failed("okx", "okx", DNS)  # the socket
    for _ in range(30):  # its REST fallback, every second
        clock.advance(ms=1000)
        log.feed_failed("okx", "okx", REST)
    log.feed_failed("okx", "okx", DNS)  # the next reconnect: said already
    assert [e.text for e in seen] == [f"feed okx (okx) failing: {DNS}", f"feed okx (okx) failing: {REST}"]
    assert all(e.kind == "feed" and e.level == "warn" for e in seen)
    assert seen[0].data == {"component": "feed", "event": "feed_failed", "feed": "okx", "venue": "okx",
                            "error": DNS, "failures": 1}

    clock.advance(ms=31_000)  # 61 s after the first line: the DNS error is said again, with the count
    log.feed_failed("okx", "okx", DNS)
    assert seen[-1].text == (f"feed okx (okx) failing: {DNS} "
                             "(30 more failure(s) since the last line, 33 since it was live)")
    assert seen[-1].data["failures"] == 33
    assert len(seen) == 3


def test_live_again_is_said_only_after_a_failure_and_resets_the_count() -> None:
    log, seen, _clock = _log()
    log.feed_live("binance-usdm", "binance")  # a first connect: nothing to say
    assert seen == []
    log.feed_failed("binance-usdm", "binance", DNS)
    log.feed_failed("binance-usdm", "binance", DNS)
    log.feed_live("binance-usdm", "binance")
    log.feed_live("binance-usdm", "binance")  # REST-only feeds report every poll
    assert [e.text for e in seen] == [
        f"feed binance-usdm (binance) failing: {DNS}",
        f"feed binance-usdm (binance) live again after 2 failure(s); last: {DNS}",
    ]
    assert seen[-1].level == "info" and seen[-1].data["event"] == "feed_live"
    log.feed_failed("binance-usdm", "binance", DNS)  # a new outage is news at once
    assert len(seen) == 3 and seen[-1].data["failures"] == 1


def test_feeds_are_counted_apart() -> None:
    log, seen, _clock = _log()
    log.feed_failed("okx", "okx", DNS)
    log.feed_failed("binance-usdm", "binance", DNS)
    assert [e.data["feed"] for e in seen] == ["okx", "binance-usdm"]
