"""Smoke test of `quantarb bench tui` with tiny parameters: it runs and reports (no timing asserts)."""

from __future__ import annotations

from quantarb_tui.bench.tui import bench_tui


def test_bench_tui_runs_and_reports() -> None:
    result = bench_tui(rate=500, seconds=0.2, presses=2, size=(80, 24))
    assert result["quotes_per_s_target"] == 500
    assert set(result["key_to_visible_ms"]) == {"p50", "p99", "max"}
    assert result["presses"] == 2 and result["missed"] + len(result["lines"]) >= 5
    assert all(isinstance(line, str) for line in result["lines"])
