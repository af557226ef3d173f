"""`quantarb bench` commands stay runnable: shape of their JSON, never their timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("target", ["pipeline", "feeds", "replay"])
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
    elif target == "replay":
        assert res["frames"] > 0 and res["quotes"] >= res["frames"]  # an MT5 body carries several ticks
        assert res["groups"] == res["intents"] > 0  # every intent executed to a closed group
        assert sum(res["groups_by_state"].values()) == res["groups"]
        assert res["quotes_per_s"] > 0 and res["quotes_per_s_no_ledger"] > 0
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


def test_bench_orders_runs_every_part_with_the_counts_asked() -> None:
    """A short orders bench: every intent's legs reached the wire, every client sent the
    orders asked, the JSON has its keys (no timings are checked)."""
    from quantarb_tui.bench.order_wire import load_ccxt
    from quantarb_tui.bench.orders import bench_orders

    res = bench_orders(intents=12, orders=6, sign_iterations=200, warmup=2)
    json.dumps(res)  # the --json document is plain JSON
    t = res["tick_to_trade"]
    assert t["intents"] == 12
    assert set(t["tick_to_trade_us"]) == set(t["less_write_ahead_us"]) == {"p50", "p99", "max"}
    assert set(t["breakdown_us"]) == {"decide", "to_write_ahead", "write_ahead", "after_write_ahead"}
    assert set(t["journal_share"]) == {"p50", "p99", "of_total_time"}
    # Warm-up rounds included: 14 groups, each with both legs sent over the WebSocket and filled.
    assert t["groups"] == {"hedged": 14}
    assert t["orders_sent"] == {"okx_over_ws": 14, "okx_over_rest": 0, "binance_over_ws": 14, "binance_over_rest": 0}
    with_ccxt = load_ccxt() is not None
    clients = {"ours_ws", "ours_rest"} | ({"ccxt_ws", "ccxt_rest"} if with_ccxt else set())
    for venue in ("okx", "binance"):
        w = res["order_to_wire"][venue]
        assert set(w) == clients | ({"ratios"} if with_ccxt else set())
        for client in clients:
            assert w[client]["to_wire_us"]["count"] == 6
            assert w[client]["round_trip_us"]["count"] == 6
        if with_ccxt:
            assert set(w["ratios"]) == {"ws", "rest", "create_order"}
    assert set(res["signing"]["ours"]) == {"okx_rest_ns", "okx_ws_order_ns", "binance_rest_ns", "binance_ws_api_ns"}
    assert (res["signing"]["ccxt"] is not None) == with_ccxt
    assert "lines" in res and all(isinstance(line, str) for line in res["lines"])


def test_bench_soak_short_run_reports_its_figures() -> None:
    """`bench soak --duration`: a few seconds of the demo engine (ledger, listener, EA simulator,
    feeds) sampled; the JSON has the slope, the growers and the activity (no figure is judged)."""
    result = subprocess.run(
        [sys.executable, "-m", "quantarb_tui.cli", "bench", "soak", "--duration", "6", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    res = json.loads(result.stdout)["results"]["soak"]
    assert res["mode"] == "demo"
    assert res["warmup_s"] == 4.0  # at most two thirds of the run
    assert res["samples"] == len(res["series"]) >= 10
    assert all(row[1] > 0 for row in res["series"])  # RSS sampled
    assert res["target_mb_per_hour"] == 2.0
    assert res["within_target"] is (res["rss_mb_per_hour"] <= 2.0)
    activity = res["activity"]
    assert activity["quotes"] > 0 and activity["decisions"] > 0
    assert set(activity) >= {"groups", "reconnects", "ea_restarts", "breaker_trips", "events"}
    assert isinstance(res["top_growth_by_line"], list) and isinstance(res["top_growth_by_type"], list)
