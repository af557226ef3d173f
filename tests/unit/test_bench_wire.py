"""The order benches' wire probe: which write completed a request (HTTP/1.1 or a client
WebSocket frame), whatever the chunking; never an exception on bytes it cannot read."""

from __future__ import annotations

import asyncio
import os

from hypothesis import given
from hypothesis import strategies as st

from quantarb_tui.bench.wire import WireProbe, _parse

MARKER = b"qa1732150000000x1l0a0"


def http_request(body: bytes) -> bytes:
    head = f"POST /api/v5/trade/order HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def ws_frame(payload: bytes, *, opcode: int = 0x1, compressed: bool = False) -> bytes:
    """A client frame as RFC 6455 says: FIN, opcode, masked payload."""
    mask = os.urandom(4)
    first = 0x80 | (0x40 if compressed else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def chunked(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    """`data` split at `cuts`, each piece stamped with its index as its time."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [(i, piece) for i, piece in enumerate(pieces)]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_an_http_request_is_done_at_the_write_holding_its_last_byte(extra: bytes, cuts: list[int]) -> None:
    data = http_request(b'{"clOrdId":"' + MARKER + b'",' + extra + b"}")
    chunks = chunked(data, cuts)
    [message] = _parse(chunks, MARKER)
    assert (message.kind, message.first_line, message.matched) == ("http", "POST /api/v5/trade/order", True)
    assert message.done_ns == chunks[-1][0]


@given(st.integers(min_value=0, max_value=70_000), st.lists(st.integers(min_value=0, max_value=70_100), max_size=4))
def test_a_websocket_frame_is_unmasked_and_done_at_its_last_byte(size: int, cuts: list[int]) -> None:
    payload = b'{"op":"order","args":[{"clOrdId":"' + MARKER + b'"}]}' + b" " * size
    pong = ws_frame(b"", opcode=0xA)
    data = pong + ws_frame(payload)
    chunks = chunked(data, cuts)
    [message] = _parse(chunks, MARKER)  # the pong is not a request
    assert (message.kind, message.matched) == ("ws", True)
    assert message.done_ns == chunks[-1][0]


def test_frames_and_requests_in_a_row_are_told_apart() -> None:
    first = ws_frame(b'{"op":"order","args":[{"clOrdId":"other1"}]}')
    second = ws_frame(b'{"op":"order","args":[{"clOrdId":"' + MARKER + b'"}]}')
    messages = _parse([(1, first), (2, second)], MARKER)
    assert [(m.done_ns, m.matched) for m in messages] == [(1, False), (2, True)]
    # A compressed frame cannot be read: it counts as a match (the first data frame).
    [squeezed] = _parse([(5, ws_frame(b"\x00\x01", compressed=True))], MARKER)
    assert (squeezed.done_ns, squeezed.matched) == (5, True)


@given(st.lists(st.binary(max_size=200), max_size=5))
def test_unreadable_bytes_never_raise(pieces: list[bytes]) -> None:
    messages = _parse([(i, p) for i, p in enumerate(pieces)], MARKER)
    assert all(m.done_ns in range(len(pieces)) for m in messages)


@given(st.binary(max_size=60))
def test_a_request_whose_length_cannot_be_read_is_skipped(length: bytes) -> None:
    data = b"POST /x HTTP/1.1\r\nContent-Length: " + length.replace(b"\r\n", b"") + b"\r\n\r\n" + MARKER
    for message in _parse([(0, data)], MARKER):
        assert message.kind == "http"


async def test_the_probe_stamps_writes_to_the_port_only_while_armed() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(MARKER)  # the whole POST (its body ends with the marker)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # the server's write: not a request
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = WireProbe()
    with probe.installed():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /before HTTP/1.1\r\n\r\n")  # not armed: not recorded
        probe.arm()
        writer.write(http_request(MARKER))
        await reader.read()
        probe.disarm()
        writer.write(b"GET /after HTTP/1.1\r\n\r\n")  # disarmed again
        writer.close()
    server.close()
    await server.wait_closed()
    [message] = probe.messages(port, MARKER)
    assert (message.first_line, message.matched) == ("POST /api/v5/trade/order", True)
    assert probe.request_done_ns(port, MARKER) == message.done_ns
    assert probe.request_done_ns(port, b"absent") is None
