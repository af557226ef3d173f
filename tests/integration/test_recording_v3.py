"""Recording format 3: rotation by size and by the hour, gzip parts read in order, execution
records (our orders, fills, events) from a live engine, and clear errors for cut-off or
corrupt files (file and line named)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import demo_config
from engine.replay import ReplaySettings, replay_engine
from feeds.recording import (
    FrameRecorder,
    RecordedExecution,
    RecordedFrame,
    RecordingError,
    group_recordings,
    parse_line,
    part_path,
    read_frames,
    read_recording,
    read_records,
    recording_files,
    recording_header,
)
from sim.session import SessionFrames


def _frames(steps: int) -> list[Any]:
    config = demo_config()
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    session = SessionFrames(config.build_pairs(), seed=7, okx_channels=channels, dislocation_every_s=1.0)
    return list(session.frames(steps))


def test_part_names_sort_in_order() -> None:
    assert part_path("s.jsonl.gz", 3) == Path("s.00003.jsonl.gz")
    assert part_path("/d/s.jsonl", 12) == Path("/d/s.00012.jsonl")
    assert part_path("raw", 0) == Path("raw.00000")
    names = [part_path("s.jsonl.gz", n).name for n in (0, 1, 2, 10, 99)]
    assert names == sorted(names)


def test_rotation_by_size_keeps_every_frame_in_order(tmp_path: Path) -> None:
    frames = [f"frame-{i:04d}-" + "x" * 80 for i in range(300)]
    with FrameRecorder(tmp_path / "s.jsonl", ManualClock(), max_bytes=4096) as rec:
        for i, frame in enumerate(frames):
            rec.write("okx", "okx", frame, 1_000 + i)
    parts = rec.paths
    assert len(parts) == len(list(tmp_path.iterdir())) > 5
    assert parts == [part_path(tmp_path / "s.jsonl", n) for n in range(len(parts))]
    for p in parts[:-1]:
        # A part is closed by the first line written after it reached the size: one line over at most.
        assert 4096 <= p.stat().st_size < 4096 + 200
    headers = [recording_header(p) for p in parts]
    assert {h.recording for h in headers if h} == {rec.recording}
    assert [h.part for h in headers if h] == list(range(len(parts)))
    files = recording_files([tmp_path])
    assert [f.path for f in files] == parts
    assert group_recordings(files) == [parts]
    assert [f.frame for p in parts for f in read_recording(p)] == frames


def test_rotation_by_the_hour_starts_a_part_on_the_hour(tmp_path: Path) -> None:
    clock = ManualClock(wall_ms=1_732_150_800_000 - 1_500)  # 1.5 s before 01:00:00 UTC
    with FrameRecorder(tmp_path / "h.jsonl.gz", clock, rotate_s=3600) as rec:
        rec.write("okx", "okx", "a", clock.monotonic_ns())
        clock.advance(ms=1_000)
        rec.write("okx", "okx", "b", clock.monotonic_ns())  # 00:59:59.5: same part
        clock.advance(ms=1_000)
        rec.write("okx", "okx", "c", clock.monotonic_ns())  # 01:00:00.5: a new part
        clock.advance(ms=3_599_000)
        rec.write("okx", "okx", "d", clock.monotonic_ns())  # 01:59:59.5
        clock.advance(ms=1_000)
        rec.write("okx", "okx", "e", clock.monotonic_ns())  # 02:00:00.5
    assert [[f.frame for f in read_recording(p)] for p in rec.paths] == [["a", "b"], ["c", "d"], ["e"]]
    walls = [h.wall_ms for h in map(recording_header, rec.paths) if h]
    assert walls[1] % 3_600_000 == 500 and walls[2] % 3_600_000 == 500


def test_a_rotated_gzip_recording_replays_as_the_single_file_does(tmp_path: Path) -> None:
    frames = _frames(600)
    single = tmp_path / "one.jsonl.gz"
    with FrameRecorder(single, ManualClock()) as rec:
        for f in frames:
            rec.write(f.venue, f.feed, f.frame, f.recv_ns)
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    with FrameRecorder(parts_dir / "s.jsonl.gz", ManualClock(), max_bytes=4096) as rot:
        for f in frames:
            rot.write(f.venue, f.feed, f.frame, f.recv_ns)
    assert len(rot.paths) >= 3
    with gzip.open(rot.paths[0], "rb") as first:
        assert json.loads(first.readline())["version"] == 3

    def replay(paths: list[Path]) -> dict[str, Any]:
        report = asyncio.run(replay_engine(demo_config(), paths, ReplaySettings(latency_ms=20.0)))
        report.pop("files")
        return report

    whole = replay([single])
    assert whole["groups"] > 0
    assert replay([parts_dir]) == whole  # a directory: its parts in order
    assert replay(list(rot.paths)) == whole
    with pytest.raises(RecordingError, match=r"part 1 .* comes after part 2"):
        recording_files([rot.paths[0], rot.paths[2], rot.paths[1]])


def test_execution_records_round_trip_and_frames_readers_skip_them(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with FrameRecorder(path, ManualClock()) as rec:
        rec.write("okx", "okx", "q", 10)
        rec.write_record("order", {"client_order_id": "c1", "state": "submitted"}, 11)
        rec.write_record("fill", {"client_order_id": "c1", "qty": "0.01"}, 12)
        rec.write_record("event", {"kind": "group", "text": "g -> hedged"}, 13)
        with pytest.raises(ValueError, match="unknown record kind"):
            rec.write_record("quote", {}, 14)
    assert rec.frames == 1 and rec.records == 3
    assert list(read_records(path)) == [
        RecordedFrame("okx", "okx", 10, "q"),
        RecordedExecution("order", 11, {"client_order_id": "c1", "state": "submitted"}),
        RecordedExecution("fill", 12, {"client_order_id": "c1", "qty": "0.01"}),
        RecordedExecution("event", 13, {"kind": "group", "text": "g -> hedged"}),
    ]
    assert list(read_recording(path)) == [RecordedFrame("okx", "okx", 10, "q")]


def test_older_versions_are_read_and_newer_ones_refused(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.jsonl"
    v2.write_text('{"format":"quantarb-recording","version":2,"wall_ms":5,"mono_ns":7}\n'
                  '{"venue":"okx","feed":"okx","recv_ns":9,"frame":"z"}\n', encoding="utf-8")
    header = recording_header(v2)
    assert header is not None and (header.version, header.recording, header.part) == (2, "", 0)
    assert [f.frame for f in read_recording(v2)] == ["z"]
    v4 = tmp_path / "v4.jsonl"
    v4.write_text('{"format":"quantarb-recording","version":4}\n', encoding="utf-8")
    with pytest.raises(RecordingError, match=r"v4.jsonl:1: recording format version 4 is not supported"):
        list(read_recording(v4))


def test_a_gzip_recording_cut_off_by_a_killed_recorder_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    rec = FrameRecorder(path, ManualClock())
    for i in range(50):
        rec.write("okx", "okx", f"f{i}", i)
    rec.flush()  # what the once-a-second sync flush leaves on disk
    flushed = path.stat().st_size
    for i in range(50, 60):
        rec.write("okx", "okx", f"f{i}", i)
    rec.close()
    path.write_bytes(path.read_bytes()[:flushed])  # the recorder was killed after the flush
    seen: list[str | bytes] = []
    with pytest.raises(RecordingError, match=r"cut\.jsonl\.gz:52: cannot read: the file is cut off") as info:
        seen.extend(f.frame for f in read_recording(path))
    assert seen == [f"f{i}" for i in range(50)]  # everything up to the flush is still replayable
    assert "recorder did not close it" in str(info.value)


def test_a_plain_recording_cut_mid_line_or_corrupt_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    with FrameRecorder(path, ManualClock()) as rec:
        rec.write("okx", "okx", "a", 1)
        rec.write("okx", "okx", "b", 2)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(RecordingError, match=r"cut\.jsonl:3: the last line is cut off"):
        list(read_recording(path))
    path.write_bytes(data.replace(b'"recv_ns":2', b'"recv_ns":-2'))
    with pytest.raises(RecordingError, match=r"cut\.jsonl:3: not a record"):
        list(read_recording(path))
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    with pytest.raises(RecordingError, match=r"garbage\.jsonl\.gz:1: cannot read"):
        list(read_recording(garbage))
    missing = tmp_path / "nothing-here"
    with pytest.raises(RecordingError, match="no such recording"):
        recording_files([missing])


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_fields = st.dictionaries(
    st.sampled_from(["venue", "feed", "recv_ns", "frame", "frame_b64", "kind", "body", "other"]), _json, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=120), _fields.map(lambda d: json.dumps(d).encode())))
def test_the_line_parser_gives_a_record_or_an_error_naming_file_and_line(line: bytes) -> None:
    try:
        rec = parse_line(Path("rec.jsonl"), 42, line)
    except RecordingError as exc:
        assert str(exc).startswith("rec.jsonl:42: ")
        return
    if isinstance(rec, RecordedFrame):
        assert isinstance(rec.venue, str) and isinstance(rec.feed, str) and isinstance(rec.frame, str | bytes)
    else:
        assert rec.kind in ("order", "fill", "event") and isinstance(rec.body, dict)
    assert isinstance(rec.recv_ns, int) and rec.recv_ns >= 0


def test_a_bad_rotation_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1024 bytes"):
        FrameRecorder(tmp_path / "x.jsonl", max_bytes=10)
    with pytest.raises(ValueError, match="rotation interval"):
        FrameRecorder(tmp_path / "y.jsonl", rotate_s=0.1)
    assert not list(tmp_path.iterdir())


def _demo() -> Any:
    config = demo_config()
    assert config.venues.mt5 is not None
    return config.model_copy(update={
        "listener": config.listener.model_copy(update={"port": 0}),
        "demo": config.demo.model_copy(update={"dislocation_every_s": 0.5}),
        "venues": config.venues.model_copy(update={
            "mt5": config.venues.mt5.model_copy(update={"deviation_points": 1_000_000})}),
    })


async def _until_groups_closed(runtime: Any, n: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while sum(1 for g in runtime.orchestrator.closed if g.terminal) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} hedge group(s) not closed within {within:g} s")
        await asyncio.sleep(0.05)


async def test_a_live_engine_records_its_orders_fills_and_events_on_the_frames_clock(tmp_path: Path) -> None:
    from engine.live_recording import LiveRecording
    from engine.runtime import Runtime

    ledger = tmp_path / "demo.db"
    runtime = Runtime(_demo(), is_demo=True, secrets=None, ledger_path=str(ledger))
    recorder = FrameRecorder(tmp_path / "live.jsonl.gz", runtime.clock)
    runtime.record_to(LiveRecording(recorder, runtime.clock))
    await runtime.start()
    try:
        await _until_groups_closed(runtime, 1)
    finally:
        await runtime.stop()
        recorder.close()
    records = list(read_records(recorder.path))
    frames = [r for r in records if isinstance(r, RecordedFrame)]
    execs = [r for r in records if isinstance(r, RecordedExecution)]
    assert {f.feed for f in frames} >= {"okx", "mt5:DEMO"}
    kinds = {r.kind for r in execs}
    assert kinds == {"order", "fill", "event"}
    # One clock: every record's recv_ns is in the frames' range, and a group's orders leave after
    # the first frame and its fills come after its send.
    first_frame = frames[0].recv_ns
    sent = {r.body["client_order_id"]: r.recv_ns for r in execs if r.kind == "order" and r.body["state"] == "submitted"}
    fills = [r for r in execs if r.kind == "fill"]
    assert sent and fills
    assert all(ns > first_frame for ns in sent.values())
    assert all(f.recv_ns >= sent[f.body["client_order_id"]] for f in fills if f.body["client_order_id"] in sent)
    with sqlite3.connect(ledger) as db:
        ledger_orders = {row[0] for row in db.execute("SELECT client_order_id FROM orders")}
        ledger_fills = {row[0] for row in db.execute("SELECT venue_trade_id FROM fills")}
    assert set(sent) <= ledger_orders
    assert {f.body["venue_trade_id"] for f in fills} == ledger_fills
    assert any(r.body["kind"] == "group" for r in execs if r.kind == "event")
    from engine.recorded_latency import execution_latencies

    latency = execution_latencies([recorder.path])
    assert latency["orders"] == len(sent) and latency["records"] == len(execs)
    intents = {r.body["data"]["group_id"] for r in execs if r.kind == "event" and r.body["kind"] == "intent"}
    assert latency["groups"] == len(intents) > 0
    venues = latency["venues"]
    assert sum(v["fill"]["count"] for v in venues.values()) == len({f.body["client_order_id"] for f in fills
                                                                    if f.body["client_order_id"] in sent})
    for row in venues.values():
        for kind in ("reaction", "answer", "fill"):
            if row[kind]["count"]:
                assert 0 <= row[kind]["p50"] <= row[kind]["max"]
    assert sum(s["count"] for s in latency["both_sent"].values()) > 0


_good = st.sampled_from([b'{"venue":"okx","feed":"okx","recv_ns":5,"frame":"a"}',
                         b'{"kind":"fill","recv_ns":6,"body":{"qty":"1"}}',
                         b'{"venue":"binance","feed":"b","recv_ns":7,"frame_b64":"AAE="}', b""])
_junk = st.one_of(st.binary(max_size=60), _fields.map(lambda d: json.dumps(d).encode())).map(
    lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_good, _junk), max_size=8), st.booleans())
def test_a_file_reads_up_to_its_first_bad_line_and_names_it(tmp_path_factory: pytest.TempPathFactory,
                                                            lines: list[bytes], packed: bool) -> None:
    lines = [b'{"venue":"okx","feed":"okx","recv_ns":1,"frame":"first"}', *lines]
    path = tmp_path_factory.mktemp("h") / ("r.jsonl.gz" if packed else "r.jsonl")
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if packed else data)
    expected: list[Any] = []
    bad: int | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            expected.append(parse_line(path, number, line + b"\n"))
        except RecordingError:
            bad = number
            break
    seen: list[Any] = []
    if bad is None:
        seen.extend(read_records(path))
    else:
        with pytest.raises(RecordingError, match=rf"^{re.escape(str(path))}:{bad}: "):
            seen.extend(read_records(path))
    assert seen == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_good, _junk), max_size=8), st.booleans())
def test_the_replays_frame_reader_reads_what_read_recording_reads(tmp_path_factory: pytest.TempPathFactory,
                                                                  lines: list[bytes], packed: bool) -> None:
    """read_frames (the replay's reader: tuples, no RecordedFrame per line) gives the frames
    read_recording gives, in order, and stops on the same bad line with the same error."""
    lines = [b'{"venue":"okx","feed":"okx","recv_ns":1,"frame":"first"}', *lines]
    path = tmp_path_factory.mktemp("t") / ("r.jsonl.gz" if packed else "r.jsonl")
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if packed else data)

    def read(reader: Any) -> tuple[list[Any], str | None]:
        seen: list[Any] = []
        try:
            for item in reader(path):
                seen.append(item)
        except RecordingError as exc:
            return seen, str(exc)
        return seen, None

    frames, error = read(read_recording)
    tuples, tuple_error = read(read_frames)
    assert tuples == [(f.feed, f.recv_ns, f.frame) for f in frames]
    assert tuple_error == error


async def test_a_recording_that_fails_stops_itself_and_trading_goes_on(tmp_path: Path) -> None:
    from engine.live_recording import LiveRecording
    from engine.runtime import Runtime

    runtime = Runtime(_demo(), is_demo=True, secrets=None, ledger_path=str(tmp_path / "demo.db"))
    recorder = FrameRecorder(tmp_path / "live.jsonl", runtime.clock)
    recording = LiveRecording(recorder, runtime.clock)
    runtime.record_to(recording)
    await runtime.start()
    try:
        deadline = time.monotonic() + 10.0
        while recorder.frames < 10:
            if time.monotonic() > deadline:
                raise AssertionError("no frames recorded within 10 s")
            await asyncio.sleep(0.02)
        recorder.close()  # as a full disk would: every write from now on fails
        await _until_groups_closed(runtime, 2)
    finally:
        await runtime.stop()
    assert recording.error is not None and "closed" in recording.error
    stopped = [e for e in runtime.events.recent() if e.kind == "recording"]
    assert len(stopped) == 1 and stopped[0].level == "warn" and "trading goes on" in stopped[0].text
    assert all(g.state != "failed" for g in runtime.orchestrator.closed)
    assert list(read_recording(recorder.path))  # what was written before is intact
