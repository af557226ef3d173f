"""Recordings of raw feed frames (and, live, our own orders and fills): JSON lines, gzip when
the file name ends in `.gz`, optionally rotated into numbered parts.

Format version 3 (docs/feeds.md, Recording format). The first line of every file is a header
that names the format, its version, the recorder's two clocks when the file was opened (so a
replay can put the recorded monotonic receive times back on the wall clock), the recording it
belongs to and its part number:

    {"format": "quantarb-recording", "version": 3, "wall_ms": 1732150000000, "mono_ns": 5000000,
     "recording": "20241121T004640Z-1a2b3c4d", "part": 0}

Then one line per received frame, exactly as it came off the socket (or, for MT5, the body
of the EA's `POST /mt5/tick` as the listener accepted it), with the feed it came from and
its local receive time:

    {"venue": "okx", "feed": "okx", "recv_ns": 1234567890, "frame": "{\"arg\":...}"}

Binary frames are stored base64-encoded under `frame_b64` instead of `frame`. Recording
raw frames (not quotes) means a replay exercises the same normalizers as the live feed.
A live engine that records also writes execution records, stamped on the same monotonic
clock so that quote-to-order and order-to-fill latencies can be measured:

    {"kind": "order", "recv_ns": 1234567999, "body": {"client_order_id": ..., "state": ...}}

(`kind` is `order`, `fill` or `event`). Versions 1 (no header) and 2 (frames only) are still
read; a newer version is refused, not guessed at. A bad line raises RecordingError naming the
file and the line, a cut-off file (a recorder that died) included.
"""

from __future__ import annotations

import base64
import gzip
import secrets
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, cast

import msgspec

from core.clock import Clock, RealClock

FORMAT = "quantarb-recording"
VERSION = 3
RECORD_KINDS: tuple[str, ...] = ("order", "fill", "event")  # execution records (version 3)
MT5_FEED_PREFIX = "mt5:"  # recorded MT5 ticks: feed "mt5:<terminal>", frame the tick body
FLUSH_EVERY_NS = 1_000_000_000  # a recorder that dies loses at most about this much
_SUFFIXES = (".jsonl.gz", ".jsonl", ".gz")
_PART_DIGITS = 5


class RecordingError(ValueError):
    """A recording line that is not a record (names the file and the line)."""


@dataclass(slots=True, frozen=True)
class RecordedFrame:
    venue: str
    feed: str
    recv_ns: int
    frame: str | bytes


@dataclass(slots=True, frozen=True)
class RecordedExecution:
    """One of our own orders (a state change), a venue fill or an engine event, as the live
    engine saw it at `recv_ns` (the frames' monotonic clock)."""

    kind: str
    recv_ns: int
    body: dict[str, Any]


Record = RecordedFrame | RecordedExecution


@dataclass(slots=True, frozen=True)
class RecordingHeader:
    """The recorder's clocks at the file's start: wall time = wall_ms + (recv_ns - mono_ns) / 1e6.

    `recording` and `part` (version 3) tie the parts of one rotated recording together; a
    version 2 file is a recording of its own, part 0."""

    version: int
    wall_ms: int
    mono_ns: int
    recording: str = ""
    part: int = 0


class _Header(msgspec.Struct):
    format: str
    version: int
    wall_ms: int = 0
    mono_ns: int = 0
    recording: str = ""
    part: Annotated[int, msgspec.Meta(ge=0)] = 0


class _Line(msgspec.Struct, forbid_unknown_fields=False):
    recv_ns: Annotated[int, msgspec.Meta(ge=0)]
    venue: str | None = None
    feed: str | None = None
    frame: str | None = None
    frame_b64: str | None = None
    kind: str | None = None
    body: dict[str, Any] | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)
_header_decoder = msgspec.json.Decoder(_Header)


def part_path(base: str | Path, part: int) -> Path:
    """Where part `part` of a rotated recording named `base` goes: `s.jsonl.gz` -> `s.00003.jsonl.gz`
    (zero-padded, so the parts sort by name in order)."""
    base = Path(base)
    name = base.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return base.with_name(f"{name[: -len(suffix)]}.{part:0{_PART_DIGITS}d}{suffix}")
    return base.with_name(f"{name}.{part:0{_PART_DIGITS}d}")


