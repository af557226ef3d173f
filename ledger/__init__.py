"""SQLite ledger: schema and migrations, the single writer, projections, recovery, queries.

The runtime holds one `Ledger` (`await Ledger.open(path)`); the command line reads a file
with `ledger.queries` (`queries.run(path, queries.summary)`). docs/ledger.md describes the
tables, the journal and the durability rules.
"""

from ledger.errors import (
    EventRejectedError,
    LedgerBackpressureError,
    LedgerBusyError,
    LedgerClosedError,
    LedgerCorruptError,
    LedgerError,
    LedgerTooNewError,
    LedgerWriteError,
    NotALedgerError,
)
from ledger.events import LedgerEvent
from ledger.ledger import DecisionSampler, DecisionStats, Ledger, RecoveredState
from ledger.schema import APPLICATION_ID, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "DecisionSampler",
    "DecisionStats",
    "EventRejectedError",
    "Ledger",
    "LedgerBackpressureError",
    "LedgerBusyError",
    "LedgerClosedError",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerEvent",
    "LedgerTooNewError",
    "LedgerWriteError",
    "NotALedgerError",
    "RecoveredState",
]
