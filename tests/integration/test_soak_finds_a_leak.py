"""`bench soak` finds a leak and names its line (issue 19), in a run short enough for CI.

The slow suite's soak (tests/integration/test_soak_memory.py) judges the engine's own slope
after a 20-minute warm-up; CI cannot wait for that. This run (90 s of the accelerated demo)
plants a leak, 2 KiB kept per engine event, and checks that what the soak reports would
fail that test: the RSS slope is above the target, the Python heap grew by about what was
kept, and the first line of the growth by line is the one that leaks.
"""

from __future__ import annotations

import pytest

from engine.events import EngineEvent, EventLog
from quantarb_tui.bench.soak import TARGET_MB_PER_HOUR, bench_soak

LEAK_BYTES = 2048
_kept: list[bytes] = []


@pytest.mark.timeout(300)
def test_a_planted_leak_is_above_the_target_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    emit = EventLog.emit

    def leaking_emit(self: EventLog, event: EngineEvent) -> None:
        _kept.append(bytes(LEAK_BYTES))  # the leak: never dropped
        emit(self, event)

    leak_line = leaking_emit.__code__.co_firstlineno + 1
    monkeypatch.setattr(EventLog, "emit", leaking_emit)
    try:
        res = bench_soak(duration_s=90, warmup_s=30, accelerate=True, flatten_every_s=0)
    finally:
        leaked = len(_kept)
        _kept.clear()
    report = "\n".join(res["lines"])
    assert leaked > 500, report  # the run emitted events (groups, breakers, reconnects)
    assert res["within_target"] is False and res["rss_mb_per_hour"] > TARGET_MB_PER_HOUR, report
    top = res["top_growth_by_line"][0]
    assert top["where"].endswith(f"test_soak_finds_a_leak.py:{leak_line}"), report
    # Between the two marks (the end of the warm-up and the end) the leak kept blocks
    # of LEAK_BYTES each: the line's growth is a whole number of them, at least 100.
    assert top["blocks"] >= 100 and top["kib"] * 1024 >= top["blocks"] * LEAK_BYTES, report
    assert res["heap_mb_per_hour"] > TARGET_MB_PER_HOUR, report
