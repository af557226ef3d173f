"""Feed lifecycle pieces: reconnect backoff and per-feed health.

Health is plain mutable state updated on the feed's own task and read by the runtime
snapshot (same event loop, so no locks). Rates are computed when read, from the counters,
so the hot path only increments integers.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class FeedState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    REST = "rest"  # socket down, reconnecting with backoff (or transport = "rest"): REST polling
    STOPPED = "stopped"


class Backoff:
    """Exponential backoff with full jitter and a cap.

    Delay n is uniform in [base * factor**n * (1 - jitter), base * factor**n], capped at
    `cap_s`: reconnect storms from many clients spread out, and the wait never exceeds the
    cap however long the venue stays down.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        cap_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.3,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or cap_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= cap, factor >= 1, 0 <= jitter < 1")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * self.factor**self.attempt)
        self.attempt += 1
        return ceiling * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class FeedHealth:
    """What an operator needs to trust a feed: state, freshness, throughput, failures."""

    name: str
    venue: str
    transport: str = "ws"
    state: FeedState = FeedState.CONNECTING
    frames: int = 0
    quotes: int = 0
    reconnects: int = 0
    rest_polls: int = 0
    last_frame_ns: int = 0
    last_error: str = ""
    dropped: Counter[str] = field(default_factory=Counter)
    _rate_ns: int = 0
    _rate_frames: int = 0
    _rate: float = 0.0

    def frame_age_ms(self, now_ns: int) -> float | None:
        if not self.last_frame_ns:
            return None
        return (now_ns - self.last_frame_ns) / 1e6

    def frames_per_s(self, now_ns: int, window_ns: int = 1_000_000_000) -> float:
        """Frames per second over the last window of at least one second (read side)."""
        if not self._rate_ns:
            self._rate_ns, self._rate_frames = now_ns, self.frames
            return 0.0
        elapsed = now_ns - self._rate_ns
        if elapsed >= window_ns:
            self._rate = (self.frames - self._rate_frames) / (elapsed / 1e9)
            self._rate_ns, self._rate_frames = now_ns, self.frames
        return self._rate

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())
