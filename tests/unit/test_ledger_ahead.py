"""The write-ahead file (ledger.ahead): parsing, replay at open, cutting back, and the writer's
mirror of everything not yet committed."""

from __future__ import annotations

import os
import sqlite3
import stat
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.models import Order, OrderPurpose
from ledger import events as ev
from ledger.ahead import TRUNCATE_AFTER_BYTES, ahead_path, parse_ahead, read_ahead
from ledger.errors import LedgerCorruptError, LedgerError
from ledger.ledger import Ledger


def _order(cid: str) -> Order:
    return Order(client_order_id=cid, group_id="", venue="okx", symbol="BTC-USDT-SWAP", side="buy",
                 qty=Decimal("1"), price=Decimal("100"), purpose=OrderPurpose.ENTRY, created_ms=1)


def _orders(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT client_order_id FROM orders ORDER BY client_order_id")]
    finally:
        con.close()


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_parse_never_raises_anything_but_a_clear_error(data: bytes) -> None:
    try:
        contents = parse_ahead(data, Path("x.ahead"))
    except LedgerCorruptError as exc:
        assert "x.ahead: line " in str(exc)
    else:
        assert all(isinstance(r[0], int) for r in contents.rows)


def test_parse_reads_rows_and_ignores_only_a_torn_last_line() -> None:
    good = b'[1,5,"dust",null,{"pair":"A","qty":"1"}]\n[2,6,"dust",null,{"pair":"B","qty":"2"}]\n'
    contents = parse_ahead(good + b'[3,7,"du', Path("f"))
    assert [r[0] for r in contents.rows] == [1, 2] and contents.torn_tail
    assert not parse_ahead(good, Path("f")).torn_tail
    with pytest.raises(LedgerCorruptError, match="line 2"):
        parse_ahead(b'[1,5,"dust",null,{}]\n[1,6,"dust",null,{}]\n', Path("f"))  # seq not increasing
    with pytest.raises(LedgerCorruptError, match="line 1"):
        parse_ahead(b'[1,5,"dust",null,[1]]\n', Path("f"))  # payload not an object
    with pytest.raises(LedgerCorruptError, match="line 1 is empty"):
        parse_ahead(b"\n", Path("f"))


async def test_mirror_writes_what_is_uncommitted_and_open_replays_it(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    ahead = ahead_path(path)
    assert stat.S_IMODE(os.stat(ahead).st_mode) == 0o600
    await ledger.flush()
    seq = ledger.append(ev.order_created(_order("qa1"), 1))
    ledger.mirror()
    ledger.mirror()  # nothing new: no second copy
    rows = read_ahead(ahead).rows
    assert [(r[0], r[2]) for r in rows] == [(seq, "order_created")]
    # The process dies before the writer commits: simulate by stopping the writer uncommitted.
    ledger.writer._queue.clear()  # what a kill -9 loses from memory
    await ledger.writer.close()
    await ledger._reader.close()
    assert ledger.ahead is not None
    ledger.ahead.close()
    ledger._lock.release()
    assert _orders(path) == []

    again = await Ledger.open(path, clock=ManualClock())
    try:
        assert _orders(path) == ["qa1"]
        assert any("recovered" in n for n in again.notices)
        assert read_ahead(ahead).rows == []  # cut back once replayed
    finally:
        await again.close()


async def test_open_refuses_a_damaged_ahead_file_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    await ledger.close()
    ahead_path(path).write_bytes(b"not a row\n")
    with pytest.raises(LedgerCorruptError, match=r"l\.db\.ahead: line 1"):
        await Ledger.open(path, clock=ManualClock())
    assert ahead_path(path).read_bytes() == b"not a row\n"
    assert _orders(path) == []


async def test_a_row_already_committed_is_not_replayed_twice(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    ledger.append(ev.order_created(_order("qa1"), 1))
    ledger.mirror()
    await ledger.flush()
    # A kill after the commit: the file still holds the committed row.
    saved = ahead_path(path).read_bytes()
    await ledger.close()
    ahead_path(path).write_bytes(saved)
    again = await Ledger.open(path, clock=ManualClock())
    try:
        assert _orders(path) == ["qa1"]
        assert not any("recovered" in n for n in again.notices)
    finally:
        await again.close()


async def test_the_writer_cuts_the_file_back_once_all_of_it_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    try:
        n = 0
        while ledger.ahead is not None and ledger.ahead.size <= TRUNCATE_AFTER_BYTES:
            n += 1
            ledger.append(ev.order_created(_order(f"qa{n}"), 1))
            ledger.mirror()
        assert n > 100
        await ledger.flush()  # this commit covers everything mirrored: the file starts over
        assert ledger.ahead is not None and ledger.ahead.size == 0
        assert ahead_path(path).stat().st_size == 0
        assert len(_orders(path)) == n
    finally:
        await ledger.close()


def test_rows_encode_as_the_journal_stores_them() -> None:
    row = (7, 1, "dust", None, msgspec.Raw(b'{"pair":"A","qty":"1"}'))
    line = msgspec.json.encode(row) + b"\n"
    [parsed] = parse_ahead(line, Path("f")).rows
    assert parsed[:4] == row[:4] and bytes(parsed[4]) == bytes(row[4])


async def test_a_sent_order_keeps_its_row_when_the_file_and_then_the_writer_fail(tmp_path: Path) -> None:
    """Found by review: the file fails first (its entry refused), the writer a moment later;
    the order that was already written ahead and sent must still reach the journal."""
    from core.ports import JournalUnavailable
    from engine.journal import GuardedJournal

    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    halts: list[str] = []
    journal = GuardedJournal(ledger, on_failure=halts.append, retry_s=0, write_ahead="file")
    try:
        await journal.order_created(_order("qaA"))  # written ahead: A is sent
        real_mirror = ledger.mirror

        def full() -> None:
            raise OSError(28, "No space left on device")

        ledger.mirror = full  # type: ignore[method-assign]
        with pytest.raises(JournalUnavailable):
            await journal.order_created(_order("qaB"))  # B is refused: never sent
        ledger.writer._fail(sqlite3.OperationalError("database or disk is full"))  # then the writer
        ledger.mirror = real_mirror  # type: ignore[method-assign]
        assert await journal.retry()
        await ledger.flush()
        assert "qaA" in _orders(path)
        assert len(halts) == 1
    finally:
        await journal.close()
        await ledger.close()


async def test_a_symlink_at_the_ahead_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = await Ledger.open(path, clock=ManualClock())
    await ledger.close()
    ahead_path(path).unlink()
    target = tmp_path / "secret.txt"
    target.write_bytes(b"an api secret")
    os.chmod(target, 0o640)
    ahead_path(path).symlink_to(target)
    with pytest.raises(LedgerError, match="write-ahead file"):
        await Ledger.open(path, clock=ManualClock())
    assert target.read_bytes() == b"an api secret" and stat.S_IMODE(os.stat(target).st_mode) == 0o640
