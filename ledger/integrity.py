"""Is the ledger file damaged, and how to say so: the integrity check at open, SQLite's damage
errors as LedgerCorruptError, and messages that name the file and the way out.

Damage is what SQLite reports as SQLITE_CORRUPT ("database disk image is malformed") or
SQLITE_NOTADB behind a valid header, what `PRAGMA quick_check` finds, and TEXT that is not
UTF-8 (Python's sqlite3 cannot decode it). Messages never quote the damaged bytes raw: a
damaged file may hold terminal control sequences.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from ledger.errors import LedgerCorruptError, LedgerError

# SQLite's primary result codes for a damaged file (sqlite3.Error.sqlite_errorcode & 0xff).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DAMAGE_SHOWN = 3  # quick_check lines quoted in the refusal
# A damaged record or schema whose text is not UTF-8: Python cannot even decode SQLite's
# message about it (sqlite3 raises UnicodeDecodeError), so it is damage too.
INVALID_TEXT = "it holds text that is not UTF-8"
RESTORE_ADVICE = (
    "Do not trade on it: stop every engine on it, keep a copy of the file with its -wal and -shm, "
    "restore your last good backup, and run `quantarb ledger check --ledger {path}` to see the damage."
)


def is_damage(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file itself is damaged ("malformed", "not a database"), or a
    TEXT value is not UTF-8 (Python's sqlite3 reports that with this message and no code)."""
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    return str(exc).startswith("Could not decode to UTF-8")


def damaged(path: Path, what: str) -> LedgerCorruptError:
    """The refusal of a damaged ledger: what SQLite found, and what the operator should do."""
    return LedgerCorruptError(f"{path}: the ledger is damaged ({what}). {RESTORE_ADVICE.format(path=path)}")


def damage_text(exc: sqlite3.Error | UnicodeDecodeError) -> str:
    """What SQLite said about the damage, without the damaged bytes themselves (Python's
    "Could not decode" quotes the bad text, which may hold terminal control sequences)."""
    if isinstance(exc, UnicodeDecodeError):
        return INVALID_TEXT
    text = str(exc)
    if text.startswith("Could not decode to UTF-8"):
        column = re.search(r"column '(\w+)'", text)
        return INVALID_TEXT + (f" (column {column.group(1)})" if column else "")
    return "SQLite: " + printable(text)


def printable(text: str) -> str:
    """`text` with control characters (escape sequences of a damaged file) as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def read_error(path: Path, exc: sqlite3.Error | UnicodeDecodeError) -> LedgerError:
    """An error met while reading a ledger, as a LedgerError (damage or not)."""
    if isinstance(exc, UnicodeDecodeError) or is_damage(exc):
        return damaged(path, damage_text(exc))
    return LedgerError(f"{path}: cannot read the ledger: {exc}")


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file (`PRAGMA quick_check`: every page, cell and free-list entry; not
    the index contents, which `integrity_check` compares at a cost a start cannot pay)."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        raise damaged(path, damage_text(exc)) from None
    problems = [printable(line) for row in rows if row[0] != "ok" for line in str(row[0]).splitlines()]
    problems = [p for p in problems if p and not p.startswith("*** in database")]
    if problems:
        more = f"; {len(problems) - _DAMAGE_SHOWN} more" if len(problems) > _DAMAGE_SHOWN else ""
        raise damaged(path, "SQLite quick_check: " + "; ".join(problems[:_DAMAGE_SHOWN]) + more)
