"""Projections: the tables that are derived from the `events` journal.

Each projection is an SQLite trigger on `INSERT INTO events`, keyed by the event's kind, that
reads the event's JSON payload and inserts, updates or upserts the rows of one table. So the
journal row and every row it changes are written by the same statement, in the same
transaction, by the same code whether the writer appends a batch live or `rebuild` replays a
journal into an empty database: there is one implementation, and it cannot drift.

`apply(event, seq, connection)` is the single entry point for both: it inserts the journal
row (and so runs the projection). The live writer inserts a whole batch with one statement
(`apply_many`: the rows travel as one JSON array, so SQLite does all the work of a batch in
C, in one step, without taking Python's GIL row by row); `queries.check` rebuilds with
`INSERT INTO events SELECT ... FROM <ledger>.events ORDER BY seq`. Either way the same
triggers run on the same rows.

The triggers are part of the schema and versioned with it: TRIGGERS_V1 is what migration 1
created and must never change. A later change to a projection is a new migration that drops
and recreates the trigger and rebuilds the table from the journal.

Conventions in the payloads (see `ledger.events`): decimals are strings, times are integer
unix milliseconds, a missing time is JSON null. `json_extract` keeps those types, so the
projected columns are TEXT for decimals, INTEGER for times, REAL for edges in bps.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite
import msgspec

from ledger.events import LedgerEvent, encode_raw

# One journal row: (seq, ts_ms, kind, group_id, payload already encoded as JSON).
EventRow = tuple[int, int, str, str | None, msgspec.Raw]

INSERT_EVENT = "INSERT INTO events (seq, ts_ms, kind, group_id, payload) VALUES (?, ?, ?, ?, ?)"

# A batch of rows as one JSON array of [seq, ts_ms, kind, group_id, payload] arrays. SQLite
# returns the embedded payload object as its original (compact) JSON text.
INSERT_BATCH = (
    "INSERT INTO events (seq, ts_ms, kind, group_id, payload) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]') FROM json_each(?) ORDER BY key"
)

_encoder = msgspec.json.Encoder()

# Every table derived from the journal, in the order `check` reports them.
PROJECTION_TABLES: tuple[str, ...] = (
    "hedge_groups",
    "orders",
    "fills",
    "compensation_actions",
    "risk_events",
    "decisions",
    "mt5_commands",
    "decision_stats",
    "dust",
)

TRIGGERS_V1: tuple[str, ...] = (
    """
CREATE TRIGGER project_decision AFTER INSERT ON events WHEN NEW.kind = 'decision'
BEGIN
  INSERT INTO decisions (ts_ms, pair, buy_venue, sell_venue, edge_bps, outcome, reason)
  VALUES (
    json_extract(NEW.payload, '$.ts_ms'),
    json_extract(NEW.payload, '$.pair'),
    json_extract(NEW.payload, '$.buy_venue'),
    json_extract(NEW.payload, '$.sell_venue'),
    json_extract(NEW.payload, '$.edge_bps'),
    json_extract(NEW.payload, '$.outcome'),
    json_extract(NEW.payload, '$.reason')
  );
END
""",
    """
CREATE TRIGGER project_group_opened AFTER INSERT ON events WHEN NEW.kind = 'group_opened'
BEGIN
  INSERT INTO hedge_groups (group_id, pair, buy_venue, sell_venue, state, opened_at_ms,
                            closed_at_ms, target_qty, expected_edge_bps, realized_pnl, fees)
  VALUES (
    json_extract(NEW.payload, '$.group_id'),
    json_extract(NEW.payload, '$.pair'),
    json_extract(NEW.payload, '$.buy_venue'),
    json_extract(NEW.payload, '$.sell_venue'),
    json_extract(NEW.payload, '$.state'),
    json_extract(NEW.payload, '$.opened_ms'),
    NULL,
    json_extract(NEW.payload, '$.target_qty'),
    json_extract(NEW.payload, '$.expected_edge_bps'),
    '0',
    '0'
  )
  ON CONFLICT (group_id) DO NOTHING;
END
""",
    """
CREATE TRIGGER project_group_state AFTER INSERT ON events WHEN NEW.kind = 'group_state'
BEGIN
  UPDATE hedge_groups SET
    state = json_extract(NEW.payload, '$.state'),
    closed_at_ms = json_extract(NEW.payload, '$.closed_ms'),
    realized_pnl = json_extract(NEW.payload, '$.realized_pnl'),
    fees = json_extract(NEW.payload, '$.fees')
  WHERE group_id = json_extract(NEW.payload, '$.group_id');
