"""Parquet exports read back with pyarrow: a replay's ledger (`quantarb ledger export --format
parquet`), recordings (`quantarb recording export`), and the worked example of docs/research.md
run against that ledger."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sqlite3
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from core.clock import ManualClock
from core.config import demo_config
from engine.recording_export import ExportError, export_recordings
from engine.replay import ReplaySettings, replay_engine
from feeds.recording import FrameRecorder
from ledger.errors import LedgerError
from ledger.parquet import export_parquet
from ledger.queries import EXPORTABLE, run
from sim.session import SessionFrames
from tests.integration.test_recording import _env, _quantarb

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A recording (frames and a few execution records) and the ledger of its replay."""
    base = tmp_path_factory.mktemp("pq")
    config = demo_config()
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    session = SessionFrames(config.build_pairs(), seed=7, okx_channels=channels, dislocation_every_s=1.0)
    recording = base / "s.jsonl.gz"
    with FrameRecorder(recording, ManualClock(wall_ms=1_732_150_000_000, mono_ns=0)) as rec:
        for i, f in enumerate(session.frames(1000)):
            rec.write(f.venue, f.feed, f.frame, f.recv_ns)
            if i == 10:
                rec.write_record("order", {"client_order_id": "c-1", "state": "submitted"}, f.recv_ns)
                rec.write_record("event", {"kind": "start", "text": "engine started"}, f.recv_ns)
    ledger = base / "replay.db"
    report = asyncio.run(replay_engine(config, [recording], ReplaySettings(latency_ms=30.0),
                                       ledger_path=str(ledger)))
    assert report["groups"] > 0
    return recording, ledger, report


def _sqlite_rows(ledger: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(ledger) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]


def test_every_table_reads_back_exactly_with_its_types(replayed: tuple[Path, Path, dict[str, Any]],
                                                       tmp_path: Path) -> None:
    _, ledger, _ = replayed
    out = tmp_path / "week"
    counts = run(ledger, export_parquet, out)
    with sqlite3.connect(ledger) as db:
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert list(counts) == [t for t in EXPORTABLE if t in present]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.parquet" for t in counts)  # no .tmp left
    for name, rows in counts.items():
        table = pq.read_table(out / f"{name}.parquet")
        assert table.to_pylist() == _sqlite_rows(ledger, name), name
        assert table.num_rows == rows
        meta = table.schema.metadata
        assert meta[b"quantarb.table"] == name.encode() and int(meta[b"quantarb.schema_version"]) > 0
    groups = pq.read_table(out / "hedge_groups.parquet")
    assert counts["hedge_groups"] > 0 and counts["fills"] > 0
    assert str(groups.schema.field("opened_at_ms").type) == "int64"
    assert str(groups.schema.field("expected_edge_bps").type) == "double"
    assert str(groups.schema.field("realized_pnl").type) == "string"  # exact decimal text


def test_an_existing_file_is_replaced_only_with_force(replayed: tuple[Path, Path, dict[str, Any]],
                                                      tmp_path: Path) -> None:
    _, ledger, _ = replayed
    out = tmp_path / "x"
    out.mkdir()
    (out / "fills.parquet").write_bytes(b"keep")
    with pytest.raises(LedgerError, match=r"fills\.parquet exists: use --force"):
        run(ledger, export_parquet, out)
    assert sorted(p.name for p in out.iterdir()) == ["fills.parquet"]  # nothing written before the refusal
    assert run(ledger, export_parquet, out, table="fills", force=True) == {"fills": len(_sqlite_rows(ledger, "fills"))}
    assert pq.read_table(out / "fills.parquet").num_rows > 0
    with pytest.raises(LedgerError, match="cannot export 'nope'"):
        run(ledger, export_parquet, out, table="nope")


def test_ledger_export_command_writes_parquet(replayed: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, ledger, _ = replayed
    out = tmp_path / "cli"
    done = subprocess.run(_quantarb("ledger", "export", "--ledger", str(ledger), "--format", "parquet",
                                    "--out", str(out)), cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{out / 'hedge_groups.parquet'}: " in done.stdout
    again = subprocess.run(_quantarb("ledger", "export", "--ledger", str(ledger), "--format", "parquet",
                                     "--out", str(out)), cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 2 and "exists: use --force" in again.stderr
    no_out = subprocess.run(_quantarb("ledger", "export", "--ledger", str(ledger), "--format", "parquet"),
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert no_out.returncode == 2 and "needs --out DIR" in no_out.stderr


def test_the_research_example_runs_on_an_exported_ledger(replayed: tuple[Path, Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    _, ledger, report = replayed
    run(ledger, export_parquet, tmp_path)
    doc = (ROOT / "docs" / "research.md").read_text(encoding="utf-8")
    [code] = re.findall(r"```python\n# research-example\n(.*?)```", doc, flags=re.S)
    scope: dict[str, Any] = {"LEDGER_DIR": str(tmp_path)}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/research.md", "exec"), scope)
    assert sum(scope["pnl_by_direction"].values(), Decimal(0)) == Decimal(report["realized_pnl"])
    traded = report["groups"] - report["groups_by_state"].get("rejected", 0)
    assert sum(scope["count_by_direction"].values()) == traded > 0
    # The replay's latency model, exactly: a group's entry legs fill 30 ms after its decision.
    assert scope["fill_ms"] and min(scope["fill_ms"]) == 30
    assert "groups, PnL" in printed.getvalue() and "decision to first fill: p50" in printed.getvalue()


def test_recordings_export_quotes_frames_and_execution_records(replayed: tuple[Path, Path, dict[str, Any]],
                                                               tmp_path: Path) -> None:
    recording, _, report = replayed
    counts = export_recordings(demo_config(), [recording], tmp_path)
    assert counts["quotes"] == report["quotes"]  # the same normalizers as the replay
    assert counts["frames"] == report["frames"] and counts["execution"] == 2
    quotes = pq.read_table(tmp_path / "quotes.parquet")
    assert quotes.num_rows == counts["quotes"]
    rows = quotes.to_pylist()
    assert {r["venue"] for r in rows} == {"okx", "binance", "mt5"}
    assert all(r["bid"] <= r["ask"] and r["wall_ms"] == 1_732_150_000_000 + r["recv_ns"] // 1_000_000 for r in rows)
    execution = pq.read_table(tmp_path / "execution.parquet").to_pylist()
    assert [(e["kind"], e["client_order_id"]) for e in execution] == [("order", "c-1"), ("event", None)]
    with pytest.raises(ExportError, match="exists: use --force"):
        export_recordings(demo_config(), [recording], tmp_path)
    done = subprocess.run(_quantarb("recording", "export", str(recording), "--out", str(tmp_path / "cli"),
                                    "--json"), cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f'"quotes": {counts["quotes"]}' in done.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    failed = subprocess.run(_quantarb("recording", "export", str(bad), "--out", str(tmp_path / "bad")),
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 2 and "bad.jsonl:1: not a record" in failed.stderr
    assert not any((tmp_path / "bad").glob("*.parquet"))  # nothing half-written
