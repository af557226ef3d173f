"""Which alerts go out: deduplication, a rate limit and daily PnL levels, on an injected clock.

An unattended engine must say what matters without flooding the operator's phone:

- the same alert (same key) again within `dedup_ms` is counted, not sent; the next one sent
  for that key says how many were left out;
- at most `max_per_minute` messages in any 60 s: further alerts are held back and counted, and
  the next message sent says how many. Urgent alerts (a halt, a kill, a failed compensation,
  the process stopping) always go: a burst is better than a halt nobody hears of;
- each daily PnL level is said once per UTC day, when today's realized PnL reaches it (at or
  below a negative level, at or above a positive one).

Pure: the caller passes the time; nothing here sleeps, sends or reads a clock.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["RATE_WINDOW_MS", "AlertPolicy", "PnlLevels", "Verdict", "channel_label"]

RATE_WINDOW_MS = 60_000
_MAX_KEYS = 10_000  # keys remembered for deduplication; the stale ones go first

# Schemes whose host is a host (a webhook), not a token: shown as `json://host:port/***`.
_HOST_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def channel_label(url: str) -> str:
    """What may be shown of an alert URL: its scheme, and for a plain webhook its host and
    port; everything else (user, password, path, query) is `***`. Apprise URLs carry their
    tokens anywhere (`tgram://<bot token>/<chat>`, `discord://<id>/<token>`), so nothing
    but the scheme is safe in general. Never raises."""
    found = _URL.match(url)
    if found is None:
        return "***"
    scheme = found["scheme"].lower()
    if scheme in _HOST_SCHEMES:
        authority = re.split(r"[/?#]", found["rest"], maxsplit=1)[0].rsplit("@", 1)[-1]
        if _HOST.match(authority):
            return f"{scheme}://{authority}/***"
    return f"{scheme}://***"


@dataclass(slots=True, frozen=True)
class Verdict:
    """Whether to send now; when sending, what was left out before it."""

    send: bool
    repeats: int = 0  # this key's alerts left out since it was last sent
    held_back: int = 0  # alerts the rate limit held back since the last message sent
    why_not: str = ""  # "duplicate" or "rate limit" when not sent


class AlertPolicy:
    """Deduplication per key and a sliding 60 s rate limit."""

    def __init__(self, *, dedup_ms: int, max_per_minute: int) -> None:
        if dedup_ms < 0 or max_per_minute < 1:
            raise ValueError("dedup_ms must be >= 0 and max_per_minute >= 1")
        self._dedup_ms = dedup_ms
        self._max = max_per_minute
        self._last_sent: dict[str, int] = {}
        self._repeats: dict[str, int] = {}
        self._sent: deque[int] = deque()
        self._held_back = 0
        self.duplicates = 0  # totals since start
        self.rate_limited = 0

    def decide(self, key: str, *, urgent: bool, now_ms: int) -> Verdict:
        last = self._last_sent.get(key)
        if last is not None and now_ms - last < self._dedup_ms:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            self.duplicates += 1
            return Verdict(False, why_not="duplicate")
        while self._sent and now_ms - self._sent[0] >= RATE_WINDOW_MS:
            self._sent.popleft()
        if len(self._sent) >= self._max and not urgent:
            self._held_back += 1
            self.rate_limited += 1
            return Verdict(False, why_not="rate limit")
        self._sent.append(now_ms)
        self._remember(key, now_ms)
        verdict = Verdict(True, repeats=self._repeats.pop(key, 0), held_back=self._held_back)
        self._held_back = 0
        return verdict

    def _remember(self, key: str, now_ms: int) -> None:
        self._last_sent[key] = now_ms
        if len(self._last_sent) > _MAX_KEYS:
            for old in sorted(self._last_sent, key=self._last_sent.__getitem__)[: _MAX_KEYS // 10]:
                del self._last_sent[old]
                self._repeats.pop(old, None)


class PnlLevels:
    """Today's realized PnL against the configured levels: each one said once per UTC day."""

    def __init__(self, levels: Iterable[Decimal]) -> None:
        self._levels = tuple(sorted(set(levels)))
        if any(level == 0 for level in self._levels):
            raise ValueError("a PnL level must not be 0")
        self._day: int | None = None
        self._said: set[Decimal] = set()

    @property
    def levels(self) -> tuple[Decimal, ...]:
        return self._levels

    def observe(self, day: int, pnl: Decimal) -> list[Decimal]:
        """The levels reached for the first time on `day` (a new day forgets the old one's),
        the furthest from 0 last."""
        if day != self._day:
            self._day = day
            self._said = set()
        reached = [lv for lv in self._levels if lv not in self._said and (pnl <= lv if lv < 0 else pnl >= lv)]
        self._said.update(reached)
        return sorted(reached, key=abs)
