"""The listener bench runs end to end on tiny numbers: both servers start in their own
processes, answer every pre-signed tick with 200, and the result has the documented shape.
The Python fallback client is forced so the test does not depend on wrk; nothing is timed."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from quantarb_tui.bench.listener import bench_listener

SIDE_KEYS = {"requests", "seconds", "requests_per_s", "latency_ms", "non_2xx", "socket_errors", "server_ticks",
             "server_rejected", "all_200", "ran_out_of_requests"}


def _check_side(side: dict[str, Any]) -> None:
    assert set(side) >= SIDE_KEYS
    assert isinstance(side["requests"], int) and side["requests"] > 0
    assert side["non_2xx"] == 0 and side["server_rejected"] == {} and side["all_200"] is True
    assert set(side["socket_errors"].values()) <= {0}
    assert side["server_ticks"] >= side["requests"]
    assert set(side["latency_ms"]) >= {"p50", "p99", "max"}


@pytest.mark.timeout(180)
def test_bench_listener_with_the_fallback_client() -> None:
    result = bench_listener(requests=600, connections=2, duration_s=1.0, load_generator="python")
    assert result["method"] == "python" and result["fallback_used"] is True
    assert "bottleneck" in result["fallback_note"]
    assert result["valid"] is True
    _check_side(result["listener"])
    _check_side(result["baseline"])
    assert result["listener"]["statuses"] == {"200": result["listener"]["requests"]}
    assert isinstance(result["ratio"], float)
    assert set(result["targets"]) == {"ratio_min", "p99_ms_max", "ratio_met", "p99_met"}
    lines = result["lines"]
    assert all(isinstance(line, str) for line in lines)
    assert lines[0].startswith("load      python fallback client, 2 connections")
    assert result["fallback_note"].startswith("wrk not found: 2 Python client processes")
    assert lines[-1] == f"note      {result['fallback_note']}"  # valid: no INVALID line after it
    json.dumps({k: v for k, v in result.items() if k != "lines"})  # JSON-able


@pytest.mark.timeout(180)
def test_bench_listener_baseline_with_stdlib_defaults() -> None:
    result = bench_listener(requests=300, connections=2, duration_s=1.0, load_generator="python",
                            baseline_keep_alive=False)
    assert result["valid"] is True and result["baseline_keep_alive"] is False
    _check_side(result["baseline"])


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_bench_listener_with_wrk() -> None:
    result = bench_listener(requests=600, connections=2, duration_s=1.0, load_generator="wrk")
    assert result["method"] == "wrk" and result["fallback_used"] is False and result["valid"] is True
    _check_side(result["listener"])
    _check_side(result["baseline"])


def test_bench_listener_refuses_a_duration_past_the_signature_window() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        bench_listener(requests=10, connections=1, duration_s=40.0, load_generator="python")
