"""The status bar reads as what the engine can do: ACTIVE with every venue blocked is not a
green ACTIVE (the venue breakers tripped on the demo, on a manual clock)."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.widgets import Static

from core.clock import ManualClock
from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from quantarb_tui.widgets.status_bar import StatusBar
from tests.tui.conftest import make_app


def bar(app: QuantArbApp) -> StatusBar:
    return app.screen.query_one(StatusBar)


def badge(app: QuantArbApp) -> Static:
    return bar(app).query_one("#state-badge", Static)


def shown_badge(app: QuantArbApp) -> str:
    return str(badge(app).content)


def shown_info(app: QuantArbApp) -> str:
    content = bar(app).query_one("#status-info", Static).content
    assert isinstance(content, Text)
    return content.plain


def first_line(app: QuantArbApp) -> str:
    return shown_info(app).splitlines()[0]


async def block_every_venue(runtime: Runtime) -> None:
    """Quotes on every venue, then none for longer than `venue_block_s`: the stale breakers
    block every venue while the trading state stays active."""
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    await runtime.driver.drive(200, 20.0)
    runtime.risk_loop.check()
    assert runtime.view.snapshot().blocked_venues == ()
    clock.advance(ms=runtime.config.risk.venue_block_s * 1000 + 500)
    runtime.risk_loop.check()
    snap = runtime.view.snapshot()
    assert snap.trading_state == "active" and set(snap.blocked_venues) == set(snap.venues)


async def test_every_venue_blocked_reads_blocked_not_green_active(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await block_every_venue(demo_runtime)
        app.refresh_view()
        await pilot.pause()
        assert shown_badge(app) == "BLOCKED"
        assert badge(app).has_class("state-blocked") and not badge(app).has_class("state-active")
        assert "ACTIVE · ALL VENUES BLOCKED" in first_line(app)
        await demo_runtime.driver.drive(1, 20.0)  # quotes again: the venues are released
        demo_runtime.risk_loop.check()
        app.refresh_view()
        await pilot.pause()
        assert demo_runtime.view.snapshot().blocked_venues == ()
        assert shown_badge(app) == "ACTIVE"
        assert badge(app).has_class("state-active") and not badge(app).has_class("state-blocked")
        assert "blocked" not in shown_info(app).lower()


async def test_some_venues_blocked_are_counted_and_named(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await demo_runtime.driver.drive(50, 20.0)
        snap = demo_runtime.view.snapshot()
        assert snap.venues == ("binance", "mt5", "okx")
        bar(app).update_from(replace(snap, blocked_venues=("mt5", "okx")))
        await pilot.pause()
        assert shown_badge(app) == "ACTIVE"
        assert badge(app).has_class("state-active")
        assert "ACTIVE · 2 blocked: mt5, okx" in first_line(app)


async def test_a_halted_state_keeps_its_badge_and_says_the_venues_are_blocked(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(120, 36)) as pilot:
        await block_every_venue(demo_runtime)
        await demo_runtime.control.kill("test")
        app.refresh_view()
        await pilot.pause()
        assert shown_badge(app) == "HALTED"
        assert badge(app).has_class("state-halted")
        assert "HALTED · ALL VENUES BLOCKED" in first_line(app)
