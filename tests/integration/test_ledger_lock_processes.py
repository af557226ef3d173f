"""The ledger's writer lock and integrity check against real processes (docs/ledger.md,
Locking and integrity): a second engine is refused through any name of the file, a killed
engine leaves no lock behind, and a damaged file is refused with exit 2 and reported by
`quantarb ledger check`, never with a traceback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import Ledger, LedgerBusyError, LedgerCorruptError, queries
from tests.unit.test_ledger_support import make_group, make_order

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from ledger import Ledger
    from tests.unit.test_ledger_support import make_group, make_order

    async def main(path):
        led = await Ledger.open(path)
        group = make_group("held")
        led.group_opened(group)
        await led.order_created(make_order(group, 0))
        print("ready", flush=True)
        await asyncio.Event().wait()  # hold the ledger until killed

    asyncio.run(main(sys.argv[1]))
    """
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)  # no user config: the built-in demo
    env["QUANTARB_LISTENER__PORT"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def _quantarb(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantarb_tui.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A ledger held by another process (killed at the end if the test did not)."""
    db = tmp_path / "data" / "ledger.db"
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(db)], cwd=ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _readline(proc, READY_TIMEOUT_S)
        if line != "ready\n":
            proc.kill()
            pytest.fail(f"the holder did not start: {line!r} {proc.communicate(timeout=30)[1]}")
        yield db, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or a test failure after `timeout` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            pytest.fail(f"no line from pid {proc.pid} within {timeout}s")
    return proc.stdout.readline()


def _names(db: Path) -> dict[str, Path]:
    """Other names for `db`: a symlink, hard links in its directory and another, `..`."""
    base = db.parent.parent
    (base / "link.db").symlink_to(db)
    os.link(db, db.with_name("copy.db"))
    (base / "elsewhere").mkdir()
    os.link(db, base / "elsewhere" / "ledger.db")
    (db.parent / "sub").mkdir()
    return {
        "same path": db,
        "symlink": base / "link.db",
        "hard link": db.with_name("copy.db"),
        "hard link elsewhere": base / "elsewhere" / "ledger.db",
        "relative with ..": Path("data") / "sub" / ".." / db.name,  # from cwd = base
    }


def test_a_second_process_is_refused_under_every_name_until_the_holder_is_killed(
    held: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, proc = held
    names = _names(db)
    monkeypatch.chdir(db.parent.parent)

    async def try_all() -> dict[str, str]:
        out: dict[str, str] = {}
        for label, path in names.items():
            try:
                led = await Ledger.open(path)
            except LedgerBusyError as exc:
                out[label] = str(exc)
            else:
                await led.close()
                out[label] = "OPENED"
        return out

    refused = asyncio.run(try_all())
    assert all("in use by another quantarb process" in refused[label] for label in names), refused
    for label in ("same path", "symlink", "relative with .."):
        assert f"(pid {proc.pid})" in refused[label], refused[label]
    for label in ("hard link", "hard link elsewhere"):
        assert "under another name (a hard link" in refused[label], refused[label]

    # An engine from the command line is refused too, exit 3, no traceback, nothing traded.
    engine = _quantarb(db.parent.parent, "headless", "--ledger", str(names["hard link elsewhere"]),
                       "--duration", "1")
    assert engine.returncode == 3, engine.stderr
    assert "in use by another quantarb process" in engine.stderr and "Traceback" not in engine.stderr
    assert engine.stdout == ""

    # kill -9: the OS drops the locks; every name opens again, and the holder's write is there.
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    async def reopen_all() -> None:
        for path in names.values():
            led = await Ledger.open(path)
            try:
                state = await led.recover()
                assert [g.group_id for g in state.open_groups] == ["held"]
            finally:
                await led.close()

    asyncio.run(reopen_all())


def test_readers_work_while_an_engine_holds_the_ledger(
    held: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    db, _proc = held
    summary = _quantarb(tmp_path, "ledger", "summary", "--ledger", str(db), "--json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["open_groups"] == 1
    check = _quantarb(tmp_path, "ledger", "check", "--ledger", str(db), "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["ok"] is True


# -- a damaged file ------------------------------------------------------------------------
def _ledger_with_history(path: Path, groups: int = 150) -> None:
    async def fill() -> None:
        led = await Ledger.open(path)
        for i in range(groups):
            group = make_group(f"g{i}")
            led.group_opened(group)
            await led.order_created(make_order(group, 0))
        await led.close()  # checkpointed: every page is in the file

    asyncio.run(fill())


def _corrupt(path: Path, table: str | None) -> None:
    """Overwrite the cell pointers of `table`'s root page (None: the schema's, page 1) with 0xff,
    as a torn or misdirected write would: SQLite calls the file malformed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        root = 1 if table is None else int(
            conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        )
    finally:
        conn.close()
    header = 100 if root == 1 else 0  # page 1 starts with the database header
    with path.open("r+b") as fh:
        fh.seek((root - 1) * page_size + header + 8)  # past the b-tree page header's fixed part
        fh.write(b"\xff" * 64)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.db"
    _ledger_with_history(path)
    _corrupt(path, "events")
    return path


def test_a_damaged_ledger_is_refused_at_open(damaged: Path) -> None:
    before = digest(damaged)
    with pytest.raises(LedgerCorruptError, match="the ledger is damaged") as refused:
        asyncio.run(Ledger.open(damaged))
    message = str(refused.value)
    assert str(damaged) in message and "restore your last good backup" in message
    assert f"quantarb ledger check --ledger {damaged}" in message
    assert refused.value.exit_code == 2
    assert digest(damaged) == before  # nothing written


def test_headless_refuses_a_damaged_ledger_with_exit_2(damaged: Path, tmp_path: Path) -> None:
    before = digest(damaged)
    result = _quantarb(tmp_path, "headless", "--ledger", str(damaged), "--duration", "1")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"quantarb: {damaged}: the ledger is damaged"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no engine started, nothing traded
    assert digest(damaged) == before


def test_ledger_check_reports_damage_without_a_traceback(damaged: Path, tmp_path: Path) -> None:
    text = _quantarb(tmp_path, "ledger", "check", "--ledger", str(damaged))
    assert text.returncode == 1, text.stderr
    assert "Traceback" not in text.stderr and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0] == "FAIL integrity: SQLite quick_check reports no corruption"
    assert lines[1].startswith("       ") and lines[1].strip(), lines  # what SQLite found
    assert lines[-2].startswith("the file is damaged: do not trade on it")
    assert lines[-1] == "ledger check FAILED"

    doc = _quantarb(tmp_path, "ledger", "check", "--ledger", str(damaged), "--json")
    assert doc.returncode == 1, doc.stderr
    report = json.loads(doc.stdout)
    assert (report["ok"], report["damaged"]) == (False, True)
    [integrity] = report["checks"]  # nothing else is read from a damaged file
    assert integrity["name"] == "integrity" and not integrity["ok"] and integrity["count"] >= 1


