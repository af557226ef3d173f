"""Every operator key flow under Pilot (the keys in README.md, Over SSH), against the real runtime and ledger.

Actions run as workers; each test waits for them (`workers.wait_for_complete`) and then
checks both the engine's state and what the screen shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from engine.control import ControlRefused, ControlResult
from engine.runtime import Runtime
from engine.snapshot import PositionRow
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.history import HistoryScreen
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.screens.modals import ConfirmModal, HelpModal, InputModal, quit_question
from quantarb_tui.screens.risk import RiskScreen
from quantarb_tui.widgets.status_bar import StatusBar
from tests.tui.conftest import close_ledger, make_app, step_market, warm


@asynccontextmanager
async def running(
    runtime: Runtime, size: tuple[int, int] = (120, 36)
) -> AsyncIterator[tuple[QuantArbApp, Pilot[Any]]]:
    app = make_app(runtime)
    async with app.run_test(size=size) as pilot:
        await warm(app, runtime, steps=600, chunks=3)
        await pilot.pause()
        try:
            yield app, pilot
        finally:
            await close_ledger(runtime)


async def settle(app: QuantArbApp, pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def shown_state(app: QuantArbApp) -> str:
    return app.screen.query_one(StatusBar).shown_state


# -- kill --------------------------------------------------------------------------------
@pytest.mark.parametrize("confirm", ["y", "enter"])
async def test_kill_confirmed_halts_and_shows_it(demo_runtime: Runtime, confirm: str) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "kill"
        await pilot.press(confirm)
        await settle(app, pilot)
        assert demo_runtime.view.snapshot().trading_state == "halted"
        assert isinstance(app.screen, MainScreen)
        assert shown_state(app) == "halted"


@pytest.mark.parametrize("cancel", ["n", "escape"])
async def test_kill_cancelled_changes_nothing(demo_runtime: Runtime, cancel: str) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("k", cancel)
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert demo_runtime.view.snapshot().trading_state == "active"
        assert shown_state(app) == "active"


async def test_kill_from_inside_group_detail(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("enter")  # the groups table has the focus
        await settle(app, pilot)
        assert isinstance(app.screen, GroupDetailScreen)
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("k")  # a second k opens no second dialog
        assert sum(isinstance(s, ConfirmModal) for s in app.screen_stack) == 1
        await pilot.press("y")
        await settle(app, pilot)
        assert isinstance(app.screen, GroupDetailScreen)
        assert demo_runtime.view.snapshot().trading_state == "halted"
        assert shown_state(app) == "halted"


async def test_k_typed_into_an_input_is_text_not_kill(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("r", *"kept", "q")
        assert isinstance(app.screen, InputModal)
        assert app.screen.query_one(Input).value == "keptq"
        assert demo_runtime.view.snapshot().trading_state == "active"
        assert app.is_running


async def test_k_in_the_filter_box_kills_and_types_nothing(demo_runtime: Runtime) -> None:
    """The filter is not a dialog's text field: `k` is kill there, as everywhere else."""
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("slash", *"bt")
        main = app.screen
        assert isinstance(main, MainScreen)
        filter_box = main.query_one("#filter", Input)
        assert app.focused is filter_box and filter_box.value == "bt"
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "kill"
        assert filter_box.value == "bt"
        await pilot.press("y")
        await settle(app, pilot)
        assert demo_runtime.view.snapshot().trading_state == "halted"
        assert app.screen_stack[-1] is main and app.focused is filter_box and filter_box.value == "bt"
        await pilot.press("K")  # a capital K is a letter (case-blind match)
        assert filter_box.value == "btK" and len(app.screen_stack) == 1


async def test_ctrl_k_kills_even_from_the_rearm_reason_box(demo_runtime: Runtime) -> None:
    """`k` types into a dialog's text field (a reason must be able to hold a k); ctrl+k never
    types, so it kills from there too."""
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("r", *"kk")
        modal = app.screen
        assert isinstance(modal, InputModal) and modal.kind == "rearm"
        assert modal.query_one(Input).value == "kk"
        await pilot.press("home", "ctrl+k")
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "kill"
        assert modal.query_one(Input).value == "kk"  # not the input's ctrl+k (delete to the end)
        await pilot.press("y")
        await settle(app, pilot)
        assert demo_runtime.view.snapshot().trading_state == "halted"
        assert app.screen_stack[-1] is modal and modal.query_one(Input).value == "kk"


