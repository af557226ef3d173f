"""Snapshots of the manual actions' confirmations: closing one group (the legs it sends, the
typed group id) and the orphan cleanup's list (deterministic: manual clock, fixed seed)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.manual_modals import CloseGroupModal
from quantarb_tui.screens.modals import ConfirmModal
from tests.tui.conftest import close_ledger, make_app, warm
from tests.tui.test_manual_keys import QUARANTINED


def _app_of(pilot: Pilot[Any]) -> QuantArbApp:
    assert isinstance(pilot.app, QuantArbApp)
    return pilot.app


def test_close_group_modal(snap_compare: Any, demo_runtime: Runtime) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        hedged = next(g.group_id for g in demo_runtime.orchestrator.closed if g.state == "hedged")
        app.open_group(hedged)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, GroupDetailScreen) and app.screen.detail is not None
        await close_ledger(demo_runtime)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, CloseGroupModal)

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)


def test_orphans_confirm_modal(snap_compare: Any, demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_runtime.view, "status", lambda: QUARANTINED)

    async def run_before(pilot: Pilot[Any]) -> None:
        app = _app_of(pilot)
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        await pilot.press("l")
        app.refresh_view()
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and app.screen.kind == "orphans"

    assert snap_compare(make_app(demo_runtime), terminal_size=(120, 36), run_before=run_before)