END
""",
    """
CREATE TRIGGER project_order_created AFTER INSERT ON events WHEN NEW.kind = 'order_created'
BEGIN
  INSERT INTO orders (order_id, client_order_id, group_id, venue, symbol, side, qty, price,
                      purpose, state, venue_order_id, created_at_ms, updated_at_ms)
  VALUES (
    json_extract(NEW.payload, '$.client_order_id'),
    json_extract(NEW.payload, '$.client_order_id'),
    json_extract(NEW.payload, '$.group_id'),
    json_extract(NEW.payload, '$.venue'),
    json_extract(NEW.payload, '$.symbol'),
    json_extract(NEW.payload, '$.side'),
    json_extract(NEW.payload, '$.qty'),
    json_extract(NEW.payload, '$.price'),
    json_extract(NEW.payload, '$.purpose'),
    json_extract(NEW.payload, '$.state'),
    json_extract(NEW.payload, '$.venue_order_id'),
    json_extract(NEW.payload, '$.created_ms'),
    json_extract(NEW.payload, '$.updated_ms')
  )
  ON CONFLICT DO NOTHING;
END
""",
    """
CREATE TRIGGER project_order_state AFTER INSERT ON events WHEN NEW.kind = 'order_state'
BEGIN
  UPDATE orders SET
    state = json_extract(NEW.payload, '$.state'),
    venue_order_id = json_extract(NEW.payload, '$.venue_order_id'),
    updated_at_ms = json_extract(NEW.payload, '$.updated_ms')
  WHERE order_id = json_extract(NEW.payload, '$.client_order_id');
END
""",
    """
CREATE TRIGGER project_fill AFTER INSERT ON events WHEN NEW.kind = 'fill'
BEGIN
  INSERT INTO fills (fill_id, order_id, venue, venue_trade_id, qty, price, fee, fee_ccy, ts_ms)
  VALUES (
    NEW.seq,
    json_extract(NEW.payload, '$.client_order_id'),
    json_extract(NEW.payload, '$.venue'),
    json_extract(NEW.payload, '$.venue_trade_id'),
    json_extract(NEW.payload, '$.qty'),
    json_extract(NEW.payload, '$.price'),
    json_extract(NEW.payload, '$.fee'),
    json_extract(NEW.payload, '$.fee_ccy'),
    json_extract(NEW.payload, '$.ts_ms')
  )
  ON CONFLICT DO NOTHING;
END
""",
    """
CREATE TRIGGER project_compensation AFTER INSERT ON events WHEN NEW.kind = 'compensation'
BEGIN
  INSERT INTO compensation_actions (action_id, group_id, kind, reason, created_at_ms, outcome)
  VALUES (
    json_extract(NEW.payload, '$.action_id'),
    json_extract(NEW.payload, '$.group_id'),
    json_extract(NEW.payload, '$.kind'),
    json_extract(NEW.payload, '$.reason'),
    json_extract(NEW.payload, '$.created_ms'),
    json_extract(NEW.payload, '$.outcome')
  )
  ON CONFLICT (action_id) DO UPDATE SET reason = excluded.reason, outcome = excluded.outcome;
END
""",
    """
CREATE TRIGGER project_risk_event AFTER INSERT ON events WHEN NEW.kind = 'risk_event'
BEGIN
  INSERT INTO risk_events (event_id, ts_ms, kind, reason, trading_state)
  VALUES (
    NEW.seq,
    json_extract(NEW.payload, '$.ts_ms'),
    json_extract(NEW.payload, '$.kind'),
    json_extract(NEW.payload, '$.reason'),
    json_extract(NEW.payload, '$.trading_state')
  );
END
""",
    """
