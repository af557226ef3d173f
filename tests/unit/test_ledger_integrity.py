"""Damaged ledger files at the boundary (docs/ledger.md, Locking and integrity): whatever bytes
a torn write or a bad disk leaves, `Ledger.open` opens an intact file or refuses with a
LedgerError naming the file and leaves it byte for byte as it was; `check` reports or refuses,
and neither ever lets another exception (a traceback for the operator) through."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger, LedgerError, queries
from tests.unit.test_ledger_support import make_group, make_order


@functools.cache
def ledger_bytes() -> bytes:
    """A small checkpointed ledger with history in several tables and pages."""

    async def build(path: Path) -> None:
        led = await Ledger.open(path)
        for i in range(40):
            group = make_group(f"g{i}")
            led.group_opened(group)
            await led.order_created(make_order(group, 0))
        await led.close()

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.db"
        asyncio.run(build(path))
        return path.read_bytes()


damage = st.lists(
    st.tuples(st.integers(min_value=0), st.binary(min_size=1, max_size=64)), min_size=1, max_size=4
)


def damaged_copy(directory: Path, writes: list[tuple[int, bytes]]) -> Path:
    data = bytearray(ledger_bytes())
    for offset, chunk in writes:
        at = offset % len(data)
        data[at:at + len(chunk)] = chunk[: len(data) - at]
    path = directory / "damaged.db"
    path.write_bytes(bytes(data))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quick_check_ok(path: Path) -> bool:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute("PRAGMA quick_check")] == [("ok",)]
    except (sqlite3.DatabaseError, UnicodeDecodeError):  # a schema text that is not UTF-8
        return False
    finally:
        conn.close()


@settings(max_examples=150, deadline=None)
@given(writes=damage)
def test_open_refuses_damage_cleanly_and_touches_nothing(writes: list[tuple[int, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = damaged_copy(Path(d), writes)
        before = digest(path)
        intact = quick_check_ok(path)

        async def attempt() -> None:
            led = await Ledger.open(path)
            await led.close()

        try:
            asyncio.run(attempt())
        except LedgerError as exc:
            assert str(path) in str(exc)
            assert digest(path) == before  # refused before anything was written
            assert exc.exit_code == 2, exc  # the file's fault (damaged, foreign, newer): exit 2
        else:
            assert intact, "a file quick_check calls damaged was opened for writing"


@settings(max_examples=150, deadline=None)
@given(writes=damage)
def test_check_reports_or_refuses_any_damage(writes: list[tuple[int, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = damaged_copy(Path(d), writes)
        try:
            report = queries.run(path, queries.check)
        except LedgerError as exc:
            assert str(path) in str(exc)
            return
        failed = [c["name"] for c in report["checks"] if not c["ok"]]
        if not quick_check_ok(path):
            assert (report["damaged"], report["ok"], failed) == (True, False, ["integrity"])
        elif report["damaged"]:  # sound pages, but a record SQLite or Python cannot read
            assert (report["ok"], failed) == (False, ["readable"])
