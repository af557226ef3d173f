"""Log lines that a peer can provoke, rate limited: one line per kind per interval.

Anyone who can reach the listener can make it log (a disconnect mid-body, a malformed
request, a timeout). Unlimited, that is a way to fill the disk: 500 requests that hung up
mid-body once wrote 1.6 MB of tracebacks in 30 ms. Each kind of event here is logged at
most once per `interval_s`; the next line says how many were left out in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitFilter", "RateLimitedLog"]

DEFAULT_INTERVAL_S = 10.0


@dataclass(slots=True)
class _Window:
    last: float
    suppressed: int = 0


class _Limiter:
    def __init__(self, interval_s: float, monotonic: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._windows: dict[object, _Window] = {}

    def admit(self, key: object) -> int | None:
        """None: leave this one out (counted); otherwise how many were left out before it."""
        now = self._monotonic()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= 1024:  # keys are fixed strings; this only caps a mistake
                self._windows.clear()
            self._windows[key] = _Window(now)
            return 0
        if now - window.last < self.interval_s:
            window.suppressed += 1
            return None
        suppressed, window.last, window.suppressed = window.suppressed, now, 0
        return suppressed


def _more(suppressed: int, interval_s: float) -> str:
    return f" ({suppressed} more like this in the last {interval_s:g}s)" if suppressed else ""


class RateLimitedLog:
    """`warning(kind, message, *args)` logs at most once per `interval_s` per `kind`."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limiter = _Limiter(interval_s, monotonic)

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log `message % args` unless this kind was logged within the interval; True if logged."""
        suppressed = self._limiter.admit(kind)
        if suppressed is None:
            return False
        self._logger.warning(message + _more(suppressed, self._limiter.interval_s), *args)
        return True


class RateLimitFilter(logging.Filter):
    """A filter for a logger a library writes to (uvicorn's): records with the same level and
    message template pass at most once per `interval_s`."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._limiter = _Limiter(interval_s, monotonic)

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self._limiter.admit((record.levelno, str(record.msg)))
        if suppressed is None:
            return False
        if suppressed:
            record.msg = str(record.msg) + _more(suppressed, self._limiter.interval_s)
        return True
