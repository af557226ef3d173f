"""Bench: a recording replayed through the whole engine (`quantarb bench replay`).

The recording is the synthetic demo market (sim.session) written to a plain JSON-lines file
before the clock starts: OKX, Binance USD-M and MT5 frames as the venues send them. The
timed part is what `quantarb replay` does: read the file, normalize each frame, judge each
quote (pipeline, risk gate), execute each group (orchestrator, paper venues, compensation)
and, in the first run, journal it into a new SQLite ledger. `quotes_per_s` is the full
engine with the ledger; `quotes_per_s_no_ledger` the same without it. Best of `repeat`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from core.config import demo_config
from engine.replay import ReplaySettings, replay_engine
from feeds.recording import FrameRecorder
from sim.session import SessionFrames

TARGET_QUOTES_PER_S = 100_000
QUOTES_PER_STEP = 3.0  # the demo market's quotes per 20 ms step, about


def bench_replay(*, quotes: int = 300_000, seed: int = 1, repeat: int = 3, latency_ms: float = 50.0) -> dict[str, Any]:
    config = demo_config()
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    steps = max(1, round(quotes / QUOTES_PER_STEP))
    settings = ReplaySettings(latency_ms=latency_ms)
    with tempfile.TemporaryDirectory(prefix="quantarb-bench-replay-") as tmp:
        path = Path(tmp) / "session.jsonl"
        session = SessionFrames(config.build_pairs(), seed=seed, okx_channels=channels)
        with FrameRecorder(path) as rec:
            for f in session.frames(steps):
                rec.write(f.venue, f.feed, f.frame, f.recv_ns)
        runs: list[tuple[float, dict[str, Any]]] = []
        bare: list[tuple[float, dict[str, Any]]] = []
        for i in range(repeat):
            ledger = str(Path(tmp) / f"ledger-{i}.db")
            started = time.perf_counter()
            report = asyncio.run(replay_engine(config, [path], settings, ledger_path=ledger))
            runs.append((time.perf_counter() - started, report))
            started = time.perf_counter()
            report = asyncio.run(replay_engine(config, [path], settings))
            bare.append((time.perf_counter() - started, report))
    seconds, report = min(runs, key=lambda r: r[0])
    bare_s = min(s for s, _ in bare)
    qps = report["quotes"] / seconds
    result: dict[str, Any] = {
        "frames": report["frames"],
        "quotes": report["quotes"],
        "recorded_s": report["span_s"],
        "intents": report["intents"],
        "groups": report["groups"],
        "groups_by_state": report["groups_by_state"],
        "latency_ms": latency_ms,
        "seconds": round(seconds, 3),
        "quotes_per_s": round(qps),
        "frames_per_s": round(report["frames"] / seconds),
        "quotes_per_s_no_ledger": round(report["quotes"] / bare_s),
        "target_quotes_per_s": TARGET_QUOTES_PER_S,
        "meets_target": qps >= TARGET_QUOTES_PER_S,
        "repeat": repeat,
    }
    result["lines"] = [
        f"{report['frames']:,} frames, {report['quotes']:,} quotes over {report['span_s']:,.0f} recorded s, "
        f"{report['groups']:,} groups",
        f"full engine with ledger: {qps:,.0f} quotes/s ({seconds:.2f} s; target {TARGET_QUOTES_PER_S:,})",
        f"without ledger: {report['quotes'] / bare_s:,.0f} quotes/s",
    ]
    return result
