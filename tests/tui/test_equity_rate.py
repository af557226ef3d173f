"""The TUI's equity and the ledger's agree with a rate book whose mid is not 1 (issue 16): the
demo on a manual clock converts its USDT money at the simulated OKX USDT-USD book (mid 0.999,
read over a real socket), the engine journals that rate, and `ledger summary --json` on the
same file, while the app runs and after the engine stopped, states the status bar's figure to
the cent (the positions marked where the engine marked them: the books' mids, `--mark`)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from core.clock import ManualClock
from engine.rates import RateFeed, RateSource
from engine.runtime import Runtime
from quantarb_tui.ledger_cmd import ledger_app
from sim.market import SimTick
from sim.okx_server import OkxSimServer
from tests.tui.conftest import close_ledger, make_app, open_ledger
from tests.tui.test_status_bar import shown_info

D = Decimal
CENT = D("0.01")


def _marks(rt: Runtime) -> list[str]:
    """`--mark` for every book the engine holds a quote of: its mid, as the running equity marks it."""
    out = []
    for venue, symbol in rt.instruments:
        book = rt.compare.book(venue, symbol)
        if book is not None and book.has_quote:
            mid = (D(repr(book.raw_bid)) + D(repr(book.raw_ask))) / 2
            out += ["--mark", f"{venue}:{symbol}={mid}"]
    return out


def _summary(path: Path, marks: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(ledger_app, ["summary", "--ledger", str(path), "--json", *marks])
    assert result.exit_code == 0, result.output
    equity: dict[str, Any] = json.loads(result.stdout)["equity"]
    return equity


async def test_the_status_bar_and_ledger_summary_state_one_equity_at_the_books_rate(
        demo_runtime: Runtime, tmp_path: Path) -> None:
    rt = demo_runtime
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    okx = OkxSimServer(symbols=["USDT-USD"], clock=clock)
    await okx.start()
    app = make_app(rt)
    try:
        okx.publish(SimTick("okx", "USDT-USD", 0.9989, 0.9991, 1000.0, 1000.0, clock.time_ms()))
        async with app.run_test(size=(160, 48)) as pilot:
            await open_ledger(rt)
            feed = RateFeed([RateSource("okx", "USDT-USD", okx.rest_url)], "USD", rt.config.money.rates, clock,
                            max_age_s=3600.0, poll_s=1.0)
            rt.equity.use_rates(feed)  # what `[money] rate_books = ["okx:USDT-USD"]` wires at start
            assert await feed.poll_once() == 1
            await rt.driver.drive(1500, 20.0)  # 30 simulated seconds: groups trade, positions stay open
            assert rt.ledger is not None
            await rt.ledger.flush()
            app.refresh_view()
            await pilot.pause()
            snap = app.last_snapshot
            assert snap is not None
            assert snap.equity not in ("", "n/a"), snap.equity
            shown = f"equity {D(snap.equity):+,.2f} USD"
            assert shown in shown_info(app), shown_info(app)
            doc = rt.equity.equity(clock.time_ms())
            assert doc["rates"]["USDT"]["rate"] == "0.999" and doc["by_currency"]["USDT"]["total"] != "0"
            path = Path(rt.ledger.path)
            marks = _marks(rt)
            await rt.ledger.flush()  # what the reading journaled (the rate in force) is committed
            running = await asyncio.to_thread(_summary, path, marks)  # the file while the app runs
        await close_ledger(rt)
        after = await asyncio.to_thread(_summary, path, marks)  # the engine stopped: its last rate
    finally:
        await okx.stop()
    for eq in (running, after):
        assert eq["rates"]["USDT"]["rate"] == "0.999" and eq["rates"]["USDT"]["source"] == "okx:USDT-USD", eq
        assert D(eq["total"]).quantize(CENT) == D(snap.equity), (eq, snap.equity)
    # The typed USDT = 1 would say otherwise.
    typed = await asyncio.to_thread(_summary, path, [*marks, "--rate", "USDT=1"])
    assert D(typed["total"]) != D(running["total"])
