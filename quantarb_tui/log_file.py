"""`--log-file PATH`: headless's lines also go to a file that rotates by size.

The stdlib's RotatingFileHandler does the rotation: when the next line would take the file
past `max_bytes`, PATH becomes PATH.1 (PATH.1 becomes PATH.2, ...) and the oldest beyond
`backups` is deleted, so the log never takes more than (backups + 1) * max_bytes. Files are
created owner-only (0600): the log names positions, orders and PnL. A file that cannot be
written (disk full, removed directory) is said once on stderr; trading goes on and the lines
still reach stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class _PrivateRotatingHandler(RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600 whatever the umask, and which reports a
    failing write once instead of printing a traceback per line."""

    def __init__(self, path: Path, max_bytes: int, backups: int, errors: TextIO) -> None:
        self._errors = errors
        self._failed = False
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> TextIO:  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with contextlib.suppress(OSError):  # exact, whatever the umask; a file we do not own keeps its mode
            os.fchmod(fd, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        if self._failed:
            return
        self._failed = True
        exc = sys.exc_info()[1]
        reason = getattr(exc, "strerror", None) or exc
        try:
            self._errors.write(f"quantarb: cannot write the log file {self.baseFilename}: {reason} "
                               f"(said once; lines still go to stdout)\n")
            self._errors.flush()
        except (OSError, ValueError):
            pass


class RotatingLog:
    """Lines to `path`, rotated at `max_bytes`, keeping `backups` old files."""

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
        errors: TextIO | None = None,
    ) -> None:
        if max_bytes < 1 or backups < 1:
            raise ValueError("max_bytes and backups must be at least 1")
        self.path = path
        self._handler = _PrivateRotatingHandler(path, max_bytes, backups, errors or sys.stderr)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A logger of its own, not in logging's tree: nothing else writes to this file, and
        # these lines reach no other handler.
        self._logger = logging.Logger(f"quantarb.log_file:{path}")
        self._logger.propagate = False
        self._logger.addHandler(self._handler)

    def write(self, line: str) -> None:
        self._logger.info(line)

    def close(self) -> None:
        self._handler.close()
