"""Order requests written to the socket as one WebSocket frame, without websockets' send path.

An order's time to the wire is what the arbitrage races on. websockets' `send()` builds a
`Frame`, serializes it through a `BytesIO`, draws each mask with `secrets.token_bytes` (a
`getrandom` call), queues the bytes on the protocol and flushes them in an async context
manager: about half of our order's time from `place()` to the wire on a loaded core
(docs/performance.md, "Orders"). `send_text_now` writes the same bytes RFC 6455 section 5.2
prescribes for a client's unfragmented text frame (FIN + opcode 1, the mask bit, the length,
a masking key, the masked payload) with one `transport.write`.

It only writes when that is exactly what websockets would have written and nothing else is
queued: the connection is OPEN, no extension was negotiated (order sockets never offer
permessage-deflate), no fragmented message is being sent, the protocol holds no unsent bytes
and the transport is not paused by flow control. Otherwise it returns False and the caller
sends through `send()`, which handles those cases. The masking keys come from the kernel's
CSPRNG (`os.urandom`), fetched 4 KiB at a time: RFC 6455 section 10.3 asks for unpredictable
keys, not for one system call per frame.
"""

from __future__ import annotations

import os
import struct

from websockets.asyncio.connection import Connection
from websockets.protocol import OPEN

try:  # the C implementation websockets ships; its pure-Python fallback otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - wheels carry the extension
    from websockets.utils import apply_mask

__all__ = ["send_text_now"]

_FIN_TEXT = 0x81
_MASKED = 0x80
_POOL_BYTES = 4096


class _MaskKeys:
    """4-byte masking keys cut from one `os.urandom` read; each key is used once."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at + 4 > len(self._pool):
            self._pool, at = os.urandom(_POOL_BYTES), 0
        self._at = at + 4
        return self._pool[at:at + 4]


_keys = _MaskKeys()


def frame_header(length: int) -> bytes:
    """The first bytes of a masked, unfragmented client text frame carrying `length` bytes."""
    if length < 126:
        return bytes((_FIN_TEXT, _MASKED | length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, _MASKED | 126, length)
    return struct.pack("!BBQ", _FIN_TEXT, _MASKED | 127, length)


def send_text_now(conn: Connection, payload: bytes) -> bool:
    """Write `payload` (UTF-8 JSON) as one text frame now; False when the caller must use
    `conn.send(payload, text=True)` instead (see the module docstring for when)."""
    protocol = conn.protocol
    if protocol.state is not OPEN:
        return False
    transport = conn.transport
    if (protocol.extensions or protocol.expect_continuation_frame or protocol.writes
            or conn.send_in_progress is not None or conn.paused or transport.is_closing()):
        return False
    key = _keys.next()
    transport.write(frame_header(len(payload)) + key + apply_mask(payload, key))
    return True
