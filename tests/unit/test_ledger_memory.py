"""The ledger's C memory stays bounded however long the engine runs (issue 19): SQLite's
allocations live outside the Python heap, so tracemalloc does not see them; these tests read
the SQL texts the connections run and SQLite's own allocator counter. Real SQLite files."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.clock import ManualClock
from ledger import Ledger, queries
from quantarb_tui.bench.memory_map import sqlite_memory_used
from tests.unit.test_ledger_support import T0, apply_fill, make_fill, make_group, make_order


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    led = await Ledger.open(tmp_path / "ledger.db", clock=ManualClock(wall_ms=T0))
    yield led
    await led.close()


async def test_id_lists_of_any_length_run_one_sql_text(ledger: Ledger) -> None:
    """Reconciliation asks about as many ids as the venue reports; one SQL text per length
    would fill the statement cache with up to 128 prepared statements (megabytes)."""
    seen: list[str] = []
    await ledger.reader.set_trace_callback(seen.append)
    try:
        for n in (1, 2, 7, 499, 500, 501, 1200):
            ids = [f"id-{i}" for i in range(n)]
            assert await ledger.read(queries.known_orders, ids) == {}
            assert await ledger.read(queries.known_trades, "okx", ids) == set()
    finally:
        await ledger.reader.set_trace_callback(None)  # type: ignore[arg-type]  # None removes it (sqlite3)
    assert len(seen) == 14, seen  # one statement per call: no chunks
    # The trace shows the SQL with its parameters bound: the statement is the text without them.
    statements = {re.sub(r"'(?:[^']|'')*'", "?", text) for text in seen}
    assert len(statements) == 2, statements


async def test_the_reader_s_sqlite_memory_does_not_follow_the_lengths_asked(ledger: Ledger) -> None:
    if sqlite_memory_used is None:
        pytest.skip("no sqlite3_memory_used in this libsqlite3")
    await ledger.read(queries.known_trades, "okx", ["warm"])
    await ledger.read(queries.known_orders, ["warm"])
    before = sqlite_memory_used()
    for n in range(1, 300, 3):  # 100 lengths: as IN (?,?,...) this held about 5 MB
        ids = [f"id-{i}" for i in range(n)]
        await ledger.read(queries.known_trades, "okx", ids)
        await ledger.read(queries.known_orders, ids)
    assert sqlite_memory_used() - before < 256 * 1024


async def test_known_ids_are_found_among_unknown_ones(ledger: Ledger) -> None:
    group = make_group("g1")
    ledger.group_opened(group)
    order = make_order(group, 0)
    await ledger.order_created(order)
    fill = make_fill(order, "t-1")
    apply_fill(order, fill)
    ledger.fill(order, fill)
    await ledger.writer.wait_committed()
    known = await ledger.read(queries.known_orders, ["nope", order.client_order_id, "nope-2"])
    assert list(known) == [order.client_order_id]
    assert known[order.client_order_id]["group_id"] == "g1"
    assert await ledger.read(queries.known_trades, order.venue, ["t-0", "t-1", "t-2"]) == {"t-1"}


async def test_each_connection_has_the_page_cache_the_docs_name_and_no_mmap(ledger: Ledger) -> None:
    """docs/architecture.md's memory table: 2 MiB for the writer, 256 KiB for the reader and the
    checkpointer, no memory-mapped I/O (negative cache_size = KiB)."""
    assert await ledger.memory_settings() == {
        "writer": {"cache_size": -2048, "mmap_size": 0},
        "checkpointer": {"cache_size": -256, "mmap_size": 0},
        "reader": {"cache_size": -256, "mmap_size": 0},
    }