def test_a_ledger_sqlite_cannot_open_is_refused_by_every_command(tmp_path: Path) -> None:
    path = tmp_path / "header.db"
    _ledger_with_history(path, groups=3)
    _corrupt(path, None)
    for args in (("ledger", "check"), ("ledger", "summary"), ("headless", "--duration", "1")):
        result = _quantarb(tmp_path, *args, "--ledger", str(path))
        assert result.returncode == 2, (args, result.stderr)
        assert f"{path}: the ledger is damaged" in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_an_intact_ledger_passes_the_open_check(tmp_path: Path) -> None:
    path = tmp_path / "fine.db"
    _ledger_with_history(path, groups=20)
    assert queries.run(path, queries.check)["damaged"] is False


def test_a_damaged_record_quick_check_cannot_see_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "record.db"
    _ledger_with_history(path, groups=3)
    conn = sqlite3.connect(path)
    try:  # an open group's text turned to bytes that are not UTF-8 (and an escape sequence)
        conn.execute("UPDATE hedge_groups SET pair = CAST(x'1b5b324a80ff' AS TEXT) WHERE group_id = 'g1'")
        conn.commit()
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    engine = _quantarb(tmp_path, "headless", "--ledger", str(path), "--duration", "1")
    assert engine.returncode == 2, engine.stderr
    assert engine.stderr == (
        f"quantarb: {path}: the ledger is damaged (it holds text that is not UTF-8 (column pair)). "
        f"Do not trade on it: stop every engine on it, keep a copy of the file with its -wal and -shm, "
        f"restore your last good backup, and run `quantarb ledger check --ledger {path}` to see the damage.\n"
    )
    check = _quantarb(tmp_path, "ledger", "check", "--ledger", str(path))
    assert check.returncode == 1, check.stderr
    assert "FAIL readable: every table reads without an SQLite error" in check.stdout
    assert "\x1b" not in check.stdout + check.stderr + engine.stdout


def test_a_damaged_ledger_after_a_crash_keeps_its_file_and_its_wal(tmp_path: Path) -> None:
    """Refused on a read-only look: closing a read-write connection would checkpoint the hot
    WAL into the damaged file and delete it."""
    live = tmp_path / "live.db"
    _ledger_with_history(live, groups=20)
    writer = sqlite3.connect(live, isolation_level=None)
    crash = tmp_path / "crash"
    crash.mkdir()
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE hedge_groups SET fees = '0.5' WHERE group_id = 'g0'").close()  # a WAL frame
        for suffix in ("", "-wal"):  # the files as a crash leaves them, the WAL not checkpointed
            (crash / f"ledger.db{suffix}").write_bytes(Path(f"{live}{suffix}").read_bytes())
    finally:
        writer.close()
    path = crash / "ledger.db"
    assert Path(f"{path}-wal").stat().st_size > 0
    _corrupt(path, "events")
    before = (digest(path), digest(Path(f"{path}-wal")))
    with pytest.raises(LedgerCorruptError, match="the ledger is damaged"):
        asyncio.run(Ledger.open(path))
    assert (digest(path), digest(Path(f"{path}-wal"))) == before


def test_the_engine_log_says_which_loose_files_it_tightened(tmp_path: Path) -> None:
    path = tmp_path / "loose.db"
    _ledger_with_history(path, groups=2)
    os.chmod(path, 0o644)
    engine = _quantarb(tmp_path, "headless", "--ledger", str(path), "--duration", "0.5")
    assert engine.returncode == 0, engine.stderr
    warnings = [line.split(" warn  ledger  ", 1)[1] for line in engine.stdout.splitlines()
                if " warn  ledger  " in line]
    # The -wal and -shm, made by SQLite at the first look with the file's own mode, too.
    assert warnings == [f"{f}: mode 0644 let other users read the ledger (positions and orders); tightened to 0600"
                        for f in (path, f"{path}-wal", f"{path}-shm")]
    assert os.stat(path).st_mode & 0o777 == 0o600
