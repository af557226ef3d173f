"""Recordings of raw feed frames: JSON lines, gzip when the file name ends in `.gz`.

One line per received frame, exactly as it came off the socket, with the feed it came from
and its local receive time:

    {"venue": "okx", "feed": "okx", "recv_ns": 1234567890, "frame": "{\"arg\":...}"}

Binary frames are stored base64-encoded under `frame_b64` instead of `frame`. Recording
raw frames (not quotes) means a replay exercises the same normalizers as the live feed.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec


class RecordingError(ValueError):
    """A recording line that is not a frame record (names the file and the line)."""


@dataclass(slots=True, frozen=True)
class RecordedFrame:
    venue: str
    feed: str
    recv_ns: int
    frame: str | bytes


class _Line(msgspec.Struct, forbid_unknown_fields=False):
    venue: str
    feed: str
    recv_ns: int
    frame: str | None = None
    frame_b64: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, mode + "b", compresslevel=6)  # type: ignore[return-value]
    return open(path, mode + "b", buffering=1 << 16)


class FrameRecorder:
    """Appends frames to a recording; call `close()` (or use `with`) to flush it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = _open(self.path, "w")
        self.frames = 0
        self.by_feed: dict[str, int] = {}

    def write(self, venue: str, feed: str, frame: str | bytes, recv_ns: int) -> None:
        if isinstance(frame, bytes):
            line = {"venue": venue, "feed": feed, "recv_ns": recv_ns,
                    "frame_b64": base64.b64encode(frame).decode("ascii")}
        else:
            line = {"venue": venue, "feed": feed, "recv_ns": recv_ns, "frame": frame}
        self._file.write(_encoder.encode(line))
        self._file.write(b"\n")
        self.frames += 1
        self.by_feed[feed] = self.by_feed.get(feed, 0) + 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_recording(path: str | Path) -> Iterator[RecordedFrame]:
    """The frames of a recording in order; a bad line raises RecordingError naming it."""
    p = Path(path)
    with _open(p, "r") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                rec = _decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise RecordingError(f"{p}:{number}: not a frame record: {exc}") from None
            if rec.frame is not None:
                frame: str | bytes = rec.frame
            elif rec.frame_b64 is not None:
                try:
                    frame = base64.b64decode(rec.frame_b64, validate=True)
                except ValueError:
                    raise RecordingError(f"{p}:{number}: frame_b64 is not base64") from None
            else:
                raise RecordingError(f"{p}:{number}: no frame or frame_b64")
            yield RecordedFrame(rec.venue, rec.feed, rec.recv_ns, frame)
