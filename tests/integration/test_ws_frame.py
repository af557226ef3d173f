"""exchanges.ws_frame: an order frame written straight to the socket is the frame websockets'
own server accepts (masked, the right length encoding, valid UTF-8), and the fast path steps
aside whenever websockets' `send()` would have written something else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from exchanges.ws_frame import _MaskKeys, frame_header, send_text_now


async def _echo(conn: ServerConnection) -> None:
    async for message in conn:
        await conn.send(message)


@asynccontextmanager
async def _echo_client(*, compression: str | None = None) -> AsyncIterator[ClientConnection]:
    async with serve(_echo, "127.0.0.1", 0, compression=compression, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=compression, max_size=None) as ws:
            yield ws


async def _round_trip(ws: ClientConnection, payload: bytes) -> str | bytes:
    assert send_text_now(ws, payload) is True
    return await asyncio.wait_for(ws.recv(), 5.0)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
async def test_every_length_encoding_reaches_the_server_intact(size: int) -> None:
    """7-bit, 16-bit and 64-bit lengths, each at its edges; websockets' server checks the mask
    bit and UTF-8 and would close the connection on a malformed frame."""
    payload = ("x" * size).encode()
    async with _echo_client() as ws:
        assert await _round_trip(ws, payload) == payload.decode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=5))
def test_any_text_round_trips(texts: list[str]) -> None:
    async def run() -> list[str | bytes]:
        async with _echo_client() as ws:
            return [await _round_trip(ws, t.encode()) for t in texts]

    assert asyncio.run(run()) == texts


async def test_interleaves_with_websockets_own_sends() -> None:
    """Frames from both paths share one socket; the server reads them in the order written."""
    async with _echo_client() as ws:
        assert send_text_now(ws, b'{"id":"a"}') is True
        await ws.send('{"id":"b"}')
        assert send_text_now(ws, b'{"id":"c"}') is True
        got = [await asyncio.wait_for(ws.recv(), 5.0) for _ in range(3)]
    assert got == ['{"id":"a"}', '{"id":"b"}', '{"id":"c"}']


async def test_steps_aside_when_an_extension_was_negotiated() -> None:
    """With permessage-deflate the frame must be compressed: only websockets can write it."""
    async with _echo_client(compression="deflate") as ws:
        assert ws.protocol.extensions  # the server agreed
        assert send_text_now(ws, b'{"id":"a"}') is False
        await ws.send(b'{"id":"a"}', text=True)  # what the caller does then
        assert await asyncio.wait_for(ws.recv(), 5.0) == '{"id":"a"}'


async def test_steps_aside_on_a_closed_connection() -> None:
    async with _echo_client() as ws:
        await ws.close()
        assert send_text_now(ws, b'{"id":"a"}') is False


async def test_steps_aside_while_flow_control_holds_the_writer() -> None:
    async with _echo_client() as ws:
        ws.pause_writing()
        try:
            assert send_text_now(ws, b'{"id":"a"}') is False
        finally:
            ws.resume_writing()
        assert await _round_trip(ws, b'{"id":"b"}') == '{"id":"b"}'


def test_headers_follow_rfc6455_section_5_2() -> None:
    assert frame_header(0) == b"\x81\x80"
    assert frame_header(125) == b"\x81\xfd"
    assert frame_header(126) == b"\x81\xfe\x00\x7e"
    assert frame_header(65_535) == b"\x81\xfe\xff\xff"
    assert frame_header(65_536) == b"\x81\xff" + (65_536).to_bytes(8, "big")


def test_mask_keys_are_fresh_across_pool_refills() -> None:
    """Each key is four unused bytes of the CSPRNG's output: 3,000 draws cross two refills of
    the 4 KiB pool, and (with 2^32 possible keys) repeat with probability about 0.1%."""
    keys = _MaskKeys()
    drawn = [keys.next() for _ in range(3_000)]
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) >= 2_990
