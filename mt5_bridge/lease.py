"""One EA instance per terminal: a lease held by the instance that speaks for the terminal.

Two EAs started with the same terminal id (two charts, two terminals, two machines) would
each be served every command, and both would execute it. The EA names itself in the
optional `X-QA-Instance` header (docs/mt5-protocol.md, Authentication); the first instance
to ask for commands, push ticks or report the account holds the terminal's lease, every such
request renews it, and another instance is refused (409) until the holder has been silent
for `lease_ms`. So a second instance stands by, and takes over when the first one stops.

The lease must outlast a command (`venues.mt5.command_ttl_ms`): an instance that froze
holding a command finds it expired when it wakes, since the EA refuses expired commands.
Requests without the header (EAs older than it) are outside the lease, as before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.clock import Clock

__all__ = ["DEFAULT_LEASE_MS", "INSTANCE_HEADER", "InstanceLeases", "LeaseRefusal", "valid_instance"]

INSTANCE_HEADER = "x-qa-instance"
DEFAULT_LEASE_MS = 10_000
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_instance(value: str) -> bool:
    """An instance id is 1 to 64 characters of `[A-Za-z0-9_-]`."""
    return _INSTANCE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class LeaseRefusal:
    """Another instance holds the terminal, for `remaining_ms` more unless it speaks again."""

    holder: str
    remaining_ms: int


@dataclass(slots=True)
class _Lease:
    instance: str
    expires_ns: int


class InstanceLeases:
    """The holder of each terminal's lease (in memory: after a listener restart the first
    instance to speak takes it). Time is the clock's monotonic reading."""

    def __init__(self, clock: Clock, lease_ms: int = DEFAULT_LEASE_MS) -> None:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be > 0")
        self._clock = clock
        self.lease_ms = lease_ms
        self._leases: dict[str, _Lease] = {}

    def holder(self, terminal: str) -> str | None:
        """The instance holding `terminal` now, if any."""
        lease = self._leases.get(terminal)
        if lease is None or lease.expires_ns <= self._clock.monotonic_ns():
            return None
        return lease.instance

    def claim(self, terminal: str, instance: str) -> tuple[LeaseRefusal | None, str | None]:
        """Take or renew `terminal`'s lease for `instance`.

        Returns (refusal, previous): a refusal when another instance holds it; otherwise
        None and the instance whose lapsed lease was taken over ("" for a first holder, None
        when `instance` already held it).
        """
        now = self._clock.monotonic_ns()
        expires = now + self.lease_ms * 1_000_000
        lease = self._leases.get(terminal)
        if lease is None:
            self._leases[terminal] = _Lease(instance, expires)
            return None, ""
        if lease.instance == instance:
            lease.expires_ns = expires
            return None, None
        if lease.expires_ns > now:
            return LeaseRefusal(lease.instance, -(-(lease.expires_ns - now) // 1_000_000)), None
        previous = lease.instance
        self._leases[terminal] = _Lease(instance, expires)
        return None, previous
