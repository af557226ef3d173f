"""Money from the ledger alone (ledger.money): equity, positions and the equity series recomputed
from the fills of a real SQLite ledger, and the `ledger summary / positions / equity` commands."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from core.clock import ManualClock
from core.commands import CommandFill, CommandState
from core.currency import RateBook
from core.instruments import Instrument
from core.models import Fill, GroupState, Order, OrderPurpose
from core.portfolio import Portfolio
from ledger import Ledger, LedgerError, money, queries
from quantarb_tui.ledger_cmd import ledger_app
from tests.unit.test_ledger_support import MT5, OKX, T0, apply_fill, make_command, make_group, make_order

D = Decimal
BIN = Instrument(venue="binance", symbol="BTCUSDT", pair="BTC", qty_per_unit=D(1), tick_size=D("0.1"),
                 lot_step=D("0.001"), min_qty=D("0.001"), taker_fee_bps=5.0)


def fill(order: Order, tid: str, price: str, qty: Decimal | None = None, ts: int = T0, fee: str = "0.03") -> Fill:
    return Fill(venue=order.venue, venue_trade_id=tid, client_order_id=order.client_order_id,
                qty=order.qty if qty is None else qty, price=D(price), fee=D(fee),
                fee_ccy="USD" if order.venue == "mt5" else "USDT", ts_ms=ts)


async def book(led: Ledger, order: Order, *fills: Fill) -> None:
    await led.order_created(order)
    for f in fills:
        apply_fill(order, f)
        led.fill(order, f)
    led.order_state(order)


async def a_day(path: Path) -> list[tuple[Order, Fill]]:
    """A hedged group, a failed group whose sell leg filled 10x, a flatten of what that left (on
    OKX, a flatten order without a group), and a late fill of the failed group after the flatten.
    Returns every (order, fill) as booked."""
    booked: list[tuple[Order, Fill]] = []
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0))
    try:
        g1 = make_group("g1", T0)  # buy 10 OKX contracts (0.1 BTC), sell 0.10 lot MT5
        led.group_opened(g1)
        buy, sell = make_order(g1, 0, ts_ms=T0), make_order(g1, 1, ts_ms=T0)
        fs = [fill(buy, "o1", "65000.1", D(4), T0 + 1), fill(buy, "o2", "65000.3", D(6), T0 + 2, fee="0.0325")]
        await book(led, buy, *fs)
        booked += [(buy, f) for f in fs]
        f = fill(sell, "101", "65090.55", ts=T0 + 3, fee="0")
        await book(led, sell, f)
        booked.append((sell, f))
        g1.state, g1.closed_ms = GroupState.HEDGED, T0 + 4
        led.group_state(g1)

        g2 = make_group("g2", T0 + 10_000)
        led.group_opened(g2)
        buy2, sell2 = make_order(g2, 0, ts_ms=T0 + 10_000), make_order(g2, 1, ts_ms=T0 + 10_000)
        f = fill(buy2, "o3", "65100", ts=T0 + 10_001)
        await book(led, buy2, f)
        booked.append((buy2, f))
        sell2.qty = D("0.10")
        f = fill(sell2, "102", "65300", D("1.00"), T0 + 10_002, fee="0.7")  # 10x the order
        await book(led, sell2, f)
        booked.append((sell2, f))
        g2.state, g2.closed_ms = GroupState.FAILED, T0 + 10_003
        led.group_state(g2)

        flat = make_order(None, 7, purpose=OrderPurpose.FLATTEN, ts_ms=T0 + 20_000, coid="qaflat1")
        flat.venue, flat.symbol, flat.side, flat.qty = "mt5", "BTCUSD", "buy", D("0.90")
        f = fill(flat, "103", "65200", ts=T0 + 20_001, fee="0.63")
        await book(led, flat, f)
        booked.append((flat, f))

        late = make_order(g2, 2, attempt=1, purpose=OrderPurpose.UNWIND, ts_ms=T0 + 25_000)
        late.side, late.qty = "sell", D(10)
        f = fill(late, "o4", "65150.5", ts=T0 + 30_000)
        await book(led, late, f)
        booked.append((late, f))
    finally:
        await led.close()
    return booked


def independent(booked: list[tuple[Order, Fill]], rate_usdt: Decimal) -> Decimal:
    """Cash flows summed from the fills, minus fees, plus each open position at its last fill price."""
    qpu = {"okx": OKX.qty_per_unit, "mt5": MT5.qty_per_unit}
    rate = {"USD": D(1), "USDT": rate_usdt}
    total = D(0)
    position: dict[str, Decimal] = {}
    last: dict[str, Decimal] = {}
    for order, f in sorted(booked, key=lambda of: of[1].ts_ms):
        ccy = "USD" if order.venue == "mt5" else "USDT"
        base = f.qty * qpu[order.venue]
        total += rate[ccy] * (base * f.price if order.side == "sell" else -base * f.price)
        total -= rate[f.fee_ccy] * f.fee
        position[order.venue] = position.get(order.venue, D(0)) + (base if order.side == "buy" else -base)
        last[order.venue] = f.price
    for venue, qty in position.items():
        total += rate["USD" if venue == "mt5" else "USDT"] * qty * last[venue]
    return total


async def read(path: Path, fn: Any, **kwargs: Any) -> Any:
    async with queries.open_reader(path) as db:
        return await fn(db, **kwargs)


async def test_equity_is_recomputed_from_the_fills_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    booked = await a_day(path)
    doc = await read(path, money.equity, now_ms=T0 + 60_000, rates={"USDT": D("0.9990")})
    assert doc["unknown_instruments"] == [] and doc["mark_source"] == "last_fill"
    assert doc["missing_rates"] == [] and doc["missing_marks"] == []
    assert D(doc["total"]) == independent(booked, D("0.9990"))
    assert D(doc["total"]) == D(doc["realized"]) + D(doc["unrealized"]) - D(doc["fees"]) + D(doc["carry"])
    # The runtime's object fed the same fills agrees to the digit.
    p = Portfolio([OKX, MT5])
    for order, f in booked:
        p.fill(venue=order.venue, symbol=order.symbol, side=order.side, qty=f.qty, price=f.price, fee=f.fee,
               fee_ccy=f.fee_ccy, ts_ms=f.ts_ms, trade_id=f.venue_trade_id)
    p.mark_at("okx", OKX.symbol, D("65150.5"), T0)
    p.mark_at("mt5", MT5.symbol, D("65200"), T0)
    rates = RateBook("USD")
    rates.set("USDT", D("0.9990"), T0, "test")
    assert p.equity(rates, T0).as_dict()["total"] == doc["total"]


async def test_without_a_rate_the_total_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    doc = await read(path, money.equity, now_ms=T0)
    assert doc["missing_rates"] == ["USDT"] and doc["total"] is None and doc["fees"] is None
    assert doc["by_currency"]["USD"]["total"] is not None and doc["by_currency"]["USDT"]["total"] is not None
    summary = await read(path, queries.summary, now_ms=T0)
    assert summary["equity"]["total"] is None
    assert set(summary["equity"]) >= {"currency", "realized", "unrealized", "fees", "carry", "total"}


async def test_positions_in_base_units_with_their_marks(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    doc = await read(path, money.positions, now_ms=T0 + 60_000, marks={("mt5", "BTCUSD"): D("65000")})
    rows = {(r["venue"], r["symbol"]): r for r in doc["positions"]}
    okx, mt5 = rows[("okx", "BTC-USDT-SWAP")], rows[("mt5", "BTCUSD")]
    # OKX: bought 10 + 10 contracts, sold 10 = +0.1 BTC; MT5: -0.1 -1.0 +0.9 = -0.2 BTC.
    assert (okx["qty"], okx["venue_qty"], mt5["qty"], mt5["venue_qty"]) == ("0.1", "10", "-0.2", "-0.2")
    assert doc["net_by_asset"] == {"BTC": "-0.1"}
    assert (mt5["mark"], mt5["mark_source"], okx["mark"], okx["mark_source"]) == (
        "65000", "given", "65150.5", "last_fill")
    # MT5 short 0.2 at the average of its open sells: 0.1 @ 65090.55 and 1.0 @ 65300, 0.9 bought back.
    avg = (D("0.1") * D("65090.55") + D(1) * D("65300")) / D("1.1")
    assert abs(D(mt5["avg_price"]) - avg) < D("1e-20")
    assert abs(D(mt5["unrealized"]) - D("-0.2") * (D(65000) - avg)) < D("1e-20")
    assert (okx["qty_decimals"], okx["venue_qty_decimals"], okx["price_decimals"]) == (2, 0, 1)
    assert doc["mark_source"] == "given+last_fill"


async def test_a_flatten_order_on_an_unknown_symbol_is_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0 + 40_000))
    try:
        flat = make_order(None, 8, purpose=OrderPurpose.FLATTEN, ts_ms=T0 + 40_000, coid="qaflat2")
        flat.venue, flat.symbol, flat.side, flat.qty = "binance", "BTCUSDT", "sell", D("0.5")
        await book(led, flat, fill(flat, "b1", "65000", ts=T0 + 40_001))
    finally:
        await led.close()
    doc = await read(path, money.equity, now_ms=T0, rates={"USDT": D(1)})
    assert doc["unknown_instruments"] == ["binance:BTCUSDT"] and doc["total"] is None
    known = await read(path, money.equity, now_ms=T0, rates={"USDT": D(1)}, instruments={BIN.key: BIN})
    assert known["unknown_instruments"] == [] and known["total"] is not None
    with pytest.raises(LedgerError, match="no such instrument"):
        await read(path, money.equity, now_ms=T0, marks={("okx", "ETH-USDT-SWAP"): D(1)})


async def test_mt5_swap_from_the_deal_reports_is_carry(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    booked = await a_day(path)
    led = await Ledger.open(path, clock=ManualClock(wall_ms=T0 + 50_000))
    try:
        cmd = make_command("c9", state=CommandState.ACCEPTED, ts_ms=T0 + 20_000)
        cmd.client_order_id = "qaflat1"
        cmd.fills.append(CommandFill(deal=103, order=4, position=5, volume=D("0.90"), price=D("65200"),
                                     commission=D("-0.63"), time_msc=T0 + 20_001, swap=D("-4.25")))
        await led.save(cmd)
    finally:
        await led.close()
    doc = await read(path, money.equity, now_ms=T0, rates={"USDT": D("0.9990")})
    assert doc["carry"] == "-4.25" and doc["by_currency"]["USD"]["carry"] == "-4.25"
    assert D(doc["total"]) == independent(booked, D("0.9990")) - D("4.25")


async def test_the_series_ends_at_the_equity(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    rates = {"USDT": D("0.9990")}
    series = await read(path, money.equity_series, interval_ms=0, rates=rates)
    equity = await read(path, money.equity, now_ms=T0, rates=rates)
    points = series["points"]
    assert len(points) == 7  # one per fill
    assert points[-1]["total"] == equity["total"] and points[-1]["ts_ms"] == T0 + 30_000
    minute = await read(path, money.equity_series, interval_ms=10_000, rates=rates)
    # Buckets of 10 s with fills: [T0, +10 s) and the three after it.
    assert [p["ts_ms"] for p in minute["points"]] == [T0 + 3, T0 + 10_002, T0 + 20_001, T0 + 30_000]
    since = await read(path, money.equity_series, interval_ms=10_000, since_ms=T0 + 15_000, rates=rates)
    assert since["points"] == minute["points"][2:]  # cumulative figures, later points only


async def test_one_pass_gives_the_whole_replay_and_the_equity_at_any_split(tmp_path: Path) -> None:
    """`replay_split` (a restart's replay and its day's start, one pass) is the whole replay
    plus what `replay(until_ms=)` marked at its last fills says, wherever the split falls: before
    every fill, between them (at one fill's own time: it is after the split), after them all.
    The whole replay is left unmarked, as a fresh one."""
    path = tmp_path / "l.db"
    booked = await a_day(path)
    async with queries.open_reader(path) as db:
        history = await money.read_history(db)
    rates = money.rate_book("USD", {"USDT": D("0.9990")}, T0)
    whole = money.replay(history)
    for split in (T0 - 1, T0 + 2, T0 + 10_001, T0 + 20_001, T0 + 30_000, T0 + 30_001):
        before = money.replay(history, until_ms=split)
        before.mark_last_fills()
        replayed, doc = money.replay_split(history, None, split, rates, T0 + 60_000)
        assert doc == money.equity_doc(before, rates, T0 + 60_000), split
        assert replayed.marks == {} and money.mark_source(replayed) == "none"
        assert replayed.portfolio.positions(T0) == whole.portfolio.positions(T0), split
        assert replayed.unknown == whole.unknown
    marked, _ = money.replay_split(history, None, T0 + 10_001, rates, T0)
    marked.mark_last_fills()
    whole.mark_last_fills()
    assert money.equity_doc(marked, rates, T0) == money.equity_doc(whole, rates, T0)
    assert D(money.equity_doc(whole, rates, T0)["total"]) == independent(booked, D("0.9990"))


async def test_the_history_is_read_once_and_says_what_it_was_not_read_with(tmp_path: Path) -> None:
    """Figures from a history read once equal the `db` readers' (each its own read); one that
    needs records the history was read without says so instead of counting nothing."""
    path = tmp_path / "l.db"
    await a_day(path)
    async with queries.open_reader(path) as db:
        full = await money.read_history(db, nets=True)
        bare = await money.read_history(db, rates=False)
        by_db = await money.equity(db, now_ms=T0, rates={"USDT": D("0.9990")})
        attribution = await money.group_attribution(db)
        series = await money.equity_series(db, interval_ms=0)
    assert money.equity_of(full, now_ms=T0, rates={"USDT": D("0.9990")}) == by_db
    assert money.attribute(full).groups() == attribution.groups()
    assert money.series_of(full, interval_ms=0)[0] == series
    assert set(full.instruments) == {OKX.key, MT5.key}
    with pytest.raises(ValueError, match="nets"):
        money.attribute(bare)
    with pytest.raises(ValueError, match="rates"):
        money.equity_of(bare, now_ms=T0)


async def test_an_unreadable_journaled_instrument_is_refused_naming_its_group(tmp_path: Path) -> None:
    """The instruments are parsed once per distinct record (every group journals them): one that
    cannot be read is still a LedgerError naming the group, never a guess."""
    path = tmp_path / "l.db"
    await a_day(path)
    con = sqlite3.connect(path)
    try:
        con.execute("UPDATE events SET payload = json_set(payload, '$.instruments.okx.lot_step', 'x') "
                    "WHERE kind = 'group_opened' AND group_id = 'g2'")
        con.commit()
    finally:
        con.close()
    with pytest.raises(LedgerError, match="group g2: unreadable instrument"):
        await read(path, money.ledger_instruments)


# -- the commands ----------------------------------------------------------------------------------
def cli(*args: str) -> Any:
    return CliRunner().invoke(ledger_app, list(args))


async def test_ledger_commands_json_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    booked = await a_day(path)
    summary = await asyncio.to_thread(cli, "summary", "--ledger", str(path), "--json", "--rate", "USDT=0.999")
    assert summary.exit_code == 0, summary.output
    eq = json.loads(summary.stdout)["equity"]
    assert eq["currency"] == "USD" and D(eq["total"]) == independent(booked, D("0.999"))
    human = await asyncio.to_thread(cli, "summary", "--ledger", str(path), "--rate", "USDT=0.999")
    assert human.exit_code == 0, human.output
    total_line = next(line for line in human.stdout.splitlines() if line.strip().startswith("= USD"))
    assert total_line.split()[-1] == f"{independent(booked, D('0.999')).quantize(D('0.01')):+,.2f}"
    assert "fees          1.33 USD, 0.12 USDT" in human.stdout  # per currency, 2 decimals
    positions = await asyncio.to_thread(cli, "positions", "--ledger", str(path), "--json")
    assert positions.exit_code == 0, positions.output
    assert {(r["venue"], r["qty"]) for r in json.loads(positions.stdout)["positions"]} == {
        ("okx", "0.1"), ("mt5", "-0.2")}
    table = await asyncio.to_thread(cli, "positions", "--ledger", str(path))
    assert table.exit_code == 0, table.output
    okx_row = next(line for line in table.stdout.splitlines() if "BTC-USDT-SWAP" in line)
    assert "65,150.5" in okx_row and "USDT" in okx_row and "+0.10" in okx_row
    series = await asyncio.to_thread(cli, "equity", "--ledger", str(path), "--json", "--interval", "0")
    assert series.exit_code == 0, series.output
    assert len(json.loads(series.stdout)["points"]) == 7
    chart = await asyncio.to_thread(cli, "equity", "--ledger", str(path), "--interval", "10")
    assert chart.exit_code == 0 and "no rate for USDT" in chart.stdout and "total USDT" in chart.stdout
    for out in (human.stdout, table.stdout, chart.stdout):
        assert "Decimal(" not in out and "{'" not in out and not re.search(r"\d\.\d{9,}", out)


@pytest.mark.parametrize("args", [
    ["--rate", "USDT"], ["--rate", "USDT=0"], ["--rate", "USDT=abc"], ["--rate", "U$=1"],
    ["--mark", "okx=1"], ["--mark", "kraken:BTC=1"], ["--mark", "okx:BTC-USDT-SWAP=-1"], ["--currency", "US D"],
])
async def test_bad_options_exit_2_with_a_message(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "l.db"
    await a_day(path)
    result = await asyncio.to_thread(cli, "summary", "--ledger", str(path), *args)
    assert result.exit_code == 2 and "quantarb:" in result.stderr and "Traceback" not in result.output
