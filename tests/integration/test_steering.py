"""Runtime settings on a real demo Runtime with a real SQLite ledger (engine.steering).

A change is refused when invalid (field and range named, nothing changed, nothing journaled),
journaled durably before it answers (read back through a separate SQLite connection), shown
in the risk screen's events, and in force on the very next decision: an edge just below the
old threshold becomes a hedge group once the threshold is lowered, a disabled pair opens
nothing, a smaller leg limit sizes the next intent. A restart re-applies the journaled change
unless the config file changed since, and says which on the log.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import QuantarbConfig, demo_config
from core.models import Decision, Outcome, Quote, Reason
from core.runtime_settings import InvalidSetting
from engine.control import ControlRefused
from engine.runtime import Runtime
from ledger import queries

DISK_FULL = sqlite3.OperationalError("database or disk is full")
# BTC: buy OKX at its ask 60000, sell Binance at its bid 60102, both 5 bps taker fee:
#   60102 * 0.9995 / (60000 * 1.0005) - 1 = 6.988 bps: below the demo's 8, above 6.
OKX_ASK, BN_BID = 60000.0, 60102.0


def _runtime(tmp_path: Path, config: QuantarbConfig | None = None) -> Runtime:
    return Runtime(config or demo_config(), is_demo=True, clock=ManualClock(),
                   ledger_path=str(tmp_path / "t.db"), mt5_in_process=True)


def _okx(rt: Runtime) -> Decision | None:
    """A fresh OKX BTC quote, now, and its decision."""
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    clock.advance(ms=100)
    return rt.ingest(Quote("okx", "BTC-USDT-SWAP", OKX_ASK - 10, OKX_ASK, 100.0, 100.0, clock.time_ms(),
                           clock.monotonic_ns()))


def _edge(rt: Runtime) -> Decision | None:
    """A fresh Binance BTC quote, then a fresh OKX one: the decision on the OKX quote (the
    first that sees the edge)."""
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    clock.advance(ms=100)
    rt.ingest(Quote("binance", "BTCUSDT", BN_BID, BN_BID + 10, 1.0, 1.0, clock.time_ms(), clock.monotonic_ns()))
    return _okx(rt)


def _rows(db: Path) -> list[dict[str, Any]]:
    """The ledger's setting records, read through a connection of its own (what is committed)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT r.kind, r.reason, r.trading_state, e.payload FROM risk_events r "
                           "JOIN events e ON e.seq = r.event_id WHERE r.kind = 'setting' ORDER BY r.event_id"
                           ).fetchall()
    finally:
        con.close()
    return [{"kind": k, "reason": r, "state": s, "setting": json.loads(p)["setting"]} for k, r, s, p in rows]


@pytest.mark.parametrize(
    ("key", "value", "reason", "field", "says"),
    [
        ("strategy.threshold_bps", "300", "why", "strategy.threshold_bps", "0 <= value < 300 bps"),
        ("strategy.threshold_bps", "-1", "why", "strategy.threshold_bps", "0 <= value < 300 bps"),
        ("strategy.threshold_bps", "nan", "why", "strategy.threshold_bps", "0 <= value < 300 bps"),
        ("strategy.cooldown_ms", "1.5", "why", "strategy.cooldown_ms", "0 <= value <= 86400000 ms"),
        ("strategy.cooldown_ms", "86400001", "why", "strategy.cooldown_ms", "0 <= value <= 86400000 ms"),
        ("risk.max_leg_notional", "0", "why", "risk.max_leg_notional", "0 < value <= 60000"),
        ("risk.max_leg_notional", "60000.01", "why", "risk.max_leg_notional", "0 < value <= 60000"),
        ("pairs.BTC.enabled", "maybe", "why", "pairs.BTC.enabled", "true or false"),
        ("pairs.DOGE.enabled", "false", "why", "key", "pairs: XAU, BTC, ETH"),
        ("strategy.max_retries", "1", "why", "key", "steerable: strategy.threshold_bps"),
        ("strategy.threshold_bps", "6", "  ", "reason", "required"),
        ("strategy.threshold_bps", "6", "a\x1b[2Jb", "reason", "control characters"),
    ],
)
async def test_an_invalid_change_is_refused_with_field_and_range_and_changes_nothing(
    tmp_path: Path, key: str, value: str, reason: str, field: str, says: str
) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        before = rt.steering.current()
        with pytest.raises(InvalidSetting) as refused:
            await rt.steering.set(key, value, reason, "cli")
        assert refused.value.field == field
        assert says in refused.value.reason
        assert rt.steering.current() == before
        assert rt.risk.rows() == ()
        assert [e for e in rt.events.recent() if e.kind == "setting"] == []
        assert rt.ledger is not None
        assert await rt.ledger.read(queries.setting_changes) == []
    finally:
        await rt.close_ledger()


