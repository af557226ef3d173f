"""Smoke test of `quantarb bench tui` with tiny parameters: it runs and reports (no timing asserts)."""

from __future__ import annotations

from quantarb_tui.bench.tui import bench_tui


def test_bench_tui_runs_and_reports() -> None:
    result = bench_tui(rate=500, seconds=0.2, presses=2, size=(80, 24))
    assert result["quotes_per_s_target"] == 500
    assert set(result["key_to_visible_ms"]) == {"p50", "p99", "max"}
    assert result["presses"] == 2
    # Every press of `p` showed on screen within the bench's 2 s bound (a functional check,
    # not a timing one: nothing else is timed here).
    assert result["missed"] == 0
    lines = result["lines"]
    assert len(lines) == 5 and all(isinstance(line, str) for line in lines)
    assert lines[2].startswith("key->visible") and lines[2].endswith("(2 presses of p, 0 missed)")
