"""`quantarb replay` through the whole engine: real normalizers, pipeline, orchestrator, paper
venues and a real SQLite ledger, on a recording of the synthetic demo market (sim.session)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import QuantarbConfig, demo_config
from core.models import Quote
from engine.replay import ReplayError, ReplaySettings, replay_engine
from feeds.recording import FrameRecorder, RecordingError, read_recording, recording_header
from mt5_bridge.bridge import Mt5TickReplay
from sim.session import SessionFrames

STEPS = 1500  # 30 recorded seconds at 20 ms


def _config() -> QuantarbConfig:
    return demo_config()


def _record(path: Path, steps: int = STEPS, seed: int = 7) -> dict[str, int]:
    config = _config()
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    session = SessionFrames(config.build_pairs(), seed=seed, okx_channels=channels, dislocation_every_s=1.0)
    with FrameRecorder(path, clock=ManualClock()) as rec:
        for f in session.frames(steps):
            rec.write(f.venue, f.feed, f.frame, f.recv_ns)
    return dict(rec.by_feed)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("rec") / "session.jsonl.gz"
    return path, _record(path)


def _replay(path: Path, ledger: Path | None, **kw: Any) -> dict[str, Any]:
    return asyncio.run(replay_engine(_config(), [path], ReplaySettings(**kw),
                                     ledger_path=str(ledger) if ledger is not None else None))


def _events(ledger: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT seq, ts_ms, kind, group_id, payload FROM events ORDER BY seq").fetchall()


def test_two_replays_write_identical_ledgers(recording: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    path, _ = recording
    first = _replay(path, tmp_path / "a.db", latency_ms=40.0, slippage_bps=2.0)
    second = _replay(path, tmp_path / "b.db", latency_ms=40.0, slippage_bps=2.0)
    a, b = _events(tmp_path / "a.db"), _events(tmp_path / "b.db")
    kinds = {row[2] for row in a}
    assert {"group_opened", "order_created", "fill", "group_state"} <= kinds
    assert first["groups"] > 0 and first["groups"] == sum(first["groups_by_state"].values())
    assert a == b
    first.pop("ledger"), second.pop("ledger")
    assert first == second


def test_fills_happen_latency_later_against_the_books_of_then(recording: tuple[Path, dict[str, int]],
                                                             tmp_path: Path) -> None:
    path, _ = recording
    _replay(path, tmp_path / "l.db", latency_ms=120.0)
    with sqlite3.connect(tmp_path / "l.db") as db:
        opened = dict(db.execute("SELECT group_id, ts_ms FROM events WHERE kind = 'group_opened'").fetchall())
        fills = db.execute("SELECT group_id, MIN(ts_ms) FROM events WHERE kind = 'fill' GROUP BY group_id").fetchall()
    assert fills
    # The replay clock is recorded time, so each group's first fill is exactly the latency later.
    assert {fill_ms - opened[group] for group, fill_ms in fills} == {120}
    instant = _replay(path, None, latency_ms=0.0)
    late = _replay(path, None, latency_ms=120.0)
    assert instant["quotes"] == late["quotes"]  # the same market either way
    assert instant["realized_pnl"] != late["realized_pnl"]  # but other fills


def test_every_recorded_frame_and_mt5_tick_reaches_the_engine(recording: tuple[Path, dict[str, int]]) -> None:
    path, by_feed = recording
    report = _replay(path, None)
    assert set(by_feed) == {"okx", "binance-usdm", "mt5:DEMO"}
    assert report["by_feed"] == by_feed
    assert report["skipped_feeds"] == {} and report["mt5_rejected"] == {}
    assert report["dropped"] == {"okx": {}, "binance-usdm": {}}
    mt5_ticks = sum(len(json.loads(r.frame)["ticks"]) for r in read_recording(path) if r.feed == "mt5:DEMO")
    assert report["quotes"] == by_feed["okx"] + by_feed["binance-usdm"] + mt5_ticks
    assert report["decisions"] == report["quotes"]
    assert report["open_groups"] == 0


def test_a_replay_never_writes_into_an_existing_ledger(recording: tuple[Path, dict[str, int]],
                                                       tmp_path: Path) -> None:
    path, _ = recording
    existing = tmp_path / "live.db"
    existing.write_bytes(b"keep me")
    with pytest.raises(ReplayError, match="exists"):
        _replay(path, existing)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ReplayError, match="latency"):
        ReplaySettings(latency_ms=-1.0)


def test_recording_header_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with FrameRecorder(path, clock=ManualClock(wall_ms=1_700_000_000_000, mono_ns=2_000_000_000)) as rec:
        rec.write("okx", "okx", "x", 3)
    header = recording_header(path)
    assert header is not None
    assert (header.version, header.wall_ms, header.mono_ns) == (3, 1_700_000_000_000, 2_000_000_000)
    assert [f.frame for f in read_recording(path)] == ["x"]
    v1 = tmp_path / "v1.jsonl"
    v1.write_text('{"venue":"okx","feed":"okx","recv_ns":1,"frame":"y"}\n', encoding="utf-8")
    assert recording_header(v1) is None and [f.frame for f in read_recording(v1)] == ["y"]
    newer = tmp_path / "v4.jsonl"
    newer.write_text('{"format":"quantarb-recording","version":4}\n', encoding="utf-8")
    with pytest.raises(RecordingError, match="version 4 is not supported"):
        list(read_recording(newer))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_a_recorded_mt5_body_is_quotes_or_counted_as_refused(body: bytes | str) -> None:
    seen: list[Quote] = []
    handler = Mt5TickReplay("DEMO", ["XAUUSD"], seen.append)
    handler.on_frame(body, 5)
    if handler.rejected:
        assert handler.rejected == 1 and seen == []  # refused as a whole, as the listener does
    else:
        assert all(q.venue == "mt5" and q.symbol == "XAUUSD" and q.recv_ns == 5 for q in seen)


def test_a_recorded_mt5_body_becomes_the_listeners_quotes() -> None:
    seen: list[Quote] = []
    handler = Mt5TickReplay("DEMO", ["XAUUSD"], seen.append)
    handler.on_frame('{"ticks":[{"symbol":"XAUUSD","bid":2650.1,"ask":2650.3,"time_msc":17}]}', 9)
    handler.on_frame('{"ticks":[{"symbol":"XAUUSD","bid":2651,"ask":2650,"time_msc":18}]}', 10)  # crossed
    handler.on_frame('{"ticks":[{"symbol":"EURUSD","bid":1,"ask":1.1,"time_msc":18}]}', 11)  # not configured
    assert [(q.bid, q.ask, q.venue_ts_ms, q.recv_ns) for q in seen] == [(2650.1, 2650.3, 17, 9)]
    assert handler.rejected == 2
