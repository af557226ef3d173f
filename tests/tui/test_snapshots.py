"""Snapshot tests of every screen (deterministic: manual clock, fixed seed, fixed data).

Each test builds the state in `run_before` (inside the app's own event loop, where the
ledger must live), then the plugin takes the SVG. The ledger is closed before the picture so
no thread outlives the app.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.history import HistoryScreen
from tests.tui.conftest import close_ledger, groups_in_flight, make_app, warm
from tests.tui.test_status_bar import block_every_venue


def _app_of(pilot: Pilot[Any]) -> QuantArbApp:
    assert isinstance(pilot.app, QuantArbApp)
    return pilot.app


def test_main_screen_160x48(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await groups_in_flight(demo_runtime)
        app.refresh_view()
        await close_ledger(demo_runtime)
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(160, 48), run_before=run_before)


def test_main_screen_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        app.refresh_view()
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=run_before)


def test_halted(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await demo_runtime.control.kill("operator kill (tui)")
        await demo_runtime.driver.drive(50, 20.0)  # decisions now say halted
        await close_ledger(demo_runtime)
        app.refresh_view()
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def test_kill_confirm_modal(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        app.refresh_view()
        await pilot.press("k")
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def test_flatten_confirm_modal(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        app.refresh_view()
        await pilot.press("f", *"FLATTEN")
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def test_group_detail(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        snap = demo_runtime.view.snapshot()
        repaired = snap.compensation[0].group_id  # a group with a compensation action
        app.open_group(repaired)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, GroupDetailScreen) and app.screen.detail is not None
        await close_ledger(demo_runtime)

    assert snap_compare(make_app(demo_runtime), terminal_size=(160, 48), run_before=run_before)


def test_risk_screen(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await demo_runtime.control.pause("operator pause (tui)")
        await close_ledger(demo_runtime)
        await pilot.press("l")
        app.refresh_view()
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def _risk_screen(demo_runtime: Runtime) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await groups_in_flight(demo_runtime)  # positions: the venues' margin is in use
        await close_ledger(demo_runtime)
        await pilot.press("l")
        app.refresh_view()
        await pilot.pause()

    return run_before


def test_risk_screen_balances_160x48(snap_compare: Any, demo_runtime: Runtime) -> None:
    """Each venue's balance, equity, margin and free margin (issue 16, Deliver 4)."""
    assert snap_compare(make_app(demo_runtime), terminal_size=(160, 48), run_before=_risk_screen(demo_runtime))


def test_risk_screen_balances_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    """At 80x24 the free margin stays visible: it is the first column after the venue."""
    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=_risk_screen(demo_runtime))


def test_history_screen(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await pilot.press("h")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, HistoryScreen) and app.screen.rows
        await close_ledger(demo_runtime)

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def test_all_venues_blocked_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    """Active, but the stale-quote breakers block every venue: the one-row badge says BLOCKED."""
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await block_every_venue(demo_runtime)
        app.refresh_view()
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=run_before)
