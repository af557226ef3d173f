"""The ledger's schema, its migrations, and how a file is recognised, created and upgraded.

A quantarb ledger is an SQLite file in WAL mode whose header carries
`PRAGMA application_id = 0x51415242` ("QARB") and `PRAGMA user_version = <schema version>`.
Opening for writing applies every migration above the file's version in one transaction;
a file of another application, garbage, or a version above SCHEMA_VERSION is refused with a
LedgerError that names the file and says why.

Migrations are append-only history: migration N is what version N added, and is never
edited once released. Each is a tuple of SQL statements (no scripts: `executescript` would
commit the surrounding transaction). The projection triggers live in `ledger.projections`
and are pulled in by the migration that created them.

This module is synchronous stdlib sqlite3: opening and migrating happen once, before the
asyncio writer starts, in a worker thread (`Ledger.open` runs it with `asyncio.to_thread`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import LedgerError, LedgerTooNewError, NotALedgerError
from ledger.integrity import INVALID_TEXT, check_integrity, damage_text, damaged, is_damage, read_error
from ledger.projections import TRIGGERS_V1, TRIGGERS_V3

APPLICATION_ID = 0x51415242  # "QARB"
SQLITE_MAGIC = b"SQLite format 3\x00"

# The public tables of docs/ledger.md (the contract), then the internal ones.
PUBLIC_TABLES: tuple[str, ...] = (
    "hedge_groups",
    "orders",
    "fills",
    "compensation_actions",
    "risk_events",
    "decisions",
    "events",
)
# Documented projections added after the contract (version 3): readable, exported, checked.
STATS_TABLES: tuple[str, ...] = ("decision_stats", "dust")
INTERNAL_TABLES: tuple[str, ...] = ("mt5_commands",)

TABLES_V1: tuple[str, ...] = (
    """
CREATE TABLE events (
  seq       INTEGER PRIMARY KEY,   -- increasing, assigned by the single writer (gaps possible)
  ts_ms     INTEGER NOT NULL,      -- when the ledger recorded the event
  kind      TEXT NOT NULL,         -- decision, group_opened, ... (docs/ledger.md)
  group_id  TEXT,                  -- the hedge group it belongs to, if any
  payload   TEXT NOT NULL          -- JSON object; decimals as strings
)""",
    """
CREATE TABLE hedge_groups (
  group_id           TEXT PRIMARY KEY,
  pair               TEXT NOT NULL,
  buy_venue          TEXT NOT NULL,
  sell_venue         TEXT NOT NULL,
  state              TEXT NOT NULL,
  opened_at_ms       INTEGER NOT NULL,
  closed_at_ms       INTEGER,
  target_qty         TEXT NOT NULL,
  expected_edge_bps  REAL,
  realized_pnl       TEXT NOT NULL,
  fees               TEXT NOT NULL
)""",
    """
CREATE TABLE orders (
  order_id         TEXT PRIMARY KEY,
  client_order_id  TEXT NOT NULL UNIQUE,
  group_id         TEXT,
  venue            TEXT NOT NULL,
  symbol           TEXT NOT NULL,
  side             TEXT NOT NULL,
  qty              TEXT NOT NULL,
  price            TEXT NOT NULL,
  purpose          TEXT NOT NULL,
  state            TEXT NOT NULL,
  venue_order_id   TEXT NOT NULL,
  created_at_ms    INTEGER NOT NULL,
  updated_at_ms    INTEGER NOT NULL
)""",
    """
CREATE TABLE fills (
  fill_id         INTEGER PRIMARY KEY,
  order_id        TEXT NOT NULL,
  venue           TEXT NOT NULL,
  venue_trade_id  TEXT NOT NULL,
  qty             TEXT NOT NULL,
  price           TEXT NOT NULL,
  fee             TEXT NOT NULL,
  fee_ccy         TEXT NOT NULL,
  ts_ms           INTEGER NOT NULL,
  UNIQUE (venue, venue_trade_id)
)""",
    """
CREATE TABLE compensation_actions (
  action_id      TEXT PRIMARY KEY,
  group_id       TEXT NOT NULL,
  kind           TEXT NOT NULL,
  reason         TEXT NOT NULL,
  created_at_ms  INTEGER NOT NULL,
  outcome        TEXT NOT NULL
)""",
    """
CREATE TABLE risk_events (
  event_id       INTEGER PRIMARY KEY,
  ts_ms          INTEGER NOT NULL,
  kind           TEXT NOT NULL,
  reason         TEXT NOT NULL,
  trading_state  TEXT NOT NULL
)""",
    """
