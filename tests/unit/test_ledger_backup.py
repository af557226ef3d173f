"""`quantarb ledger backup`: SQLite's online backup of a ledger that is being written, the copy
a consistent prefix of the journal that passes `ledger check`; DEST protected, private, and
never half-written."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ledger.backup import BackupRefused, backup
from ledger.errors import LedgerError, NotALedgerError
from ledger.ledger import Ledger
from ledger.queries import check, run
from quantarb_tui.ledger_cmd import ledger_app
from tests.unit.test_ledger_support import make_group, make_order

APP = typer.Typer()
APP.add_typer(ledger_app, name="ledger")


def _events(path: Path, up_to: int | None = None) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        sql = "SELECT seq, ts_ms, kind, group_id, payload FROM events"
        rows = con.execute(sql + (" WHERE seq <= ?" if up_to is not None else "") + " ORDER BY seq",
                           (() if up_to is None else (up_to,))).fetchall()
        return [tuple(r) for r in rows]
    finally:
        con.close()


async def _ledger_with_groups(path: Path, n: int) -> None:
    led = await Ledger.open(path)
    try:
        for i in range(n):
            group = make_group(f"g{i}")
            led.group_opened(group)
            await led.order_created(make_order(group, 0))
    finally:
        await led.close()


async def test_backups_taken_while_the_engine_writes_are_consistent_snapshots(tmp_path: Path) -> None:
    """A writer commits a group and its order every few ms while backups are taken from
    another thread: every copy passes `ledger check`, and its journal is exactly the live
    journal's first `last_seq` events (one instant, nothing torn)."""
    source = tmp_path / "live.db"
    led = await Ledger.open(source)
    stop = asyncio.Event()

    async def write() -> int:
        for i in itertools.count():
            if stop.is_set():
                return i
            group = make_group(f"g{i}")
            led.group_opened(group)
            await led.order_created(make_order(group, 0))  # durable: committed when it returns
            await asyncio.sleep(0.002)
        raise AssertionError("unreachable")

    writer = asyncio.create_task(write())
    results = []
    try:
        await asyncio.sleep(0.1)
        for n in range(4):
            results.append(await asyncio.to_thread(backup, source, tmp_path / f"copy{n}.db"))
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        written = await writer
        await led.close()
    assert written > 20
    seqs = [r.last_seq for r in results]
    assert seqs == sorted(seqs) and seqs[0] > 0 and seqs[-1] > seqs[0]  # taken while it grew
    for n, result in enumerate(results):
        copy = tmp_path / f"copy{n}.db"
        assert result.dest == copy and result.bytes == copy.stat().st_size
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file
        doc = await asyncio.to_thread(run, copy, check)
        assert doc["ok"], doc
        assert _events(copy) == _events(source, up_to=result.last_seq)
        assert result.ahead_rows is not None


async def test_refuses_to_overwrite_without_force_and_replaces_with_it(tmp_path: Path) -> None:
    source = tmp_path / "l.db"
    await _ledger_with_groups(source, 3)
    dest = tmp_path / "b.db"
    dest.write_bytes(b"my precious file")
    with pytest.raises(BackupRefused, match="already exists; pass --force"):
        backup(source, dest)
    assert dest.read_bytes() == b"my precious file"
    assert [p.name for p in await asyncio.to_thread(lambda: list(tmp_path.iterdir())) if "partial" in p.name] == []
    result = backup(source, dest, force=True)
    assert result.last_seq == 6
    assert _events(dest) == _events(source)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


async def test_what_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "l.db"
    await _ledger_with_groups(source, 1)
    with pytest.raises(BackupRefused, match="is the ledger itself"):
        backup(source, source, force=True)
    link = tmp_path / "link.db"
    os.link(source, link)
    with pytest.raises(BackupRefused, match="is the ledger itself"):
        backup(source, link, force=True)
    with pytest.raises(BackupRefused, match="does not exist"):
        backup(source, tmp_path / "nowhere" / "b.db")
    with pytest.raises(BackupRefused, match="is a directory"):
        backup(source, tmp_path)
    busy = tmp_path / "busy.db"
    busy.write_bytes(b"")
    busy.with_name("busy.db-wal").write_bytes(b"x")
    with pytest.raises(BackupRefused, match=r"busy\.db-wal exists"):
        backup(source, busy, force=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all")
    with pytest.raises(NotALedgerError):
        backup(garbage, tmp_path / "g.db")
    with pytest.raises(LedgerError, match="no such ledger"):
        backup(tmp_path / "missing.db", tmp_path / "m.db")
    assert not (tmp_path / "g.db").exists() and not (tmp_path / "m.db").exists()


async def test_rows_written_ahead_but_not_committed_are_counted(tmp_path: Path) -> None:
    """A killed engine's `.ahead` rows are not in the committed journal the backup copies: the
    result says how many, so the operator can start the engine once and back up again."""
    source = tmp_path / "l.db"
    await _ledger_with_groups(source, 2)
    last = _events(source)[-1]
    ahead = source.with_name("l.db.ahead")
    seq, ts_ms = int(str(last[0])), int(str(last[1]))
    ahead.write_text(f'[{seq + 1},{ts_ms},"dust",null,{{"pair":"BTC","qty":"0.1"}}]\n', encoding="utf-8")
    result = backup(source, tmp_path / "b.db")
    assert (result.last_seq, result.ahead_rows) == (4, 1)
    ahead.write_text("not a journal row\n", encoding="utf-8")
    assert backup(source, tmp_path / "c.db").ahead_rows is None


def test_cli(tmp_path: Path) -> None:
    source = tmp_path / "l.db"
    asyncio.run(_ledger_with_groups(source, 2))
    runner = CliRunner()
    dest = tmp_path / "b.db"
    ok = runner.invoke(APP, ["ledger", "backup", str(dest), "--ledger", str(source)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[0].startswith(f"backed up {source} to {dest}: ")
    assert "journal at seq 4, in " in ok.stdout
    assert ok.stdout.splitlines()[-1] == "ledger check passed on the copy"

    again = runner.invoke(APP, ["ledger", "backup", str(dest), "--ledger", str(source)])
    assert again.exit_code == 2
    assert again.stderr == f"quantarb: {dest}: already exists; pass --force to replace it\n"

    forced = runner.invoke(APP, ["ledger", "backup", str(dest), "--ledger", str(source), "--force", "--json",
                                 "--no-check"])
    assert forced.exit_code == 0, forced.output
    assert '"last_seq": 4' in forced.stdout and '"check": null' in forced.stdout

    missing = runner.invoke(APP, ["ledger", "backup", str(tmp_path / "x.db"), "--ledger", str(tmp_path / "no.db")])
    assert missing.exit_code == 2
    assert "no such ledger file" in missing.stderr