def _recording_id(wall_ms: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_ms / 1000))
    return f"{stamp}-{secrets.token_hex(4)}"


class FrameRecorder:
    """Appends frames (and execution records) to a recording; `close()` (or `with`) finishes it.

    `clock`: whose readings the headers keep (the one that stamps `recv_ns`).
    Rotation: with `max_bytes` a new part starts once the current one holds that many bytes on
    disk (compressed bytes for `.gz`: gzip holds back up to a few tens of KB), with `rotate_s`
    at each wall-clock multiple of that many seconds (3600: on the hour, UTC). Parts are
    `part_path(path, n)`, each with its own header; without rotation the file is `path`.
    A gzip stream is sync-flushed about once a recorded second, so a recorder that is killed
    leaves a file readable up to then (its reader reports where it was cut off)."""

    def __init__(self, path: str | Path, clock: Clock | None = None, *, max_bytes: int | None = None,
                 rotate_s: float | None = None) -> None:
        if max_bytes is not None and max_bytes < 1024:
            raise ValueError(f"rotation size must be at least 1024 bytes, got {max_bytes}")
        if rotate_s is not None and not 1.0 <= rotate_s <= 7 * 86_400:
            raise ValueError(f"rotation interval must be within [1 s, 7 days], got {rotate_s}")
        self.base = Path(path)
        self._clock = clock or RealClock()
        self._max_bytes = max_bytes
        self._rotate_ms = None if rotate_s is None else round(rotate_s * 1000)
        self._rotating = max_bytes is not None or rotate_s is not None
        self.recording = _recording_id(self._clock.time_ms())
        self.part = -1
        self.paths: list[Path] = []
        self.frames = 0
        self.records = 0  # execution records
        self.by_feed: dict[str, int] = {}
        self._raw: IO[bytes] | None = None
        self._file: IO[bytes] | None = None
        self._deadline_ns: int | None = None
        self._flushed_ns = 0
        self._open_part()

    @property
    def path(self) -> Path:
        """The file being written now."""
        return self.paths[-1]

    def _open_part(self) -> None:
        self.part += 1
        path = part_path(self.base, self.part) if self._rotating else self.base
        raw = open(path, "wb", buffering=1 << 16)  # noqa: SIM115 - closed by close()/_close_part()
        self._raw = raw
        self._file = (gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[assignment]
                      if path.name.endswith(".gz") else raw)
        self.paths.append(path)
        wall_ms, mono_ns = self._clock.time_ms(), self._clock.monotonic_ns()
        self._flushed_ns = mono_ns
        if self._rotate_ms is not None:
            boundary = (wall_ms // self._rotate_ms + 1) * self._rotate_ms
            self._deadline_ns = mono_ns + (boundary - wall_ms) * 1_000_000
        header = {"format": FORMAT, "version": VERSION, "wall_ms": wall_ms, "mono_ns": mono_ns,
                  "recording": self.recording, "part": self.part}
        self._write(_encoder.encode(header) + b"\n")

    def _close_part(self) -> None:
        if self._file is not None and self._file is not self._raw:
            self._file.close()
        if self._raw is not None:
            self._raw.close()
        self._file = self._raw = None

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError(f"{self.base}: the recorder is closed")
        self._file.write(data)

    def _before(self, recv_ns: int) -> None:
        """Rotate when the part is full or its hour is over; sync-flush about once a second."""
        if self._raw is None:
            raise ValueError(f"{self.base}: the recorder is closed")
        if (self._deadline_ns is not None and recv_ns >= self._deadline_ns) or (
                self._max_bytes is not None and self._raw.tell() >= self._max_bytes):
            self._close_part()
            self._open_part()
        elif recv_ns - self._flushed_ns >= FLUSH_EVERY_NS:
            self.flush()
            self._flushed_ns = recv_ns

    def write(self, venue: str, feed: str, frame: str | bytes, recv_ns: int) -> None:
        self._before(recv_ns)
        if isinstance(frame, bytes):
            line = {"venue": venue, "feed": feed, "recv_ns": recv_ns,
                    "frame_b64": base64.b64encode(frame).decode("ascii")}
        else:
            line = {"venue": venue, "feed": feed, "recv_ns": recv_ns, "frame": frame}
        self._write(_encoder.encode(line) + b"\n")
        self.frames += 1
        self.by_feed[feed] = self.by_feed.get(feed, 0) + 1

    def write_record(self, kind: str, body: Mapping[str, Any], recv_ns: int | None = None) -> None:
        """An execution record (`order`, `fill` or `event`); `recv_ns` defaults to now."""
        if kind not in RECORD_KINDS:
            raise ValueError(f"unknown record kind {kind!r}: one of {', '.join(RECORD_KINDS)}")
        recv_ns = self._clock.monotonic_ns() if recv_ns is None else recv_ns
        self._before(recv_ns)
        self._write(_encoder.encode({"kind": kind, "recv_ns": recv_ns, "body": body}) + b"\n")
        self.records += 1

    def flush(self) -> None:
        """Everything written so far reaches the file (a gzip stream is sync-flushed: readable
        up to here even if the recorder is killed)."""
        if self._file is None or self._raw is None:
            return
        if self._file is not self._raw:
            self._file.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[call-arg]
        self._raw.flush()

    def close(self) -> None:
        self._close_part()

    def __enter__(self) -> FrameRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading -------------------------------------------------------------------------------
def _open_read(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=1 << 16)


def _header(p: Path, number: int, line: bytes) -> RecordingHeader | None:
    """The header if `line` is one (a record line has no `format`); a newer version is refused."""
    if b'"format"' not in line:
        return None
    try:
        head = _header_decoder.decode(line)
    except msgspec.DecodeError:
        return None  # not a header: judged as a record line
    if head.format != FORMAT:
        raise RecordingError(f"{p}:{number}: not a quantarb recording (format {head.format!r})")
    if not 2 <= head.version <= VERSION:
        raise RecordingError(f"{p}:{number}: recording format version {head.version} is not supported "
                             f"(this quantarb reads versions 1 to {VERSION})")
    return RecordingHeader(head.version, head.wall_ms, head.mono_ns, head.recording, head.part)


def parse_line(p: Path | str, number: int, line: bytes) -> Record:
    """One record line (not a header); anything else raises RecordingError naming `p:number`."""
    try:
        rec = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise RecordingError(f"{p}:{number}: not a record: {exc}") from None
    if rec.kind is not None:
        if rec.kind not in RECORD_KINDS:
            raise RecordingError(f"{p}:{number}: unknown record kind {rec.kind!r}")
        if rec.body is None:
            raise RecordingError(f"{p}:{number}: a {rec.kind} record without a body")
        return RecordedExecution(rec.kind, rec.recv_ns, rec.body)
    if rec.venue is None or rec.feed is None:
        raise RecordingError(f"{p}:{number}: a frame record needs venue and feed")
    if rec.frame is not None:
        frame: str | bytes = rec.frame
    elif rec.frame_b64 is not None:
        try:
            frame = base64.b64decode(rec.frame_b64, validate=True)
        except ValueError:
            raise RecordingError(f"{p}:{number}: frame_b64 is not base64") from None
    else:
        raise RecordingError(f"{p}:{number}: no frame or frame_b64")
    return RecordedFrame(rec.venue, rec.feed, rec.recv_ns, frame)


def recording_header(path: str | Path) -> RecordingHeader | None:
    """The header of a recording; None for a version 1 file (it has none)."""
    p = Path(path)
    try:
        with _open_read(p) as stream:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    return _header(p, number, line)
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordingError(f"{p}:1: cannot read: {_why(exc)}") from None
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the file is cut off (compressed stream ends early: the recorder did not close it)"
    return str(exc) or type(exc).__name__


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record of a recording in order; a bad line raises RecordingError naming it, and
    so does a file cut off mid-line or mid-stream (the lines before it are yielded first)."""
    return cast(Iterator[Record], _read(Path(path), frames_only=False))


def read_recording(path: str | Path) -> Iterator[RecordedFrame]:
    """The frames of a recording in order (execution records are skipped)."""
    return cast(Iterator[RecordedFrame], _read(Path(path), frames_only=True))


def read_frames(path: str | Path) -> Iterator[tuple[str, int, str | bytes]]:
    """(feed, recv_ns, frame) of every frame of a recording, in order: `read_recording` as a
    replay reads it, without building a RecordedFrame per line (the same lines, the same errors)."""
    return cast(Iterator[tuple[str, int, str | bytes]], _read(Path(path), frames_only=True, as_tuples=True))


def _read(p: Path, *, frames_only: bool, as_tuples: bool = False) -> Iterator[Record | tuple[str, int, str | bytes]]:
    number = 0
    decode = _decoder.decode
    try:
        with _open_read(p) as stream:
            first = True
            for number, line in enumerate(stream, start=1):
                if not line.endswith(b"\n"):
                    if not line.strip():
                        continue
                    raise RecordingError(f"{p}:{number}: the last line is cut off (the recorder did not "
                                         "finish it)")
                if first:
                    if not line.strip():
                        continue
                    first = False
                    if _header(p, number, line) is not None:
                        continue
                try:
                    rec = decode(line)
                except msgspec.DecodeError:
                    if not line.strip():
                        continue
                    rec = None
                # The hot path: a text frame line, as good as every line of a market recording.
                if rec is not None and rec.kind is None and rec.frame is not None and rec.feed is not None \
                        and rec.venue is not None:
                    if as_tuples:
                        yield (rec.feed, rec.recv_ns, rec.frame)
                    else:
                        yield RecordedFrame(rec.venue, rec.feed, rec.recv_ns, rec.frame)
                    continue
                record = parse_line(p, number, line)  # the others, and the error that names the line
                if as_tuples:
                    if isinstance(record, RecordedFrame):
                        yield (record.feed, record.recv_ns, record.frame)
                elif not frames_only or isinstance(record, RecordedFrame):
                    yield record
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordingError(f"{p}:{number + 1}: cannot read: {_why(exc)}") from None


# -- sets of files -------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class RecordingFile:
    path: Path
    header: RecordingHeader | None  # None: a version 1 file


def _is_recording_name(name: str) -> bool:
    return name.endswith((".jsonl", ".jsonl.gz"))


def recording_files(paths: Iterable[str | Path]) -> list[RecordingFile]:
    """The files to replay, in order: each path as given, a directory as its `*.jsonl[.gz]` files
    by recording and part. The parts of one rotated recording must come in order (a shell glob
    of zero-padded part names does); a part out of order is refused, naming both files."""
    out: list[RecordingFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [RecordingFile(f, recording_header(f)) for f in sorted(path.iterdir())
                     if f.is_file() and _is_recording_name(f.name)]
            if not found:
                raise RecordingError(f"{path}: no recording (*.jsonl, *.jsonl.gz) in this directory")
            found.sort(key=lambda r: (r.header.wall_ms, r.header.recording, r.header.part, r.path.name)
                       if r.header is not None else (0, "", 0, r.path.name))
            out += found
        elif path.is_file():
            out.append(RecordingFile(path, recording_header(path)))
        else:
            raise RecordingError(f"{path}: no such recording")
    last: dict[str, RecordingFile] = {}
    for item in out:
        head = item.header
        if head is None or not head.recording:
            continue
        before = last.get(head.recording)
        if before is not None and before.header is not None and head.part <= before.header.part:
            raise RecordingError(f"{item.path} is part {head.part} of recording {head.recording} but comes after "
                                 f"part {before.header.part} ({before.path}): give the parts in order")
        last[head.recording] = item
    return out


def group_recordings(files: Iterable[RecordingFile]) -> list[list[Path]]:
    """The files grouped into recordings (the parts of one rotated recording together, in order;
    any other file on its own), in the order each recording first appears."""
    groups: dict[str, list[Path]] = {}
    for i, item in enumerate(files):
        key = item.header.recording if item.header is not None and item.header.recording else f"\0{i}"
        groups.setdefault(key, []).append(item.path)
    return list(groups.values())

