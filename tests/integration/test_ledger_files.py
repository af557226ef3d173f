"""The ledger against real files and real processes: migrations, refusals, concurrent readers, SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.commands import CommandState
from core.models import GroupState, TradingState
from core.risk import StateChange
from ledger import (
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    LedgerTooNewError,
    NotALedgerError,
    queries,
    schema,
)
from ledger import events as ev
from tests.unit.test_ledger_support import (
    T0,
    apply_fill,
    make_command,
    make_decision,
    make_fill,
    make_group,
    make_order,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECTIONS = ("hedge_groups", "orders", "fills", "compensation_actions", "risk_events", "decisions", "mt5_commands")


async def query(path: Path, fn: Any, *args: Any) -> Any:
    async with queries.open_reader(path) as db:
        return await fn(db, *args)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in PROJECTIONS}
    finally:
        conn.close()


def old_engine_history() -> list[ev.LedgerEvent]:
    """What an engine of an older version journaled: a closed group, an open one, a command, a kill."""
    out: list[ev.LedgerEvent] = []
    closed, open_ = make_group("gold1", T0), make_group("gold2", T0 + 50)
    for group in (closed, open_):
        out.append(ev.decision(make_decision(group.opened_ms, intent=True), group.opened_ms, group.group_id))
        out.append(ev.group_opened(group, group.opened_ms))
        for leg in (0, 1):
            order = make_order(group, leg, ts_ms=group.opened_ms)
            out.append(ev.order_created(order, group.opened_ms))
            if group is closed:
                fill = make_fill(order, f"t-{order.client_order_id}")
                apply_fill(order, fill)
                out.append(ev.fill(fill, T0 + 1, group.group_id))
                out.append(ev.order_state(order, T0 + 1))
    closed.transition(GroupState.WORKING, T0)
    closed.transition(GroupState.HEDGED, T0 + 2)
    out.append(ev.group_state(closed, T0 + 2))
    out.append(ev.mt5_command(make_command("cold", state=CommandState.DELIVERED), T0 + 60))
    out.append(ev.risk_event("kill", StateChange(T0 + 70, TradingState.HALTED, "old kill"), T0 + 70))
    out.append(ev.decision(make_decision(T0 + 80), T0 + 80))
    return out


def write_old_file(path: Path, version: int) -> None:
    schema.prepare(path, target=version)
    conn = sqlite3.connect(path)
    with conn:
        for seq, event in enumerate(old_engine_history(), start=1):
            conn.execute("INSERT INTO events (seq, ts_ms, kind, group_id, payload) VALUES (?, ?, ?, ?, ?)",
                         (seq, event.ts_ms, event.kind, event.group_id, ev.encode_payload(event.payload)))
    conn.close()


# -- migrations ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
async def test_migrates_from_every_earlier_version(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    write_old_file(path, version)
    before = snapshot(path)
    events = len(old_engine_history())

    led = await Ledger.open(path)
    try:
        assert led.migrated_from == version
        state = await led.recover()
        assert [g.group_id for g in state.open_groups] == ["gold2"]
        assert [o.client_order_id for o in state.open_orders] == ["qagold2l0a0", "qagold2l1a0"]
        assert [c.command_id for c in state.open_commands] == ["cold"]
        assert (state.trading_state, state.trading_reason) == (TradingState.HALTED, "old kill")
        new = make_group("gnew")
        assert led.group_opened(new) == events + 1  # seq goes on
        assert await led.order_created(make_order(new, 0)) == events + 2
    finally:
        await led.close()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        for migration in schema.MIGRATIONS[version:]:
            for statement in migration.statements:
                if statement.startswith("CREATE INDEX"):
                    assert statement.split()[2] in indexes
        plan = " ".join(str(r[3]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM events WHERE group_id = 'gold2' ORDER BY seq"))
        assert "events_by_group" in plan
        plan = " ".join(str(r[3]) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM orders WHERE {schema.OPEN_ORDERS_WHERE}"))
        assert "orders_open" in plan
    finally:
        conn.close()
    after = snapshot(path)
    after["orders"] = [r for r in after["orders"] if r[0] != "qagnewl0a0"]
    after["hedge_groups"] = [r for r in after["hedge_groups"] if r[0] != "gnew"]
    assert after == before  # migration kept every row
    report = await query(path, queries.check)
    assert report["ok"], report


def test_a_failing_migration_leaves_the_file_at_its_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.db"
    write_old_file(path, 1)
    broken = (*schema.MIGRATIONS[:-1],
              schema.Migration(SCHEMA_VERSION, "broken", (*schema.MIGRATIONS[-1].statements, "CREATE TABLE x (")))
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    with pytest.raises(LedgerError, match="cannot prepare the ledger"):
        schema.prepare(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_by_group'"
                            ).fetchone()[0] == 0
    finally:
        conn.close()


def test_the_current_schema_is_the_sum_of_the_migrations() -> None:
    assert [m.version for m in schema.MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


# -- files that are not ours -----------------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _text(path: Path) -> None:
    path.write_text("timestamp,price\n1,2\n")


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE events (seq INTEGER)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    schema.prepare(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (_garbage, NotALedgerError, "not a quantarb ledger"),
        (_text, NotALedgerError, "not an SQLite database"),
        (_foreign_sqlite, NotALedgerError, "application_id 0x0"),
        (_other_application, NotALedgerError, "application_id 0x4d2"),
        (_newer, LedgerTooNewError, f"version {SCHEMA_VERSION + 1} was written by a newer quantarb"),
    ],
)
async def test_refuses_files_it_must_not_touch(
    tmp_path: Path, make: Any, error: type[LedgerError], message: str
) -> None:
    path = tmp_path / "target.db"
    make(path)
    before = digest(path)
    with pytest.raises(error, match=message) as raised:
        await Ledger.open(path)
    assert raised.value.exit_code == 2
    assert str(path) in str(raised.value)
    with pytest.raises(error, match=message):
        await query(path, queries.summary)
    assert digest(path) == before  # not a byte changed
    # Nor in a write-ahead log: none at all beside a file that is not a (WAL-mode) ledger;
    # beside the too-new ledger, the read-only reader leaves an empty one (no frame written).
    wal_size = await asyncio.to_thread(_size_or_none, Path(f"{path}-wal"))
    assert wal_size == (0 if error is LedgerTooNewError else None)


def _size_or_none(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


async def test_refuses_a_directory_and_a_missing_file_for_reading(tmp_path: Path) -> None:
    with pytest.raises(NotALedgerError, match="is a directory"):
        await Ledger.open(tmp_path)
    with pytest.raises(LedgerError, match="no such ledger file"):
        await query(tmp_path / "missing.db", queries.summary)


async def test_an_empty_file_and_a_missing_directory_become_a_ledger(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    deep = tmp_path / "a" / "b" / "ledger.db"
    for path in (empty, deep):
        led = await Ledger.open(path)
        await led.close()
        assert (await query(path, queries.check))["ok"]


# -- readers and the writer ------------------------------------------------------------------
async def test_a_long_reader_never_blocks_the_writer(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db")
    try:
        group = make_group("g1")
        led.group_opened(group)
        await led.flush()
        reader = sqlite3.connect(led.path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1  # snapshot taken
        orders = [make_order(group, 0, attempt=i) for i in range(300)]
        await asyncio.wait_for(asyncio.gather(*(led.order_created(o) for o in orders)), timeout=10)
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 1  # still its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 301
        reader.close()
    finally:
        await led.close()


async def test_check_from_another_process_while_the_engine_writes(tmp_path: Path) -> None:
    led = await Ledger.open(tmp_path / "l.db")
    stop = asyncio.Event()

    async def engine() -> int:
        n = 0
        while not stop.is_set():
            group = make_group(f"g{n}")
            led.group_opened(group)
            order = make_order(group, 0)
            await led.order_created(order)
            fill = make_fill(order, f"t{n}")
            apply_fill(order, fill)
            led.fill(order, fill)
            led.order_state(order)
            n += 1
            await asyncio.sleep(0)
        return n

    try:
        task = asyncio.create_task(engine())
        await asyncio.sleep(0.2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import json, sys; from ledger import queries; "
            "print(json.dumps(queries.run(sys.argv[1], queries.check)))",
            str(led.path), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        stop.set()
        written = await task
    finally:
        await led.close()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["ok"], report
    assert written > 0 and report["last_seq"] > 0


# -- a crash in the middle of writing ------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from ledger import Ledger
    from tests.unit.test_ledger_support import apply_fill, make_decision, make_fill, make_group, make_order

    async def main(path, kill_after):
        led = await Ledger.open(path)
        acked = 0

        def ack(line):
            nonlocal acked
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()  # the parent has the line before we go on
            acked += 1
            if acked >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        async def noise():
            ms = 0
            while True:  # fire-and-forget traffic, so that the writer is always busy
                for _ in range(20):
                    ms += 1
                    led.decision(make_decision(1_732_150_000_000 + ms * 1000))
                await asyncio.sleep(0.001)

        async def producer(k):
            for i in range(10**6):
                group = make_group(f"g{k}n{i}")
                led.group_opened(group)
                for leg in (0, 1):
                    order = make_order(group, leg)
                    seq = await led.order_created(order)
                    ack(f"order {seq} {order.client_order_id}")
                    fill = make_fill(order, f"t{k}n{i}l{leg}")
                    apply_fill(order, fill)
                    fill_seq = led.fill(order, fill)
                    led.order_state(order)
                    await led.flush(fill_seq)
                    ack(f"fill {fill_seq} {order.venue}:{fill.venue_trade_id}")

        asyncio.ensure_future(noise())
        await asyncio.gather(*(producer(k) for k in range(8)))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.parametrize("kill_after", [37, 400, 1501])
def test_sigkill_mid_write_loses_nothing_that_was_acknowledged(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(path), str(kill_after)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acked: dict[str, dict[int, str]] = {"order": {}, "fill": {}}
    for line in proc.stdout.splitlines():
        kind, seq, key = line.split()
        acked[kind][int(seq)] = key
    assert len(acked["order"]) + len(acked["fill"]) == kill_after

    # First look: read-only, as `quantarb ledger check` would after the crash.
    report = queries.run(path, queries.check)
    assert report["ok"], report
    conn = sqlite3.connect(path)
    try:
        seqs = {r[0] for r in conn.execute("SELECT seq FROM events")}
        assert set(acked["order"]) | set(acked["fill"]) <= seqs
        orders = {r[0] for r in conn.execute("SELECT client_order_id FROM orders")}
        assert set(acked["order"].values()) <= orders
        fills = {f"{r[0]}:{r[1]}" for r in conn.execute("SELECT venue, venue_trade_id FROM fills")}
        assert set(acked["fill"].values()) <= fills
        assert max(seqs) >= max(acked["order"])
    finally:
        conn.close()

    # Then the restart: the writer lock died with the process, recovery sees the write-ahead rows.
    async def restart() -> None:
        led = await Ledger.open(path)
        try:
            state = await led.recover()
            unfinished = {o.client_order_id for o in state.open_orders}
            assert unfinished <= orders  # every order to ask the venue about was written ahead
            after = make_group("gafter")
            assert led.group_opened(after) > max(seqs)
            await led.order_created(make_order(after, 0))
        finally:
            await led.close()

    asyncio.run(restart())
    report = queries.run(path, queries.check)
    assert report["ok"], report


def test_queries_json_is_serializable_on_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"

    async def fill_ledger() -> None:
        led = await Ledger.open(path)
        group = make_group("g1")
        led.group_opened(group)
        order = make_order(group, 0)
        await led.order_created(order)
        fill = make_fill(order, "t1", qty=Decimal("2.5"))
        apply_fill(order, fill)
        led.fill(order, fill)
        await led.close()

    asyncio.run(fill_ledger())
    for result in (queries.run(path, queries.summary), queries.run(path, queries.groups),
                   queries.run(path, queries.show, "g1"), queries.run(path, queries.check)):
        assert json.loads(json.dumps(result)) == result
