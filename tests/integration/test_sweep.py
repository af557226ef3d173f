"""Sweeps: `--sweep` parsing, and the same 3-setting sweep in local processes and on a Dask
LocalCluster (127.0.0.1) giving identical tables, each row equal to a plain replay."""

from __future__ import annotations

import asyncio
import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import demo_config
from engine.replay import ReplaySettings, replay_engine
from engine.sweep import (
    SweepAxis,
    SweepError,
    combinations,
    max_drawdown,
    parse_sweep,
    run_cluster,
    run_local,
    sweep_settings,
    with_setting,
)
from feeds.recording import FrameRecorder
from sim.session import SessionFrames
from tests.integration.test_recording import _env, _quantarb

SWEEP = ["strategy.threshold_bps=6:10:2"]
LATENCY = ReplaySettings(latency_ms=30.0)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two recordings of the synthetic market (different seeds), 20 recorded seconds each."""
    config = demo_config()
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    out = []
    for seed in (7, 8):
        path = tmp_path_factory.mktemp("sweep") / f"s{seed}.jsonl.gz"
        session = SessionFrames(config.build_pairs(), seed=seed, okx_channels=channels, dislocation_every_s=1.0)
        with FrameRecorder(path, ManualClock()) as rec:
            for f in session.frames(1000):
                rec.write(f.venue, f.feed, f.frame, f.recv_ns)
        out.append(path)
    return out


def test_a_range_includes_its_stop_and_keeps_the_settings_type() -> None:
    config = demo_config()
    axis = parse_sweep("strategy.threshold_bps=4:20:2", config)
    assert axis == SweepAxis("strategy.threshold_bps", tuple(Decimal(v) for v in range(4, 21, 2)))
    assert [str(v) for v in axis.values] == ["4", "6", "8", "10", "12", "14", "16", "18", "20"]
    assert parse_sweep("strategy.threshold_bps=0.5:1.6:0.5", config).values == (
        Decimal("0.5"), Decimal("1"), Decimal("1.5"))
    assert parse_sweep("strategy.cooldown_ms=0,500,1000", config).values == (0, 500, 1000)
    assert parse_sweep("strategy.leg_policy=concurrent,mt5_first", config).values == ("concurrent", "mt5_first")
    combos = combinations([parse_sweep("strategy.threshold_bps=4,8", config),
                           parse_sweep("strategy.cooldown_ms=0:1000:1000", config)])
    assert combos == [
        (("strategy.threshold_bps", Decimal(4)), ("strategy.cooldown_ms", 0)),
        (("strategy.threshold_bps", Decimal(4)), ("strategy.cooldown_ms", 1000)),
        (("strategy.threshold_bps", Decimal(8)), ("strategy.cooldown_ms", 0)),
        (("strategy.threshold_bps", Decimal(8)), ("strategy.cooldown_ms", 1000)),
    ]
    applied = with_setting(config, combos[3])
    assert applied.strategy.threshold_bps == 8.0 and applied.strategy.cooldown_ms == 1000
    assert config.strategy.cooldown_ms == 3000  # the original is untouched


@pytest.mark.parametrize(("text", "error"), [
    ("strategy.threshold_bps", "expected KEY=START:STOP:STEP"),
    ("threshold_bps=4:8:2", "is not a setting name"),
    ("strategy.threshold=4:8:2", "strategy has no setting 'threshold'"),
    ("nothing.threshold_bps=4", "the config has no setting 'nothing'"),
    ("strategy.threshold_bps=4:8", "a range is START:STOP:STEP"),
    ("strategy.threshold_bps=4:8:0", "the step must be > 0"),
    ("strategy.threshold_bps=8:4:1", "the stop is below the start"),
    ("strategy.threshold_bps=4:x:1", "'x' is not a number"),
    ("strategy.threshold_bps=4:NaN:1", "not a finite number"),
    ("strategy.threshold_bps=0:100000:1", "at most 1000 per setting"),
    ("strategy.threshold_bps=-2,4", "strategy.threshold_bps: Input should be greater than or equal to 0"),
    ("strategy.threshold_bps=400", "must be < max_edge_bps"),
    ("strategy.cooldown_ms=0:1000:250.5", "takes whole numbers"),
    ("strategy.leg_policy=0:1:1", "a range needs a numeric setting"),
    ("strategy.leg_policy=sideways", "strategy.leg_policy"),
    ("strategy.threshold_bps=4,,8", "an empty value"),
    ("strategy.threshold_bps=4,4", "given twice"),
    ("venues.okx.silence_s=1", "venues.okx is not configured"),
    ("engine.ledger.x=1", "engine.ledger has no setting 'x'"),
    ("venues.mt5.terminals=a", "not a single number, flag or word"),
])
def test_a_bad_sweep_is_refused_saying_why(text: str, error: str) -> None:
    config = demo_config().model_copy(update={"venues": demo_config().venues.model_copy(update={"okx": None})})
    with pytest.raises(SweepError) as info:
        parse_sweep(text, config)
    assert error in str(info.value), str(info.value)


def test_too_many_combinations_or_a_setting_twice_are_refused() -> None:
    config = demo_config()
    with pytest.raises(SweepError, match="combinations; at most"):
        sweep_settings(["strategy.threshold_bps=0:99:1", "strategy.cooldown_ms=0:99:1"], config)
    with pytest.raises(SweepError, match="swept twice"):
        sweep_settings(["strategy.threshold_bps=4", "strategy.threshold_bps=5"], config)


_keys = st.sampled_from(["strategy.threshold_bps", "strategy.cooldown_ms", "strategy.leg_policy", "risk.x",
                         "strategy", "a.b.c", ""])
_specs = st.lists(st.sampled_from(["4", "-1", "0.5", "1e3", "x", ":", ",", "nan", "20", " ", "true", "mt5_first",
                                   "1" * 30]), max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.tuples(_keys, _specs).map(lambda t: f"{t[0]}={t[1]}")))
@example("strategy.threshold_bps=1E1000000")  # abs() overflowed the decimal context: not a SweepError
@example("strategy.threshold_bps=1E-1000000")
def test_any_sweep_text_is_an_axis_or_a_sweep_error(text: str) -> None:
    config = demo_config()
    try:
        axis = parse_sweep(text, config)
    except SweepError as exc:
        assert str(exc).startswith("--sweep")
        return
    assert axis.values and len(set(axis.values)) == len(axis.values)
    for value in axis.values:
        with_setting(config, ((axis.key, value),))


def test_max_drawdown_is_the_largest_fall_from_a_peak() -> None:
    assert max_drawdown([]) == 0
    assert max_drawdown([Decimal(1), Decimal(2)]) == 0
    assert max_drawdown([Decimal(-1)]) == 1  # from the start (0)
    assert max_drawdown([Decimal(5), Decimal(-3), Decimal(1), Decimal(-4), Decimal(10), Decimal(-2)]) == 6


def test_a_sweep_of_three_settings_is_identical_locally_and_on_a_dask_cluster(recordings: list[Path]) -> None:
    from distributed import LocalCluster

    config = demo_config()
    axes = sweep_settings(SWEEP, config)
    local = run_local(config, recordings, axes, LATENCY, jobs=2)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",  # type: ignore[no-untyped-call]
                      dashboard_address="127.0.0.1:0") as cluster:
        remote = run_cluster(config, recordings, axes, cluster.scheduler_address, LATENCY)
    assert remote.runner.startswith("cluster tcp://127.0.0.1:")
    assert [r.as_json() for r in local.rows] == [r.as_json() for r in remote.rows]
    assert [r.setting for r in local.rows] == [(("strategy.threshold_bps", Decimal(v)),) for v in (6, 8, 10)]
    # Each row is the plain replays of its setting, added up: nothing lost or doubled by the runners.
    for row in local.rows:
        cfg = with_setting(config, row.setting)
        reports = [asyncio.run(replay_engine(cfg, [p], LATENCY)) for p in recordings]
        assert row.recordings == 2
        assert row.groups == sum(p["groups"] for r in reports for p in r["pairs"].values())
        assert row.hits == sum(p["hits"] for r in reports for p in r["pairs"].values())
        assert row.compensated == sum(r["compensated"] for r in reports)
        assert row.pnl == sum(Decimal(r["realized_pnl"]) for r in reports)
    groups = [r.groups for r in local.rows]
    assert groups[0] > 0 and groups == sorted(groups, reverse=True)  # a higher threshold trades less
    assert len({r.groups for r in local.rows}) > 1  # the setting reached the engine


def test_replay_sweep_command_prints_the_table_or_json_and_refuses_a_bad_sweep(recordings: list[Path],
                                                                            tmp_path: Path) -> None:
    args = ["replay", *map(str, recordings), "--sweep", "strategy.threshold_bps=6,10", "--latency-ms", "30",
            "--jobs", "2"]
    doc = subprocess.run(_quantarb(*args, "--json"), cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120, check=False)
    assert doc.returncode == 0, doc.stderr
    report = json.loads(doc.stdout)
    assert report["keys"] == ["strategy.threshold_bps"]
    assert [r["setting"] for r in report["rows"]] == [{"strategy.threshold_bps": "6"},
                                                       {"strategy.threshold_bps": "10"}]
    assert set(report["rows"][0]) == {"setting", "recordings", "groups", "hits", "hit_rate", "compensated",
                                      "pnl", "max_drawdown"}
    table = subprocess.run(_quantarb(*args), cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=120, check=False)
    assert table.returncode == 0, table.stderr
    assert "max drawdown" in table.stdout and "strategy.threshold_bps" in table.stdout
    assert "sweep: 4/4 replays done" in table.stderr
    bad = subprocess.run(_quantarb("replay", str(recordings[0]), "--sweep", "strategy.threshold_bps=8:4:1"),
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "--sweep strategy.threshold_bps=8:4:1: the stop is below the start" in bad.stderr
    with_ledger = subprocess.run(_quantarb("replay", str(recordings[0]), "--sweep", "strategy.threshold_bps=8",
                                           "--ledger", str(tmp_path / "x.db")),
                                 cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
                                 check=False)
    assert with_ledger.returncode == 2 and "temporary ledger" in with_ledger.stderr


def test_a_corrupt_recording_or_an_unreachable_scheduler_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"venue":"okx","feed":"okx","recv_ns":1,"frame":"x"}\n{"venue": 3}\n', encoding="utf-8")
    config = demo_config()
    from feeds.recording import RecordingError

    with pytest.raises(RecordingError, match=r"bad\.jsonl:2: not a record"):  # raised in a worker process
        run_local(config, [bad], sweep_settings(["strategy.threshold_bps=8"], config), jobs=1)
    with pytest.raises(SweepError, match=r"--cluster tcp://127\.0\.0\.1:1: cannot reach the scheduler"):
        run_cluster(config, [bad], [], "tcp://127.0.0.1:1", timeout_s=1.0)
    with pytest.raises(SweepError, match=r"--cluster http://x:1: not a scheduler address: unknown address scheme"):
        run_cluster(config, [bad], [], "http://x:1", timeout_s=1.0)
