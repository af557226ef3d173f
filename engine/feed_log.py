"""Why a feed fails, in the log: the cause once per distinct error, and when the feed is back.

A feed retries on its own (backoff, REST fallback) and its health row shows the latest
error, but only on a screen: an unattended engine's log said nothing while, say, a DNS
failure kept a venue away for an hour. A feed whose REST fallback fails every second must
not write a line every second either: the same error again is counted and said at most
once per `repeat_s`, with the number of failures since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.clock import Clock
from engine.events import EngineEvent, EventLog
from feeds.base import WsFeed


@dataclass(slots=True)
class _Failing:
    said_ns: dict[str, int] = field(default_factory=dict)  # per distinct error: when it was last logged
    last_error: str = ""
    failures: int = 0  # since the feed was last live
    unsaid: int = 0  # failures not logged since the last line


class FeedErrorLog:
    """A FeedObserver (feeds.base) that writes to the engine's event log. A socket failure and
    its REST fallback's failure alternate (two errors): each is said once per `repeat_s`."""

    def __init__(self, events: EventLog, clock: Clock, *, repeat_s: float = 60.0) -> None:
        self._events = events
        self._clock = clock
        self._repeat_ns = int(repeat_s * 1e9)
        self._failing: dict[str, _Failing] = {}

    def watch(self, feeds: list[WsFeed]) -> None:
        for feed in feeds:
            feed.observer = self

    def feed_failed(self, feed: str, venue: str, error: str) -> None:
        now = self._clock.monotonic_ns()
        state = self._failing.get(feed)
        if state is None:
            state = self._failing[feed] = _Failing()
        state.failures += 1
        state.last_error = error
        said = state.said_ns.get(error)
        if said is not None and now - said < self._repeat_ns:
            state.unsaid += 1
            return
        text = f"feed {feed} ({venue}) failing: {error}"
        if state.unsaid:
            text += f" ({state.unsaid} more failure(s) since the last line, {state.failures} since it was live)"
        state.said_ns[error], state.unsaid = now, 0
        self._events.emit(EngineEvent(
            self._clock.time_ms(), "feed", text, "warn",
            data={"component": "feed", "event": "feed_failed", "feed": feed, "venue": venue, "error": error,
                  "failures": state.failures},
        ))

    def feed_live(self, feed: str, venue: str) -> None:
        state = self._failing.pop(feed, None)
        if state is None:
            return
        self._events.emit(EngineEvent(
            self._clock.time_ms(), "feed",
            f"feed {feed} ({venue}) live again after {state.failures} failure(s); last: {state.last_error}",
            data={"component": "feed", "event": "feed_live", "feed": feed, "venue": venue,
                  "failures": state.failures},
        ))
