"""core.durations and core.edge_study: bounded histograms, exact percentiles from counts, episodes."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.durations import BOUNDS_MS, DurationHistogram, bucket_label
from core.edge_study import EdgeStudy, counts_percentile
from core.pnl import percentile

MS = 1_000_000


@given(st.lists(st.integers(-5000, 5000), min_size=1, max_size=60), st.floats(0, 100))
def test_percentile_of_counts_is_the_percentile_of_the_values(values: list[int], q: float) -> None:
    assert counts_percentile(Counter(values), q) == pytest.approx(percentile([float(v) for v in values], q))


def test_durations_fall_in_fixed_buckets() -> None:
    h = DurationHistogram()
    for ms in (0.5, 1, 1.5, 49.999, 50, 70_000):
        h.record(round(ms * MS))
    h.record(-3)  # a clock never goes back; counted as 0
    counts = h.counts()
    assert len(counts) == len(BOUNDS_MS) + 1
    assert counts[0] == 2 and counts[1] == 2 and counts[5] == 1 and counts[6] == 1 and counts[-1] == 1
    assert h.count == 7 and h.max_ns == 70_000 * MS
    assert h.quantile_ms(0.5) == 2.0  # the 4th of 7 is in [1, 2)
    assert h.quantile_ms(1.0) == 70_000.0  # the open bucket answers the maximum
    merged = h.merge([h])
    assert merged.count == 14 and merged.counts() == tuple(2 * c for c in counts)
    assert [bucket_label(i) for i in (0, 1, 9, 10, 15)] == ["<1ms", "1-2ms", "500ms-1s", "1-2s", ">=60s"]
    with pytest.raises(ValueError, match="increasing"):
        DurationHistogram((2, 1))


def test_an_episode_is_the_run_of_updates_over_the_threshold() -> None:
    study = EdgeStudy(threshold_bps=10)
    key = ("BTC", "okx", "binance")
    study.sample(key, 9.99, 1 * MS)
    study.sample(key, 10.0, 2 * MS, 1.0, 100.0)  # at the threshold: over
    study.intent(key)
    study.sample(key, 12.0, 3 * MS, 3.0, 100.0)
    study.sample(key, 9.0, 7 * MS)  # ends after 5 ms
    study.sample(key, 11.0, 8 * MS, 2.0, 100.0)
    study.withdraw(key, 10 * MS)  # an outlier withdrew a side: ends after 2 ms
    study.sample(key, 11.0, 20 * MS, 2.0, 100.0)  # open at the end
    study.reaction(key, 3 * MS)
    [row] = study.report().directions
    assert (row.opportunities, row.triggered, row.censored, row.intents, row.updates) == (3, 1, 1, 1, 6)
    assert row.lifetime_ms == {"p50": 3.5, "p90": 4.7, "max": 5.0}
    assert row.outlived == 0.5  # 5 ms >= 3 ms, 2 ms < 3 ms
    assert row.capacity_base == 2.0 and row.capacity_notional == 200.0
    assert row.trigger_rate == pytest.approx(1 / 3)


def test_an_empty_study_renders() -> None:
    import io

    from rich.console import Console

    from quantarb_tui.replay_report import render_html, render_terminal

    study = EdgeStudy(threshold_bps=8).report(carry_note="none").as_dict()
    assert study["directions"] == [] and study["pairs"] == [] and study["net"] == "0"
    page = render_html(study)
    assert "<svg" not in page and page.endswith("</html>")
    out = io.StringIO()
    render_terminal(study, Console(file=out, width=120))
    assert "no edge reached the threshold" in out.getvalue()
