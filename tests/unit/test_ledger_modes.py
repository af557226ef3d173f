"""The ledger's files are private whatever the umask (docs/ledger.md, Files and modes): the
directories quantarb creates 0700; the database, -wal, -shm and lock 0600; looser files left
by hand or by an older version are tightened at open and the change is reported."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.clock import ManualClock
from engine.listener_file import write_listener_file
from ledger import Ledger, NotALedgerError
from sim.mt5_broker import SimBroker
from tests.unit.test_ledger_support import make_group, make_order


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A permissive umask for the test (process-wide: restored after)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_a_new_ledger_and_its_directories_are_private(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "a" / "b" / "ledger.db"
    before = mode(tmp_path)
    led = await Ledger.open(db)
    try:
        await led.order_created(make_order(make_group("g1"), 0))  # something in the WAL
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o700, 0o700)
        assert mode(tmp_path) == before  # not created by quantarb: untouched
        assert led.notices == ()
    finally:
        await led.close()
    assert mode(db) == 0o600


async def test_looser_files_are_tightened_at_open_and_reported(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "ledger.db"
    led = await Ledger.open(db)
    await led.close()
    companions = [Path(f"{db}-wal"), Path(f"{db}-shm")]
    for f in companions:
        f.touch()  # what a crash leaves next to the file (empty: SQLite rebuilds them)
    for f in (db, *companions):
        os.chmod(f, 0o644)
    os.chmod(Path(f"{db}.lock"), 0o666)
    led = await Ledger.open(db)
    try:
        for f in (db, *companions, Path(f"{db}.lock")):
            assert mode(f) == 0o600, f
        assert sorted(led.notices) == sorted(
            f"{f}: mode 0644 let other users read the ledger (positions and orders); tightened to 0600"
            for f in (db, *companions)
        )
    finally:
        await led.close()


async def test_existing_directories_are_left_alone(tmp_path: Path, umask: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    led = await Ledger.open(shared / "ledger.db")
    await led.close()
    assert mode(shared) == 0o755
    assert mode(shared / "ledger.db") == 0o600


async def test_a_refused_file_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    notes = tmp_path / "notes.csv"
    notes.write_text("timestamp,price\n1,2\n")
    os.chmod(notes, 0o644)
    with pytest.raises(NotALedgerError):
        await Ledger.open(notes)
    assert mode(notes) == 0o644


def test_the_listener_file_is_private(tmp_path: Path, umask: int) -> None:
    ledger = tmp_path / "ledger.db"
    assert write_listener_file(ledger, "http://127.0.0.1:8787") is None
    assert mode(Path(f"{ledger}.listener")) == 0o600
    assert write_listener_file(ledger, "http://127.0.0.1:8788") is None  # replaced, still private
    assert mode(Path(f"{ledger}.listener")) == 0o600
    assert Path(f"{ledger}.listener").read_text() == "http://127.0.0.1:8788\n"


def test_the_demo_broker_state_is_private(tmp_path: Path, umask: int) -> None:
    state = tmp_path / "ledger.db.mt5-broker.json"
    broker = SimBroker(lambda _symbol: None, clock=ManualClock(), state_file=state)
    broker.save()
    assert mode(state) == 0o600
