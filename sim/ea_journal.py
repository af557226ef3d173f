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
    "JOURNAL_KEPT",
    "JOURNAL_MIN_KEEP_MS",
    "JOURNAL_UNKNOWN_EXPIRY_MS",
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
# In memory, besides the age: at most this many entries (the oldest go first), where two days
# at the demo's load are tens of thousands. A floor, not a size to fill: past it the entries
# `JOURNAL_MIN_KEEP_MS` old go, so the demo's steady state (some 150 entries) comes after eight
# minutes (1,000 took most of an hour at the demo's rate, issue 19). Dropping an entry is safe
# only once its command can no longer be executed: the
# listener stops serving a command at its `expires_msc`, and the EA refuses one past it before
# anything else (docs/mt5-protocol.md, Expiry). So an entry goes by count only when its
# command has expired (`write(..., expires_ms=)`) and it is `JOURNAL_MIN_KEEP_MS` old; until
# then the bound waits, and no command id that could still be delivered is forgotten. What is
# dropped is still in the journal's file (which the EA compacts by age, `_COMPACT_AT`), and
# every command and fill is in quantarb's ledger.
JOURNAL_KEPT = 100
# The youngest an entry dropped by count may be: the EA also uses its journal to name a deal's
# command when it re-sends the fills of the last five minutes after a restart
# (`sim.ea_sim.SIM_RESYNC_FILLS_MS`) and to follow a command (a minute); the simulated
# broker's history reaches back eight minutes (`sim.mt5_broker.HISTORY_KEPT_MS`). Eight, not
# more: the demo's memory reaches its steady state within `bench soak`'s ten-minute warm-up.
JOURNAL_MIN_KEEP_MS = 8 * 60_000
# An entry whose command's expiry is not known (read from the file, or written without one) is
# held as if its command expired this long after it was sent: the listener's command TTL is at
# most an hour (`venues.mt5.command_ttl_ms`, core/config.py).
JOURNAL_UNKNOWN_EXPIRY_MS = 3_600_000
_NEVER = 1 << 62  # a command without an expiry (`expires_msc` 0): never dropped by count
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
                 entries: dict[str, JournalEntry] | None = None, max_entries: int = JOURNAL_KEPT,
                 min_keep_ms: int = JOURNAL_MIN_KEEP_MS) -> None:
        if max_entries < 1 or min_keep_ms < 0:
            raise ValueError("max_entries must be >= 1 and min_keep_ms >= 0")
        self.path = path
        # Without a path, `entries` (when given) is the memory the journal lives in, shared with
        # the journals opened later on it (an EA restarted on the same simulated terminal).
        self._entries: dict[str, JournalEntry] = entries if entries is not None and path is None else {}
        # In memory, entries older than `keep_ms` (than the newest written) are forgotten as new
        # ones come, not only when the file is opened: a simulated EA runs for weeks. Beyond
        # `max_entries`, the oldest are forgotten once their command has expired and they are
        # `min_keep_ms` old (JOURNAL_KEPT).
        self._keep_ms = keep_ms
        self._max_entries = max_entries
        self._min_keep_ms = min_keep_ms
        # Command id -> from when it may be dropped by count (unix ms; see `_hold`).
        self._holds: dict[str, int] = {}
        self._newest_ms = 0
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
        self._newest_ms = max((e.send_ms for e in self._entries.values()), default=0)
        self._holds = {cid: self._hold(e, None) for cid, e in self._entries.items()}  # expiries not known

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, command_id: str) -> JournalEntry | None:
        return self._entries.get(command_id)

    def entries(self) -> list[JournalEntry]:
        return list(self._entries.values())

    def write(self, entry: JournalEntry, *, expires_ms: int | None = None) -> None:
        """Append `entry`'s line. `expires_ms` is its command's `expires_msc` (0: it never
        expires) when known; None keeps what an earlier write of the command said."""
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(entry.line() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._keep(entry, expires_ms)

    def remember(self, entry: JournalEntry, *, expires_ms: int | None = None) -> None:
        """Keep `entry` in memory only (its line could not be written)."""
        self._keep(entry, expires_ms)

    def _hold(self, entry: JournalEntry, expires_ms: int | None) -> int:
        """From when `entry` may be dropped by count: once its command has expired (an hour
        after it was sent when the expiry is not known) and it is `min_keep_ms` old."""
        if expires_ms is None:
            expires_ms = entry.send_ms + JOURNAL_UNKNOWN_EXPIRY_MS
        elif expires_ms <= 0:
            expires_ms = _NEVER
        return max(expires_ms, entry.send_ms + self._min_keep_ms)

    def _keep(self, entry: JournalEntry, expires_ms: int | None) -> None:
        entries, by_age, holds = self._entries, self._by_age, self._holds
        cid = entry.command_id
        if cid not in entries:
            by_age.append((entry.send_ms, cid))
        entries[cid] = entry
        if expires_ms is not None or cid not in holds:
            holds[cid] = self._hold(entry, expires_ms)
        self._newest_ms = newest = max(self._newest_ms, entry.send_ms)
        horizon = newest - self._keep_ms
        while by_age:
            send_ms, oldest = by_age[0]
            kept = entries.get(oldest)
            if kept is None:
                by_age.popleft()
                continue
            if kept.send_ms != send_ms:  # sent again since: it ages from then
                by_age.popleft()
                by_age.append((kept.send_ms, oldest))
                continue
            # `newest` is the latest send time written, never later than the EA's clock: a
            # command whose expiry is before it is refused by the EA, and no longer served.
            over = len(entries) > self._max_entries and holds.get(oldest, _NEVER) < newest
            if send_ms >= horizon and not over:
                break  # the oldest is young enough and still held (or within the count)
            by_age.popleft()
            del entries[oldest]
            holds.pop(oldest, None)


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
