"""`quantarb record` / `quantarb replay` as real processes, and the recording format."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock, ReplayClock
from feeds.recording import FrameRecorder, RecordingError, read_recording
from feeds.replay import ReplaySource


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.5"
    env["QUANTARB_LISTENER__PORT"] = "0"  # record runs the MT5 listener: any free port
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this tree, not an installed one
    return env


def _quantarb(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantarb_tui.cli", *args]


def test_record_then_replay_the_demo_feeds(tmp_path: Path) -> None:
    out = tmp_path / "session.jsonl.gz"
    rec = subprocess.run(_quantarb("record", "--duration", "3", "--out", str(out)), cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert rec.returncode == 0, rec.stderr
    assert rec.stdout.startswith("recorded ")
    with gzip.open(out, "rt", encoding="utf-8") as fh:
        header, *lines = [json.loads(line) for line in fh]
    assert header["format"] == "quantarb-recording" and header["version"] == 3
    feeds = {line["feed"] for line in lines}
    assert feeds == {"okx", "binance-usdm", "mt5:DEMO"}  # the EA's ticks as the listener accepted them
    mt5_ticks = sum(len(json.loads(line["frame"])["ticks"]) for line in lines if line["feed"] == "mt5:DEMO")
    assert mt5_ticks > 0
    assert all(isinstance(line["recv_ns"], int) and isinstance(line["frame"], str) for line in lines)
    assert [line["recv_ns"] for line in lines] == sorted(line["recv_ns"] for line in lines)
    # Every frame the sims sent is in the file, subscription acks included (raw frames).
    assert any('"event":"subscribe"' in line["frame"] for line in lines if line["feed"] == "okx")

    ledger = tmp_path / "replay.db"
    rep = subprocess.run(_quantarb("replay", str(out), "--json", "--ledger", str(ledger), "--latency-ms", "30"),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert report["frames"] == len(lines)
    assert report["by_feed"] == {f: sum(1 for line in lines if line["feed"] == f) for f in feeds}
    assert report["mt5_rejected"] == {}
    exchange_frames = sum(1 for line in lines if line["feed"] != "mt5:DEMO")
    assert mt5_ticks < report["quotes"] <= exchange_frames + mt5_ticks  # subscription acks carry none
    assert report["decisions"] == report["quotes"]  # one Decision per accepted quote
    assert sum(report["reasons"].values()) == report["decisions"]
    assert report["dropped"] == {"okx": {}, "binance-usdm": {}}
    assert report["ledger"] == str(ledger) and ledger.is_file()
    assert report["groups"] == report["intents"] and report["open_groups"] == 0


def test_replay_of_a_bad_recording_exits_2_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"venue":"okx","feed":"okx","recv_ns":1,"frame":"x"}\nnot json\n', encoding="utf-8")
    result = subprocess.run(_quantarb("replay", str(bad)), cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "bad.jsonl:2" in result.stderr
    missing = subprocess.run(_quantarb("replay", str(tmp_path / "nope.jsonl")), cwd=tmp_path,
                             env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2
    assert "no such recording" in missing.stderr


@pytest.mark.parametrize("name", ["plain.jsonl", "packed.jsonl.gz"])
def test_recorder_round_trips_text_and_binary_frames(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with FrameRecorder(path) as rec:
        rec.write("okx", "okx", '{"arg":{}}', 10)
        rec.write("binance", "binance-usdm", b"\x00\xffraw", 20)
    assert rec.by_feed == {"okx": 1, "binance-usdm": 1}
    frames = list(read_recording(path))
    assert [(f.feed, f.recv_ns, f.frame) for f in frames] == [
        ("okx", 10, '{"arg":{}}'), ("binance-usdm", 20, b"\x00\xffraw"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_reading_arbitrary_bytes_gives_frames_or_a_recording_error(tmp_path_factory: pytest.TempPathFactory,
                                                                    data: bytes) -> None:
    path = tmp_path_factory.mktemp("rec") / "x.jsonl"
    path.write_bytes(data)
    try:
        for frame in read_recording(path):
            assert isinstance(frame.frame, str | bytes)
    except RecordingError as exc:
        assert str(path) in str(exc)


class _Collect:
    def __init__(self, clock: ReplayClock | ManualClock) -> None:
        self.clock = clock
        self.seen: list[tuple[str | bytes, int, int]] = []

    def on_frame(self, frame: str | bytes, recv_ns: int) -> object:
        self.seen.append((frame, recv_ns, self.clock.monotonic_ns()))
        return None


class _Timed(_Collect):
    """Also notes the event loop's time of each delivery."""

    def __init__(self, clock: ReplayClock | ManualClock) -> None:
        super().__init__(clock)
        self.stamps: list[float] = []

    def on_frame(self, frame: str | bytes, recv_ns: int) -> object:
        self.stamps.append(asyncio.get_running_loop().time())
        return super().on_frame(frame, recv_ns)


def test_replay_fast_sets_the_clock_to_each_recorded_time_and_skips_unknown_feeds(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with FrameRecorder(path) as rec:
        rec.write("okx", "okx", "a", 1_000)
        rec.write("mt5", "mt5-sim", "b", 2_000)
        rec.write("okx", "okx", "c", 3_000)
    clock = ReplayClock()
    handler = _Collect(clock)
    stats = ReplaySource(path, {"okx": handler}).run_fast(clock)
    assert handler.seen == [("a", 1_000, 1_000), ("c", 3_000, 3_000)]
    assert stats.frames == 2 and stats.skipped == {"mt5-sim": 1}
    assert stats.span_s == pytest.approx(2e-6)


def test_replay_realtime_keeps_the_original_spacing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with FrameRecorder(path) as rec:
        for i in range(3):
            rec.write("okx", "okx", str(i), i * 100_000_000)  # 100 ms apart
    clock = ManualClock()
    handler = _Timed(clock)

    async def run() -> list[float]:
        await ReplaySource(path, {"okx": handler}).run_realtime(clock, speed=2.0)
        return handler.stamps

    stamps = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # At 2x the 100 ms spacing becomes ~50 ms; asyncio sleeps never return early.
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert [s[1] for s in handler.seen] == [clock.monotonic_ns()] * 3  # stamped on delivery


def test_headless_records_its_run_in_rotated_parts_that_replay_as_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "rec" / "live.jsonl.gz"
    out.parent.mkdir()
    run = subprocess.run(_quantarb("headless", "--duration", "4", "--ledger", str(tmp_path / "live.db"),
                                   "--record", str(out), "--rotate-mb", "0.01"),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0, run.stderr
    parts = sorted(out.parent.iterdir())
    assert len(parts) >= 2 and parts[0].name == "live.00000.jsonl.gz"
    from feeds.recording import RecordedExecution, read_records, recording_files

    files = recording_files([out.parent])
    assert [f.path for f in files] == parts
    assert len({f.header.recording for f in files if f.header}) == 1
    records = [r for p in parts for r in read_records(p)]
    kinds = {r.kind for r in records if isinstance(r, RecordedExecution)}
    assert "event" in kinds  # at least the engine's start; orders and fills when it traded
    rep = subprocess.run(_quantarb("replay", str(out.parent), "--json"), cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60, check=False)
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert report["files"] == [str(p) for p in parts]
    assert report["frames"] == sum(1 for r in records if not isinstance(r, RecordedExecution))
