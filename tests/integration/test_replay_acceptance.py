"""Acceptance (issue 18): a demo session recorded while it trades, then replayed, gives the
groups and PnL the session recorded, within the latency model's tolerance (docs/replay.md).

The session is the demo's runtime on a manual clock (deterministic), fed as it is live: every
tick of the simulated market becomes the frame its venue sends (OKX tickers/bbo-tbt, Binance
bookTicker, the EA's tick body), which is written to a recording (FrameRecorder, as `quantarb
record`) and handed to the feed's normalizer (MT5: the listener's decoding) into
`Runtime.ingest`, with the risk loop once a second and groups executed after each 20 ms step,
into a real ledger. Its reaction time is therefore "within the step": the orders of a group
leave after the step's last tick and before the next step's first. A replay whose latency
model says the same (1 ns: due before the next step's frames) must give the very same groups,
fills and PnL; a replay with another latency fills against other books, and the difference is
what docs/replay.md bounds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import demo_config
from engine.replay import ReplaySettings, replay_engine
from engine.runtime import Runtime
from engine.sources import build_feeds
from exchanges.paper import PaperGateway
from feeds.recording import FrameRecorder
from mt5_bridge.bridge import Mt5TickReplay
from sim.session import SessionFrames

STEPS = 1500  # 30 s of the demo market at 20 ms
STEP_MS = 20.0
SECOND_NS = 1_000_000_000


async def _trade_and_record(ledger: Path, recording: Path, steps: int = STEPS) -> dict[str, int]:
    """The demo session, recorded as it trades (see the module docstring)."""
    config = demo_config()
    clock = ManualClock()
    rt = Runtime(config, is_demo=True, clock=clock, ledger_path=str(ledger), mt5_in_process=True)
    for gateway in rt.gateways.values():
        if isinstance(gateway, PaperGateway):
            gateway.use_run_id("live")
    assert rt.world is not None
    market = rt.world.market
    channels = {p.instruments.okx.symbol: p.instruments.okx.channel for p in config.pairs if p.instruments.okx}
    encoder = SessionFrames(config.build_pairs(), seed=0, okx_channels=channels)  # its encoders only
    feeds: dict[str, Callable[[str | bytes, int], object]] = {
        f.name: f.on_frame for f in build_feeds(config, rt.ingest, clock)}
    feeds["mt5:DEMO"] = Mt5TickReplay("DEMO", [s for v, s in rt.instruments if v == "mt5"], rt.ingest).on_frame
    await rt.open_ledger()
    next_check = 0
    try:
        with FrameRecorder(recording, clock=clock) as recorder:
            for step in range(steps):
                clock.advance(ms=STEP_MS)
                now = clock.monotonic_ns()
                if step == 0:
                    rt.risk_monitor.restart()
                    next_check = now + SECOND_NS
                elif now >= next_check:  # the risk loop, once a second
                    rt.risk_loop.check()
                    await rt.risk.drain()
                    next_check += SECOND_NS
                for tick in market.advance(STEP_MS / 1000):
                    frame = encoder.frame_of(tick, now)
                    recorder.write(frame.venue, frame.feed, frame.frame, now)
                    feeds[frame.feed](frame.frame, now)
                await rt.orchestrator.drain()  # the step's groups: their orders leave now
                await rt.risk.drain()
            by_feed = dict(recorder.by_feed)
    finally:
        await rt.close_ledger()
    return by_feed


def _groups(ledger: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger) as db:
        return db.execute(
            "SELECT group_id, pair, buy_venue, sell_venue, state, opened_at_ms, closed_at_ms, target_qty, "
            "expected_edge_bps, realized_pnl, fees FROM hedge_groups ORDER BY group_id").fetchall()


def _pnl_as_executions_ended(ledger: Path) -> Decimal:
    with sqlite3.connect(ledger) as db:
        rows = db.execute(
            "SELECT group_id, json_extract(payload, '$.realized_pnl') FROM events WHERE kind = 'group_state' "
            "AND json_extract(payload, '$.state') IN ('hedged', 'repaired', 'unwound', 'failed') ORDER BY seq"
        ).fetchall()
    return sum((Decimal(pnl) for pnl in dict(rows).values()), Decimal(0))


def _fills(ledger: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger) as db:
        return db.execute(
            "SELECT o.client_order_id, o.purpose, f.venue, f.qty, f.price, f.fee, f.ts_ms FROM fills f "
            "JOIN orders o ON o.order_id = f.order_id ORDER BY o.client_order_id, f.fill_id").fetchall()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    tmp = tmp_path_factory.mktemp("session")
    ledger, recording = tmp / "live.db", tmp / "session.jsonl.gz"
    by_feed = asyncio.run(_trade_and_record(ledger, recording))
    return ledger, recording, by_feed


def _replay(recording: Path, ledger: Path | None, latency_ms: float) -> dict[str, Any]:
    return asyncio.run(replay_engine(demo_config(), [recording], ReplaySettings(latency_ms=latency_ms),
                                     ledger_path=None if ledger is None else str(ledger), study=True))


def test_a_replay_at_the_sessions_reaction_time_gives_its_groups_and_pnl(
        session: tuple[Path, Path, dict[str, int]], tmp_path: Path) -> None:
    live, recording, by_feed = session
    assert set(by_feed) == {"okx", "binance-usdm", "mt5:DEMO"}
    report = _replay(recording, tmp_path / "replay.db", latency_ms=1e-6)
    assert report["by_feed"] == by_feed and report["mt5_rejected"] == {}
    live_groups, replayed = _groups(live), _groups(tmp_path / "replay.db")
    assert len(live_groups) >= 10  # a session that traded: hedged and compensated groups alike
    # Hedged and compensated groups alike; most were later closed by an opposite group (netted).
    assert {g[4] for g in live_groups} == {"hedged", "repaired", "closed"}
    assert replayed == live_groups  # ids, pairs, directions, states, times, sizes, PnL and fees
    assert _fills(tmp_path / "replay.db") == _fills(live)
    live_pnl = sum((Decimal(g[9]) for g in live_groups if g[4] != "rejected"), Decimal(0))
    assert Decimal(report["realized_pnl"]) == live_pnl
    # The study judges each group as its execution ended (before a later group netted it): the
    # ledger's PnL then, from the group_state event that ended it.
    assert Decimal(report["study"]["net"]) == _pnl_as_executions_ended(live)
    assert report["study"]["directions"] and all(
        d["reaction_ms"] is None or d["reaction_ms"]["max"] == 0.0 for d in report["study"]["directions"])


def test_another_latency_trades_on_other_books(session: tuple[Path, Path, dict[str, int]], tmp_path: Path) -> None:
    """Outside the tolerance the replay is another run: the same market, other fills. Any
    latency that executes after the step's last tick and no later than the next step's first
    (0 < latency <= 20 ms here: the market moves only at steps) fills on the same books: the
    same orders filled at the same prices (the groups' PnL may differ by a few cents: when each
    group's execution ended decides which groups net against which, `core.attribution`)."""
    live, recording, _ = session

    def books(latency_ms: float) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        path = tmp_path / f"at-{latency_ms}.db"
        report = _replay(recording, path, latency_ms=latency_ms)
        return [f[:6] for f in _fills(path)], report

    live_fills = [f[:6] for f in _fills(live)]
    assert books(20.0)[0] == live_fills
    assert books(0.0)[0] != live_fills  # mid-step books
    late_fills, late = books(40.0)
    assert late_fills != live_fills
    reactions = [d["reaction_ms"] for d in late["study"]["directions"] if d["reaction_ms"] is not None]
    assert reactions and all(r["p50"] == r["max"] == 40.0 for r in reactions)
