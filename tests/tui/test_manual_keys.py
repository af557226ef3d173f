"""The manual venue actions under Pilot, against the real demo runtime and ledger: `c` on a
group's detail screen (typed confirmation: the group id) and `o` on the risk screen (the list
of quarantined orders, y/Enter). The engine side of both is tests/integration/test_group_close.py
and test_manual_live.py; here, what the keys send and what the screens show."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Input, Static

from engine.control import ControlRefused, ControlResult
from engine.runtime import Runtime
from quantarb_tui.screens.detail import GroupDetailScreen
from quantarb_tui.screens.main import MainScreen
from quantarb_tui.screens.manual_modals import ORPHAN_REASON, CloseGroupModal, close_legs
from quantarb_tui.screens.modals import ConfirmModal
from quantarb_tui.screens.risk import RiskScreen
from tests.tui.test_keys import running, settle

QUARANTINED: dict[str, Any] = {"reconcile": {"quarantined": [
    {"venue": "binance", "client_order_id": "manual1", "reason": "an open order that is not ours",
     "since_ms": 1, "open_order": True},
    {"venue": "okx", "client_order_id": "qagx001l0a0", "reason": "a fill of an order the ledger does not know",
     "since_ms": 2, "open_order": False},
]}}


def _result(action: Any, message: str, **detail: Any) -> ControlResult:
    return ControlResult(action, "active", "", True, message, detail)


async def _detail(app: Any, pilot: Any) -> GroupDetailScreen:
    main = app.screen
    assert isinstance(main, MainScreen)
    await pilot.press("enter")
    await settle(app, pilot)
    detail = app.screen
    assert isinstance(detail, GroupDetailScreen) and detail.detail is not None
    return detail


async def test_close_needs_the_typed_group_id(demo_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str]] = []

    async def close_group(group_id: str, reason: str, actor: str) -> ControlResult:
        calls.append((group_id, reason, actor))
        return _result("close", f"group {group_id} closed: flat", flat=True)

    monkeypatch.setattr(demo_runtime.control, "close_group", close_group)
    async with running(demo_runtime) as (app, pilot):
        detail = await _detail(app, pilot)
        gid = detail.group_id
        await pilot.press("c")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, CloseGroupModal) and modal.group_id == gid
        body = str(modal.query_one("#dialog-body", Static).render())
        assert all(line in body for line in close_legs(detail.detail)) and close_legs(detail.detail)
        await pilot.press(*"gwrong", "enter")
        await settle(app, pilot)
        assert modal.error == f"type the group id {gid} to confirm, or Esc to cancel"
        assert calls == []
        modal.query_one("#dialog-input", Input).value = gid
        modal.query_one("#dialog-reason", Input).value = "held past the close"
        await pilot.press("enter")
        await settle(app, pilot)
        assert calls == [(gid, "held past the close", "tui")]
        assert app.screen is detail
        assert detail.loads == 2  # read again from the ledger: the closing orders show
        assert app.last_result is not None and app.last_result.message == f"group {gid} closed: flat"


async def test_close_without_a_reason_sends_the_default_one(demo_runtime: Runtime,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def close_group(group_id: str, reason: str, actor: str) -> ControlResult:
        calls.append(reason)
        return _result("close", "closed", flat=True)

    monkeypatch.setattr(demo_runtime.control, "close_group", close_group)
    async with running(demo_runtime) as (app, pilot):
        detail = await _detail(app, pilot)
        await pilot.press("c", *detail.group_id, "enter")
        await settle(app, pilot)
        assert calls == ["operator close (tui)"]


async def test_the_engines_refusal_is_shown_in_the_modal(demo_runtime: Runtime) -> None:
    """The real runtime, never started here: it refuses, nothing is sent, the modal says why."""
    async with running(demo_runtime) as (app, pilot):
        detail = await _detail(app, pilot)
        placed = demo_runtime.orchestrator.refused_orders, len(demo_runtime.orchestrator.loose_orders)
        await pilot.press("c", *detail.group_id, "enter")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, CloseGroupModal) and modal.error == "the engine is not running"
        assert (demo_runtime.orchestrator.refused_orders, len(demo_runtime.orchestrator.loose_orders)) == placed
        await pilot.press("escape")
        assert app.screen is detail


async def test_o_with_nothing_quarantined_only_says_so(demo_runtime: Runtime,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    async def cancel_orphans(reason: str, actor: str) -> ControlResult:
        raise AssertionError("nothing is quarantined: nothing may be sent")

    monkeypatch.setattr(demo_runtime.control, "cancel_orphans", cancel_orphans)
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        assert isinstance(app.screen, RiskScreen)
        assert [n.message for n in app._notifications][-1:] == ["no open order is quarantined: nothing to cancel"]


async def test_o_lists_the_open_orders_and_cancels_on_confirmation(demo_runtime: Runtime,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    async def cancel_orphans(reason: str, actor: str) -> ControlResult:
        calls.append((reason, actor))
        return _result("orphans_cancel", "orphan cleanup: 1 failed", results=[
            {"venue": "binance", "client_order_id": "manual1", "result": "failed", "detail": "venue timeout"}])

    async def refused(reason: str, actor: str) -> ControlResult:
        raise ControlRefused("no open order is quarantined: nothing to cancel")

    monkeypatch.setattr(demo_runtime.control, "cancel_orphans", cancel_orphans)
    monkeypatch.setattr(demo_runtime.view, "status", lambda: QUARANTINED)
    async with running(demo_runtime) as (app, pilot):
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        modal = app.screen
        assert isinstance(modal, ConfirmModal) and modal.kind == "orphans"
        body = str(modal.query_one("#dialog-body", Static).render())
        assert "binance  manual1" in body and "qagx001l0a0" not in body  # only what is open
        await pilot.press("n")
        await settle(app, pilot)
        assert isinstance(app.screen, RiskScreen) and calls == []
        await pilot.press("o", "y")
        await settle(app, pilot)
        assert calls == [(ORPHAN_REASON, "tui")]
        assert isinstance(app.screen, RiskScreen)
        said = [n.message for n in app._notifications]
        assert said[-2:] == ["orphan cleanup: 1 failed", "binance manual1: venue timeout"]
        monkeypatch.setattr(demo_runtime.control, "cancel_orphans", refused)
        await pilot.press("o", "enter")
        await settle(app, pilot)
        assert [n.message for n in app._notifications][-1] == "no open order is quarantined: nothing to cancel"