CREATE TABLE decisions (
  ts_ms       INTEGER NOT NULL,
  pair        TEXT NOT NULL,
  buy_venue   TEXT,
  sell_venue  TEXT,
  edge_bps    REAL,
  outcome     TEXT NOT NULL,
  reason      TEXT NOT NULL
)""",
    """
CREATE TABLE mt5_commands (
  command_id        TEXT PRIMARY KEY,
  terminal          TEXT NOT NULL,
  group_id          TEXT,
  client_order_id   TEXT NOT NULL,
  kind              TEXT NOT NULL,
  symbol            TEXT NOT NULL,
  side              TEXT NOT NULL,
  volume            TEXT NOT NULL,
  price             TEXT NOT NULL,
  deviation_points  INTEGER NOT NULL,
  filling           TEXT NOT NULL,
  magic             INTEGER NOT NULL,
  position          INTEGER NOT NULL,
  expires_msc       INTEGER NOT NULL,
  created_ms        INTEGER NOT NULL,
  state             TEXT NOT NULL,
  retcode           INTEGER NOT NULL,
  reason            TEXT NOT NULL,
  updated_ms        INTEGER NOT NULL,
  deliveries        INTEGER NOT NULL,
  fills             TEXT NOT NULL,   -- JSON array of the command's deals
  filled_volume     TEXT NOT NULL
)""",
)

# The orders recovery must ask the venues about: a small partial index (queries must use this
# exact condition to use it).
OPEN_ORDERS_WHERE = "state NOT IN ('filled', 'cancelled', 'rejected', 'expired')"

INDEXES_V2: tuple[str, ...] = (
    "CREATE INDEX events_by_group ON events (group_id, seq) WHERE group_id IS NOT NULL",
    "CREATE INDEX hedge_groups_by_state ON hedge_groups (state)",
    "CREATE INDEX hedge_groups_by_opened ON hedge_groups (opened_at_ms)",
    "CREATE INDEX orders_by_group ON orders (group_id)",
    "CREATE INDEX orders_open ON orders (state) WHERE state NOT IN ('filled', 'cancelled', 'rejected', 'expired')",
    "CREATE INDEX fills_by_order ON fills (order_id)",
    "CREATE INDEX fills_by_ts ON fills (ts_ms)",
    "CREATE INDEX compensation_by_group ON compensation_actions (group_id)",
    "CREATE INDEX decisions_by_ts ON decisions (ts_ms)",
    "CREATE INDEX mt5_commands_by_state ON mt5_commands (state)",
)


TABLES_V3: tuple[str, ...] = (
    """
CREATE TABLE decision_stats (
  event_id         INTEGER PRIMARY KEY,  -- the journal seq of its decision_stats event
  pair             TEXT NOT NULL,
  start_ms         INTEGER NOT NULL,     -- the interval [start_ms, start_ms + interval_ms), decision time
  interval_ms      INTEGER NOT NULL,
  decisions        INTEGER NOT NULL,     -- every decision with a counter quote, not sampled
  intents          INTEGER NOT NULL,
  edge_bucket_bps  REAL NOT NULL,        -- histogram bucket width
  edge_histogram   TEXT NOT NULL         -- JSON [[k, count], ...]: k = [k * width, (k + 1) * width) bps
)""",
    "CREATE INDEX decision_stats_by_start ON decision_stats (start_ms)",
    """
CREATE TABLE dust (
  pair      TEXT PRIMARY KEY,
  qty       TEXT NOT NULL,               -- base units, + long / - short; '0' once folded away
  ts_ms     INTEGER NOT NULL,
  event_id  INTEGER NOT NULL
)""",
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "journal, public tables, MT5 commands, projection triggers", TABLES_V1 + TRIGGERS_V1),
    Migration(2, "indexes for recovery, group timelines and time-range queries", INDEXES_V2),
    Migration(3, "decision statistics per pair and interval, the dust book", TABLES_V3 + TRIGGERS_V3),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def check_file(path: Path) -> None:
    """Refuse, before SQLite sees it, a path that cannot be a ledger (a directory, garbage bytes)."""
    if path.is_dir():
        raise NotALedgerError(f"{path}: is a directory, not a quantarb ledger file")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the ledger file: {exc.strerror or exc}") from exc
    if head and head != SQLITE_MAGIC:
        raise NotALedgerError(f"{path}: not a quantarb ledger (not an SQLite database file)")


def reader_uri(path: Path) -> str:
    """The URI that opens `path` read-only (blocking: resolves the path)."""
    return f"{path.resolve().as_uri()}?mode=ro"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A stdlib connection in autocommit mode (transactions are explicit)."""
    if readonly:
        return sqlite3.connect(reader_uri(path), uri=True, isolation_level=None)
    return sqlite3.connect(path, isolation_level=None)


