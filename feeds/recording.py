"""Recordings of raw feed frames: JSON lines, gzip when the file name ends in `.gz`.

Format version 2 (docs/feeds.md, Recordings). The first line is a header that names the
format, its version and the recorder's two clocks at the start, so a replay can put the
recorded monotonic receive times back on the wall clock:

    {"format": "quantarb-recording", "version": 2, "wall_ms": 1732150000000, "mono_ns": 5000000}

Then one line per received frame, exactly as it came off the socket (or, for MT5, the body
of the EA's `POST /mt5/tick` as the listener accepted it), with the feed it came from and
its local receive time:

    {"venue": "okx", "feed": "okx", "recv_ns": 1234567890, "frame": "{\"arg\":...}"}

Binary frames are stored base64-encoded under `frame_b64` instead of `frame`. Recording
raw frames (not quotes) means a replay exercises the same normalizers as the live feed.
Version 1 files (no header) are still read; a newer version is refused, not guessed at.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec

from core.clock import Clock, RealClock

FORMAT = "quantarb-recording"
VERSION = 2


class RecordingError(ValueError):
    """A recording line that is not a frame record (names the file and the line)."""


@dataclass(slots=True, frozen=True)
class RecordedFrame:
    venue: str
    feed: str
    recv_ns: int
    frame: str | bytes


@dataclass(slots=True, frozen=True)
class RecordingHeader:
    """The recorder's clocks at the start: wall time = wall_ms + (recv_ns - mono_ns) / 1e6."""

    version: int
    wall_ms: int
    mono_ns: int


class _Header(msgspec.Struct):
    format: str
    version: int
    wall_ms: int = 0
    mono_ns: int = 0


class _Line(msgspec.Struct, forbid_unknown_fields=False):
    venue: str
    feed: str
    recv_ns: int
    frame: str | None = None
    frame_b64: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)
_header_decoder = msgspec.json.Decoder(_Header)


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, mode + "b", compresslevel=6)  # type: ignore[return-value]
    return open(path, mode + "b", buffering=1 << 16)


class FrameRecorder:
    """Appends frames to a recording; call `close()` (or use `with`) to flush it.

    `clock`: whose readings the header keeps (the one that stamps `recv_ns`)."""

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self._file: IO[bytes] = _open(self.path, "w")
        clock = clock or RealClock()
        header = {"format": FORMAT, "version": VERSION, "wall_ms": clock.time_ms(), "mono_ns": clock.monotonic_ns()}
        self._file.write(_encoder.encode(header) + b"\n")
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


def _header(p: Path, number: int, line: bytes) -> RecordingHeader | None:
    """The header if `line` is one (a frame line has no `format`); a newer version is refused."""
    if b'"format"' not in line:
        return None
    try:
        head = _header_decoder.decode(line)
    except msgspec.DecodeError:
        return None  # not a header: judged as a frame line
    if head.format != FORMAT:
        raise RecordingError(f"{p}:{number}: not a quantarb recording (format {head.format!r})")
    if not 2 <= head.version <= VERSION:
        raise RecordingError(f"{p}:{number}: recording format version {head.version} is not supported "
                             f"(this quantarb reads versions 1 to {VERSION})")
    return RecordingHeader(head.version, head.wall_ms, head.mono_ns)


def recording_header(path: str | Path) -> RecordingHeader | None:
    """The header of a recording; None for a version 1 file (it has none)."""
    p = Path(path)
    with _open(p, "r") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                return _header(p, number, line)
    return None


def read_recording(path: str | Path) -> Iterator[RecordedFrame]:
    """The frames of a recording in order; a bad line raises RecordingError naming it."""
    p = Path(path)
    with _open(p, "r") as stream:
        first = True
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            if first:
                first = False
                if _header(p, number, line) is not None:
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
