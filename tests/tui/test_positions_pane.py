"""The Positions pane under Pilot: what it shows is the ledger's positions, drift is red, and a
refresh touches only the cells that changed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from textual.pilot import Pilot

from core.models import Fill, Order, OrderPurpose
from engine.runtime import Runtime
from ledger import money
from quantarb_tui.app import QuantArbApp
from quantarb_tui.widgets.positions_pane import PositionsPane
from quantarb_tui.widgets.synced_table import SyncedTable
from tests.tui.conftest import close_ledger, make_app, step_market, warm


def _cells(table: SyncedTable, key: str) -> list[str]:
    return [str(getattr(c, "plain", c)) for c in table.get_row(key)]


def one_legged_fill(runtime: Runtime, qty: str = "0.02") -> None:
    """A fill outside any hedge (as a failed group's single leg leaves): booked through the
    orchestrator's fill hook into the running portfolio."""
    now = runtime.clock.time_ms()
    order = Order(client_order_id="drift1", group_id="gdrift", venue="mt5", symbol="XAUUSD", side="buy",
                  qty=Decimal(qty), price=Decimal("2650"), purpose=OrderPurpose.ENTRY, created_ms=now)
    runtime.equity.on_fill(order, Fill("mt5", "drift-t1", "drift1", Decimal(qty), Decimal("2650"), Decimal(0),
                                       "USD", now))


async def test_the_pane_shows_the_ledgers_positions_per_asset(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
        await pilot.pause()
        assert demo_runtime.ledger is not None
        doc = await demo_runtime.ledger.read(money.positions, now_ms=demo_runtime.clock.time_ms(),
                                             instruments=demo_runtime.instruments)
        table = app.screen.query_one("#positions-table", SyncedTable)
        held = {r["asset"] for r in doc["positions"] if Decimal(r["qty"]) != 0}
        assert held and set(table.row_keys) == held
        snap = app.last_snapshot
        assert snap is not None
        for row in snap.holdings:
            from_file = {r["venue"]: Decimal(r["qty"]) for r in doc["positions"] if r["asset"] == row.asset}
            assert {leg.venue: Decimal(leg.qty) for leg in row.legs} == {v: q for v, q in from_file.items() if q}
            assert Decimal(row.net) == sum(from_file.values())
            cells = _cells(table, row.key)
            assert cells[0] == row.asset
            for leg in row.legs:
                assert f"{leg.venue} {Decimal(leg.qty).normalize():+,f}" in cells[-1]
        await close_ledger(demo_runtime)


async def test_drift_is_red_and_named_and_only_changed_cells_update(demo_runtime: Runtime) -> None:
    app = make_app(demo_runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        pane = app.screen.query_one(PositionsPane)
        table = app.screen.query_one("#positions-table", SyncedTable)
        assert not pane.has_class("-drift")
        before = table.cells_updated
        app.refresh_view()
        assert table.cells_updated == before  # nothing changed: no cell touched
        step_market(demo_runtime, 5)  # the marks move; no fill
        app.refresh_view()
        changed = table.cells_updated - before
        rows = len(table.row_keys)
        assert 0 < changed <= rows * 3  # uPnL, mark, held: never the asset, net or legs
        xau = _cells(table, "XAU")
        one_legged_fill(demo_runtime)  # 2 oz long on MT5 with nothing against it
        app.refresh_view()
        await pilot.pause()
        assert pane.has_class("-drift") and pane.border_subtitle == "drift: XAU"
        net = table.get_row("XAU")[1]
        assert getattr(net, "plain", "").endswith("!") and "red" in str(getattr(net, "style", ""))
        assert Decimal(getattr(net, "plain", "")[:-1]) == Decimal(xau[1]) + 2
        assert "mt5 +" in _cells(table, "XAU")[-1]


def test_positions_drift_80x24(snap_compare: Any, demo_runtime: Runtime) -> None:
    """At 80 columns the pane keeps the asset, the net delta (drift in red) and the money."""
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, QuantArbApp)
        await warm(app, demo_runtime)
        await close_ledger(demo_runtime)
        one_legged_fill(demo_runtime)
        app.refresh_view()
        await pilot.pause()

    assert snap_compare(make_app(demo_runtime), terminal_size=(80, 24), run_before=run_before)
