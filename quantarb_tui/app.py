"""QuantArbApp: the Textual workstation over an engine.

The app owns no engine state: it starts the engine, pulls ONE snapshot from its reader on a
timer (<= 10 Hz) and hands it to the visible screens, which update only changed cells in one
batch. Screens ask the app for things with Messages (`screens.messages`) and get the reader
they need; none imports the App. Operator actions call the same `OperatorControl` as the API
and the CLI, in workers so the UI never waits on the engine, and refresh the view as soon as
they return so the new state is on screen at once. Kill is a priority binding: it works from every screen and every
focus, modals included (`k`, except in a dialog's text field, which takes it as a letter;
`ctrl+k`, which never types, everywhere). Quitting asks while groups are in flight or
positions are open, then stops the engine (groups in flight settle) and exits.

SIGTERM and SIGHUP (the SSH session or the terminal went away) stop the engine the same way
and exit 0, without asking: nobody may be there to answer. A terminal that went away makes
every later write fail; `quantarb_tui.terminal` keeps that from blocking or ending the app
before the engine has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Input

from core.runtime_settings import InvalidSetting
from engine.control import ControlRefused, ControlResult, Engine, OrphanRef
from engine.errors import LedgerRefused, RuntimeFailure
from engine.signals import on_signals
from engine.snapshot import RuntimeSnapshot
from engine.steering import SettingsControl
from quantarb_tui.quiet_gc import QuietCollector
from quantarb_tui.screens.analytics import AnalyticsScreen
from quantarb_tui.screens.base import SnapshotView
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.history import HistoryScreen
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.screens.manual_modals import (
    ORPHAN_REASON,
    CloseGroupModal,
    close_legs,
    orphans_body,
    orphans_listed,
)
from quantarb_tui.screens.messages import CancelOrphansAsked, CloseGroupAsked, OpenGroup, RefreshNow
from quantarb_tui.screens.modals import ConfirmModal, HelpModal, InputModal, quit_question
from quantarb_tui.screens.risk import RiskScreen
from quantarb_tui.screens.settings import ApplySettings, SettingsScreen
from quantarb_tui.widgets.filter_bar import KILL_KEY
from quantarb_tui.widgets.status_bar import StatusBar

# Young collections less often than CPython's (700, 10, 10); a full one after 100 collections
# of the middle generation (about 5M allocations, a minute or two of refreshing). A full pass
# also needs the survivors since the last one to be a quarter of the old generation, but that
# rule only holds one back: with 10,000 here (as until issue 19) none ran in hours, and the
# cycles that die old (rendered rows, snapshots) piled up by ~1M objects an hour.
GC_THRESHOLDS = (5000, 10, 100)
MAX_REFRESH_HZ = 10.0
KILL_REASON = "operator kill (tui)"
FLATTEN_REASON = "operator flatten (tui)"
PAUSE_REASON = "operator pause (tui)"
RESUME_REASON = "operator resume (tui)"
# Actions bound to plain letters: never taken from an operator typing in an input. Kill is
# the exception: `k` is kill everywhere except in a dialog's text field, where an Input takes
# it as a letter (a reason must be able to hold a k); the pair filter gives it up (FilterBar).
TYPING_SAFE = frozenset({"flatten", "pause_resume", "rearm", "groups", "risk", "history", "analytics", "help",
                         "quit", "settings"})
HERE = Path(__file__).parent
# Ctrl+C is a key in the TUI (the terminal is in raw mode); these come from outside.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class QuantArbApp(App[int]):
    CSS_PATH = [HERE / "quantarb.tcss", HERE / "screens" / "screens.tcss"]  # noqa: RUF012
    TITLE = "quantarb"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012 - Textual's own type
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-medium"), (46, "-tall")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(KILL_KEY, "kill", "Kill", priority=True),
        Binding("ctrl+k", "kill_anywhere", "Kill", show=False, priority=True),
        Binding("f", "flatten", "Flatten"),
        Binding("p", "pause_resume", "Pause"),
        Binding("r", "rearm", "Rearm"),
        Binding("g", "groups", "Groups"),
        Binding("l", "risk", "Risk"),
        Binding("h", "history", "History"),
        Binding("a", "analytics", "Analytics"),
        Binding("s", "settings", "Settings", show=False),  # in the help (?) and the palette
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        autostart: bool = True,
        refresh_hz: float | None = 5.0,
        stop_signals: bool = True,
        driver_class: type[Driver] | None = None,
    ) -> None:
        """`refresh_hz=None` turns the timer off: deterministic tests call `refresh_view()`.
        `stop_signals`: SIGTERM and SIGHUP stop the engine and exit while the app runs."""
        super().__init__(driver_class=driver_class)
        self._engine = engine
        self.reader = engine.view
        self.control = engine.control
        # Runtime settings (engine.steering): a Runtime has them; an engine without them shows none.
        self.settings: SettingsControl | None = getattr(engine, "steering", None)
        self._autostart = autostart
        self._refresh_s = None if refresh_hz is None else 1.0 / min(refresh_hz, MAX_REFRESH_HZ)
        self.refreshes = 0
        self.refresh_ns = 0  # time spent pulling and applying snapshots (bench: the UI's share)
        self.last_snapshot: RuntimeSnapshot | None = None
        self.last_result: ControlResult | None = None
        self._quitting = False
        self._stop_signals = stop_signals
        self._signal_scope = contextlib.ExitStack()
        self._starting = False
        self._engine_calls: set[asyncio.Future[ControlResult]] = set()  # operator actions still running
        self.stop_requested = False
        self.collector = QuietCollector()  # the collector's full passes, between the operator's keys

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)) and not event.is_forwarded:
            self.collector.operator_input()  # no full collection pass right under a key
        await super().on_event(event)

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    def on_mount(self) -> None:
        if self._stop_signals:
            self._signal_scope.enter_context(on_signals(self.stop_from_outside, STOP_SIGNALS))

    def on_unmount(self) -> None:
        self._signal_scope.close()

    def stop_from_outside(self) -> None:
        """SIGTERM, SIGHUP, or the terminal gone: stop the engine (groups settle) and exit 0,
        without a confirmation. During start-up, once the start has returned."""
        if self.stop_requested:
            return
        self.stop_requested = True
        if not self._starting:
            self.run_worker(self._stop_and_exit(), name="stop-signal", group="control")

    async def on_ready(self) -> None:
        self.refresh_view()
        if self._refresh_s is not None:
            self.set_interval(self._refresh_s, self.refresh_view, name="snapshot-refresh")
        if self._autostart:
            self._starting = True
            try:
                await self._engine.start()
            except LedgerRefused as exc:
                self.exit(2, return_code=2, message=f"quantarb: {exc}")
                return
            except RuntimeFailure as exc:
                self.exit(3, return_code=3, message=f"quantarb: {exc}")
                return
            finally:
                self._starting = False
            if self.stop_requested:
                await self._stop_and_exit()
                return
        # The startup heap (engine, widgets, styles) lives as long as the process: frozen, it
        # is left out of the collector's full passes, which otherwise stall keys and frames.
        gc.collect()
        gc.freeze()
        # Young collections less often, full ones rarely (GC_THRESHOLDS): full passes over the
        # engine's heap were the 50-80 ms pauses in the key-press tail. The app runs one itself
        # every minute when the operator is quiet (`self.collector`, quantarb_tui.quiet_gc).
        gc.set_threshold(*GC_THRESHOLDS)

    # -- the view ----------------------------------------------------------------------
    def _views(self) -> list[SnapshotView]:
        """The visible screens that show engine state: the top one, and under a modal the
        screen it floats over (its status bar must keep moving while a dialog is open)."""
        views: list[SnapshotView] = []
        for screen in reversed(self.screen_stack):
            if isinstance(screen, SnapshotView):
                views.append(screen)
            if not screen.is_modal:
                break
        return views

    def refresh_view(self) -> None:
        """Pull one snapshot and apply it to the visible screens in a single batch."""
        if not self.is_running:
            # Textual's shutdown stops the app, then removes the screens' widgets, then its
            # timers: a refresh in between found a screen without its widgets (NoMatches).
            return
        views = self._views()
        if not views:
            return
        t0 = time.perf_counter_ns()
        snap = self.reader.snapshot()
        with self.batch_update():
            for view in views:
                view.update_from(snap)
        self.last_snapshot = snap
        self.refreshes += 1
        self.refresh_ns += time.perf_counter_ns() - t0
        # After the frame, not inside it, and not while a group's legs are out (quantarb_tui.quiet_gc).
        self.collector.maybe_collect(busy=snap.open_groups > 0)

    def refresh_status(self) -> None:
        """The trading state at once: every visible status bar from a light snapshot."""
        if not self.is_running:
            return
        snap = self.reader.snapshot(groups=0, log=0)
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.update_from(snap)

    # -- operator actions (the same OperatorControl calls as the API and the CLI) -------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """False: the key is text for the focused input (a filter, a reason, FLATTEN); the
        footers then hide it too."""
        focused = self.focused
        if not isinstance(focused, Input):
            return True
        if action == "kill":  # a dialog's text field takes k as a letter; the filter does not
            return not focused.check_consume_key(KILL_KEY, KILL_KEY)
        return action not in TYPING_SAFE

    async def _control(self, title: str, call: Callable[[], Awaitable[ControlResult]]) -> str | None:
        """Run one operator action; returns the refusal message, or None when it was done.

        The engine flips its trading state synchronously, before it waits for the ledger's
        durable write; so the view refreshes as soon as the action has run to its first wait,
        and again when it returns."""
        task = asyncio.ensure_future(call())
        # The engine's action is owned by the app, not by the worker (a screen's) awaiting it:
        # cancelling that worker (a dismissed modal) must never cancel orders mid-send.
        self._engine_calls.add(task)
        task.add_done_callback(self._engine_calls.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, if no one awaits it
        await asyncio.sleep(0)  # the action runs up to its first wait: the gate has flipped
        status_shown = not task.done()
        if status_shown:
            # Only the status bars now: one small region to repaint, so the new state is on
            # screen within a frame; the tables follow with the full refresh below.
            self.refresh_status()
        try:
            result = await asyncio.shield(task)
        except ControlRefused as exc:
            self.refresh_view()
            self.notify(str(exc), title=f"{title} refused", severity="error")
            return str(exc)
        self.last_result = result
        severity: SeverityLevel = "information" if result.changed else "warning"
        if status_shown:
            # The tables and the toast (a toast is a layout of the whole screen) after the frame
            # that shows the new state, never in it: they would delay it.
            self.call_after_refresh(self._after_action, result.message, title, severity)
        else:
            self._after_action(result.message, title, severity)
        return None

    def _after_action(self, message: str, title: str, severity: SeverityLevel) -> None:
        self.refresh_view()
        self.notify(message, title=title, severity=severity)

    def action_kill(self) -> None:
        if any(isinstance(s, ConfirmModal) and s.kind == "kill" for s in self.screen_stack):
            return  # one kill dialog at a time
        body = "Halt trading now: no new groups; entry legs with nothing filled are cancelled.\n" \
               "Groups in flight finish their compensation."
        self.push_screen(ConfirmModal("kill", "KILL", body, confirm_label="Kill"), self._kill_answered)

    def action_kill_anywhere(self) -> None:
        """ctrl+k: kill from any focus, a dialog's text field included (it never types)."""
        self.action_kill()

    def _kill_answered(self, confirmed: bool | None) -> None:
        if confirmed:
            self.run_worker(self._control("Kill", lambda: self.control.kill(KILL_REASON)),
                            name="kill", group="control")

    def action_flatten(self) -> None:
        if any(isinstance(s, InputModal) and s.kind == "flatten" for s in self.screen_stack):
            return
        body = "Halt, then close the net exposure on every venue.\nType FLATTEN and press Enter to confirm."
        self.push_screen(InputModal("flatten", "FLATTEN", body, self._flatten, placeholder="FLATTEN",
                                    word="FLATTEN"))

    async def _flatten(self, _value: str) -> str | None:
        return await self._control("Flatten", lambda: self.control.flatten(FLATTEN_REASON))

    def action_pause_resume(self) -> None:
        snap = self.reader.snapshot(groups=0, log=0)
        if snap.trading_state == "paused":
            self.run_worker(self._control("Resume", lambda: self.control.resume(RESUME_REASON)),
                            name="resume", group="control")
        else:
            self.run_worker(self._control("Pause", lambda: self.control.pause(PAUSE_REASON)),
                            name="pause", group="control")

    def action_rearm(self) -> None:
        if any(isinstance(s, InputModal) and s.kind == "rearm" for s in self.screen_stack):
            return
        body = "Back to ACTIVE after a halt or pause. Refused while a breaker is still tripped.\n" \
               "Reason (required, goes to the ledger):"
        self.push_screen(InputModal("rearm", "REARM", body, self._rearm, placeholder="why it is safe to trade"))

    async def _rearm(self, reason: str) -> str | None:
        return await self._control("Rearm", lambda: self.control.rearm(reason))

    # -- manual venue actions: close one group, cancel quarantined orders (audited) ------
    def on_close_group_asked(self, message: CloseGroupAsked) -> None:
        if any(isinstance(s, CloseGroupModal) for s in self.screen_stack):
            return
        group_id = message.group_id

        async def submit(reason: str) -> str | None:
            return await self._control("Close", lambda: self.control.close_group(group_id, reason, "tui"))

        self.push_screen(CloseGroupModal(group_id, close_legs(message.detail), submit),
                         lambda closed: self._reload_detail(group_id) if closed else None)

    def _reload_detail(self, group_id: str) -> None:
        """The closing orders are in the ledger now: the group's detail screen shows them."""
        for screen in self.screen_stack:
            if isinstance(screen, GroupDetailScreen) and screen.group_id == group_id:
                screen.load()

    def on_cancel_orphans_asked(self, _message: CancelOrphansAsked) -> None:
        if any(isinstance(s, ConfirmModal) and s.kind == "orphans" for s in self.screen_stack):
            return
        status = self.reader.status()
        body = orphans_body(status)
        if body is None:
            self.notify("no open order is quarantined: nothing to cancel", severity="warning")
            return
        shown = orphans_listed(status)  # what the operator confirms is what is sent
        self.push_screen(ConfirmModal("orphans", "CANCEL ORPHAN ORDERS", body, confirm_label="Cancel orders"),
                         lambda confirmed: self._orphans_answered(confirmed, shown))

    def _orphans_answered(self, confirmed: bool | None, shown: list[OrphanRef]) -> None:
        if confirmed:
            self.run_worker(self._orphans(shown), name="orphans", group="control")

    async def _orphans(self, shown: list[OrphanRef]) -> None:
        if await self._control("Orphan cleanup", lambda: self.control.cancel_orphans(ORPHAN_REASON, "tui", shown)):
            return
        result = self.last_result
        for row in (result.detail.get("results") or []) if result is not None else []:
            if row.get("result") == "failed":
                self.notify(f"{row.get('venue')} {row.get('client_order_id')}: {row.get('detail')}",
                            title="Cancel failed", severity="error")

    # -- navigation --------------------------------------------------------------------
    def _to_main(self) -> MainScreen:
        while len(self.screen_stack) > 1 and not isinstance(self.screen, MainScreen):
            self.pop_screen()
        screen = self.screen
        assert isinstance(screen, MainScreen)
        return screen

    def _show(self, screen: Screen[None]) -> None:
        self._to_main()
        self.push_screen(screen)  # the screen refreshes itself once mounted

    def action_groups(self) -> None:
        self._to_main().focus_groups()

    def action_risk(self) -> None:
        self._show(RiskScreen())

    def action_history(self) -> None:
        self._show(HistoryScreen(self.reader.pair_names(), self.reader))

    def action_analytics(self) -> None:
        self._show(AnalyticsScreen(self.reader))

    def action_settings(self) -> None:
        if self.settings is None:
            self.notify("this engine has no runtime settings", severity="warning")
            return
        if not isinstance(self.screen, SettingsScreen):
            self._show(SettingsScreen(self.settings))

    def on_apply_settings(self, message: ApplySettings) -> None:
        self.run_worker(self._apply_settings(message), name="settings", group="control")

    async def _apply_settings(self, message: ApplySettings) -> None:
        """The settings screen's confirmed changes, one `Steering.set` each (source tui), in
        order; the first refusal stops the rest and is shown on the screen."""
        assert self.settings is not None
        done: list[str] = []
        refusal: str | None = None
        for key, value, shown in message.changes:
            try:
                result = await self.settings.set(key, value, message.reason, "tui", expect_old=shown)
            except (InvalidSetting, ControlRefused) as exc:
                refusal = f"{exc} (applied before it: {', '.join(done) or 'nothing'})"
                break
            done.append(result.message)
        self.refresh_view()
        screen = next((s for s in self.screen_stack if isinstance(s, SettingsScreen)), None)
        if screen is not None:
            screen.applied(done, refusal)
        if refusal is not None:
            self.notify(refusal, title="Settings refused", severity="error")
        else:
            self.notify("; ".join(done), title="Settings applied")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpModal):
            self.push_screen(HelpModal())

    def open_group(self, group_id: str) -> None:
        """Enter on a group: its detail screen, on top of the screen it was chosen from."""
        self.push_screen(GroupDetailScreen(group_id, self.reader))

    def on_open_group(self, message: OpenGroup) -> None:
        self.open_group(message.group_id)

    def on_refresh_now(self, _message: RefreshNow) -> None:
        self.refresh_view()

    def action_open_selected(self) -> None:
        screen = self.screen
        group_id = screen.selected_group() if isinstance(screen, MainScreen) else None
        if group_id is None:
            self.notify("no group selected: g focuses the groups table", severity="warning")
            return
        self.open_group(group_id)

    def action_filter(self) -> None:
        self._to_main().action_filter()

    # -- quit --------------------------------------------------------------------------
    async def action_quit(self) -> None:
        if self._quitting:
            return
        body = quit_question(self.reader.snapshot(groups=0, log=0))
        if body is not None:
            if not isinstance(self.screen, ConfirmModal):
                self.push_screen(ConfirmModal("quit", "QUIT", body, confirm_label="Quit"), self._quit_answered)
            return
        await self._stop_and_exit()

    def _quit_answered(self, confirmed: bool | None) -> None:
        if confirmed:
            self.run_worker(self._stop_and_exit(), name="quit", group="control")

    async def _stop_and_exit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        self.notify("stopping the engine…", title="Quit")
        await self._engine.stop()
        self.exit(0)

    # -- command palette ---------------------------------------------------------------
    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every operator action by name (ctrl+p), then Textual's own commands."""
        yield SystemCommand("Kill", "Halt trading now (k)", self.action_kill)
        yield SystemCommand("Flatten", "Halt and close every exposure (f)", self.action_flatten)
        yield SystemCommand("Pause / resume", "No new groups, or back to trading (p)", self.action_pause_resume)
        yield SystemCommand("Rearm", "Back to active after a halt, with a reason (r)", self.action_rearm)
        yield SystemCommand("Group details", "Timeline of the selected group (enter)", self.action_open_selected)
        yield SystemCommand("Filter pairs", "Narrow the panes by pair (/)", self.action_filter)
        yield SystemCommand("Hedge groups", "Focus the groups table (g)", self.action_groups)
        yield SystemCommand("Risk", "Limits, breakers and risk events (l)", self.action_risk)
        yield SystemCommand("History", "Closed groups with filters and totals (h)", self.action_history)
        yield SystemCommand("Analytics", "Equity curve and trade statistics (a)", self.action_analytics)
        yield SystemCommand("Settings", "Runtime settings: threshold, cooldown, leg size, pairs (s)",
                            self.action_settings)
        yield SystemCommand("Help", "The keys (?)", self.action_help)
        yield SystemCommand("Quit", "Stop the engine and exit (q)", self.action_quit)
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command
