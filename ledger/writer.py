"""The single writer: one asyncio task, one SQLite connection, group commit.

Every event goes through `append` (non-blocking: it assigns the next `seq`, encodes the
payload and queues the journal row) or `append_durable` (the same, then waits until the
transaction holding it has COMMITted). One task takes the queued rows in order and writes
them in batches, one transaction per batch:

- a batch holds at most `max_batch` events;
- when somebody waits for durability (`append_durable`, `wait_committed`), the writer
  flushes at once; events that arrive while a commit is in progress join the next one,
  so N concurrent producers share one commit (and one fsync) instead of paying N;
- otherwise (only fire-and-forget events queued) it waits at most `max_delay_s` for more
  before flushing.

Each batch is one `INSERT INTO events` statement + COMMIT on a connection with
`synchronous=FULL`: a commit that returned is on disk. The projection triggers run inside
the same statement (see `ledger.projections`), so the journal and the tables never disagree,
and the writer's thread takes Python's GIL once per batch, not once per row, so it does not
fight the event loop's hot path for it.

Back-pressure: `append_durable` waits while more than `max_queue` events are queued;
`append` never waits (callers on the hot path cannot), but refuses with
LedgerBackpressureError beyond `hard_queue`, which only a disk that stopped answering
reaches. A batch that violates a constraint (a producer's bug) is retried one event per
transaction so only the bad event is refused (EventRejectedError to its waiter); any other
SQLite error (I/O, disk full) stops the writer: every waiter and every later append gets
LedgerWriteError, and the engine is expected to halt.

Checkpoints (copying the WAL back into the database file) never run inside a commit
(`wal_autocheckpoint=0`). When the writer has been idle for `checkpoint_idle_s` after
writing, a PASSIVE checkpoint runs on a second connection in its own thread; the next
transaction then restarts the WAL from its beginning, so it stays small. Under sustained
load there is no idle moment: the writer looks at the WAL's size every
`wal_check_interval_s` and, past `wal_max_bytes`, runs one RESTART checkpoint itself
between two batches (a pause of some tens of ms, once per `wal_max_bytes` written).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from ledger.ahead import TRUNCATE_AFTER_BYTES, AheadFile
from ledger.errors import (
    EventRejectedError,
    LedgerBackpressureError,
    LedgerClosedError,
    LedgerError,
    LedgerWriteError,
)
from ledger.events import LedgerEvent
from ledger.projections import EventRow, apply_many, event_row

DEFAULT_MAX_BATCH = 2000
DEFAULT_MAX_DELAY_S = 0.002
DEFAULT_MAX_QUEUE = 50_000
DEFAULT_CHECKPOINT_IDLE_S = 0.1
DEFAULT_WAL_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_WAL_CHECK_INTERVAL_S = 1.0
# SQLite's page cache per connection, KiB (`PRAGMA cache_size = -N`): C memory the Python heap
# does not show, so each connection's is named rather than left to the library's default. The
# writer's holds the index pages the projection triggers update (SQLite's default, 2 MB); the
# checkpointer copies WAL frames into the file and needs a few pages only. No memory-mapped
# I/O (`mmap_size = 0`, pinned whatever the build's default): mapped database pages would count
# in RSS as the file grows (issue 19; docs/architecture.md, "Memory: what is kept").
WRITER_CACHE_KIB = 2048
CHECKPOINTER_CACHE_KIB = 256
# Refused events remembered (newest, by seq) so that `flush(seq)` can raise their refusal: a
# producer flushes right after appending, so only the last few are ever asked about; the
# refusal is logged (`last_error`) and counted (`rejected`) as well.
REJECTED_KEPT = 1_000


def _wake(fut: asyncio.Future[bool]) -> None:
    """Timer callback: resolve with True ("the time is up")."""
    if not fut.done():
        fut.set_result(True)


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except OSError:
        return 0


async def configure_writer_connection(conn: aiosqlite.Connection, wal_max_bytes: int = DEFAULT_WAL_MAX_BYTES) -> None:
    """The pragmas of a writing connection: durable commits, no inline checkpoints, and a WAL
    file cut back to `wal_max_bytes` whenever it starts over."""
    await conn.execute_fetchall("PRAGMA busy_timeout = 5000")
    await conn.execute_fetchall("PRAGMA synchronous = FULL")
    await conn.execute_fetchall(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    await conn.execute_fetchall("PRAGMA mmap_size = 0")
    await conn.execute_fetchall("PRAGMA wal_autocheckpoint = 0")
    await conn.execute_fetchall(f"PRAGMA journal_size_limit = {int(wal_max_bytes)}")


async def memory_pragmas(conn: aiosqlite.Connection) -> dict[str, int]:
    """A connection's `cache_size` (negative: KiB) and `mmap_size` (bytes)."""
    out: dict[str, int] = {}
    for name in ("cache_size", "mmap_size"):
        rows = list(await conn.execute_fetchall(f"PRAGMA {name}"))
        out[name] = int(rows[0][0]) if rows and rows[0][0] is not None else 0
    return out


