"""The ledger's files are private: directory 0700, database, -wal, -shm and lock 0600.

The ledger holds positions, orders and fills. Modes are set explicitly (mkdir then chmod,
`os.open(..., 0o600)` then fchmod) rather than by changing the umask around the open: the
umask is process-wide and `Ledger.open` runs in a worker thread, so changing it would race
with every file any other thread creates meanwhile. SQLite creates the -wal and -shm with the
database file's own mode (it fchmods them to match, whatever the umask), so a 0600 database
gives 0600 companions. Files left looser by an older quantarb or by hand are tightened to
owner-only at open, and the change is reported, never refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ledger.errors import LedgerError

PRIVATE_DIR = 0o700
COMPANIONS = ("-wal", "-shm", ".lock", ".ahead")  # SQLite's WAL and index, the name lock, ledger.ahead

log = logging.getLogger(__name__)


def make_private_dirs(directory: Path, shown: Path) -> list[Path]:
    """Create `directory` and any missing parent with mode 0700 (exactly); existing directories
    are left as they are. Returns the directories it created (logged at INFO)."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.mkdir(d, PRIVATE_DIR)
                os.chmod(d, PRIVATE_DIR)  # the umask may have removed owner bits
                created.append(d)
                log.info("created the ledger's directory %s (mode 0700)", d)
        except OSError as exc:
            raise LedgerError(f"{shown}: cannot create the ledger's directory {d}: {exc.strerror or exc}") from exc
    return created


def ledger_files(database: Path) -> list[Path]:
    """The database and the files quantarb or SQLite keep next to it."""
    return [database, *(database.with_name(database.name + suffix) for suffix in COMPANIONS)]


def tighten(paths: Iterable[Path]) -> list[str]:
    """Make every existing regular file among `paths` owner-only (mode & 0700). Returns a warning
    per file changed or that could not be changed (reported, never fatal; logged at INFO: the
    engine shows them in its event log)."""
    notices: list[str] = []
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            notices.append(f"{path}: cannot read its mode: {exc.strerror or exc}")
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode) or not mode & 0o077:
            continue
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:
            notices.append(
                f"{path}: mode {mode:04o} lets other users read the ledger and it cannot be changed "
                f"({exc.strerror or exc}); chmod 600 it"
            )
            continue
        notices.append(
            f"{path}: mode {mode:04o} let other users read the ledger (positions and orders); "
            f"tightened to {mode & 0o700:04o}"
        )
    for notice in notices:
        log.info(notice)
    return notices
