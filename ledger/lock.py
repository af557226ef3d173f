"""One engine per ledger file, whatever name, link or path it is opened by.

`WriterLock` holds two exclusive `flock`s from `Ledger.open` to `Ledger.close`; the OS drops
both when the process exits or is killed (kill -9 included), so a dead engine never blocks
the next one:

- on the database file itself (its device and inode): a symlink, a hard link, a relative path
  or `..` all reach the same inode, so a second writer is refused however it names the file.
  Hard links matter most: SQLite names its -wal and -shm after the name it opened, so two
  writers through two names keep two WALs and corrupt the file;
- on `<resolved path>.lock`: the -wal and -shm belong to the resolved name, so an engine on a
  file that was replaced under a running one (same name, new inode) is refused too. It holds
  the pid of the engine, for the message.

Why `flock` and not `fcntl`/`lockf`: SQLite locks the database with POSIX record locks, which
belong to the process and all vanish when the process closes ANY descriptor of the file.
`flock` locks belong to one open file description: on Linux and the BSDs they never interact
with SQLite's (not on NFS, where SQLite's WAL does not work anyway), and a second Ledger in
the same process conflicts with the first exactly like a second process.

The hazard left is ours to avoid: closing our own descriptor of the database drops this
process's POSIX locks on it, SQLite's included. So the process never opens a descriptor on a
database that one of its Ledgers holds (`_held`, checked before opening), and the held
descriptor is closed only after that Ledger's connections are (`Ledger.close`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from ledger.errors import LedgerBusyError, NotALedgerError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no writer lock
    fcntl = None  # type: ignore[assignment]

PRIVATE_FILE = 0o600
_OPEN = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)

# (st_dev, st_ino) of every database a WriterLock of this process holds, and descriptors that
# a rename race made us open on one of them (closed with its holder's, never before).
_held: dict[tuple[int, int], list[int]] = {}
_guard = threading.Lock()  # Ledger.open runs this in worker threads


class WriterLock:
    """The writer lock of the database at `path` (resolved: no symlink, no `..`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.links = 1  # the database's hard link count when locked
        self._name_fd: int | None = None
        self._db_fd: int | None = None
        self._key: tuple[int, int] | None = None

    def acquire(self, shown: Path) -> None:
        """Lock the name, then the file (creating it with mode 0600 if missing). LedgerBusyError
        if another engine holds either; OSError if the filesystem refuses. `shown` is the path
        as the operator gave it, for the messages."""
        if fcntl is None:  # pragma: no cover
            return
        try:
            self._lock_name(shown)
            self._lock_file(shown)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop both locks. Call it after every connection to the database is closed."""
        if self._db_fd is not None:
            with _guard:
                strays = _held.pop(self._key, []) if self._key is not None else []
                for fd in (self._db_fd, *strays):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._db_fd = None
            self._key = None
        if self._name_fd is not None:
            os.close(self._name_fd)
            self._name_fd = None

    def _lock_name(self, shown: Path) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _OPEN, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if holder == str(os.getpid()):
                raise _busy_here(shown) from None
            raise LedgerBusyError(
                f"{shown}: in use by another quantarb process (pid {holder}); one engine per ledger"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._name_fd = fd
        with contextlib.suppress(OSError):  # an old file may allow more; it only holds a pid
            os.fchmod(fd, PRIVATE_FILE)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())

    def _lock_file(self, shown: Path) -> None:
        with _guard:
            fd = self._open_database(shown)
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino)
            if key in _held:  # renamed onto this path between our stat and our open
                _held[key].append(fd)  # closing it now would drop that Ledger's SQLite locks
                raise _busy_here(shown)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Held by another process: no Ledger of ours has this file open, so closing
                # our descriptor takes no SQLite lock of ours with it.
                os.close(fd)
                raise LedgerBusyError(
                    f"{shown}: in use by another quantarb process that opened the same file under "
                    f"another name (a hard link, or the file was moved); one engine per ledger"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            _held[key] = []
            self._db_fd, self._key, self.links = fd, key, info.st_nlink

    def _open_database(self, shown: Path) -> int:
        """A descriptor on the database, created (0600, exactly) if missing; never a second one
        on a database this process holds. Call with `_guard` held."""
        while True:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN, PRIVATE_FILE)
                except FileExistsError:
                    continue  # another process created it first: lock that one
                os.fchmod(fd, PRIVATE_FILE)  # exact, whatever the umask
                return fd
            if not stat.S_ISREG(info.st_mode):
                raise NotALedgerError(f"{shown}: not a regular file, not a quantarb ledger")
            if (info.st_dev, info.st_ino) in _held:
                raise _busy_here(shown)
            return os.open(self.path, os.O_RDONLY | _OPEN)


def _busy_here(shown: Path) -> LedgerBusyError:
    return LedgerBusyError(
        f"{shown}: in use by another ledger of this quantarb process (the same file, under this or "
        f"another name); one engine per ledger"
    )
