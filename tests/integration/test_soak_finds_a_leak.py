"""`bench soak` finds a leak and names its line (issue 19), in a run short enough for CI.

The slow suite's soak (tests/integration/test_soak_memory.py) judges the engine's own slope
after a 20-minute warm-up; CI cannot wait for that. This run (90 s of the accelerated demo)
plants a leak, 2 KiB kept per engine event, and checks that what the soak reports would
fail that test: the RSS slope is above the target, the Python heap grew by about what was
kept, and the first line of the growth by line is the one that leaks.

The soak runs in a process of its own, as `quantarb bench soak` does: inside the test
session's process (hundreds of MB, much of it freed by earlier tests) glibc hands the leak
memory it already holds, RSS does not move, and the RSS verdict says nothing (a CI run saw
-50 MB/h with the leak in place).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantarb_tui.bench.soak import TARGET_MB_PER_HOUR

LEAK_BYTES = 2048
ROOT = Path(__file__).resolve().parents[2]
# Run by a fresh interpreter: the leak is planted in EventLog.emit, then the accelerated soak.
PLANTED = f"""
import json, sys
from engine.events import EventLog
from quantarb_tui.bench.soak import bench_soak
kept = []
emit = EventLog.emit
def leaking_emit(self, event):
    kept.append(bytes({LEAK_BYTES}))  # the leak: never dropped
    emit(self, event)
EventLog.emit = leaking_emit
res = bench_soak(duration_s=90, warmup_s=30, accelerate=True, flatten_every_s=0)
res["leaked"] = len(kept)
res["leak_line"] = leaking_emit.__code__.co_firstlineno + 1
sys.stdout.write(json.dumps(res, default=str))
"""


@pytest.mark.timeout(300)
def test_a_planted_leak_is_above_the_target_and_named(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PLANTED], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    report = "\n".join(res["lines"])
    assert res["leaked"] > 500, report  # the run emitted events (groups, breakers, reconnects)
    assert res["within_target"] is False and res["rss_mb_per_hour"] > TARGET_MB_PER_HOUR, report
    assert "error" not in res["traced_twin"], report  # the lines below are the traced twin's
    top = res["top_growth_by_line"][0]
    assert top["where"].endswith(f"<string>:{res['leak_line']}"), report
    # Between the two marks (the end of the warm-up and the end) the leak kept at least 100
    # blocks of LEAK_BYTES each (the line's figure also holds the list's own buffer, which
    # grows and is freed at the same line, so it is not an exact multiple of them).
    assert top["blocks"] >= 100 and top["kib"] * 1024 >= 100 * LEAK_BYTES, report
    assert res["heap_mb_per_hour"] > TARGET_MB_PER_HOUR, report
