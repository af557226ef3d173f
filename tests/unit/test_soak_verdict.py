"""`bench soak` judges the RSS slope after the warm-up against the target (issue 19): a series
rising faster than `TARGET_MB_PER_HOUR` is reported above it, and the samples of the warm-up do
not count. Synthetic samples, no engine."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from quantarb_tui.bench import ACCELERATED_DAY_S, SoakOptions, soak
from quantarb_tui.bench.soak import TARGET_MB_PER_HOUR, Probe, Sample, _report, _Sampler, slope_per_hour


def test_slope_is_the_least_squares_rise_per_hour() -> None:
    assert slope_per_hour([(0.0, 10.0), (1800.0, 11.0), (3600.0, 12.0)]) == pytest.approx(2.0)
    assert slope_per_hour([(0.0, 5.0), (60.0, 5.0)]) == 0.0
    assert slope_per_hour([(0.0, 5.0)]) == 0.0


@pytest.mark.parametrize(("mb_per_hour", "within"), [(TARGET_MB_PER_HOUR + 0.5, False), (1.0, True), (-1.0, True)])
def test_the_verdict_follows_the_slope_after_the_warm_up(mb_per_hour: float, within: bool) -> None:
    sampler = _Sampler(warmup_s=600.0, interval_s=10.0, trace=False)
    try:
        # A steep warm-up (+100 MB in 10 minutes), then `mb_per_hour` for 20 minutes.
        for t in range(0, 1801, 10):
            mb = 60.0 + (100.0 * t / 600 if t < 600 else 100.0 + mb_per_hour * (t - 600) / 3600)
            sampler.samples.append(Sample(float(t), int(mb * 1024), 0, 0, 1000, 1000, 0, 0))
        result = _report(sampler, Probe(), 1800.0, 600.0, accelerate=True, tui=False)
    finally:
        shutil.rmtree(sampler.snapshot_dir, ignore_errors=True)
    assert result["rss_mb_per_hour"] == pytest.approx(mb_per_hour, abs=0.01)
    assert result["within_target"] is within
    assert ("within" if within else "ABOVE") in result["lines"][2]


def _fake_run(heap: float | None) -> Any:
    """`soak._run` stood in by a synthetic report (flat RSS), with `heap` as a traced run's
    heap figure when it traces."""

    async def run(duration_s: float, warmup_s: float, interval_s: float, *, trace: bool,
                  **_: object) -> dict[str, Any]:
        sampler = _Sampler(warmup_s=warmup_s, interval_s=interval_s, trace=False)
        try:
            for t in range(0, 61, 10):
                sampler.samples.append(Sample(float(t), 80 * 1024, 0, 0, 1000, 1000, 0, 0))
            result = _report(sampler, Probe(), duration_s, warmup_s, accelerate=False, tui=False)
        finally:
            shutil.rmtree(sampler.snapshot_dir, ignore_errors=True)
        if trace:
            result["heap_mb_per_hour"] = heap
            result["top_growth_by_line"] = [{"where": "leak.py:1", "kib": 9.0, "blocks": 9}]
        return result

    return run


def test_without_the_twin_the_report_has_no_heap_figures_rather_than_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(soak, "_run", _fake_run(heap=5.0))
    res = soak.bench_soak(duration_s=60, warmup_s=30, trace=False)
    assert res["heap_mb_per_hour"] is None and res["traced_mb_per_hour"] is None
    assert res["traced_twin"] == {"error": "not run"}
    assert "python heap n/a MB/h" in res["lines"][2]
    assert any(line.startswith("traced twin     none (not run)") for line in res["lines"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the twin needs fork")
def test_the_twins_heap_figures_and_lines_are_adopted_and_the_verdict_stays_untraced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(soak, "_run", _fake_run(heap=5.0))
    res = soak.bench_soak(duration_s=60, warmup_s=30, trace=True)
    assert "error" not in res["traced_twin"], res["traced_twin"]
    assert res["heap_mb_per_hour"] == 5.0  # the twin's
    assert res["top_growth_by_line"] == [{"where": "leak.py:1", "kib": 9.0, "blocks": 9}]
    assert res["rss_mb_per_hour"] == 0.0 and res["within_target"] is True  # this run's flat RSS
    assert "python heap +5.00 MB/h" in res["lines"][2]


def test_the_samples_are_numbers_in_an_array_sized_for_the_run_and_read_back_unchanged() -> None:
    """The bench's own memory must not grow with its samples (issue 19): the array holds the
    planned number of samples from the start, and every field reads back as written."""
    from quantarb_tui.bench.memory_map import KINDS
    from quantarb_tui.bench.soak import SampleSeries

    series = SampleSeries(3)
    written = [Sample(0.5, 80_000, 1, 2, 3, 4, 5, 6, tuple(range(len(KINDS))), 7, 8, 9, 10, 11),
               Sample(10.25, 80_004, 0, 0, 1000, 1000, 0, 0),  # no breakdown on this platform
               Sample(20.0, 2**40, 0, 0, 1, 1, 0, 0, (9,) * len(KINDS))]
    for s in written:
        series.append(s)
    assert series.capacity == 3
    assert list(series) == written and series[-1] == written[-1] and len(series) == 3
    series.append(written[0])  # beyond the plan: it grows rather than fails
    assert series.capacity == 6 and series[3] == written[0]
    with pytest.raises(IndexError):
        series[4]


def test_the_accelerated_soak_runs_a_day_of_the_demo_by_default() -> None:
    """`bench soak --accelerate` judges its slope over the accelerated day (about 16 demo hours
    per hour here: an hour and a half), after twenty minutes of warm-up, with a flatten every
    five minutes; the demo-load soak stays half an hour with ten minutes of warm-up."""
    accelerated = SoakOptions.of(None, None, accelerate=True, tui=False)
    assert (accelerated.duration_s, accelerated.warmup_s, accelerated.flatten_every_s) == (5400.0, 1200.0, 300.0)
    assert accelerated.duration_s == ACCELERATED_DAY_S
    demo = SoakOptions.of(None, None, accelerate=False, tui=False)
    assert (demo.duration_s, demo.warmup_s, demo.flatten_every_s) == (1800.0, 600.0, 0.0)
    chosen = SoakOptions.of(600.0, 60.0, accelerate=True, tui=True, flatten_every_s=0.0)
    assert (chosen.duration_s, chosen.warmup_s, chosen.flatten_every_s, chosen.tui) == (600.0, 60.0, 0.0, True)
