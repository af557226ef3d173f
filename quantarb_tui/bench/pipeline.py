"""Bench: synthetic quotes through CompareEngine + OpportunityPipeline, in process.

Quotes are generated before the clock starts (3 venues x 10 pairs from the seeded demo
market, with a dislocation every half second). The engine runs on a replay clock that reads
each quote's market time, so cooldowns and quote ages behave as they would live even
though a simulated hour passes in seconds. Two passes on fresh engines: one timed as a
whole for throughput, one timing every call for the tick-to-decision latency distribution
(the per-call timer adds ~0.1 us). An intent releases its pair at once, as if its group
settled instantly, so cooldown and in-flight rules are exercised.
"""

from __future__ import annotations

import time
from typing import Any

from core.clock import ReplayClock
from core.compare import CompareEngine
from core.config import PairConfig, QuantarbConfig
from core.models import Quote
from core.pipeline import OpportunityPipeline
from core.risk import RiskGate
from quantarb_tui.bench.common import percentile
from sim.market import SyntheticMarket

PAIRS = 10
WARMUP = 10_000
EPOCH_MS = 1_732_150_000_000


def bench_config(pairs: int = PAIRS) -> QuantarbConfig:
    pair_cfgs = [
        PairConfig.model_validate(
            {
                "name": f"P{i}",
                "instruments": {
                    "mt5": {"symbol": f"P{i}USD", "qty_per_lot": "1", "lot_step": "0.01", "min_qty": "0.01"},
                    "okx": {"symbol": f"P{i}-USDT-SWAP", "qty_per_contract": "0.01", "lot_step": "1",
                            "min_qty": "1"},
                    "binance": {"symbol": f"P{i}USDT", "lot_step": "0.001", "min_qty": "0.001"},
                },
            }
        )
        for i in range(pairs)
    ]
    return QuantarbConfig(
        pairs=pair_cfgs,
        venues={"mt5": {}, "okx": {}, "binance": {}},
    )


def make_quotes(config: QuantarbConfig, n: int, seed: int) -> list[Quote]:
    market = SyntheticMarket(
        config.build_pairs(), seed=seed, tick_ms=50.0, dislocation_every_s=0.5, start_ms=EPOCH_MS
    )
    quotes: list[Quote] = []
    while len(quotes) < n:
        for t in market.advance(0.01):
            recv_ns = (t.ts_ms - EPOCH_MS) * 1_000_000
            quotes.append(Quote(t.venue, t.symbol, t.bid, t.ask, t.bid_size, t.ask_size, t.ts_ms, recv_ns))
    return quotes[:n]


def _warm_engine(config: QuantarbConfig, warmup: list[Quote]) -> tuple[OpportunityPipeline, ReplayClock]:
    """A fresh engine on a replay clock, already fed the warm-up quotes."""
    clock = ReplayClock(EPOCH_MS)
    gate = RiskGate.from_config(clock, config.risk)
    pipeline = OpportunityPipeline(CompareEngine(config.build_pairs()), config.strategy, config.risk, gate, clock)
    _replay(pipeline, clock, warmup)
    return pipeline, clock


def _replay(pipeline: OpportunityPipeline, clock: ReplayClock, quotes: list[Quote]) -> None:
    """Judge every quote on its own market time; an intent settles at once."""
    on_quote = pipeline.on_quote
    release = pipeline.release
    for q in quotes:
        clock.now_ns = q.recv_ns
        d = on_quote(q)
        if d is not None and d.intent is not None:
            release(d.pair)


def bench_pipeline(*, quotes: int = 1_000_000, seed: int = 1) -> dict[str, Any]:
    config = bench_config()
    stream = make_quotes(config, quotes + WARMUP, seed)
    warmup, measured = stream[:WARMUP], stream[WARMUP:]

    # Pass 1: throughput.
    pipeline, clock = _warm_engine(config, warmup)
    t0 = time.perf_counter_ns()
    _replay(pipeline, clock, measured)
    qps = len(measured) / ((time.perf_counter_ns() - t0) / 1e9)

    # Pass 2: latency of each quote, from its receive stamp to its decision.
    pipeline2, clock2 = _warm_engine(config, warmup)
    on_quote2 = pipeline2.on_quote
    release2 = pipeline2.release
    samples: list[int] = [0] * len(measured)
    perf = time.perf_counter_ns
    for i, q in enumerate(measured):
        clock2.now_ns = q.recv_ns
        t = perf()
        d = on_quote2(q)
        samples[i] = perf() - t
        if d is not None and d.intent is not None:
            release2(d.pair)
    samples.sort()
    p50 = percentile(samples, 50) / 1000
    p99 = percentile(samples, 99) / 1000
    p999 = percentile(samples, 99.9) / 1000
    reasons = {str(k): v for k, v in pipeline.reasons.most_common()}
    return {
        "quotes": len(measured),
        "pairs": PAIRS,
        "venues": 3,
        "quotes_per_s": round(qps),
        "latency_us": {"p50": round(p50, 2), "p99": round(p99, 2), "p999": round(p999, 2),
                       "max": round(samples[-1] / 1000, 1)},
        "decisions": pipeline.decisions,
        "intents": pipeline.intents,
        "reasons": reasons,
        "lines": [
            f"quotes          {len(measured):,} (3 venues x {PAIRS} pairs)",
            f"throughput      {qps:,.0f} quotes/s",
            f"tick->decision  p50 {p50:.2f} us   p99 {p99:.2f} us   p99.9 {p999:.2f} us",
            f"decisions       {pipeline.decisions:,}   intents {pipeline.intents:,}",
        ],
    }
