"""engine.sdnotify against real AF_UNIX datagram sockets: the address forms, the watchdog
variables, the messages, and a manager that is not there."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.sdnotify import MAX_STATUS, NotifyError, SdNotifier, parse_socket, parse_watchdog


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A stand-in for systemd's notify socket: a bound datagram socket in tmp."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued (non-blocking)."""
    out: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


def test_parse_socket_accepts_paths_and_abstract_names() -> None:
    assert parse_socket("/run/systemd/notify") == "/run/systemd/notify"
    assert parse_socket("@/org/freedesktop/systemd1/notify") == "\0/org/freedesktop/systemd1/notify"
    for bad in ("", "@", "relative/notify", "vsock:2:1234", "/a\0b"):
        with pytest.raises(NotifyError, match="NOTIFY_SOCKET="):
            parse_socket(bad)


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_parse_socket_returns_an_address_or_a_clear_error(value: str) -> None:
    try:
        address = parse_socket(value)
    except NotifyError as exc:
        assert str(exc).startswith("NOTIFY_SOCKET=")
    else:
        assert address == value if value.startswith("/") else address == "\0" + value[1:] and len(value) > 1


def test_parse_watchdog() -> None:
    assert parse_watchdog(None, None, 10) is None
    assert parse_watchdog("30000000", None, 10) == 30.0
    assert parse_watchdog("500000", "10", 10) == 0.5
    assert parse_watchdog("500000", "11", 10) is None  # inherited: meant for another process
    for usec, pid in (("0", None), ("-5", None), ("1.5", None), ("soon", None), ("", None), ("5", "me")):
        with pytest.raises(NotifyError):
            parse_watchdog(usec, pid, 10)


@given(st.text(max_size=30), st.one_of(st.none(), st.text(max_size=12)))
@example(usec="", pid="0\x1f")  # found by CI: strip() took the unit separator, int() did not
@example(usec="1000", pid="4242\x1f")
@settings(max_examples=300)
def test_parse_watchdog_is_a_positive_time_none_or_a_clear_error(usec: str, pid: str | None) -> None:
    try:
        value = parse_watchdog(usec, pid, 4242)
    except NotifyError as exc:
        assert str(exc).startswith(("WATCHDOG_USEC=", "WATCHDOG_PID="))
    else:
        assert value is None or value > 0


def test_from_env_without_systemd_is_none() -> None:
    assert SdNotifier.from_env({}) is None
    assert SdNotifier.from_env({"NOTIFY_SOCKET": ""}) is None


def test_messages_reach_the_manager(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, pid=1)
    assert notifier is not None and notifier.watchdog_s == 2.0
    try:
        assert notifier.ready("paper active; 0 open groups")
        assert notifier.status("halted (kill)\nREADY=1")  # a newline cannot smuggle a field in
        assert notifier.status("x" * 1000)
        assert notifier.stopping()
    finally:
        notifier.close()
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=paper active; 0 open groups"
    assert sock.recv(4096).decode() == "STATUS=halted (kill) READY=1"
    long = sock.recv(4096).decode()
    assert long.startswith("STATUS=xxx") and len(long) == len("STATUS=") + MAX_STATUS and long.endswith("...")
    assert sock.recv(4096).decode() == "STOPPING=1"
    assert notifier.sent == 4


def test_abstract_namespace_socket() -> None:
    name = f"quantarb-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None and notifier.watchdog_s is None
        assert notifier.shown_address == "@" + name
        assert notifier.ready()
        notifier.close()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_a_missing_manager_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    said: list[str] = []
    notifier = SdNotifier(str(tmp_path / "nobody-listens"), on_error=said.append)
    try:
        assert notifier.ready() is False
        assert notifier.notify("WATCHDOG=1") is False
    finally:
        notifier.close()
    assert len(said) == 1
    assert "cannot notify systemd at" in said[0] and "nobody-listens" in said[0]
    assert notifier.sent == 0


def test_without_a_watchdog_the_task_ends_at_once(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    notifier = SdNotifier(path)
    asyncio.run(asyncio.wait_for(notifier.watchdog(), timeout=5))
    notifier.close()
    assert drain(sock) == []


def test_watchdog_pings_from_the_loop_and_not_while_it_is_blocked(manager: tuple[socket.socket, str]) -> None:
    """The pings come from a task on the loop: blocking the loop for 20 periods stops them
    (checked on the loop's own thread, the only sender, so nothing can arrive late)."""
    sock, path = manager
    notifier = SdNotifier(path, watchdog_s=0.1)  # a ping every 50 ms

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        task = asyncio.create_task(notifier.watchdog())
        before: list[str] = []
        deadline = time.monotonic() + 10
        while len(before) < 3:  # a few periods of the loop running
            assert time.monotonic() < deadline, f"no watchdog pings: {before}"
            await asyncio.sleep(0.05)
            before += drain(sock)
        drain(sock)
        time.sleep(1.0)  # noqa: ASYNC251 (the point: the loop is blocked for 20 periods)
        during = drain(sock)
        after: list[str] = []
        while not after:
            assert time.monotonic() < deadline + 10, "the pings did not resume"
            await asyncio.sleep(0.05)
            after += drain(sock)
        task.cancel()
        return before, during, after

    try:
        before, during, after = asyncio.run(scenario())
    finally:
        notifier.close()
    assert set(before) == {"WATCHDOG=1"}
    assert during == []
    assert set(after) == {"WATCHDOG=1"}


def test_from_env_refuses_what_it_cannot_use(manager: tuple[socket.socket, str]) -> None:
    _sock, path = manager
    with pytest.raises(NotifyError, match="WATCHDOG_USEC="):
        SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30s"})
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000",
                                    "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier is not None and notifier.watchdog_s is None  # the watchdog is another process's
    notifier.close()
