"""Plain HTTP requests with a body (POST) on a websockets server port.

The venue simulators serve REST and WebSocket on one port through websockets'
`process_request` hook, whose HTTP parser reads only bodiless requests (a WebSocket handshake
has none). A venue's private REST API needs POST with a JSON body, so this module gives the
server a parser that also reads a `Content-Length` body: `serve(..., create_connection=
BodyServerConnection)`, then `request_body(request)` and `request.method` in the hook.

It relies on the Sans-I/O layer of websockets (>= 14): `ServerProtocol.parse` is the first
thing a connection runs, and a fresh connection has consumed no byte when the parser is
swapped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidMessage
from websockets.http11 import Request, parse_headers, parse_line
from websockets.protocol import CONNECTING, Protocol
from websockets.server import ServerProtocol

MAX_BODY = 1 << 16


@dataclasses.dataclass
class BodyRequest(Request):
    """A request as websockets parses it, with the body it carried (b"" for a GET)."""

    body: bytes = b""


def request_body(request: Request) -> bytes:
    return request.body if isinstance(request, BodyRequest) else b""


def _read_request(protocol: ServerProtocol) -> Generator[None, None, BodyRequest]:
    read_line = protocol.reader.read_line
    line = yield from parse_line(read_line)
    parts = bytes(line).split(b" ", 2)
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ValueError("invalid HTTP request line")
    method, path, version = (p.decode("ascii") for p in parts)
    headers = yield from parse_headers(read_line)
    if "Transfer-Encoding" in headers:
        raise ValueError("transfer codings are not supported")
    lengths = set(headers.get_all("Content-Length")) or {"0"}
    if len(lengths) != 1:
        raise ValueError("conflicting Content-Length headers")
    length_text = lengths.pop()
    if not length_text.isdigit() or int(length_text) > MAX_BODY:
        raise ValueError("invalid or too large Content-Length")
    length = int(length_text)
    body = (yield from protocol.reader.read_exact(length)) if length else b""
    return BodyRequest(path, headers, method, version, body=bytes(body))


class _BodyServerProtocol(ServerProtocol):
    def parse(self) -> Generator[None]:
        if self.state is CONNECTING:
            try:
                request = yield from _read_request(self)
            except Exception as exc:
                self.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
                self.handshake_exc.__cause__ = exc
                self.send_eof()
                self.parser = self.discard()
                next(self.parser)
                yield
            self.events.append(request)
        yield from Protocol.parse(self)


class BodyServerConnection(ServerConnection):
    """A ServerConnection whose HTTP parser also reads request bodies."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.__class__ = _BodyServerProtocol
        protocol.parser = protocol.parse()
        next(protocol.parser)
        super().__init__(protocol, *args, **kwargs)


__all__ = ["MAX_BODY", "BodyRequest", "BodyServerConnection", "request_body"]
