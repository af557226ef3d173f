"""Errors of the ledger. Every one says which file and what to do about it.

`exit_code` is what the command line should exit with: 2 for a file quantarb cannot use
(not a ledger, written by a newer quantarb, damaged), 3 for a runtime failure (the disk
refused a write, the ledger is used by another process).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: anything the ledger refuses or cannot do."""

    exit_code = 3


class NotALedgerError(LedgerError):
    """The file is not a quantarb ledger (garbage, another application's SQLite file)."""

    exit_code = 2


class LedgerTooNewError(LedgerError):
    """The file was written by a newer quantarb, with a schema this code does not know."""

    exit_code = 2


class LedgerCorruptError(LedgerError):
    """SQLite reports the file damaged (quick_check, "malformed", "not a database" behind a valid
    header): nothing may be written to it and no engine may trade on it."""

    exit_code = 2


class LedgerBusyError(LedgerError):
    """Another engine (another process, or another Ledger in this one) holds the file's writer
    lock, whatever name or path it was opened by."""


class LedgerClosedError(LedgerError):
    """An event was appended after `close()`."""


class LedgerWriteError(LedgerError):
    """A transaction failed: the writer stops and every waiting caller gets this error."""


class LedgerBackpressureError(LedgerError):
    """The write queue passed its hard limit: the disk does not keep up at all."""


class EventRejectedError(LedgerError):
    """One event violated a constraint of the ledger (a bug in its producer); it was not stored."""
