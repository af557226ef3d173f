"""The listener's connection bound, request deadline and head limit (`mt5_bridge.guard`),
driven by hand: a fake transport and timers that fire only when the test says so. The same
behaviour over real sockets is in tests/integration/test_listener_limits.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from core.clock import ManualClock
from mt5_bridge.app import create_app
from mt5_bridge.guard import MAX_HEAD_BYTES, GuardedHttpProtocol, ListenerLimits, guarded_protocol
from tests.mt5_support import make_rig, signed_headers, state_of

LIMITS = ListenerLimits(max_connections=2, request_timeout_s=7.5, keep_alive_s=3)


class Timer:
    def __init__(self, delay: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.delay, self.callback, self.args = delay, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimers:
    """The event loop for the protocol, except that `call_later` only records: the test fires."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(delay, callback, args)
        self.timers.append(timer)
        return timer

    def armed(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self) -> Timer:
        """Fire the one pending request deadline (as if its time had come)."""
        (timer,) = [t for t in self.armed() if t.delay == LIMITS.request_timeout_s]
        timer.cancelled = True
        timer.callback(*timer.args)
        return timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8787)}.get(name, default)


class Rigged:
    """One server's protocol class, state and app, with hand-fired timers."""

    def __init__(self) -> None:
        self.rig = make_rig(ManualClock())
        self.config = uvicorn.Config(create_app(self.rig.bridge), log_config=None, lifespan="off",
                                     timeout_keep_alive=LIMITS.keep_alive_s)  # as EmbeddedServer sets it
        self.config.load()
        self.state = ServerState()
        self.timers = ManualTimers(asyncio.get_running_loop())
        self.protocol_class = guarded_protocol(LIMITS)

    def connect(self) -> tuple[GuardedHttpProtocol, FakeTransport]:
        protocol = self.protocol_class(config=self.config, server_state=self.state, app_state={},
                                       _loop=self.timers)
        transport = FakeTransport()
        protocol.connection_made(transport)
        return protocol, transport

    def lose(self, protocol: GuardedHttpProtocol, transport: FakeTransport) -> None:
        """What asyncio does once a closed transport is gone."""
        protocol.connection_lost(None)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _answered(transport: FakeTransport, within: float = 5.0) -> None:
    """Until the app has answered on `transport`; fails if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not transport.written:
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer within {within:g}s")
        await asyncio.sleep(0.01)


def _status(written: bytes) -> int:
    return int(written.split(b" ", 2)[1])


def _body(written: bytes) -> Any:
    return json.loads(written.split(b"\r\n\r\n", 1)[1])


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline() -> None:
    r = Rigged()
    _, transport = r.connect()
    (timer,) = r.timers.armed()
    assert timer.delay == LIMITS.request_timeout_s  # armed when the connection opens
    assert not transport.closed
    r.timers.fire()
    assert transport.closed and transport.written == b""  # nothing asked, nothing answered


async def test_a_partial_head_is_answered_408_and_closed() -> None:
    r = Rigged()
    protocol, transport = r.connect()
    protocol.data_received(b"POST /mt5/tick HTTP/1.1\r\nHost: x\r\n")
    await _settle()
    assert not transport.closed  # bytes do not extend the deadline, and do not end it either
    r.timers.fire()
    assert transport.closed
    assert _status(transport.written) == 408 and _body(transport.written) == {"error": "request timeout"}
    assert b"connection: close" in transport.written


async def test_a_partial_body_is_answered_408_and_the_app_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    r = Rigged()
    before = state_of(r.rig)
    protocol, transport = r.connect()
    body = b'{"ticks":[{"symbol":"XAUUSD","bid":1,"ask":2,"time_msc":1}]}'
    headers = signed_headers("POST", "/mt5/tick", body, clock=r.rig.clock)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    protocol.data_received(f"POST /mt5/tick HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
                           + body[:10])
    await _settle()  # the app is waiting for the rest of the body
    assert len(r.state.tasks) == 1
    r.timers.fire()
    await _settle()
    assert transport.closed
    assert _status(transport.written) == 408 and transport.written.count(b"HTTP/1.1") == 1
    assert r.state.tasks == set()  # the app saw a disconnect and ended without answering
    assert state_of(r.rig) == before and r.rig.quotes == []
    assert "Traceback" not in caplog.text


async def test_the_deadline_ends_when_the_request_has_arrived_not_when_it_is_answered() -> None:
    r = Rigged()
    protocol, transport = r.connect()
    headers = signed_headers("GET", "/mt5/commands?wait_ms=1000", b"", clock=r.rig.clock)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    protocol.data_received(f"GET /mt5/commands?wait_ms=1000 HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    assert [t for t in r.timers.armed() if t.delay == LIMITS.request_timeout_s] == []  # a long poll may take its time
    await _answered(transport)
    assert _status(transport.written) == 200


async def test_each_new_request_on_a_kept_connection_gets_its_own_deadline() -> None:
    r = Rigged()
    protocol, transport = r.connect()
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answered(transport)
    assert _status(transport.written) == 200 and not transport.closed
    transport.written = b""
    assert [t.delay for t in r.timers.armed()] == [LIMITS.keep_alive_s]  # uvicorn's idle timer
    protocol.data_received(b"GET /heal")  # the next request starts and stalls
    assert sorted(t.delay for t in r.timers.armed()) == [LIMITS.request_timeout_s]
    r.timers.fire()
    assert transport.closed and _status(transport.written) == 408


async def test_connections_over_the_bound_are_answered_503_and_the_others_kept() -> None:
    r = Rigged()
    kept = [r.connect() for _ in range(LIMITS.max_connections)]
    extra, refused = r.connect()
    assert refused.closed and _status(refused.written) == 503
    assert _body(refused.written) == {"error": "too many connections"}
    assert [t for t in r.timers.armed() if t.delay == LIMITS.request_timeout_s and t.args == ()]  # the kept ones'
    assert all(not t.closed for _, t in kept)
    kept[0][0].data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and they are served
    await _answered(kept[0][1])
    assert _status(kept[0][1].written) == 200
    extra.connection_lost(None)  # asyncio reports the refused one gone
    r.lose(*kept[1])  # and one of the others: room for one more
    _, again = r.connect()
    assert not again.closed and again.written == b""


async def test_a_head_over_the_limit_is_answered_431() -> None:
    r = Rigged()
    protocol, transport = r.connect()
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
    assert transport.closed
    assert _status(transport.written) == 431 and transport.written.count(b"HTTP/1.1") == 1
    assert r.state.tasks == set()


async def test_a_head_just_under_the_limit_is_served() -> None:
    r = Rigged()
    protocol, transport = r.connect()
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n\r\n")
    await _answered(transport)
    assert _status(transport.written) == 200


def test_limits_must_be_positive() -> None:
    for bad in ({"max_connections": 0}, {"request_timeout_s": 0.0}, {"request_timeout_s": float("nan")},
                {"keep_alive_s": 0}):
        with pytest.raises(ValueError, match="positive"):
            ListenerLimits(**bad)