def read_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, 0 for an empty new file; refuses foreign, newer and damaged
    files (`check_file` has already refused those without an SQLite header)."""
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        objects = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except UnicodeDecodeError:
        raise damaged(path, INVALID_TEXT) from None
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):  # behind a valid SQLite header: check_file refused any other
            raise damaged(path, damage_text(exc)) from None
        raise NotALedgerError(f"{path}: not a quantarb ledger ({exc})") from exc
    if app_id == 0 and version == 0 and objects == 0:
        return 0
    if app_id != APPLICATION_ID:
        raise NotALedgerError(
            f"{path}: not a quantarb ledger (an SQLite file with application_id {app_id:#x}, "
            f"{objects} schema objects; a ledger has application_id {APPLICATION_ID:#x})"
        )
    if version > SCHEMA_VERSION:
        raise LedgerTooNewError(
            f"{path}: ledger schema version {version} was written by a newer quantarb; this one "
            f"knows versions up to {SCHEMA_VERSION}. Upgrade quantarb to open it."
        )
    if version < 1:
        raise NotALedgerError(f"{path}: quantarb ledger header without a schema (version {version})")
    return version


def migrate(conn: sqlite3.Connection, path: Path, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the file to `target` in one transaction; returns (version before, version after).

    WAL mode is set first (it cannot change inside a transaction and persists in the file).
    The version is read again inside the write transaction, so two processes racing to
    create one file cannot both apply migration 1.
    """
    if not 1 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target version {target} outside 1..{SCHEMA_VERSION}")
    try:
        read_version(conn, path)  # refuse garbage before switching its journal mode
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise LedgerError(f"{path}: cannot switch the ledger to WAL mode (got {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise NotALedgerError(f"{path}: not a quantarb ledger ({exc})") from exc
    try:
        before = read_version(conn, path)
        if before > target:
            raise LedgerError(f"{path}: ledger is at version {before}, above the requested {target}")
        for migration in MIGRATIONS:
            if before < migration.version <= target:
                for statement in migration.statements:
                    conn.execute(statement)
        if before == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before, target


def prepare(
    path: Path, target: int = SCHEMA_VERSION, *, recognized: Callable[[], None] | None = None
) -> tuple[int, int]:
    """Check, create or migrate the ledger file at `path` (blocking).

    A file that is not a ledger, is newer or is damaged (`inspect_file`) is refused before anything
    is written to it. `recognized` runs once the file is known to be an intact ledger
    (or empty), before the migration writes: `Ledger.open` tightens the file modes there, so
    a file it refuses is left exactly as it was.
    """
    check_file(path)
    inspect_file(path)
    if recognized is not None:
        recognized()
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        return migrate(conn, path, target)
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise damaged(path, damage_text(exc)) from None
        raise LedgerError(f"{path}: cannot prepare the ledger: {exc}") from exc
    finally:
        conn.close()


def inspect_file(path: Path) -> int:
    """Version and integrity on a read-only connection (blocking); returns the version (0:
    empty). Read-only, because closing the last read-write connection checkpoints the WAL into
    the file: a refused file (damaged, foreign, newer) must keep its bytes and its WAL."""
    if not path.exists():
        return 0  # a new ledger
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        version = read_version(conn, path)
        check_integrity(conn, path)
        return version
    except sqlite3.Error as exc:
        raise read_error(path, exc) from None
    finally:
        conn.close()


def check_readable(path: Path) -> int:
    """Validate a ledger for reading (blocking); returns its version. Never writes or migrates.

    Older versions are readable: the public tables are a contract and every version has them.
    """
    if not path.exists():
        raise LedgerError(f"{path}: no such ledger file")
    check_file(path)
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        version = read_version(conn, path)
    finally:
        conn.close()
    if version == 0:
        raise NotALedgerError(f"{path}: empty file, not a quantarb ledger yet")
    return version


def current_statements() -> tuple[str, ...]:
    """Every statement of every migration, in order: the full current schema for an empty database."""
    return tuple(statement for migration in MIGRATIONS for statement in migration.statements)
