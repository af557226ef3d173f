"""The write-ahead file: an order's row reaches the kernel before its request leaves, without
waiting for SQLite.

The SQLite journal commits in batches on its own thread, with an fsync; an order that waited
for that commit paid 0.5 - 3.5 ms before leaving (docs/performance.md, "Orders"). Instead, in
`write_ahead = "file"` mode, the entry path queues the order's events as usual and then
*mirrors* every event that is queued or being committed (`LedgerWriter.mirror`) into this
append-only file with one `os.write` on the event loop's thread (a few microseconds), then
sends. The file is `<ledger>.ahead`, mode 0600, one line per event:
`[seq, ts_ms, kind, group_id, payload]` exactly as the journal stores it.

Why this is enough:
- a `kill -9`, an OOM kill or a crash cannot lose what `os.write` returned: it is in the page
  cache and reaches the disk without the process;
- at the next open (`replay_ahead`, before the writer starts), every line whose seq is above
  the journal's last committed seq is inserted into the journal, projections and all, in seq
  order; start-up recovery then asks the venue about those orders like any other;
- the file is cut back to empty once the journal has committed everything mirrored (and at a
  clean close), so it stays small.

What it gives up, against waiting for the fsync'd commit: a power loss (or a kernel panic)
within the few milliseconds between the send and the next commit can lose an order that
reached a venue. Start-up reconciliation against the venues finds such an order by its client
order id prefix and quarantines it (docs/ledger.md, "Write-ahead and the order path").

A torn last line (the machine stopped inside a write) is ignored: its `os.write` never
returned, so its order was never sent. Any other line that is not a journal row is refused
with the file and line named: a file next to the ledger is input like any other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ledger.errors import LedgerCorruptError, LedgerError, LedgerWriteError
from ledger.projections import INSERT_BATCH, EventRow

AHEAD_SUFFIX = ".ahead"
# Cut the file back once everything in it is committed and it has grown past this much.
TRUNCATE_AFTER_BYTES = 256 * 1024
MAX_LINE_BYTES = 4 * 1024 * 1024

_encoder = msgspec.json.Encoder()
_row_decoder = msgspec.json.Decoder(tuple[int, int, str, str | None, msgspec.Raw])


def ahead_path(database: Path) -> Path:
    return database.with_name(database.name + AHEAD_SUFFIX)


@dataclass(frozen=True, slots=True)
class AheadContents:
    rows: list[EventRow]
    torn_tail: bool  # the last line had no newline: a write cut short, never acted on


def parse_ahead(data: bytes, shown: Path) -> AheadContents:
    """The rows of a write-ahead file's bytes. LedgerCorruptError names the line for anything
    that is not a journal row, or for sequence numbers that do not increase."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows: list[EventRow] = []
    last = 0
    for number, line in enumerate(lines, start=1):
        if not line:
            raise LedgerCorruptError(f"{shown}: line {number} is empty; not a write-ahead file")
        try:
            seq, ts_ms, kind, group_id, payload = _row_decoder.decode(line)
            if not isinstance(msgspec.json.decode(payload), dict):
                raise ValueError("the payload is not a JSON object")
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise LedgerCorruptError(f"{shown}: line {number} is not a journal row: {exc}") from None
        if seq < 1 or seq <= last or ts_ms < 0 or not kind or len(kind) > 64:
            raise LedgerCorruptError(f"{shown}: line {number}: seq {seq} after {last}, ts {ts_ms}, kind {kind!r}")
        last = seq
        rows.append((seq, ts_ms, kind, group_id, payload))
    return AheadContents(rows, torn_tail=bool(tail))


def _check_ours(st: os.stat_result, shown: Path) -> None:
    """The write-ahead file is replayed into the journal: only a regular file of ours, with one
    name, may be (a symlink was refused by O_NOFOLLOW; a file planted by another user, or a
    hard link to someone's file, is refused here, unchanged)."""
    if not stat.S_ISREG(st.st_mode):
        raise LedgerError(f"{shown}: the write-ahead file is not a regular file; move it away")
    if st.st_uid != os.geteuid():
        raise LedgerError(f"{shown}: the write-ahead file belongs to uid {st.st_uid}, not to this user; "
                          "move it away (it will not be replayed)")
    if st.st_nlink > 1:
        raise LedgerError(f"{shown}: the write-ahead file has {st.st_nlink} names (hard links); move it away")


def read_ahead(path: Path, shown: Path | None = None) -> AheadContents:
    shown = shown or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return AheadContents([], torn_tail=False)
    except OSError as exc:
        raise LedgerError(f"{shown}: cannot read the write-ahead file: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        _check_ours(os.fstat(f.fileno()), shown)
        data = f.read()
    return parse_ahead(data, shown)


def replay_ahead(conn: sqlite3.Connection, path: Path, shown: Path) -> tuple[int, list[str]]:
    """Insert the rows the journal lacks (seq above its last) into the journal in one fsync'd
    transaction, then empty the file. Returns (rows replayed, notices). Blocking (stdlib
    sqlite3), called while the writer lock is held and before any writer exists."""
    contents = read_ahead(path, shown)
    notices: list[str] = []
    if contents.torn_tail:
        notices.append(f"{shown}: ignored a write-ahead line cut short (its order was never sent)")
    last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    missing = [row for row in contents.rows if row[0] > last]
    refused = 0
    if missing:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for row in missing:
                conn.execute("SAVEPOINT ahead_row")
                try:
                    conn.execute(INSERT_BATCH, (_encoder.encode([row]).decode(),))
                except sqlite3.IntegrityError:  # refused when it was first written too
                    conn.execute("ROLLBACK TO ahead_row")
                    refused += 1
                conn.execute("RELEASE ahead_row")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        notices.append(
            f"{shown}: {len(missing) - refused} journal events written ahead but not committed before "
            f"the engine stopped were recovered (last committed seq was {last})"
            + (f"; {refused} refused by the journal's constraints" if refused else "")
        )
    if contents.rows or contents.torn_tail:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            _check_ours(os.fstat(fd), shown)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(missing) - refused, notices


class AheadFile:
    """The open write-ahead file of a running writer (append-only, owner-only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LedgerError(f"{path}: cannot open the write-ahead file: {exc.strerror or exc}") from exc
        try:
            _check_ours(os.fstat(self._fd), path)
            os.fchmod(self._fd, 0o600)
        except BaseException:
            os.close(self._fd)
            raise
        self.size = os.fstat(self._fd).st_size
        self.writes = 0

    def write(self, rows: Iterable[EventRow]) -> None:
        """Append `rows` in one write; raises LedgerWriteError if the kernel did not take all of
        it (a retry appends the rows again: replaying a row twice is refused by the journal's
        constraints or rewrites the same state)."""
        data = b"".join(_encoder.encode(row) + b"\n" for row in rows)
        if not data:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            # Cut what a short write left, so the file stays whole lines (the rows are written
            # again by the next mirror: the writer's mirrored seq did not move).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            full = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            text = exc.strerror or str(exc)
            raise LedgerWriteError(f"{self.path}: cannot write the write-ahead file: {text}{full}") from None
        self.size += len(data)
        self.writes += 1

    def truncate(self) -> None:
        """Everything in the file is committed to the journal: start it over."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
