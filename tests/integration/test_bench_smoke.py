"""`quantarb bench` commands stay runnable: shape of their JSON, never their timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("target", ["pipeline", "feeds"])
def test_bench_json_document(target: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quantarb_tui.cli", "bench", target, "--quotes", "20000", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # --json prints one JSON document and nothing else
    assert doc["machine"]["cpus"] >= 1
    res = doc["results"][target]
    assert "lines" not in res
    if target == "pipeline":
        assert res["quotes"] == 20_000
        assert res["quotes_per_s"] > 0
        assert 0 < res["latency_us"]["p50"] <= res["latency_us"]["p99"] <= res["latency_us"]["p999"]
        assert res["decisions"] == 20_000 + 10_000  # measured + warm-up, one Decision per quote
        assert sum(res["reasons"].values()) == res["decisions"]
    else:
        assert set(res["normalizers"]) == {"okx_tickers", "okx_bbo_tbt", "binance_spot", "binance_usdm"}
        for stream in res["normalizers"].values():
            assert stream["frames_per_s"] > 0
            assert stream["quotes"] == 20_000 and stream["dropped"] == 0


def test_bench_kill_runs_and_cancels_entries_in_flight() -> None:
    """A short kill bench: every kill was seen by the gate, and cancels went out (no timings)."""
    from quantarb_tui.bench.kill import bench_kill

    res = bench_kill(kills=5)
    assert res["kills"] == 5
    assert res["quotes_per_s"] > 0
    assert res["gate_refusing_ms_p50"] <= res["gate_refusing_ms_max"]
    assert res["kills_with_cancels"] >= 1 and res["cancels_total"] >= res["kills_with_cancels"]
