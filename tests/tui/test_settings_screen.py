"""The settings screen under Pilot against the real runtime and ledger: `s` opens it, a value
out of range is shown with its range and never sent, a change needs a reason and a
confirmation showing the diff, and once confirmed it is journaled (source tui), in force, and
in the risk screen's events. Snapshots: the screen with pending changes, and the confirmation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, Static, Switch

from engine.runtime import Runtime
from ledger import queries
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.modals import ConfirmModal
from quantarb_tui.screens.risk import RiskScreen
from quantarb_tui.screens.settings import SettingsScreen
from quantarb_tui.widgets.synced_table import SyncedTable
from tests.tui.conftest import close_ledger, make_app, open_ledger

THRESHOLD, COOLDOWN, LEG, BTC = "#setting-0", "#setting-1", "#setting-2", "#setting-4"


@asynccontextmanager
async def settings_screen(runtime: Runtime) -> AsyncIterator[tuple[QuantArbApp, Pilot[Any], SettingsScreen]]:
    app = make_app(runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_ledger(runtime)
        try:
            await pilot.press("s")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, SettingsScreen)
            yield app, pilot, screen
        finally:
            await close_ledger(runtime)


async def _type(pilot: Pilot[Any], screen: SettingsScreen, selector: str, text: str) -> None:
    field = screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)
    await pilot.pause()


def _text(screen: SettingsScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def _journaled(runtime: Runtime) -> list[dict[str, Any]]:
    assert runtime.ledger is not None
    return await runtime.ledger.read(queries.setting_changes)


async def test_a_value_out_of_range_shows_the_range_and_is_never_sent(demo_runtime: Runtime) -> None:
    async with settings_screen(demo_runtime) as (app, pilot, screen):
        await _type(pilot, screen, THRESHOLD, "300")
        rng = screen.query_one("#setting-range-0", Static)
        assert rng.has_class("-invalid")
        assert _text(screen, "#setting-range-0") == "300 is out of range: a number, 0 <= value < 300 bps"
        assert screen.query_one(THRESHOLD, Input).is_valid is False
        await _type(pilot, screen, "#settings-reason", "try")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert _text(screen, "#settings-error") == ("fix first: strategy.threshold_bps: 300 is out of range: "
                                                    "a number, 0 <= value < 300 bps")
        assert demo_runtime.pipeline.threshold_bps == 8.0
        assert await _journaled(demo_runtime) == []


async def test_a_change_needs_a_reason_then_a_confirmation_and_is_journaled(demo_runtime: Runtime) -> None:
    async with settings_screen(demo_runtime) as (app, pilot, screen):
        await _type(pilot, screen, THRESHOLD, "6")  # typing s/k/f/p here never triggers an action
        screen.query_one(BTC, Switch).focus()
        await pilot.press("space")
        await pilot.pause()
        assert _text(screen, "#settings-diff").splitlines() == [
            "changes: ", "strategy.threshold_bps  8 -> 6", "pairs.BTC.enabled       true -> false"]
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert _text(screen, "#settings-error") == "reason: required: say why (it is journaled with the change)"
        assert app.focused is screen.query_one("#settings-reason", Input)
        await pilot.press(*"spreads are tight", "enter")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ConfirmModal) and modal.kind == "settings"
        body = str(modal.query_one("#dialog-body", Static).render())
        assert "strategy.threshold_bps  8 -> 6" in body and "reason: spreads are tight" in body
        assert demo_runtime.pipeline.threshold_bps == 8.0  # nothing before the confirmation
        await pilot.press("y")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is screen
        assert demo_runtime.pipeline.threshold_bps == 6.0
        assert demo_runtime.pipeline.pair_enabled("BTC") is False
        records = await _journaled(demo_runtime)
        assert [(r["key"], r["old"], r["new"], r["source"], r["reason"]) for r in records] == [
            ("strategy.threshold_bps", "8", "6", "tui", "spreads are tight"),
            ("pairs.BTC.enabled", "true", "false", "tui", "spreads are tight"),
        ]
        assert _text(screen, "#settings-diff") == "changes: none"
        assert _text(screen, "#setting-now-0") == "now 6  file 8"
        assert _text(screen, "#settings-error").startswith("applied: strategy.threshold_bps 8 -> 6")
        # The risk screen's events show both.
        await pilot.press("escape", "l")
        await pilot.pause()
        assert isinstance(app.screen, RiskScreen)
        app.refresh_view()
        await pilot.pause()
        table = app.screen.query_one("#risk-events-table", SyncedTable)
        reasons = [str(table.get_row_at(i)[3]) for i in range(table.row_count)]
        assert reasons == ["pairs.BTC.enabled true -> false (tui): spreads are tight",
                           "strategy.threshold_bps 8 -> 6 (tui): spreads are tight"]


async def test_cancelling_the_confirmation_changes_nothing(demo_runtime: Runtime) -> None:
    async with settings_screen(demo_runtime) as (app, pilot, screen):
        await _type(pilot, screen, COOLDOWN, "100")
        await _type(pilot, screen, "#settings-reason", "faster")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert app.screen_stack[-1] is screen
        assert demo_runtime.pipeline.cooldown_ms == 3000
        assert await _journaled(demo_runtime) == []


async def test_nothing_changed_is_said_and_not_confirmed(demo_runtime: Runtime) -> None:
    async with settings_screen(demo_runtime) as (app, pilot, screen):
        await _type(pilot, screen, LEG, "5000.00")
        await _type(pilot, screen, "#settings-reason", "same")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert _text(screen, "#settings-error") == "nothing to apply: no value differs from the one in force"


def _app_of(pilot: Pilot[Any]) -> QuantArbApp:
    assert isinstance(pilot.app, QuantArbApp)
    return pilot.app


async def _pending(pilot: Pilot[Any]) -> None:
    """The settings screen with an invalid cooldown, a new threshold, a pair off, a reason."""
    await pilot.press("s")
    await pilot.pause()
    screen = _app_of(pilot).screen
    assert isinstance(screen, SettingsScreen)
    await _type(pilot, screen, THRESHOLD, "6.5")
    await _type(pilot, screen, COOLDOWN, "-1")
    screen.query_one("#setting-3", Switch).focus()
    await pilot.press("space")
    await _type(pilot, screen, "#settings-reason", "gold market closed")


def test_settings_screen_pending(snap_compare: Any, demo_runtime: Runtime) -> None:
    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=_pending)


def test_settings_confirm_modal(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _pending(pilot)
        screen = _app_of(pilot).screen
        assert isinstance(screen, SettingsScreen)
        await _type(pilot, screen, COOLDOWN, "1000")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(_app_of(pilot).screen, ConfirmModal)

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


async def test_a_change_made_elsewhere_shows_and_untouched_rows_follow_it(demo_runtime: Runtime) -> None:
    """The CLI changes the threshold and the cooldown while the screen is open: the untouched
    threshold row takes the new value (no diff proposing to undo it), the edited cooldown row
    keeps the operator's text."""
    async with settings_screen(demo_runtime) as (app, pilot, screen):
        await _type(pilot, screen, COOLDOWN, "100")
        await demo_runtime.steering.set("strategy.threshold_bps", "7", "from the cli", "cli")
        await demo_runtime.steering.set("strategy.cooldown_ms", "200", "from the cli", "cli")
        app.refresh_view()
        await pilot.pause()
        assert _text(screen, "#setting-now-0") == "now 7  file 8"
        assert screen.query_one(THRESHOLD, Input).value == "7"
        assert screen.query_one(COOLDOWN, Input).value == "100"
        assert _text(screen, "#settings-diff").splitlines() == ["changes: ", "strategy.cooldown_ms  200 -> 100"]


def test_settings_screen_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.press("s")
        await pilot.pause()
        screen = _app_of(pilot).screen
        assert isinstance(screen, SettingsScreen)
        await _type(pilot, screen, COOLDOWN, "99999999999")

    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=run_before)
