"""Request signatures of the MT5 protocol (docs/mt5-protocol.md, Authentication).

Every EA request carries three headers:

    X-QA-Terminal:  the terminal id (`[A-Za-z0-9_]{1,32}`, as configured)
    X-QA-Timestamp: unix milliseconds, decimal digits
    X-QA-Signature: lowercase hex HMAC-SHA256, keyed with that terminal's secret, over
                    timestamp + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + body

`path_with_query` is the request target exactly as sent (`/mt5/commands?wait_ms=0`; no `?`
when there is no query) and `body` the exact body bytes (empty for GET).

`SignatureVerifier` refuses (`AuthError`) a request whose timestamp is more than `window_ms`
away from the server's clock, whose signature does not match, whose terminal is unknown, or
whose signature was already accepted within the window (a replay). The answer names only
`signature` or `timestamp`, never which of terminal, secret or body was wrong; an unknown
terminal costs the same HMAC and constant-time comparison as a known one.

Secrets are held in wrappers whose repr is `<secret>`: they never reach a log, a repr or an
exception message.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
from collections.abc import Mapping
from typing import Final, Literal

from core.clock import Clock

__all__ = [
    "HEADER_SIGNATURE",
    "HEADER_TERMINAL",
    "HEADER_TIMESTAMP",
    "WINDOW_MS",
    "AuthError",
    "AuthReason",
    "SignatureVerifier",
    "sign",
    "signing_string",
]

HEADER_TERMINAL: Final = "x-qa-terminal"
HEADER_TIMESTAMP: Final = "x-qa-timestamp"
HEADER_SIGNATURE: Final = "x-qa-signature"
WINDOW_MS: Final = 30_000

AuthReason = Literal["signature", "timestamp"]

_TERMINAL = re.compile(r"[A-Za-z0-9_]{1,32}")
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def signing_string(timestamp_ms: str, method: str, path_with_query: str | bytes, body: bytes) -> bytes:
    """The exact bytes that are signed: `timestamp\\nMETHOD\\npath_with_query\\nbody`."""
    target = path_with_query if isinstance(path_with_query, bytes) else path_with_query.encode("utf-8")
    return b"".join(
        (timestamp_ms.encode("ascii"), b"\n", method.upper().encode("ascii"), b"\n", target, b"\n", body)
    )


def sign(secret: bytes, timestamp_ms: str, method: str, path_with_query: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `signing_string(...)` keyed with `secret`."""
    return hmac.new(secret, signing_string(timestamp_ms, method, path_with_query, body), hashlib.sha256).hexdigest()


class AuthError(Exception):
    """A refused request: answered 401 with `{"error":"unauthorized","reason":<reason>}`."""

    def __init__(self, reason: AuthReason) -> None:
        super().__init__(reason)
        self.reason: AuthReason = reason


class _Secret:
    """A key that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")


class SignatureVerifier:
    """Checks the three X-QA headers of a request against the terminals' secrets.

    `window_ms`: how far (either way) a request timestamp may be from `clock.time_ms()`.
    Accepted signatures are remembered until their timestamp leaves the window, so a replay
    is refused for exactly as long as it would otherwise pass. The cache is also bounded by
    `max_replay_entries` (only authenticated requests enter it, so only a secret holder can
    fill it); when full, the entries closest to leaving the window are dropped first.
    """

    __slots__ = ("_clock", "_dummy", "_expiries", "_heap", "_max_entries", "_secrets", "evictions", "window_ms")

    def __init__(
        self,
        secrets: Mapping[str, bytes],
        clock: Clock,
        window_ms: int = WINDOW_MS,
        *,
        max_replay_entries: int = 100_000,
    ) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        if max_replay_entries <= 0:
            raise ValueError("max_replay_entries must be > 0")
        checked: dict[str, _Secret] = {}
        for terminal, secret in secrets.items():
            if _TERMINAL.fullmatch(terminal) is None:
                raise ValueError(f"invalid terminal id {terminal!r}")
            if not isinstance(secret, bytes):
                raise TypeError(f"the secret of terminal {terminal} must be bytes")
            if not secret:
                raise ValueError(f"the secret of terminal {terminal} is empty")
            checked[terminal] = _Secret(secret)
        self._secrets = checked
        self._clock = clock
        self._dummy = _Secret(os.urandom(32))
        self.window_ms = window_ms
        self._max_entries = max_replay_entries
        self._expiries: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self.evictions = 0

    def __repr__(self) -> str:
        return f"SignatureVerifier(terminals={sorted(self._secrets)}, window_ms={self.window_ms})"

    @property
    def terminals(self) -> frozenset[str]:
        return frozenset(self._secrets)

    @property
    def replay_cache_size(self) -> int:
        return len(self._expiries)

    def verify(
        self,
        *,
        terminal: str | None,
        timestamp: str | None,
        signature: str | None,
        method: str,
        target: bytes,
        body: bytes,
    ) -> str:
        """The terminal id of an authentic, fresh, first-seen request; else raise `AuthError`.

        `target` is the raw request target (path, and `?query` when there is one).
        """
        if terminal is None or signature is None or _TERMINAL.fullmatch(terminal) is None:
            raise AuthError("signature")
        if _SIGNATURE.fullmatch(signature) is None:
            raise AuthError("signature")
        if timestamp is None or _TIMESTAMP.fullmatch(timestamp) is None:
            raise AuthError("timestamp")
        now = self._clock.time_ms()
        sent = int(timestamp)
        if abs(now - sent) > self.window_ms:
            raise AuthError("timestamp")
        known = self._secrets.get(terminal)
        key = (known if known is not None else self._dummy).reveal()
        expected = hmac.new(key, signing_string(timestamp, method, target, body), hashlib.sha256).hexdigest()
        matches = hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))
        if not matches or known is None:
            raise AuthError("signature")
        digest = bytes.fromhex(signature)
        self._forget(now)
        if digest in self._expiries:
            raise AuthError("signature")
        self._remember(digest, sent + self.window_ms)
        return terminal

    def _forget(self, now: int) -> None:
        heap, expiries = self._heap, self._expiries
        while heap and heap[0][0] < now:
            expiry, digest = heapq.heappop(heap)
            if expiries.get(digest) == expiry:
                del expiries[digest]

    def _remember(self, digest: bytes, expiry: int) -> None:
        heap, expiries = self._heap, self._expiries
        while len(expiries) >= self._max_entries and heap:
            old_expiry, old = heapq.heappop(heap)
            if expiries.get(old) == old_expiry:
                del expiries[old]
                self.evictions += 1
        expiries[digest] = expiry
        heapq.heappush(heap, (expiry, digest))
