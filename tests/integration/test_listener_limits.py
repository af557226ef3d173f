"""Hostile peers against the real listener (EmbeddedServer on 127.0.0.1, raw sockets).

Idle, partial-head and partial-body connections used to stay open for ever, any number of
them; 500 requests that hung up mid-body wrote 1.6 MB of tracebacks. Now: a connection that
sends nothing is closed, a request that does not arrive whole within `request_timeout_s`
gets 408, a connection over `max_connections` gets 503 while the others are kept, and a
flood of disconnects, timeouts or malformed requests writes a few log lines, no traceback.
The same rules, with hand-fired timers, are in tests/unit/test_listener_guard.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from core.clock import RealClock
from mt5_bridge.app import create_app
from mt5_bridge.server import EmbeddedServer, ListenerLimits
from tests.mt5_support import Rig, make_rig, signed_headers, state_of
from tests.waiting import until as _until

TIMEOUT_S = 0.5
MARGIN_S = 3.0  # a loaded machine (two CPUs shared with other runs) may be late
LIMITS = ListenerLimits(max_connections=4, request_timeout_s=TIMEOUT_S, keep_alive_s=1)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Rig, EmbeddedServer]]:
    rig = make_rig(RealClock())
    server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0, limits=LIMITS)
    await server.start()
    try:
        yield rig, server
    finally:
        await server.stop()


class Captured(logging.Handler):
    """Every log record of the process, formatted as a file handler would (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(self.format(record).splitlines())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _connect(server: EmbeddedServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not close."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for more than {within:g}s") from None


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _json_body(answer: bytes) -> object:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def _signed_head(rig: Rig, body: bytes, length: int | None = None) -> bytes:
    headers = signed_headers("POST", "/mt5/tick", body, clock=rig.clock)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /mt5/tick HTTP/1.1\r\nHost: listener\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{lines}\r\n").encode()


async def test_an_idle_connection_is_closed(listener: tuple[Rig, EmbeddedServer]) -> None:
    _, server = listener
    reader, writer = await _connect(server)
    started = time.monotonic()
    answer = await _until_closed(reader, TIMEOUT_S + MARGIN_S)
    assert answer == b""  # nothing was asked
    assert time.monotonic() - started >= TIMEOUT_S * 0.8  # by the deadline, not at once
    writer.close()


async def test_a_partial_head_gets_408_and_is_closed(listener: tuple[Rig, EmbeddedServer]) -> None:
    _, server = listener
    reader, writer = await _connect(server)
    writer.write(b"POST /mt5/tick HTTP/1.1\r\nHost: listener\r\n")
    answer = await _until_closed(reader, TIMEOUT_S + MARGIN_S)
    assert _status(answer) == 408 and _json_body(answer) == {"error": "request timeout"}
    writer.close()


async def test_a_trickled_head_does_not_move_the_deadline(listener: tuple[Rig, EmbeddedServer]) -> None:
    _, server = listener
    reader, writer = await _connect(server)
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: listener\r\nX-Slow: " + b"a" * 200:
            writer.write(bytes([byte]))
            await asyncio.sleep(TIMEOUT_S / 10)

    task = asyncio.create_task(trickle())
    answer = await _until_closed(reader, TIMEOUT_S + MARGIN_S)
    task.cancel()
    assert _status(answer) == 408
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S
    writer.close()


async def test_a_partial_body_gets_408_and_changes_nothing(
    listener: tuple[Rig, EmbeddedServer], logs: Captured
) -> None:
    rig, server = listener
    before = state_of(rig)
    body = b'{"ticks":[{"symbol":"XAUUSD","bid":2650.1,"ask":2650.3,"time_msc":1}]}'
    reader, writer = await _connect(server)
    writer.write(_signed_head(rig, body) + body[:20])
    answer = await _until_closed(reader, TIMEOUT_S + MARGIN_S)
    assert _status(answer) == 408 and answer.count(b"HTTP/1.1 ") == 1
    assert state_of(rig) == before and rig.quotes == []
    assert "Traceback" not in logs.text
    writer.close()


async def test_a_slow_answer_is_not_cut_by_the_request_deadline(listener: tuple[Rig, EmbeddedServer]) -> None:
    """The deadline covers the request arriving, not the answer: a long poll of 1 s (twice the
    request timeout) is answered."""
    rig, server = listener
    reader, writer = await _connect(server)
    headers = signed_headers("GET", "/mt5/commands?wait_ms=1000", b"", clock=rig.clock)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET /mt5/commands?wait_ms=1000 HTTP/1.1\r\nHost: listener\r\n{lines}\r\n".encode())
    started = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert _status(head) == 200
    assert time.monotonic() - started >= 0.9
    writer.close()


async def test_connections_over_the_bound_get_503_while_the_others_are_kept() -> None:
    rig = make_rig(RealClock())
    limits = ListenerLimits(max_connections=4, request_timeout_s=30.0, keep_alive_s=30)
    server = EmbeddedServer(create_app(rig.bridge), "127.0.0.1", 0, limits=limits)
    await server.start()
    try:
        held = [await _connect(server) for _ in range(limits.max_connections)]
        await _until(lambda: len(server.server_state.connections) == limits.max_connections, "all connections open")
        reader, writer = await _connect(server)
        answer = await _until_closed(reader, MARGIN_S)
        assert _status(answer) == 503 and _json_body(answer) == {"error": "too many connections"}
        writer.close()
        # The held ones were kept: each is served on request.
        for held_reader, held_writer in held:
            held_writer.write(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n")
            head = await asyncio.wait_for(held_reader.readuntil(b"\r\n\r\n"), MARGIN_S)
            assert _status(head) == 200
        # One goes away: there is room for one more.
        held[0][1].close()
        await _until(lambda: len(server.server_state.connections) < limits.max_connections, "a connection closed")
        reader, writer = await _connect(server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MARGIN_S)
        assert _status(head) == 200
        writer.close()
        for _, held_writer in held[1:]:
            held_writer.close()
    finally:
        await server.stop()


async def test_an_answered_connection_is_closed_after_keep_alive(listener: tuple[Rig, EmbeddedServer]) -> None:
    _, server = listener
    reader, writer = await _connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n")
    answer = await _until_closed(reader, LIMITS.keep_alive_s + MARGIN_S)
    assert _status(answer) == 200
    writer.close()


async def test_disconnects_mid_body_log_a_few_lines_and_no_traceback(
    listener: tuple[Rig, EmbeddedServer], logs: Captured
) -> None:
    """200 requests that hang up mid-body (the signature is never checked: the body is not
    complete) used to log one traceback each."""
    rig, server = listener
    before = state_of(rig)
    head = _signed_head(rig, b"", length=1000)
    for _ in range(200):
        _, writer = await _connect(server)
        writer.write(head + b'{"ticks":[')
        await writer.drain()
        writer.close()
    await _until(lambda: not server.server_state.connections and not server.server_state.tasks,
                 "every connection handled")
    assert "Traceback" not in logs.text
    assert 1 <= len(logs.lines) <= 3, logs.text[:3000]
    assert "went away before its request body had arrived" in logs.text
    assert state_of(rig) == before


async def test_a_flood_of_malformed_requests_and_timeouts_logs_a_few_lines(
    listener: tuple[Rig, EmbeddedServer], logs: Captured
) -> None:
    _, server = listener
    for _ in range(200):
        reader, writer = await _connect(server)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        assert _status(await _until_closed(reader, MARGIN_S)) == 400
        writer.close()
    partial = [await _connect(server) for _ in range(LIMITS.max_connections)]
    for _, writer in partial:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
    for reader, writer in partial:
        assert _status(await _until_closed(reader, TIMEOUT_S + MARGIN_S)) == 408
        writer.close()
    assert "Traceback" not in logs.text
    assert len(logs.lines) <= 4, logs.text[:3000]


def test_the_configured_limits_reach_the_engines_listener() -> None:
    from core.clock import ManualClock
    from core.config import QuantarbConfig, demo_config
    from engine.runtime import Runtime

    base = demo_config().model_dump()
    base["listener"].update(max_connections=7, request_timeout_s=2.5, keep_alive_s=9)
    config = QuantarbConfig.model_validate(base)
    runtime = Runtime(config, is_demo=True, clock=ManualClock(), ledger_path=None)  # built, not started
    assert runtime.mt5 is not None
    server = runtime.mt5.server
    assert server.limits == ListenerLimits(max_connections=7, request_timeout_s=2.5, keep_alive_s=9)
    assert server.config.timeout_keep_alive == 9
    assert server.config.http.limits == server.limits  # type: ignore[union-attr]
