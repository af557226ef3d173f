"""`quantarb ledger backup DEST`: a consistent copy of a ledger, while its engine runs.

SQLite's online backup API (`sqlite3.Connection.backup`) copies the database from a
read-only connection in one step, that is inside one read transaction: the copy is the
journal as committed at one instant, projections and all. In WAL mode a reader never blocks
the writer, so the engine keeps committing while the copy is made (its checkpoints just wait
for the copy to end).

The copy is written next to DEST under a temporary name, switched to a rollback journal (one
self-contained file: no -wal or -shm to carry), checked with `PRAGMA quick_check`, fsync'd,
given mode 0600, and only then put in place: a DEST that exists is never touched without
`force`, and a backup cut short never leaves a half-written DEST.

The write-ahead file (`<ledger>.ahead`, ledger.ahead) is not copied. For a running engine it
holds rows still on their way to the journal; the backup is the committed journal, a
consistent state on its own (restoring it loses what came after, as any backup does). Rows
in it beyond the copy are counted (`ahead_rows`): many only if the engine was killed and not
started since, in which case starting it once commits them (it replays the file) and the next
backup has them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.ahead import ahead_path, read_ahead
from ledger.errors import LedgerError
from ledger.integrity import check_integrity, read_error
from ledger.schema import check_readable, reader_uri

PRIVATE_FILE = 0o600
_SQLITE_FULL = 13  # SQLite primary result code: the disk is full


class BackupRefused(LedgerError):
    """The backup was not made: the source is not a readable ledger (missing, not a ledger),
    or DEST exists, is the ledger itself, or cannot be a file. Exit code 2, like every ledger
    command given a file it cannot read."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class BackupResult:
    source: Path
    dest: Path
    bytes: int
    last_seq: int  # the journal's last committed seq in the copy
    version: int  # the ledger's schema version
    seconds: float
    ahead_rows: int | None  # rows of <ledger>.ahead past the copy (None: the file could not be read)


def backup(source: Path, dest: Path, *, force: bool = False) -> BackupResult:
    """Copy the ledger at `source` to `dest` (blocking). BackupRefused when `dest` may not be
    written; LedgerError when `source` is not a readable ledger or the copy fails."""
    started = time.monotonic()
    source, dest = source.expanduser(), dest.expanduser()
    try:
        version = check_readable(source)
    except LedgerError as exc:
        if exc.exit_code == BackupRefused.exit_code:
            raise
        raise BackupRefused(str(exc)) from None
    _check_dest(source, dest, force=force)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        raise LedgerError(f"{dest}: cannot create the backup: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, PRIVATE_FILE)  # exact, whatever the umask
        os.close(fd)
        last_seq = _copy(source, partial, dest)
        _fsync(partial)
        _put_in_place(partial, dest, force=force)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _fsync_dir(dest.parent)
    return BackupResult(
        source=source, dest=dest, bytes=dest.stat().st_size, last_seq=last_seq, version=version,
        seconds=time.monotonic() - started, ahead_rows=_ahead_rows(source, last_seq),
    )


def _check_dest(source: Path, dest: Path, *, force: bool) -> None:
    parent = dest.parent
    if not parent.is_dir():
        raise BackupRefused(f"{dest}: the directory {parent} does not exist")
    if dest.is_dir():
        raise BackupRefused(f"{dest}: is a directory; name the backup file, e.g. {dest / source.name}")
    if dest.exists() or dest.is_symlink():
        with contextlib.suppress(OSError):
            if os.path.samefile(source, dest):
                raise BackupRefused(f"{dest}: is the ledger itself")
        if not force:
            raise BackupRefused(f"{dest}: already exists; pass --force to replace it")
        if not dest.is_file() or dest.is_symlink():
            raise BackupRefused(f"{dest}: not a regular file; not replaced, even with --force")
    elif dest.resolve() == source.resolve():
        raise BackupRefused(f"{dest}: is the ledger itself")
    for suffix in ("-wal", "-shm"):
        companion = dest.with_name(dest.name + suffix)
        if companion.exists():
            # SQLite would apply that write-ahead log to the new file at its next open.
            raise BackupRefused(f"{dest}: {companion} exists: DEST is, or was, a database in use; "
                                f"back up to another name")


def _copy(source: Path, partial: Path, dest: Path) -> int:
    """The backup API from a read-only connection into `partial`; returns the last seq."""
    try:
        src = sqlite3.connect(reader_uri(source), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerError(f"{source}: cannot open the ledger: {exc}") from exc
    try:
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout = 5000")
            src.backup(dst)  # pages=-1: one step, one read transaction, one consistent instant
            mode = str(dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
            if mode.lower() != "delete":
                raise LedgerError(f"{dest}: cannot make the backup self-contained (journal mode {mode!r})")
            check_integrity(dst, dest)
            return int(dst.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as exc:
        if exc.sqlite_errorcode & 0xFF == _SQLITE_FULL:
            raise LedgerError(f"{dest}: the disk is full; the backup was not made") from None
        raise read_error(source, exc) from None
    finally:
        src.close()


def _put_in_place(partial: Path, dest: Path, *, force: bool) -> None:
    """`partial` becomes `dest`: replacing it only with `force`; otherwise a link, which fails
    if `dest` appeared meanwhile (no check-then-write race)."""
    try:
        if force:
            os.replace(partial, dest)
            return
        try:
            os.link(partial, dest)
        except FileExistsError:
            raise BackupRefused(f"{dest}: already exists; pass --force to replace it") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this filesystem: the check made before the copy has to do.
            if dest.exists():
                raise BackupRefused(f"{dest}: already exists; pass --force to replace it") from None
            os.rename(partial, dest)
            return
        os.unlink(partial)
    except OSError as exc:
        raise LedgerError(f"{dest}: cannot put the backup in place: {exc.strerror or exc}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsync'd
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ahead_rows(source: Path, last_seq: int) -> int | None:
    try:
        contents = read_ahead(ahead_path(source.resolve()), ahead_path(source))
    except LedgerError:
        return None
    return sum(1 for row in contents.rows if row[0] > last_seq)