CREATE TRIGGER project_mt5_command AFTER INSERT ON events WHEN NEW.kind = 'mt5_command'
BEGIN
  INSERT INTO mt5_commands (command_id, terminal, group_id, client_order_id, kind, symbol, side,
                            volume, price, deviation_points, filling, magic, position, expires_msc,
                            created_ms, state, retcode, reason, updated_ms, deliveries, fills,
                            filled_volume)
  VALUES (
    json_extract(NEW.payload, '$.command_id'),
    json_extract(NEW.payload, '$.terminal'),
    json_extract(NEW.payload, '$.group_id'),
    json_extract(NEW.payload, '$.client_order_id'),
    json_extract(NEW.payload, '$.kind'),
    json_extract(NEW.payload, '$.symbol'),
    json_extract(NEW.payload, '$.side'),
    json_extract(NEW.payload, '$.volume'),
    json_extract(NEW.payload, '$.price'),
    json_extract(NEW.payload, '$.deviation_points'),
    json_extract(NEW.payload, '$.filling'),
    json_extract(NEW.payload, '$.magic'),
    json_extract(NEW.payload, '$.position'),
    json_extract(NEW.payload, '$.expires_msc'),
    json_extract(NEW.payload, '$.created_ms'),
    json_extract(NEW.payload, '$.state'),
    json_extract(NEW.payload, '$.retcode'),
    json_extract(NEW.payload, '$.reason'),
    json_extract(NEW.payload, '$.updated_ms'),
    json_extract(NEW.payload, '$.deliveries'),
    json_extract(NEW.payload, '$.fills'),
    json_extract(NEW.payload, '$.filled_volume')
  )
  ON CONFLICT (command_id) DO UPDATE SET
    state = excluded.state,
    retcode = excluded.retcode,
    reason = excluded.reason,
    updated_ms = excluded.updated_ms,
    deliveries = excluded.deliveries,
    fills = excluded.fills,
    filled_volume = excluded.filled_volume;
END
""",
)


# Version 3: monitor statistics (every decision counted, not sampled) and the dust book.
TRIGGERS_V3: tuple[str, ...] = (
    """
CREATE TRIGGER project_decision_stats AFTER INSERT ON events WHEN NEW.kind = 'decision_stats'
BEGIN
  INSERT INTO decision_stats (event_id, pair, start_ms, interval_ms, decisions, intents, edge_bucket_bps,
                              edge_histogram)
  VALUES (
    NEW.seq,
    json_extract(NEW.payload, '$.pair'),
    json_extract(NEW.payload, '$.start_ms'),
    json_extract(NEW.payload, '$.interval_ms'),
    json_extract(NEW.payload, '$.decisions'),
    json_extract(NEW.payload, '$.intents'),
    json_extract(NEW.payload, '$.edge_bucket_bps'),
    json_extract(NEW.payload, '$.edge_histogram')
  );
END
""",
    """
CREATE TRIGGER project_dust AFTER INSERT ON events WHEN NEW.kind = 'dust'
BEGIN
  INSERT INTO dust (pair, qty, ts_ms, event_id)
  VALUES (
    json_extract(NEW.payload, '$.pair'),
    json_extract(NEW.payload, '$.qty'),
    json_extract(NEW.payload, '$.ts_ms'),
    NEW.seq
  )
  ON CONFLICT (pair) DO UPDATE SET qty = excluded.qty, ts_ms = excluded.ts_ms, event_id = excluded.event_id;
END
""",
)


def event_row(event: LedgerEvent, seq: int) -> EventRow:
    """The journal row of `event` once it has its sequence number (the payload is encoded now,
    so later changes to the event's dict cannot reach the journal)."""
    return (seq, event.ts_ms, event.kind, event.group_id, encode_raw(event.payload))


def batch_json(rows: Sequence[EventRow]) -> str:
    return _encoder.encode(rows).decode()


async def apply(event: LedgerEvent, seq: int, connection: aiosqlite.Connection) -> None:
    """Append one event to the journal of `connection`; its projection runs in the same statement.

    The caller owns the transaction (the live writer commits a whole batch at once).
    """
    await apply_many([event_row(event, seq)], connection)


async def apply_many(rows: Sequence[EventRow], connection: aiosqlite.Connection) -> None:
    """Append journal rows in order, in one statement: what the writer does with each batch."""
    await connection.execute(INSERT_BATCH, (batch_json(rows),))


async def rebuild_from(source_schema: str, connection: aiosqlite.Connection) -> int:
    """Replay the journal of the attached database `source_schema` into `connection`'s main tables.

    `connection`'s main database must be freshly created with the current schema (so it has
    the projection triggers). Returns the number of events replayed.
    """
    cur = await connection.execute(
        "INSERT INTO main.events (seq, ts_ms, kind, group_id, payload) "
        f"SELECT seq, ts_ms, kind, group_id, payload FROM {source_schema}.events ORDER BY seq"
    )
    return cur.rowcount


async def table_columns(connection: aiosqlite.Connection, table: str, schema: str = "main") -> list[str]:
    """Column names of one table, in order."""
    rows = await connection.execute_fetchall(f"PRAGMA {schema}.table_info({table})")
    return [str(row[1]) for row in rows]
