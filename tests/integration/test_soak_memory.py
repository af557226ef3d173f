"""Soak (slow suite): the demo's activity compressed (`bench soak --accelerate`), and the
process's memory levels off once every bounded collection has filled (issue 19).

The run is `bench soak --accelerate` with its defaults: the accelerated day (ACCELERATED_DAY_S,
an hour and a half; `QUANTARB_SOAK_S` shortens it) with twenty minutes of warm-up (past the
longest age bound, the simulators' eight minutes of history; at most two thirds of a shortened
run), then RSS and the Python heap sampled every ten seconds and their slopes judged against
`TARGET_MB_PER_HOUR`. A collection that grows per group, order, command, breaker trip or
reconnect shows as tens of MB per hour here: the demo's default load runs about 1,900 groups
an hour, this about sixteen times that. An operator flatten (then a rearm) every five minutes:
at this rate the account reports lag the MT5 legs in flight, so fewer legs find an opposite
ticket to close (`venues.mt5.close_opposite`) and the simulated hedging account would still
hold hundreds of tickets (docs/performance.md, "Memory over weeks"). RSS is judged in a
process that does not trace, the Python heap in the traced twin beside it
(quantarb_tui.bench.twin). The test fails when either slope is above the target; its report
says where RSS went (`rss_breakdown`: the main heap, the threads' glibc arenas, pymalloc's
and malloc's mappings, SQLite's own memory, the WAL). CI does not run it (`.ci/run` runs
`pytest`, which leaves the slow suite out); tests/integration/test_soak_finds_a_leak.py is
CI's 90-second check that a leak shows as this test's failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantarb_tui.bench import ACCELERATED_DAY_S, SoakOptions
from quantarb_tui.bench.soak import TARGET_MB_PER_HOUR

DEFAULTS = SoakOptions.of(None, None, accelerate=True, tui=False)
SOAK_S = float(os.environ.get("QUANTARB_SOAK_S", str(ACCELERATED_DAY_S)))
WARMUP_S = min(DEFAULTS.warmup_s, SOAK_S * 2 / 3)
ROOT = Path(__file__).resolve().parents[2]
# A fresh interpreter, as `quantarb bench soak` runs: inside the test session's process glibc
# hands the run memory that earlier tests freed, and its RSS says nothing about the engine
# (tests/integration/test_soak_finds_a_leak.py).
RUN = f"""
import json, sys
from quantarb_tui.bench.soak import bench_soak
res = bench_soak(duration_s={SOAK_S}, warmup_s={WARMUP_S}, accelerate=True,
                 flatten_every_s={DEFAULTS.flatten_every_s})
sys.stdout.write(json.dumps(res, default=str))
"""


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_S * 1.5) + 300)  # the suite's 120 s would stop it two minutes in
def test_accelerated_soak_memory_levels_off(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", RUN], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=SOAK_S * 1.5 + 240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    report = "\n".join(res["lines"])
    activity = res["activity"]
    # The run did what it compresses: groups (compensated ones too), breaker trips, rearms,
    # dropped feeds, EA restarts, flattens.
    groups = activity["groups"]
    assert sum(groups.values()) > 10 * SOAK_S / 60, report
    assert groups.get("repaired", 0) + groups.get("unwound", 0) > 0, report
    assert activity["breaker_trips"] > 0 and activity["reconnects"] > 0 and activity["ea_restarts"] > 0, report
    assert activity["flattens"] > 0, report
    # RSS judged in the untraced run; the heap by the traced twin, which must have answered.
    assert "error" not in res["traced_twin"], report
    assert res["heap_mb_per_hour"] <= TARGET_MB_PER_HOUR, report
    assert res["rss_mb_per_hour"] <= TARGET_MB_PER_HOUR, report
