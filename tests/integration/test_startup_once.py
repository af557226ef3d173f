"""A restart reads and replays the ledger once (a start-up took 24-29 s on 65,000 fills because
the equity's restore read the fills three times and replayed them twice, once for the day's
start), and what it restores is what it restored before: the equity, the positions, the day's
start, the groups still held, the nets of the settled ones and the groups left unclosed. A real
Runtime on the demo config over a real SQLite ledger that spans two UTC days, with groups,
nets, funding, MT5 swap and journaled rates. Also: a group's detail, which attributes the whole
ledger, is computed off the event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.breakers import DAY_MS
from core.clock import ManualClock
from core.commands import CommandFill, CommandState
from core.currency import RateInForce
from core.models import GroupState
from engine.runtime import Runtime
from ledger import Ledger, money, queries
from tests.integration.test_risk_runtime import _isolated, _runtime  # noqa: F401  (autouse fixture)
from tests.unit.test_ledger_money import book, fill
from tests.unit.test_ledger_support import T0, make_command, make_group, make_order

D = Decimal
MIDNIGHT = (T0 // DAY_MS + 1) * DAY_MS  # between the ledger's two days
NOW = MIDNIGHT + 5 * 3_600_000  # the restart: 05:00 on the second day


async def _hedge(led: Ledger, gid: str, way: int, ts: int, deal: int, okx: str, mt5: str,
                 okx_then: str | None = None) -> None:
    """A hedged group: `way` +1 buys 10 OKX contracts and sells 0.10 lot MT5, -1 the other way
    (with `okx_then`, 4 contracts at `okx`, 6 at that); the MT5 fill's trade id is the deal
    `deal` (what an MT5 swap report names)."""
    g = make_group(gid, ts)
    led.group_opened(g)
    b, s = make_order(g, 0, ts_ms=ts), make_order(g, 1, ts_ms=ts)
    if way < 0:
        b.side, s.side = "sell", "buy"
    if okx_then is None:
        await book(led, b, fill(b, f"{gid}o", okx, ts=ts + 1))
    else:
        await book(led, b, fill(b, f"{gid}o", okx, D(4), ts=ts + 1), fill(b, f"{gid}p", okx_then, D(6), ts=ts + 3))
    await book(led, s, fill(s, str(deal), mt5, ts=ts + 2, fee="0"))
    g.state = GroupState.HEDGED
    led.group_state(g)


async def _two_days(path: Path) -> None:
    """Day one: g1 and g3 buy OKX and sell MT5, g2 the other way; g2 nets g1 flat (their rows
    still `hedged`: the run stopped before closing them); g3 is held, funding on OKX, swap on
    g3's MT5 deal, a USDT rate. Day two: another USDT rate, g4 the other way (settled: it nets
    against g3 at the restart) and g5 held, at other prices."""
    clock = ManualClock(wall_ms=T0)
    led = await Ledger.open(path, clock=clock)
    try:
        await _hedge(led, "g1", +1, T0, 101, okx="65000", mt5="65100")
        await _hedge(led, "g3", +1, T0 + 10, 103, okx="65300", mt5="65390.5")
        await _hedge(led, "g2", -1, T0 + 20, 102, okx="65200", mt5="65150")
        await led.flush()
        async with queries.open_reader(path) as db:
            live = await money.group_attribution(db, keep_flat=False)
        live.mark_settled(["g1"])
        nets = live.settle("g2", T0 + 100)
        assert {(n.long_group, n.short_group) for n in nets} == {("g1", "g2"), ("g2", "g1")}
        for n in nets:
            led.net(n)
        clock.advance(ms=2_000)
        led.rate(RateInForce("USDT", "USD", D("0.9990"), "book", "okx:USDT-USD", clock.time_ms()))
        led.funding("okx", "BTC-USDT-SWAP", T0 + 3_000, D("0.0001"), D("65310"), D(10), D("-0.6531"), "USDT")
        cmd = make_command("c9", state=CommandState.ACCEPTED, ts_ms=T0 + 10)
        cmd.group_id, cmd.client_order_id = "g3", "qag3m"
        cmd.fills.append(CommandFill(deal=103, order=4, position=5, volume=D("0.10"), price=D("65390.5"),
                                     commission=D(0), time_msc=T0 + 12, swap=D("-1.25")))
        await led.save(cmd)
        clock.advance(ms=MIDNIGHT - clock.time_ms() + 3_600_000)  # 01:00 on day two
        led.rate(RateInForce("USDT", "USD", D("0.9980"), "book", "okx:USDT-USD", clock.time_ms()))
        await _hedge(led, "g4", -1, clock.time_ms(), 104, okx="65500", mt5="65480")
        await _hedge(led, "g5", +1, clock.time_ms() + 60_000, 105, okx="65610", mt5="65700", okx_then="65650")
        await led.flush()
    finally:
        await led.close()


def _count(monkeypatch: pytest.MonkeyPatch, calls: Counter[str], *names: str) -> None:
    """Count the calls of `ledger.money` functions (looked up by name where they are called)."""
    for name in names:
        fn: Callable[..., Any] = getattr(money, name)
        if asyncio.iscoroutinefunction(fn):
            async def counted_async(*a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
                calls[__name] += 1
                return await __fn(*a, **k)
            monkeypatch.setattr(money, name, functools.wraps(fn)(counted_async))
        else:
            def counted(*a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
                calls[__name] += 1
                return __fn(*a, **k)
            monkeypatch.setattr(money, name, functools.wraps(fn)(counted))


async def _restart(path: Path) -> tuple[Runtime, dict[str, Any]]:
    """Open the ledger in a Runtime at NOW; the figures it restored (its background closes done)."""
    rt = _runtime(path, ManualClock(wall_ms=NOW))
    await rt.open_ledger()
    for _ in range(500):
        if not rt.running_background():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("closing the unclosed groups from their ledger rows did not finish")
    equity = rt.equity.equity(NOW)
    figures = {
        **{k: equity[k] for k in ("realized", "unrealized", "fees", "carry", "total")},
        "day_change": rt.equity.day_change(NOW),
        "positions": {f"{p.venue}:{p.symbol}": (p.qty, p.realized, {c: str(v) for c, v in p.carry.items()})
                      for p in rt.equity.positions(NOW)},
        "remembered": rt.equity.remembered_groups(),
    }
    return rt, figures


async def test_a_restart_reads_and_replays_the_ledger_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "two-days.db"
    await _two_days(path)
    fills = 11
    calls: Counter[str] = Counter()
    _count(monkeypatch, calls, "ledger_instruments", "fill_rows", "swap_rows", "funding_rows", "rate_rows",
           "net_rows", "apply_fill", "apply_swap", "apply_funding", "attribute_fill", "settled_groups")
    rt, _ = await _restart(path)
    await rt.close_ledger()
    assert rt.equity.restore_error is None
    # Each record read once; the portfolio replays each fill once (the day's start comes from the
    # same pass), and the group attribution books each once.
    assert dict(calls) == {"ledger_instruments": 1, "fill_rows": 1, "swap_rows": 1, "funding_rows": 1,
                           "rate_rows": 1, "net_rows": 1, "apply_fill": fills, "apply_swap": 1,
                           "apply_funding": 1, "attribute_fill": fills, "settled_groups": 1}


async def test_a_restart_restores_the_figures_it_did_before(tmp_path: Path) -> None:
    """Pinned to what the restore computed when it read and replayed per figure (the code
    before this change gave these on this ledger)."""
    path = tmp_path / "two-days.db"
    await _two_days(path)
    rt, figures = await _restart(path)
    try:
        assert rt.ledger is not None
        await rt.ledger.flush()
    finally:
        await rt.close_ledger()
    assert figures == {
        "realized": "26.05", "unrealized": "1.6", "fees": "0.18", "carry": "-1.9031", "total": "25.5669",
        "day_change": D("-1.4807431"),  # the equity at midnight: day one's fills marked at its last prices
        "positions": {
            "mt5:BTCUSD": (D("-0.10"), D("-13.950"), {"USD": "-1.25"}),
            "okx:BTC-USDT-SWAP": (D("0.10"), D("40.00"), {"USDT": "-0.6531"}),
        },
        "remembered": 1,  # g5, still held
    }
    async with queries.open_reader(path) as db:
        nets = await money.net_rows(db)
        rows = {r["group_id"]: (r["state"], r["realized_pnl"]) for r in await queries.groups(db)}
    # The restart netted g4 (settled, day two) against g3, and closed g1, g2 (flat since day
    # one's nets: left unclosed by the run before), g3 and g4 from their ledger rows.
    assert [(n.long_group, n.short_group, n.qty, n.price) for _, n in nets[2:]] == [
        ("g4", "g3", D("0.10"), D("65435.25")), ("g3", "g4", D("0.10"), D("65400"))]
    assert rows == {"g1": ("closed", "7.47"), "g2": ("closed", "7.47"), "g3": ("closed", "5.4950"),
                    "g4": ("closed", "5.4950"), "g5": ("hedged", "6.54")}


async def test_a_groups_detail_is_computed_off_the_event_loop(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The workstation's group detail (`ledger show`) attributes the whole ledger to find one
    group's money: on the engine's reader it held the event loop (about 4 s a detail on a
    65,000-fill ledger, quotes and orders waiting). It runs in a worker thread, as the analytics."""
    path = tmp_path / "two-days.db"
    await _two_days(path)
    threads: list[str] = []
    attribute = money.attribute

    def noted(*a: Any, **k: Any) -> Any:
        threads.append(threading.current_thread().name)
        return attribute(*a, **k)

    rt, _ = await _restart(path)
    try:
        monkeypatch.setattr(money, "attribute", noted)
        detail = await rt.view.group_detail("g5")
    finally:
        await rt.close_ledger()
    assert detail is not None and detail["attribution"]["positions"] == {
        "mt5:BTCUSD": "-0.1", "okx:BTC-USDT-SWAP": "0.1"}
    assert len(threads) == 1 and threads[0] != threading.main_thread().name