async def test_ctrl_k_kills_from_the_main_screen(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("ctrl+k")
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "kill"
        await pilot.press("ctrl+k")  # one kill dialog at a time
        assert sum(isinstance(s, ConfirmModal) for s in app.screen_stack) == 1


# -- flatten -----------------------------------------------------------------------------
async def test_flatten_needs_the_typed_word(demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def flatten(reason: str) -> ControlResult:
        calls.append(reason)
        return await demo_runtime.control.kill(reason)

    monkeypatch.setattr(demo_runtime.control, "flatten", flatten)
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("f", *"flatten", "enter")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, InputModal) and "FLATTEN" in modal.error
        assert calls == []
        modal.query_one(Input).value = ""
        await pilot.press(*"FLATTEN", "enter")
        await settle(app, pilot)
        assert calls == ["operator flatten (tui)"]
        assert isinstance(app.screen, MainScreen)
        assert shown_state(app) == "halted"


async def test_flatten_refused_shows_the_engine_message(
    demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def flatten(reason: str) -> ControlResult:
        raise ControlRefused("flatten refused: venue okx is down")

    monkeypatch.setattr(demo_runtime.control, "flatten", flatten)
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("f", *"FLATTEN", "enter")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, InputModal)
        assert modal.error == "flatten refused: venue okx is down"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_flatten_of_an_engine_that_is_not_running_is_refused_in_the_modal(demo_runtime: Runtime) -> None:
    """The real runtime, never started here: its refusal is shown and nothing changes (the
    flatten that runs is tests/tui/test_operator_keys_e2e.py)."""
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("f", *"FLATTEN", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, InputModal)
        assert app.screen.error == "the engine is not running"
        assert demo_runtime.gate.state == "active"


# -- pause / resume / rearm ------------------------------------------------------------------
async def test_p_toggles_pause_and_resume(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("p")
        await settle(app, pilot)
        assert demo_runtime.view.snapshot().trading_state == "paused"
        assert shown_state(app) == "paused"
        await pilot.press("p")
        await settle(app, pilot)
        assert demo_runtime.view.snapshot().trading_state == "active"
        assert shown_state(app) == "active"


async def test_rearm_with_a_reason_after_a_kill(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await demo_runtime.control.kill("test")
        await pilot.press("r", *"checked the venues", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert demo_runtime.view.snapshot().trading_state == "active"
        assert shown_state(app) == "active"


async def test_rearm_without_a_reason_is_refused_in_the_modal(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await demo_runtime.control.kill("test")
        await pilot.press("r", "enter")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, InputModal) and modal.kind == "rearm"
        assert "reason" in modal.error
        assert demo_runtime.view.snapshot().trading_state == "halted"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


# -- navigation ------------------------------------------------------------------------------
async def test_enter_opens_the_group_timeline_from_the_ledger(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        main = app.screen
        assert isinstance(main, MainScreen)
        selected = main.selected_group()
        await pilot.press("enter")
        await settle(app, pilot)
        detail = app.screen
        assert isinstance(detail, GroupDetailScreen) and detail.group_id == selected
        assert detail.detail is not None and detail.detail["orders"]
        assert detail.query_one("#timeline-table", DataTable).row_count == len(detail.detail["timeline"])
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_slash_filters_pairs(demo_runtime: Runtime) -> None:
    async with running(demo_runtime, size=(160, 48)) as (app, pilot):
        await pilot.press("slash", *"btc", "enter")
        app.refresh_view()
        await pilot.pause()
        edges = app.screen.query_one("#edges-table", DataTable)
        assert edges.row_count == 6
        assert all(str(edges.get_row_at(i)[0]) == "BTC" for i in range(edges.row_count))
        await pilot.press("slash", "escape")  # Esc clears the filter
        await pilot.pause()
        assert edges.row_count == 18


async def test_g_focuses_the_groups_from_any_screen(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, RiskScreen)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert app.focused is app.screen.query_one("#groups-table")


async def test_risk_and_history_screens(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, RiskScreen)
        limits = app.screen.query_one("#limits-table", DataTable)
        assert limits.row_count == len(demo_runtime.view.snapshot().limits)
        await pilot.press("h")
        await settle(app, pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen)
        assert len(app.screen_stack) == 2  # screens replace each other above the main one
        everything = len(history.rows)
        assert everything > 0
        from textual.widgets import Select

        pair = str(history.rows[-1]["pair"])
        history.query_one("#history-pair", Select).value = pair
        await settle(app, pilot)
        assert 0 < len(history.rows) <= everything
        assert {r["pair"] for r in history.rows} == {pair}
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, GroupDetailScreen)


async def test_question_mark_shows_help(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpModal)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_command_palette_lists_every_action(demo_runtime: Runtime) -> None:
    async with running(demo_runtime) as (app, pilot):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for action in ("Kill", "Flatten", "Pause / resume", "Rearm", "Group details", "Filter pairs",
                       "Hedge groups", "Risk", "History", "Help", "Quit"):
            assert action in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"kill")  # typed into the palette, not a kill
        await pilot.pause(0.3)
        assert demo_runtime.view.snapshot().trading_state == "active"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "kill"


# -- quit --------------------------------------------------------------------------------------
async def test_quit_refused_while_groups_are_in_flight_then_confirmed(
    demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    stops: list[int] = []
    stop = demo_runtime.stop

    async def counted_stop() -> None:
        stops.append(1)
        await stop()

    monkeypatch.setattr(demo_runtime, "stop", counted_stop)
    async with running(demo_runtime) as (app, pilot):
        for _ in range(2000):  # intents without running them: groups stay in flight
            step_market(demo_runtime, 1)
            if demo_runtime.view.snapshot(groups=0, log=0).open_groups:
                break
        assert demo_runtime.view.snapshot(groups=0, log=0).open_groups > 0
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "quit"
        await pilot.press("n")
        await settle(app, pilot)
        assert app.is_running and isinstance(app.screen, MainScreen)
        assert stops == []
        await pilot.press("q", "y")
        await settle(app, pilot)
    assert app.return_value == 0
    assert stops == [1]  # the engine was stopped (groups settle there) before the exit


async def test_quit_with_positions_open_asks_and_lists_them(demo_runtime: Runtime) -> None:
    stops: list[int] = []
    stop = demo_runtime.stop

    async def counted_stop() -> None:
        stops.append(1)
        await stop()

    demo_runtime.stop = counted_stop  # type: ignore[method-assign]
    async with running(demo_runtime) as (app, pilot):  # the demo's hedged groups left positions
        snap = demo_runtime.view.snapshot(groups=0, log=0)
        assert snap.open_groups == 0, "no group in flight: the positions alone must make q ask"
        held = {(venue, asset): qty for venue, assets in demo_runtime.view.positions().items()
                for asset, qty in assets.items() if Decimal(qty)}
        assert held, "the demo left positions open"
        await pilot.press("q")
        modal = app.screen
        assert isinstance(modal, ConfirmModal) and modal.kind == "quit"
        body = str(modal.query_one("#dialog-body", Static).content)
        listed = body.split("Open positions: ", 1)[1].split(".\n", 1)[0]
        assert sorted(listed.split(", ")) == sorted(
            f"{venue} {asset} {Decimal(qty).normalize():f}" for (venue, asset), qty in held.items())
        assert "Quitting leaves them open (flatten first with f). Quit anyway?" in body
        await pilot.press("n")
        await settle(app, pilot)
        assert app.is_running and isinstance(app.screen, MainScreen)
        assert stops == []


async def test_quit_with_nothing_open_exits_at_once(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        snap = demo_runtime.view.snapshot(groups=0, log=0)
        assert snap.open_groups == 0 and not demo_runtime.gate.exposure.positions
        await pilot.press("q")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
    assert app.return_value == 0


def test_quit_question_says_what_quitting_leaves(demo_runtime: Runtime) -> None:
    snap = demo_runtime.view.snapshot(groups=0, log=0)
    assert quit_question(snap) is None  # nothing in flight, nothing held
    held = (PositionRow("okx:BTC", "okx", "BTC", "0.0500"), PositionRow("binance:BTC", "binance", "BTC", "-0.05"))
    assert quit_question(replace(snap, open_groups=2, positions=held)) == (
        "2 hedge group(s) in flight: the engine stops taking new groups and lets these settle before it exits.\n"
        "Open positions: okx BTC 0.05, binance BTC -0.05.\n"
        "Quitting leaves them open (flatten first with f). Quit anyway?"
    )


async def test_a_ledger_that_cannot_be_read_is_said_on_the_screen_and_the_workstation_stays_up(
        demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged ledger met by a screen's read (history, a group's story, analytics) used to end
    the screen's worker with an exception, which ends a Textual app: the workstation quit at
    the operator's key. The reads now raise ReadFailed, which the screens show; a group's story
    is read again by itself once the ledger answers."""
    from ledger import LedgerError, queries
    from ledger import analytics as ledger_analytics
    from quantarb_tui.screens import detail as detail_screen
    from quantarb_tui.screens.messages import OpenGroup

    monkeypatch.setattr(detail_screen, "RETRY_S", 0.2)  # the interval between tries, shortened

    def damaged(*_: object, **__: object) -> Any:
        raise LedgerError("the ledger at x.db is damaged: database disk image is malformed")

    async with running(demo_runtime) as (app, pilot):
        monkeypatch.setattr(queries, "groups", damaged)
        monkeypatch.setattr(queries, "show", damaged)
        monkeypatch.setattr(ledger_analytics, "analytics", damaged)
        await pilot.press("h")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen) and app.is_running
        totals = str(app.screen.query_one("#history-totals", Static).render())
        assert "the ledger could not be read: the ledger at x.db is damaged" in totals
        await pilot.press("a")
        await settle(app, pilot)
        assert type(app.screen).__name__ == "AnalyticsScreen" and app.is_running
        assert "could not be read" in str(app.screen.query_one("#analytics-summary", Static).render())
        await pilot.press("escape")
        await settle(app, pilot)
        app.post_message(OpenGroup(demo_runtime.view.snapshot().groups[0].key))
        await settle(app, pilot)
        assert isinstance(app.screen, GroupDetailScreen) and app.is_running
        detail = app.screen
        assert "could not be read" in str(detail.query_one("#detail-summary", Static).render())
        assert detail.loads == 0 and detail.detail is None
        # The group's story is read again by itself once the ledger answers (no need to reopen it).
        monkeypatch.undo()
        await pilot.pause(0.25)  # past the interval the screen took when it opened (0.2 s, set above)
        app.refresh_view()  # the app's timer is off in these tests: one snapshot, as it would pull
        await settle(app, pilot)
        assert detail.loads == 1 and detail.detail is not None, "the failed read was not tried again"
        assert "could not be read" not in str(detail.query_one("#detail-summary", Static).render())


async def test_the_full_collection_pass_waits_for_a_quiet_second_after_a_key(demo_runtime: Runtime) -> None:
    """The app's own full collector pass (quantarb_tui.quiet_gc) runs from the refresh when a
    minute has passed, but not within a second of the operator's key: the pause falls between
    keys, not under one."""
    from quantarb_tui.quiet_gc import QuietCollector

    now = [5000.0]
    passes: list[float] = []

    def collect() -> int:
        passes.append(now[0])
        return 0

    async with running(demo_runtime) as (app, pilot):
        app.collector = QuietCollector(every_s=60.0, quiet_s=1.0, clock=lambda: now[0], collect=collect)
        now[0] += 60.0
        await pilot.press("x")  # no binding: only the operator's presence
        now[0] += 0.5
        app.refresh_view()
        assert passes == []
        now[0] += 0.5
        app.refresh_view()
        assert passes == [5061.0] and app.collector.passes == 1


async def test_a_group_detail_reads_the_ledger_once_at_a_time(
        demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group's story is read in a thread (the whole ledger's attribution, seconds on a long
    ledger), which a newer read cannot cancel: snapshots that say the group moved on while a
    read runs start no second one (at 10 Hz they would pile up threads on the engine's GIL)."""
    from quantarb_tui.screens.messages import OpenGroup

    calls: list[str] = []
    release = asyncio.Event()

    async def slow_detail(group_id: str) -> dict[str, Any] | None:
        calls.append(group_id)
        await release.wait()
        return None

    async with running(demo_runtime) as (app, pilot):
        monkeypatch.setattr(demo_runtime.view, "group_detail", slow_detail)
        key = demo_runtime.view.snapshot().groups[0].key
        app.post_message(OpenGroup(key))
        await pilot.pause()
        detail = app.screen
        assert isinstance(detail, GroupDetailScreen) and calls == [key]
        detail._loaded_state = "an older state"  # as if an earlier read had shown another state
        for _ in range(5):
            app.refresh_view()
            await pilot.pause()
        assert calls == [key], "a second read started while the first ran"
        release.set()
        await settle(app, pilot)
        assert calls == [key]