class LedgerWriter:
    """Owns the ledger's only writing connection; see the module docstring."""

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection | None,
        *,
        next_seq: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        hard_queue: int | None = None,
        checkpoint_idle_s: float = DEFAULT_CHECKPOINT_IDLE_S,
        wal_max_bytes: int = DEFAULT_WAL_MAX_BYTES,
        wal_check_interval_s: float = DEFAULT_WAL_CHECK_INTERVAL_S,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.path = path
        self._conn = conn
        self._checkpointer = checkpointer
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_queue = max_queue
        self._hard_queue = hard_queue if hard_queue is not None else max(8 * max_queue, max_batch)
        self._checkpoint_idle_s = checkpoint_idle_s
        self._wal_max_bytes = wal_max_bytes
        self._wal_check_interval_s = wal_check_interval_s
        self._queue: list[EventRow] = []
        self._inflight: list[EventRow] = []  # the batch being committed now
        self._ahead: AheadFile | None = None
        self._mirrored = next_seq - 1  # every event up to this seq is committed or in the ahead file
        self._next_seq = next_seq
        self._committed = next_seq - 1
        self._urgent_seq = 0  # highest seq somebody waits on
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by seq
        self._tiebreak = itertools.count()
        self._rejected: dict[int, EventRejectedError] = {}
        self._kick: asyncio.Future[bool] | None = None
        self._idle = False
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._closed = False
        self._failed: LedgerWriteError | None = None
        self.on_failure: Callable[[BaseException], None] | None = None  # told once, when it stops
        self._task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._size_task: asyncio.Task[None] | None = None
        self._dirty = False  # committed since the last checkpoint
        self._restart_due = False
        self._last_size_check = time.monotonic()
        # Counters (tests and `stats()` read them).
        self.commits = 0
        self.events_written = 0
        self.largest_batch = 0
        self.rejected = 0
        self.checkpoints = 0
        self.wal_restarts = 0
        self.last_error = ""

    # -- construction --------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path, **options: Any) -> LedgerWriter:
        """Connect to an existing, migrated ledger file and start the writer task."""
        conn = await aiosqlite.connect(path, isolation_level="IMMEDIATE")
        checkpointer: aiosqlite.Connection | None = None
        try:
            await configure_writer_connection(conn, options.get("wal_max_bytes", DEFAULT_WAL_MAX_BYTES))
            async with conn.execute("SELECT coalesce(max(seq), 0) FROM events") as cur:
                row = await cur.fetchone()
            # After a failed writer, seqs it handed out (maybe mirrored to the write-ahead
            # file, never committed) are not used again: `min_next_seq`.
            next_seq = max(int(row[0] if row else 0) + 1, int(options.pop("min_next_seq", 1)))
            checkpointer = await aiosqlite.connect(path, isolation_level=None)
            await checkpointer.execute_fetchall("PRAGMA busy_timeout = 5000")
            await checkpointer.execute_fetchall("PRAGMA synchronous = FULL")
            await checkpointer.execute_fetchall(f"PRAGMA cache_size = -{CHECKPOINTER_CACHE_KIB}")
            await checkpointer.execute_fetchall("PRAGMA mmap_size = 0")
            writer = cls(path, conn, checkpointer, next_seq=next_seq, **options)
        except BaseException:
            await conn.close()
            if checkpointer is not None:
                await checkpointer.close()
            raise
        writer.start()
        return writer

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    # -- producers -----------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The seq of the last event appended (committed or not)."""
        return self._next_seq - 1

    @property
    def committed_seq(self) -> int:
        """Every event with a seq up to this one is committed (or was refused)."""
        return self._committed

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise LedgerClosedError(f"{self.path}: the ledger is closed")

    def append(self, event: LedgerEvent) -> int:
        """Queue one event; returns its seq at once. Call from the event loop's thread."""
        self._check_open()
        queue = self._queue
        if len(queue) >= self._hard_queue:
            raise LedgerBackpressureError(
                f"{self.path}: {len(queue)} events wait for the disk (limit {self._hard_queue}); "
                "the ledger cannot keep up"
            )
        seq = self._next_seq
        self._next_seq = seq + 1
        queue.append(event_row(event, seq))
        if self._idle or len(queue) >= self._max_batch:
            self._kick_writer()
        return seq

    async def append_durable(self, event: LedgerEvent) -> int:
        """Queue one event and return its seq once the transaction that holds it has committed."""
        if len(self._queue) >= self._max_queue:
            await self._wait_for_room()
        seq = self.append(event)
        await self.wait_committed(seq)
        return seq

    # -- the write-ahead file (ledger.ahead) ---------------------------------------------
    def attach_ahead(self, ahead: AheadFile) -> None:
        """Use `ahead` for `mirror`; the writer cuts it back as the journal catches up."""
        self._ahead = ahead

    def mirror(self) -> None:
        """Write every event not yet committed and not yet mirrored (the batch in flight and the
        queue, in seq order) to the write-ahead file, in one write, on the caller's thread.
        After it returns, a killed process loses none of them (ledger.ahead). Raises
        LedgerError when there is no file, OSError when the write failed."""
        self._check_open()
        ahead = self._ahead
        if ahead is None:
            raise LedgerError(f"{self.path}: no write-ahead file is attached")
        last = self._next_seq - 1
        mirrored = self._mirrored
        if last <= mirrored:
            return
        rows = [r for r in self._inflight if r[0] > mirrored]
        queue = self._queue
        start = len(queue)
        while start > 0 and queue[start - 1][0] > mirrored:
            start -= 1
        rows.extend(queue[start:])
        ahead.write(rows)
        self._mirrored = last

    def _cut_ahead(self, ahead: AheadFile) -> None:
        try:
            ahead.truncate()
        except OSError as exc:  # kept as it is: replaying committed rows is a no-op
            self.last_error = f"write-ahead file: {exc}"

    async def wait_committed(self, seq: int | None = None) -> None:
        """Wait until `seq` (default: the last event appended so far) is committed.

        Raises EventRejectedError if that very event was refused, LedgerWriteError if the
        writer stopped before committing it.
        """
        if seq is None:
            seq = self._next_seq - 1
        elif seq >= self._next_seq:
            raise ValueError(f"seq {seq} was never appended (last is {self._next_seq - 1})")
        if seq <= self._committed:
            if seq in self._rejected:
                raise self._rejected[seq]
            return
        if self._failed is not None:
            raise self._failed
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tiebreak), fut))
        self._urgent_seq = max(self._urgent_seq, seq)
        self._kick_writer()
        await fut

    async def _wait_for_room(self) -> None:
        while len(self._queue) >= self._max_queue:
            self._check_open()
            self._urgent_seq = max(self._urgent_seq, self._next_seq - 1)  # flush now, do not gather
            self._kick_writer()
            self._room.clear()
            await self._room.wait()

    def _kick_writer(self) -> None:
        kick = self._kick
        if kick is not None and not kick.done():
            kick.set_result(False)

    # -- the writer task -----------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        try:
            while True:
                if not queue:
                    if self._closing:
                        return
                    await self._idle_wait(loop)
                    continue
                if not self._closing and len(queue) < self._max_batch and self._urgent_seq < queue[0][0]:
                    # Nothing anybody waits for: gather more for up to max_delay_s.
                    self._kick = kick = loop.create_future()
                    handle = loop.call_later(self._max_delay_s, _wake, kick)
                    await kick
                    handle.cancel()
                    self._kick = None
                if self._restart_due:
                    await self._restart_wal()
                batch = queue[: self._max_batch]
                del queue[: self._max_batch]
                self._inflight = batch
                if not await self._write(batch):
                    return
                self._inflight = []
                self._committed = batch[-1][0]
                ahead = self._ahead
                if ahead is not None and ahead.size > TRUNCATE_AFTER_BYTES and self._committed >= self._mirrored:
                    self._cut_ahead(ahead)
                self._resolve_waiters()
                if len(queue) < self._max_queue:
                    self._room.set()
                self._after_commit()
        except BaseException as exc:
            self._fail(exc)
            raise

    async def _idle_wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the next event; checkpoint in the background if idle long enough after writing."""
        self._idle = True
        self._kick = kick = loop.create_future()
        handle = loop.call_later(self._checkpoint_idle_s, _wake, kick) if self._dirty else None
        timed_out = await kick
        if handle is not None:
            handle.cancel()
        self._idle = False
        self._kick = None
        if timed_out and self._dirty and self._checkpoint_task is None and self._checkpointer is not None:
            self._dirty = False
            self._checkpoint_task = asyncio.create_task(self._checkpoint(), name="ledger-checkpoint")

    async def _write(self, batch: list[EventRow]) -> bool:
        conn = self._conn
        try:
            # isolation_level IMMEDIATE: the INSERT opens `BEGIN IMMEDIATE` implicitly; the
            # projection triggers run inside it, the whole batch in one statement.
            await apply_many(batch, conn)
            await conn.commit()
        except sqlite3.IntegrityError:
            await self._rollback()
            return await self._write_each(batch)
        except sqlite3.Error as exc:
            await self._rollback()
            self._fail(exc)
            return False
        self.commits += 1
        self.events_written += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        return True

    async def _write_each(self, batch: list[EventRow]) -> bool:
        """After a constraint failure: one transaction per event, refusing only the bad ones."""
        conn = self._conn
        for row in batch:
            try:
                await apply_many([row], conn)
                await conn.commit()
            except sqlite3.IntegrityError as exc:
                await self._rollback()
                self.rejected += 1
                self.last_error = f"event {row[0]} ({row[2]}) refused: {exc}"
                self._rejected[row[0]] = EventRejectedError(f"{self.path}: {self.last_error}")
                while len(self._rejected) > REJECTED_KEPT:  # the oldest, by seq
                    del self._rejected[next(iter(self._rejected))]
                continue
            except sqlite3.Error as exc:
                await self._rollback()
                self._fail(exc)
                return False
            self.commits += 1
            self.events_written += 1
        self.largest_batch = max(self.largest_batch, 1)
        return True

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            await self._conn.rollback()

    def _resolve_waiters(self) -> None:
        committed = self._committed
        waiters = self._waiters
        while waiters and waiters[0][0] <= committed:
            seq, _, fut = heapq.heappop(waiters)
            if fut.done():
                continue  # the caller was cancelled; its event is committed anyway
            rejected = self._rejected.get(seq)
            if rejected is not None:
                fut.set_exception(rejected)
            else:
                fut.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        if isinstance(exc, asyncio.CancelledError):
            message = "the writer task was cancelled"
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.last_error = message
        self._failed = LedgerWriteError(f"{self.path}: ledger write failed, the writer stopped: {message}")
        self._queue.clear()
        self._inflight = []
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(self._failed)
        self._waiters.clear()
        self._room.set()
        callback = self.on_failure
        if callback is not None and not isinstance(exc, asyncio.CancelledError):
            try:
                callback(self._failed)
            except Exception as cb_exc:  # the writer has stopped either way
                self.last_error += f"; failure callback: {cb_exc!r}"

    # -- checkpoints ---------------------------------------------------------------------
    def _after_commit(self) -> None:
        self._dirty = True
        if self._size_task is not None:
            return
        now = time.monotonic()
        if now - self._last_size_check >= self._wal_check_interval_s:
            self._last_size_check = now
            self._size_task = asyncio.create_task(self._check_wal_size(), name="ledger-wal-size")

    async def _check_wal_size(self) -> None:
        try:
            size = await asyncio.to_thread(_wal_size, self.path)
            if size > self._wal_max_bytes:
                self._restart_due = True
            elif size > self._wal_max_bytes // 4 and self._checkpoint_task is None and self._checkpointer is not None:
                # Copy most of the WAL in the background now, so the restart has little left to do.
                self._checkpoint_task = asyncio.create_task(self._checkpoint(), name="ledger-checkpoint")
        finally:
            self._size_task = None

    async def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        try:
            await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a failed checkpoint loses nothing; the next one retries
            self.last_error = f"checkpoint: {exc}"
        finally:
            self._checkpoint_task = None

    async def _restart_wal(self) -> None:
        """The WAL passed wal_max_bytes under sustained load: checkpoint it all and start it over.

        RESTART, not TRUNCATE: the next commits overwrite the WAL file's existing space, which
        costs less to fsync than growing a file; `journal_size_limit` caps what is kept.
        """
        self._restart_due = False
        if self._checkpoint_task is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint_task
        conn = self._conn
        try:
            # A reader in the middle of a long read must not stall the writer: wait for readers
            # at most 10 ms; if one is still there, the WAL is copied but not restarted this time.
            await conn.execute_fetchall("PRAGMA busy_timeout = 10")
            rows = list(await conn.execute_fetchall("PRAGMA wal_checkpoint(RESTART)"))
            if rows and rows[0][0] == 0:
                self.wal_restarts += 1
        except sqlite3.Error as exc:
            self.last_error = f"checkpoint: {exc}"
        finally:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute_fetchall("PRAGMA busy_timeout = 5000")

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def failed(self) -> LedgerError | None:
        return self._failed

    async def close(self) -> None:
        """Refuse new events, commit everything queued, and close the connections."""
        if self._closed:
            return
        self._closing = True
        self._kick_writer()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        for task in (self._checkpoint_task, self._size_task):
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        self._closed = True
        if self._checkpointer is not None:
            await self._checkpointer.close()
        await self._conn.close()

    async def memory_settings(self) -> dict[str, dict[str, int]]:
        """`cache_size` and `mmap_size` as each of the writer's connections has them (the bounds
        on their C memory: `WRITER_CACHE_KIB`, `CHECKPOINTER_CACHE_KIB`)."""
        out = {"writer": await memory_pragmas(self._conn)}
        if self._checkpointer is not None:
            out["checkpointer"] = await memory_pragmas(self._checkpointer)
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "last_seq": self.last_seq,
            "committed_seq": self._committed,
            "queued": len(self._queue),
            "commits": self.commits,
            "events_written": self.events_written,
            "largest_batch": self.largest_batch,
            "rejected": self.rejected,
            "checkpoints": self.checkpoints,
            "wal_restarts": self.wal_restarts,
            "failed": self._failed is not None,
            "last_error": self.last_error,
        }
