"""Soak: `quantarb headless` on the demo with an unreliable paper venue, as a real process.

The paper gateways (OKX and Binance in the demo; MT5 goes through the EA simulator) reject,
time out, lose acknowledgements, fill partly and slip, seeded, while dislocations come every
0.3 s on average. Afterwards the run exited 0, `quantarb ledger check` passes, every hedge
group is terminal and closed within the strategy's group deadline (plus a margin), no client
order id was created twice, and no paper fill is beyond its order's quantity or limit.

A `failed` group halts the engine by design (no new groups until an operator rearms), so a
run may stop opening groups early; the test reports how many groups ran and whether and when
the engine halted (run with `-s` to see it). CI runs 60 s; the slow suite runs 600 s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import StrategyConfig

TERMINAL = ("hedged", "repaired", "unwound", "rejected", "failed", "closed")
# Closing a group may take the deadline plus one last venue round trip and the ledger flush.
DEADLINE_MARGIN_MS = 2000
FAULTS = {
    "QUANTARB_PAPER__REJECT_RATE": "0.2",
    "QUANTARB_PAPER__TIMEOUT_RATE": "0.1",
    "QUANTARB_PAPER__PARTIAL_RATE": "0.1",
    "QUANTARB_PAPER__LOST_ACK_RATE": "0.05",
    "QUANTARB_PAPER__LATENCY_MS_MIN": "1",
    "QUANTARB_PAPER__LATENCY_MS_MAX": "20",
    "QUANTARB_PAPER__SLIPPAGE_BPS": "2",
    "QUANTARB_PAPER__SEED": "5",
    # The soak exercises execution and compensation under faults: the breakers that would
    # pause on consecutive compensations or halt on the day's loss are moved out of the way
    # (they have their own tests); a `failed` group still halts, as it must.
    "QUANTARB_RISK__MAX_CONSECUTIVE_FAILURES": "1000000",
    "QUANTARB_RISK__DAILY_LOSS_LIMIT": "1000000",
}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    env["HOME"] = str(tmp_path)  # no user config: the built-in demo runs
    env["QUANTARB_LISTENER__PORT"] = "0"
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.3"
    env.update(FAULTS)
    return env


def _quantarb(*args: str) -> list[str]:
    return [sys.executable, "-m", "quantarb_tui.cli", *args]


def _soak(tmp_path: Path, duration_s: int) -> None:
    ledger = tmp_path / "soak.db"
    env = _env(tmp_path)
    run = subprocess.run(
        _quantarb("headless", "--duration", str(duration_s), "--ledger", str(ledger)),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=duration_s + 120, check=False,
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary quotes="), summary

    check = subprocess.run(
        _quantarb("ledger", "check", "--ledger", str(ledger), "--json"),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    doc = json.loads(check.stdout)
    assert check.returncode == 0 and doc["ok"], json.dumps(doc, indent=2)[:4000]

    db = sqlite3.connect(ledger)
    try:
        _report(db, summary)
        groups = db.execute("SELECT group_id, state, opened_at_ms, closed_at_ms FROM hedge_groups").fetchall()
        assert groups, "no hedge group was opened"
        # The faults were in play (a run on perfect venues would pass everything below): the
        # paper venues refused orders, and broken groups were compensated.
        refused = db.execute(
            "SELECT COUNT(*) FROM orders WHERE venue IN ('okx', 'binance') AND state = 'rejected'").fetchone()[0]
        assert refused > 0, "the paper venues rejected no order: were the faults configured?"
        retries = db.execute("SELECT COUNT(*) FROM compensation_actions WHERE kind = 'retry_hedge'").fetchone()[0]
        assert retries > 0, "no broken group was compensated"
        # Every group reached a terminal state ...
        open_groups = [(g, s) for g, s, _o, _c in groups if s not in TERMINAL]
        assert open_groups == [], open_groups
        # ... within its deadline (plus a margin for the last round trip).
        deadline = StrategyConfig().group_deadline_ms + DEADLINE_MARGIN_MS
        late = [(g, s, c - o) for g, s, o, c in groups if c is None or c - o > deadline]
        assert late == [], f"groups closed later than {deadline} ms: {late[:10]}"
        # No client order id created twice (retries reuse it, never re-create it).
        dup = db.execute(
            "SELECT json_extract(payload, '$.client_order_id') AS c, COUNT(*) FROM events "
            "WHERE kind = 'order_created' GROUP BY c HAVING COUNT(*) > 1"
        ).fetchall()
        assert dup == []
        # No order filled beyond its quantity (a lost ack or timeout never executes twice) ...
        over = db.execute(
            "SELECT o.client_order_id, o.qty, SUM(CAST(f.qty AS REAL)) FROM orders o JOIN fills f "
            "ON f.order_id = o.order_id GROUP BY o.order_id "
            "HAVING SUM(CAST(f.qty AS REAL)) > CAST(o.qty AS REAL) + 1e-9"
        ).fetchall()
        assert over == []
        # ... and no paper fill beyond its order's limit, whatever the slippage.
        beyond = db.execute(
            "SELECT o.client_order_id, o.side, o.price, f.price FROM orders o JOIN fills f "
            "ON f.order_id = o.order_id WHERE o.venue IN ('okx', 'binance') AND ("
            "(o.side = 'buy' AND CAST(f.price AS REAL) > CAST(o.price AS REAL) + 1e-9) OR "
            "(o.side = 'sell' AND CAST(f.price AS REAL) < CAST(o.price AS REAL) - 1e-9))"
        ).fetchall()
        assert beyond == []
    finally:
        db.close()


def _report(db: sqlite3.Connection, summary: str) -> None:
    """What the soak exercised (visible with `pytest -s`)."""
    by_state = dict(db.execute("SELECT state, COUNT(*) FROM hedge_groups GROUP BY state").fetchall())
    actions = dict(db.execute("SELECT kind, COUNT(*) FROM compensation_actions GROUP BY kind").fetchall())
    orders = dict(db.execute("SELECT state, COUNT(*) FROM orders GROUP BY state").fetchall())
    unknown = db.execute(
        "SELECT COUNT(*) FROM events WHERE kind = 'order_state' AND json_extract(payload, '$.state') = 'unknown'"
    ).fetchone()[0]
    halts = db.execute(
        "SELECT ts_ms, kind, reason FROM risk_events WHERE trading_state = 'halted' ORDER BY ts_ms"
    ).fetchall()
    first = db.execute("SELECT MIN(opened_at_ms), MAX(opened_at_ms) FROM hedge_groups").fetchone()
    print(f"\nsoak {summary}")
    print(f"soak groups by state {by_state}")
    print(f"soak orders by state {orders}; went unknown {unknown}")
    print(f"soak compensation actions {actions}")
    print(f"soak groups opened from {first[0]} to {first[1]}; halts {len(halts)}: {halts[:5]}")


def test_paper_soak_sixty_seconds(tmp_path: Path) -> None:
    _soak(tmp_path, 60)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_paper_soak_ten_minutes(tmp_path: Path) -> None:
    _soak(tmp_path, 600)
