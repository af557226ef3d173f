"""`quantarb bench`: speed measured on this machine, never asserted in unit tests."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quantarb_tui.bench.common import machine_info


def _pipeline(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.pipeline import bench_pipeline

    return bench_pipeline(quotes=quotes, seed=seed)


def _feeds(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.feeds import bench_feeds

    return bench_feeds(frames=min(quotes, 200_000), seed=seed)


def _ledger(quotes: int, seed: int) -> dict[str, Any]:
    from ledger.bench import bench_ledger

    return bench_ledger()


def _listener(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.listener import bench_listener

    return bench_listener(requests=200_000)


def _kill(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.kill import bench_kill

    return bench_kill()


def _orders(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.orders import bench_orders

    return bench_orders()


def _tui(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.tui import bench_tui

    return bench_tui()


# An accelerated soak's default length: a day of the demo's activity at the compression the
# 2-vCPU machine reaches (16.4 demo hours in an hour, session 10), so the slope is judged over
# more than an hour, not a 40-minute window one pymalloc arena (1 MiB) can tip.
ACCELERATED_DAY_S = 5400.0


@dataclass(frozen=True)
class SoakOptions:
    """`bench soak`'s own options (the others are sized by `--quotes`)."""

    duration_s: float = 1800.0
    warmup_s: float = 600.0
    accelerate: bool = False
    tui: bool = False
    flatten_every_s: float = 0.0
    keep_ledger: str | None = None  # the run's ledger here, kept (to read a halt); else a temporary one
    trace: bool = True  # a traced twin alongside, for the heap's growth by line (quantarb_tui.bench.twin)

    @classmethod
    def of(cls, duration_s: float | None, warmup_s: float | None, *, accelerate: bool, tui: bool,
           flatten_every_s: float | None = None, keep_ledger: str | None = None, trace: bool = True) -> SoakOptions:
        """The defaults: half an hour with ten minutes of warm-up, no flatten; accelerated, an
        hour and a half with twenty: a day of the demo's hedge groups (about 16 demo hours per
        hour on a 2-vCPU machine, docs/performance.md), the warm-up past the longest age bound
        (the simulators' eight minutes of history), and a flatten every five minutes (an
        operator's day has some; without, the simulated hedging account piles up MT5 tickets
        at thousands an hour, see docs/performance.md)."""
        duration = duration_s if duration_s is not None else ACCELERATED_DAY_S if accelerate else 1800.0
        warmup = warmup_s if warmup_s is not None else 1200.0 if accelerate else 600.0
        flatten = flatten_every_s if flatten_every_s is not None else 300.0 if accelerate else 0.0
        return cls(duration, warmup, accelerate, tui, flatten, keep_ledger, trace)


def _soak(options: SoakOptions) -> dict[str, Any]:
    from quantarb_tui.bench.soak import bench_soak

    return bench_soak(duration_s=options.duration_s, warmup_s=options.warmup_s,
                      accelerate=options.accelerate, tui=options.tui, flatten_every_s=options.flatten_every_s,
                      keep_ledger=options.keep_ledger, trace=options.trace)


def _replay(quotes: int, seed: int) -> dict[str, Any]:
    from quantarb_tui.bench.replay import bench_replay

    return bench_replay(quotes=min(quotes, 300_000), seed=seed)


BENCHES: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "pipeline": _pipeline,
    "feeds": _feeds,
    "ledger": _ledger,
    "listener": _listener,
    "kill": _kill,
    "orders": _orders,
    "tui": _tui,
    "replay": _replay,
}


def run_benches(target: str, *, quotes: int, seed: int, as_json: bool, soak: SoakOptions | None = None) -> int:
    """`all` runs every bench but the soak, which is long (it is asked for by name)."""
    if target == "soak":
        results = {"soak": _soak(soak or SoakOptions())}
    else:
        names = list(BENCHES) if target == "all" else [target]
        results = {name: BENCHES[name](quotes, seed) for name in names}
    if as_json:
        clean = {name: {k: v for k, v in r.items() if k != "lines"} for name, r in results.items()}
        doc = {"machine": machine_info(), "results": clean}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    for name, result in results.items():
        sys.stdout.write(f"[{name}]\n")
        for line in result.get("lines", []):
            sys.stdout.write(f"  {line}\n")
    return 0
