"""The EA's own files in the MQL5 common folder: the command journal and the instance lock.

`mql5/QuantArbBridge.mq5` keeps two files in the terminal's common folder
(`FileOpen(..., FILE_COMMON)`, `Terminal\\Common\\Files\\QuantArb\\`), which outlive the EA and
the terminal, and which every terminal of the machine shares:

- `<terminal>.journal`: one line per change of a command the EA sent to the trade server. The
  line saying `sent` is written and flushed *before* `OrderSend`, so a command id in the
  journal is never sent again, whatever the broker does to order comments and whatever
  happens to the EA between `OrderSend` and its answer (a `sent` line without an outcome reads
  as an unknown outcome, as after a TIMEOUT).
- `<terminal>.lock`: opened without sharing for as long as the EA runs, so that a second
  instance for the same terminal id on this machine cannot start (the OS releases it when the
  terminal dies). It also keeps the instance id the EA sends in `X-QA-Instance`, so an EA
  restarted on this machine takes its listener lease back at once.

The EA simulator (`sim.ea_sim`) uses the same files, with the same format, through this module:
`flock` stands in for the Windows share mode (both are released with the process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "JOURNAL_KEEP_MS",
    "InstanceLock",
    "InstanceLocked",
    "Journal",
    "JournalEntry",
    "JournalState",
    "journal_path",
]

# sent: written before OrderSend; done: accepted by the server (order known); unknown: TIMEOUT
# or no outcome; retry: nothing executed, may be sent again (10031, 10024); rejected: final.
JournalState = Literal["sent", "done", "unknown", "retry", "rejected"]
_STATES: frozenset[str] = frozenset({"sent", "done", "unknown", "retry", "rejected"})
JOURNAL_KEEP_MS = 2 * 86_400_000  # commands expire in seconds; two days is plenty
_COMPACT_AT = 5000  # lines; older entries are dropped when the journal is opened
_FOLDER = "QuantArb"


@dataclass(slots=True, frozen=True)
class JournalEntry:
    """The latest known state of one command the EA sent (or was about to send)."""

    command_id: str
    state: JournalState
    send_ms: int
    symbol: str
    side: str
    volume: float
    order: int = 0
    retcode: int = 0
    reason: str = ""

    def line(self) -> str:
        """Tab-separated, as the EA writes it (tabs and line breaks in the reason become spaces)."""
        reason = " ".join(self.reason.split())
        return "\t".join(("1", self.command_id, self.state, str(self.send_ms), self.symbol, self.side,
                          repr(self.volume), str(self.order), str(self.retcode), reason))

    @classmethod
    def parse(cls, line: str) -> JournalEntry | None:
        """An entry from one journal line; None for a torn or foreign line (skipped)."""
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 10 or parts[0] != "1" or parts[2] not in _STATES or not parts[1]:
            return None
        try:
            return cls(parts[1], parts[2], int(parts[3]), parts[4], parts[5], float(parts[6]),  # type: ignore[arg-type]
                       int(parts[7]), int(parts[8]), parts[9])
        except ValueError:
            return None

    def but(self, **changes: object) -> JournalEntry:
        return replace(self, **changes)  # type: ignore[arg-type]


class Journal:
    """Command id -> its latest entry, appended line by line to `path` (None: in memory).

    `write` returns once the line is on disk (flush and fsync, as the EA's `FileFlush`); it
    raises `OSError` when it cannot, and the EA then refuses the command rather than send it
    unrecorded.
    """

    def __init__(self, path: Path | None, *, now_ms: int, keep_ms: int = JOURNAL_KEEP_MS,
                 entries: dict[str, JournalEntry] | None = None) -> None:
        self.path = path
        # Without a path, `entries` (when given) is the memory the journal lives in, shared with
        # the journals opened later on it (an EA restarted on the same simulated terminal).
        self._entries: dict[str, JournalEntry] = entries if entries is not None and path is None else {}
        # In memory, entries older than `keep_ms` (than the newest written) are forgotten as new
        # ones come, not only when the file is opened: a simulated EA runs for weeks.
        self._keep_ms = keep_ms
        self._by_age: deque[tuple[int, str]] = deque()
        if path is None:
            self._index()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for line in lines:
            entry = JournalEntry.parse(line)
            if entry is not None:
                self._entries[entry.command_id] = entry
        if len(lines) > _COMPACT_AT:
            self._entries = {k: e for k, e in self._entries.items() if e.send_ms >= now_ms - keep_ms}
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(e.line() + "\n" for e in self._entries.values()), encoding="utf-8")
            os.replace(tmp, path)
        self._index()

    def _index(self) -> None:
        self._by_age = deque(sorted((e.send_ms, cid) for cid, e in self._entries.items()))

    def get(self, command_id: str) -> JournalEntry | None:
        return self._entries.get(command_id)

    def entries(self) -> list[JournalEntry]:
        return list(self._entries.values())

    def write(self, entry: JournalEntry) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(entry.line() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._keep(entry)

    def remember(self, entry: JournalEntry) -> None:
        """Keep `entry` in memory only (its line could not be written)."""
        self._keep(entry)

    def _keep(self, entry: JournalEntry) -> None:
        entries, by_age = self._entries, self._by_age
        if entry.command_id not in entries:
            by_age.append((entry.send_ms, entry.command_id))
        entries[entry.command_id] = entry
        horizon = entry.send_ms - self._keep_ms
        while by_age and by_age[0][0] < horizon:
            _, cid = by_age.popleft()
            kept = entries.get(cid)
            if kept is None:
                continue
            if kept.send_ms < horizon:
                del entries[cid]
            else:  # sent again since: it ages from then
                by_age.append((kept.send_ms, cid))


class InstanceLocked(RuntimeError):
    """Another EA instance for this terminal id runs on this machine (it holds the lock file)."""


class InstanceLock:
    """The lock file of one terminal id, held exclusively until `release()` (or process exit)."""

    def __init__(self, fd: int, path: Path, instance_id: str) -> None:
        self._fd: int | None = fd
        self.path = path
        self.instance_id = instance_id

    @classmethod
    def acquire(cls, common_dir: Path, terminal: str) -> InstanceLock:
        """Take the lock of `terminal`; raise `InstanceLocked` when another instance holds it."""
        path = common_dir / _FOLDER / f"{terminal}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InstanceLocked(f"another EA instance for terminal {terminal} runs on this machine ({path})") from None
        try:
            instance_id = os.read(fd, 128).decode("ascii", "replace").strip()
            if not _valid_instance(instance_id):
                instance_id = "ea-" + secrets.token_hex(8)
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, instance_id.encode("ascii"))
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, instance_id)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops the flock


def journal_path(common_dir: Path, terminal: str) -> Path:
    return common_dir / _FOLDER / f"{terminal}.journal"


def _valid_instance(value: str) -> bool:
    return 1 <= len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
