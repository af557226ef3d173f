"""Issue 7's end-to-end flow through the TUI keys under Pilot, on a started demo engine:
`k` -> halted, and no entry order created after the kill's risk event; `f` FLATTEN -> every
venue flat within one lot step; restart -> still halted; `r` with a reason -> active."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from core.clock import ManualClock
from core.config import demo_config
from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.widgets.status_bar import StatusBar


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")


def _runtime(path: Path, clock: ManualClock) -> Runtime:
    return Runtime(demo_config(), is_demo=True, clock=clock, ledger_path=str(path), mt5_in_process=True)


def _app(runtime: Runtime) -> QuantArbApp:
    app = QuantArbApp(runtime, autostart=False, refresh_hz=None)
    app.animation_level = "none"
    return app


async def _settle(app: QuantArbApp, pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.refresh_view()


def _shown(app: QuantArbApp) -> str:
    return app.screen.query_one(StatusBar).shown_state


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows: list[tuple[Any, ...]] = con.execute(sql).fetchall()
        return rows
    finally:
        con.close()


@pytest.mark.timeout(180)
async def test_kill_flatten_restart_rearm_through_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    clock = ManualClock()
    runtime = _runtime(path, clock)
    await runtime.start()
    try:
        await runtime.driver.drive(1500, 20.0)  # 30 s of the demo market: groups, and positions left
        assert any(Decimal(q) != 0 for v in runtime.view.positions().values() for q in v.values())
        app = _app(runtime)
        async with app.run_test(size=(160, 48)) as pilot:
            app.refresh_view()
            await pilot.press("k", "y")
            await _settle(app, pilot)
            assert runtime.gate.state == "halted" and _shown(app) == "halted"
            await runtime.driver.drive(200, 20.0)  # the market goes on: every decision is refused
            await pilot.press("f", *"FLATTEN", "enter")
            await _settle(app, pilot)
            assert isinstance(app.screen, MainScreen), getattr(app.screen, "error", "")
            assert _shown(app) == "halted"
            report = runtime.control.last_flatten
            assert report is not None and report["flat"], report
            steps: dict[tuple[str, str], Decimal] = {
                (i.venue, p.name): i.base_step for p in runtime.pairs for i in p.instruments}
            for venue, assets in runtime.view.positions().items():
                for asset, qty in assets.items():
                    assert abs(Decimal(qty)) < steps[(venue, asset)], (venue, asset, qty)
    finally:
        await runtime.stop()

    kill_seq = _rows(path, "SELECT min(seq) FROM events WHERE kind = 'risk_event' "
                           "AND json_extract(payload, '$.kind') = 'kill'")[0][0]
    assert isinstance(kill_seq, int), kill_seq
    entries = "SELECT count(*) FROM events WHERE kind = 'order_created' AND seq {} {} " \
              "AND json_extract(payload, '$.purpose') = 'entry'"
    early = _rows(path, entries.format("<", kill_seq))
    assert early[0][0] > 0  # entries were made before the kill: none after it is the kill's doing
    late = _rows(path, entries.format(">", kill_seq))
    assert late == [(0,)]

    again = _runtime(path, clock)
    await again.start()
    try:
        assert again.gate.state == "halted"
        app = _app(again)
        async with app.run_test(size=(120, 36)) as pilot:
            app.refresh_view()
            assert _shown(app) == "halted"
            await pilot.press("r", *"test", "enter")
            await _settle(app, pilot)
            assert again.gate.state == "active" and _shown(app) == "active"
    finally:
        await again.stop()
    assert _rows(path, "SELECT kind FROM risk_events ORDER BY event_id DESC LIMIT 1") == [("rearm",)]
