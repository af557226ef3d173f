"""When did a request's last byte reach the socket? A probe on asyncio's socket transports.

The order benches compare clients that share nothing but the event loop's transports: our
gateways (httpx for REST, websockets for the WebSocket order entry) and ccxt (aiohttp). So
the probe sits where every one of them writes: `_SelectorSocketTransport.write`, patched on
the class for the bench's duration (`WireProbe.installed()`). While armed it only appends
`(perf_counter_ns(), transport, bytes)` after the real write returned (the bytes were handed
to the kernel, or queued when its buffer was full); nothing is parsed on the path measured.

Afterwards `request_done_ns(port, marker)` reads the client-side writes to `port` (a
transport whose peer is that port: the simulator's own answers are written by transports
whose local port it is) and finds the first request that carries `marker` (our client
order id): an HTTP/1.1 request (headers, then `Content-Length` body bytes, or a chunked
body), or a client WebSocket data frame (masked; unmasked to look for the marker unless it
is compressed, then the first data frame counts). The answer is the time of the write that
completed that request: "the request bytes written to the socket", the same definition for
every client.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"PATCH ", b"OPTIONS ")
_WS_TEXT, _WS_BINARY = 0x1, 0x2


class ProbeError(RuntimeError):
    """The event loop's transports cannot be probed (not the selector loop)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One request found in a transport's written bytes, and when its last byte went out."""

    kind: str  # "http" | "ws"
    first_line: str  # "POST /api/v5/trade/order" or "ws opcode 1"
    done_ns: int
    matched: bool  # the marker was seen in it (False: a compressed WebSocket frame)


class WireProbe:
    """Timestamps of socket writes while armed (see the module docstring)."""

    def __init__(self) -> None:
        self.armed = False
        self.writes: list[tuple[int, Any, bytes]] = []

    @contextmanager
    def installed(self) -> Iterator[WireProbe]:
        """Patch the selector socket transport's `write` for the duration of the block."""
        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            raise ProbeError(f"the wire probe needs asyncio's selector event loop, not {type(loop).__name__}")
        cls: Any = vars(asyncio.selector_events)["_SelectorSocketTransport"]  # where every client writes
        original: Callable[[Any, Any], None] = cls.write
        original_lines: Callable[[Any, Any], None] | None = cls.__dict__.get("writelines")
        probe = self
        perf = time.perf_counter_ns
        writes = self.writes
        nested = [False]

        def write(transport: Any, data: Any) -> None:
            original(transport, data)
            if probe.armed and not nested[0]:
                writes.append((perf(), transport, bytes(data)))

        def writelines(transport: Any, chunks: Any) -> None:
            chunks = list(chunks)
            nested[0] = True  # a writelines that calls write is recorded once
            try:
                assert original_lines is not None
                original_lines(transport, chunks)
            finally:
                nested[0] = False
            if probe.armed:
                writes.append((perf(), transport, b"".join(bytes(c) for c in chunks)))

        cls.write = write
        if original_lines is not None:  # Python >= 3.12 writes lines without `write`
            cls.writelines = writelines
        try:
            yield self
        finally:
            cls.write = original
            if original_lines is not None:
                cls.writelines = original_lines
            self.armed = False

    def arm(self) -> None:
        self.writes.clear()
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def messages(self, port: int, marker: bytes = b"") -> list[Message]:
        """Every request written to `port` since `arm()`, in order, per transport."""
        by_transport: dict[int, list[tuple[int, bytes]]] = {}
        for ns, transport, data in self.writes:
            if _peer_port(transport) == port and _local_port(transport) != port:
                by_transport.setdefault(id(transport), []).append((ns, data))
        found: list[Message] = []
        for chunks in by_transport.values():
            found.extend(_parse(chunks, marker))
        found.sort(key=lambda m: m.done_ns)
        return found

    def request_done_ns(self, port: int, marker: bytes) -> int | None:
        """When the first request to `port` carrying `marker` was completely written."""
        for message in self.messages(port, marker):
            if message.matched:
                return message.done_ns
        return None


def _peer_port(transport: Any) -> int | None:
    peer = transport.get_extra_info("peername")
    return peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None


def _local_port(transport: Any) -> int | None:
    local = transport.get_extra_info("sockname")
    return local[1] if isinstance(local, tuple) and len(local) >= 2 else None


def _parse(chunks: list[tuple[int, bytes]], marker: bytes) -> list[Message]:
    """Split one transport's written bytes into requests; each gets the time of the write
    that held its last byte. A message cut off at the end of the window is ignored."""
    buf = b"".join(data for _, data in chunks)
    ends: list[tuple[int, int]] = []  # (cumulative end offset, ns)
    total = 0
    for ns, data in chunks:
        total += len(data)
        ends.append((total, ns))

    def done_at(end: int) -> int:
        return next(ns for offset, ns in ends if offset >= end)

    out: list[Message] = []
    pos = 0
    while pos < len(buf):
        if buf.startswith(_HTTP_METHODS, pos):
            parsed = _http_end(buf, pos)
            if parsed is None:
                break
            end, line = parsed
            out.append(Message("http", line, done_at(end), bool(marker) and marker in buf[pos:end]))
        else:
            frame = _ws_end(buf, pos)
            if frame is None:
                break
            end, opcode, payload = frame
            if opcode in (_WS_TEXT, _WS_BINARY):
                matched = payload is None or not marker or marker in payload
                out.append(Message("ws", f"ws opcode {opcode}", done_at(end), matched))
        pos = end
    return out


def _http_end(buf: bytes, pos: int) -> tuple[int, str] | None:
    head_end = buf.find(b"\r\n\r\n", pos)
    if head_end < 0:
        return None
    head = buf[pos:head_end].decode("latin-1")
    lines = head.split("\r\n")
    line = " ".join(lines[0].split(" ")[:2])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    body_start = head_end + 4
    if fields.get("transfer-encoding", "").lower() == "chunked":
        last = buf.find(b"\r\n0\r\n\r\n", body_start - 2)
        return None if last < 0 else (last + 7, line)
    length_text = fields.get("content-length", "0") or "0"
    if not (length_text.isascii() and length_text.isdigit()):  # '²' is a digit to str.isdigit
        return None  # not a request this probe can delimit: the rest of the window is skipped
    end = body_start + int(length_text)
    return None if end > len(buf) else (end, line)


def _ws_end(buf: bytes, pos: int) -> tuple[int, int, bytes | None] | None:
    """(end offset, opcode, unmasked payload or None when compressed) of one client frame."""
    if len(buf) - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    opcode = b0 & 0x0F
    compressed = bool(b0 & 0x40)
    length = b1 & 0x7F
    at = pos + 2
    if length == 126:
        length = int.from_bytes(buf[at:at + 2], "big")
        at += 2
    elif length == 127:
        length = int.from_bytes(buf[at:at + 8], "big")
        at += 8
    mask = b""
    if b1 & 0x80:
        mask = buf[at:at + 4]
        at += 4
    end = at + length
    if end > len(buf):
        return None
    if compressed:
        return end, opcode, None
    payload = buf[at:end]
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return end, opcode, payload


__all__ = ["Message", "ProbeError", "WireProbe"]
