"""systemd's readiness and watchdog notifications (sd_notify(3)), spoken directly.

Under a `Type=notify` unit systemd sets `$NOTIFY_SOCKET`: an AF_UNIX datagram socket, a
path, or a name in Linux's abstract namespace when it starts with `@`. A notification is one
datagram of newline-separated `KEY=VALUE` lines. quantarb sends `READY=1` once the engine
runs, `STATUS=...` (what `systemctl status` shows), `STOPPING=1` when a stop begins, and,
when the unit sets `WatchdogSec=`, `WATCHDOG=1` every half of `$WATCHDOG_USEC`, as
sd_watchdog_enabled(3) recommends; a service that misses the deadline is killed (SIGABRT)
and, with `Restart=on-failure`, started again.

The protocol is this small, so it is spoken here rather than through libsystemd or a package.
The watchdog is fed by a task on the engine's event loop (`watchdog()`), never by a thread:
a blocked loop then sends nothing, which is exactly what the watchdog exists to notice.
Sending never blocks and never raises: a notification that cannot be sent is reported once
(`on_error`) and the engine carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Callable, Mapping

__all__ = ["NotifyError", "SdNotifier", "parse_socket", "parse_watchdog"]

MAX_STATUS = 400  # characters of a STATUS= line; systemctl shows one line
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts "²", which int() refuses


class NotifyError(ValueError):
    """`$NOTIFY_SOCKET` or `$WATCHDOG_USEC` holds something this protocol cannot use."""


def parse_socket(value: str) -> str:
    """The AF_UNIX address of a `$NOTIFY_SOCKET` value: an absolute path, or `@name` for the
    abstract namespace (returned with its leading NUL). Anything else (a relative path, the
    `vsock:` addresses of virtual machines) is refused with NotifyError."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/") and "\0" not in value:
        return value
    shown = value if value.isprintable() else repr(value)
    raise NotifyError(f"NOTIFY_SOCKET={shown[:120]}: not an AF_UNIX socket (an absolute path or @name)")


def parse_watchdog(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """The watchdog timeout in seconds for this process, or None when there is none for it:
    `$WATCHDOG_USEC` unset, or `$WATCHDOG_PID` naming another process (an inherited
    environment). A value that is not a positive whole number of microseconds, or a pid that is
    not a number, is refused with NotifyError."""
    if usec is None:
        return None
    if pid is not None:
        number = pid.strip()  # the text checked is the text read (int() strips less than strip())
        if not _DIGITS.fullmatch(number):
            raise NotifyError(f"WATCHDOG_PID={pid[:40]!r}: not a process id")
        if int(number) != own_pid:
            return None
    text = usec.strip()
    if not _DIGITS.fullmatch(text) or int(text) <= 0:
        raise NotifyError(f"WATCHDOG_USEC={usec[:40]!r}: not a positive number of microseconds")
    return int(text) / 1_000_000


class SdNotifier:
    """One open datagram socket to the service manager; `from_env` builds it."""

    def __init__(
        self, address: str, *, watchdog_s: float | None = None, on_error: Callable[[str], None] | None = None
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._on_error = on_error
        self._reported = False
        self.sent = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> SdNotifier | None:
        """The notifier systemd asked for, or None when not run by it (no `$NOTIFY_SOCKET`).
        NotifyError for a value that cannot be used (the caller says so and runs without)."""
        env = os.environ if env is None else env
        value = env.get("NOTIFY_SOCKET")
        if not value:
            return None
        address = parse_socket(value)
        watchdog_s = parse_watchdog(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"),
                                    os.getpid() if pid is None else pid)
        return cls(address, watchdog_s=watchdog_s, on_error=on_error)

    @property
    def shown_address(self) -> str:
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def notify(self, *fields: str) -> bool:
        """Send `fields` (each `KEY=VALUE`, no newline) as one datagram; False if it could not
        be sent (reported once through `on_error`)."""
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._reported and self._on_error is not None:
                self._reported = True
                self._on_error(f"cannot notify systemd at {self.shown_address}: {exc.strerror or exc} "
                               f"(said once; the engine carries on)")
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *(() if status is None else (_status_field(status),)))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *(() if status is None else (_status_field(status),)))

    def status(self, text: str) -> bool:
        return self.notify(_status_field(text))

    async def watchdog(self) -> None:
        """`WATCHDOG=1` every half of the watchdog timeout until cancelled (returns at once
        without a watchdog). Runs on the engine's loop: a blocked loop sends nothing."""
        if self.watchdog_s is None:
            return
        period = self.watchdog_s / 2
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(period)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def _status_field(text: str) -> str:
    """A STATUS= line: one line (a newline would start another field), bounded."""
    flat = " ".join(text.split())
    return "STATUS=" + (flat if len(flat) <= MAX_STATUS else flat[: MAX_STATUS - 3] + "...")