async def test_a_valid_change_is_journaled_before_it_answers_and_shown_in_the_risk_events(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        result = await rt.steering.set("strategy.threshold_bps", "6.5", "spreads are tight tonight", "cli")
        # Committed when the call returns: a separate connection sees it.
        rows = _rows(tmp_path / "t.db")
        assert result.changed and result.journaled
        assert (result.old, result.new) == ("8", "6.5")
        assert rows == [{
            "kind": "setting", "state": "active",
            "reason": "strategy.threshold_bps 8 -> 6.5 (cli): spreads are tight tonight",
            "setting": {"key": "strategy.threshold_bps", "old": "8", "new": "6.5", "config": "8",
                        "reason": "spreads are tight tonight", "source": "cli", "ts_ms": rt.clock.time_ms()},
        }]
        [row] = rt.risk.rows()
        assert (row.kind, row.reason) == ("setting", "strategy.threshold_bps 8 -> 6.5 (cli): spreads are tight tonight")
        assert rt.view.snapshot().risk_events == (row,)
        assert rt.view.snapshot().threshold_bps == 6.5
        # The trading state a restart restores is not the setting's reason.
        assert rt.ledger is not None
        recovered = await rt.ledger.recover()
        assert recovered.trading_reason == ""
    finally:
        await rt.close_ledger()


async def test_the_same_value_again_is_unchanged_and_not_journaled(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        result = await rt.steering.set("strategy.threshold_bps", "8.0", "no-op", "api")
        assert (result.changed, result.journaled) == (False, False)
        assert _rows(tmp_path / "t.db") == []
    finally:
        await rt.close_ledger()


async def test_lowering_the_threshold_turns_the_next_edge_below_it_into_a_group(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        before = _edge(rt)
        assert before is not None
        assert (before.outcome, before.reason) == (Outcome.BLOCKED, Reason.BELOW_THRESHOLD)
        assert 6.9 < before.edge_bps < 7.0
        assert rt.orchestrator.open == {}
        await rt.steering.set("strategy.threshold_bps", "6", "take the 7 bps edges", "tui")
        after = _okx(rt)  # the very next decision, on the same edge
        assert after is not None
        assert (after.outcome, after.reason) == (Outcome.INTENT, Reason.OK)
        assert after.intent is not None and after.intent.pair == "BTC"
        assert len(rt.orchestrator.open) == 1
    finally:
        await rt.close_ledger()


async def test_a_disabled_pair_opens_nothing_from_the_next_decision(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        await rt.steering.set("strategy.threshold_bps", "6", "lower", "cli")
        await rt.steering.set("pairs.BTC.enabled", "off", "BTC venue maintenance", "api")
        decision = _edge(rt)
        assert decision is not None
        assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.PAIR_DISABLED)
        assert rt.orchestrator.open == {}
        await rt.steering.set("pairs.BTC.enabled", "true", "maintenance over", "api")
        again = _okx(rt)
        assert again is not None and again.outcome is Outcome.INTENT
    finally:
        await rt.close_ledger()


async def test_a_smaller_leg_limit_sizes_the_next_intent_and_binds_the_gate(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        await rt.steering.set("strategy.threshold_bps", "6", "lower", "cli")
        await rt.steering.set("risk.max_leg_notional", "1000", "smaller legs while testing", "cli")
        decision = _edge(rt)
        assert decision is not None and decision.intent is not None
        # 1000 / 60102 = 0.0166 BTC, floored to the pair's 0.01 step (5000 would give 0.08).
        assert decision.intent.base_qty == Decimal("0.01")
        assert rt.gate.limits.max_leg_notional == Decimal(1000)
        assert rt.pipeline.max_leg_notional == Decimal(1000)
    finally:
        await rt.close_ledger()


async def test_a_ledger_that_cannot_write_refuses_the_change(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        assert rt.ledger is not None and rt.journal is not None
        rt.ledger.writer._fail(DISK_FULL)
        await rt.journal.flush()  # the journal sees the writer gone (and halts trading)
        assert rt.journal.error is not None
        await rt.risk.drain()  # the halt's risk event: held by the journal
        held = rt.journal.unwritten
        assert held == 1
        before = rt.steering.current()
        with pytest.raises(ControlRefused, match="the ledger cannot write"):
            await rt.steering.set("strategy.threshold_bps", "6", "lower", "cli")
        assert rt.steering.current() == before
        assert [r.kind for r in rt.risk.rows()] == ["kill"]  # the halt only
        assert rt.journal.unwritten == held  # no setting record held to be written later
    finally:
        await rt.close_ledger()


async def test_a_ledger_failing_while_journaling_keeps_the_record_and_applies_the_change(tmp_path: Path) -> None:
    """The write fails during the call: the record is held (written when the ledger writes
    again), so the change is applied too and the answer says so: engine and audit agree."""
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        assert rt.ledger is not None and rt.journal is not None
        ledger = rt.ledger
        original = ledger.flush

        async def failing_flush(seq: int | None = None) -> None:
            ledger.writer._fail(DISK_FULL)  # the disk fills between queueing and committing
            await original(seq)

        ledger.flush = failing_flush  # type: ignore[method-assign]
        result = await rt.steering.set("strategy.threshold_bps", "6", "lower", "cli")
        assert (result.changed, result.journaled) == (True, False)
        assert "the record is held" in result.message
        assert rt.pipeline.threshold_bps == 6.0
        assert _rows(tmp_path / "t.db") == []
        ledger.flush = original  # type: ignore[method-assign]
        assert await rt.journal.retry()  # a new writer: what was held is written
        assert [r["setting"]["new"] for r in _rows(tmp_path / "t.db")] == ["6"]
    finally:
        await rt.close_ledger()


async def test_restart_reapplies_a_journaled_change_the_file_has_not_overtaken(tmp_path: Path) -> None:
    first = _runtime(tmp_path)
    await first.open_ledger()
    await first.steering.set("risk.max_leg_notional", "2000", "halve the legs", "cli")
    await first.steering.set("pairs.ETH.enabled", "false", "ETH feed unreliable", "tui")
    await first.close_ledger()

    second = _runtime(tmp_path)
    await second.open_ledger()
    try:
        assert second.ledger is not None
        plan = await second.steering.restore(second.ledger)
        assert [(s.key, s.action) for s in plan] == [("risk.max_leg_notional", "reapply"),
                                                     ("pairs.ETH.enabled", "reapply")]
        assert second.gate.limits.max_leg_notional == Decimal(2000)
        assert second.pipeline.max_leg_notional == Decimal(2000)
        assert second.pipeline.pair_enabled("ETH") is False
        said = [e.text for e in second.events.recent() if e.kind == "setting"]
        assert said == [
            "runtime setting risk.max_leg_notional = 2000 re-applied from the ledger (config file says 5000; "
            "set by cli: halve the legs)",
            "runtime setting pairs.ETH.enabled = false re-applied from the ledger (config file says true; "
            "set by tui: ETH feed unreliable)",
        ]
    finally:
        await second.close_ledger()


async def test_restart_lets_an_edited_config_file_win_and_says_so(tmp_path: Path) -> None:
    first = _runtime(tmp_path)
    await first.open_ledger()
    await first.steering.set("strategy.threshold_bps", "6", "lower", "cli")
    await first.close_ledger()

    edited = demo_config().model_copy(
        update={"strategy": demo_config().strategy.model_copy(update={"threshold_bps": 10.0})})
    second = _runtime(tmp_path, edited)
    await second.open_ledger()
    try:
        assert second.ledger is not None
        plan = await second.steering.restore(second.ledger)
        assert [(s.key, s.action) for s in plan] == [("strategy.threshold_bps", "file_wins")]
        assert second.pipeline.threshold_bps == 10.0
        said = [e.text for e in second.events.recent() if e.kind == "setting"]
        assert said == [
            "runtime setting strategy.threshold_bps = 6 from the ledger NOT re-applied: the config file changed "
            "since (was 8, now 10): the file wins",
            "runtime settings: the config file's values are in force (1 journaled change(s), none to re-apply)",
        ]
    finally:
        await second.close_ledger()


async def test_start_reapplies_before_any_quote_and_logs_it_after_the_start_line(tmp_path: Path) -> None:
    """Through `Runtime.start()` itself (the listener on 127.0.0.1, the demo's loopback venues)."""
    first = _runtime(tmp_path)
    await first.open_ledger()
    await first.steering.set("strategy.cooldown_ms", "60000", "slow down", "cli")
    await first.close_ledger()

    config = demo_config().model_copy(update={"listener": demo_config().listener.model_copy(update={"port": 0})})
    second = Runtime(config, is_demo=True, ledger_path=str(tmp_path / "t.db"))
    await second.start()
    try:
        assert second.pipeline.cooldown_ms == 60000
        texts = [e.text for e in second.events.recent()]
        started = next(i for i, t in enumerate(texts) if t.startswith("engine started"))
        # Applied before any quote; said right after the start line (the log's first).
        assert texts[started + 1] == ("runtime setting strategy.cooldown_ms = 60000 re-applied from the ledger "
                                      "(config file says 3000; set by cli: slow down)")
        assert " threshold=8bps" in texts[started]
    finally:
        await second.stop()


async def test_a_fresh_ledger_logs_that_the_file_is_in_force(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    await rt.open_ledger()
    try:
        assert rt.ledger is not None
        assert await rt.steering.restore(rt.ledger) == []
        said = [e.text for e in rt.events.recent() if e.kind == "setting"]
        assert said == ["runtime settings: the config file's values are in force (0 journaled change(s), "
                        "none to re-apply)"]
    finally:
        await rt.close_ledger()
