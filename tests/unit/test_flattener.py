"""engine.flatten.Flattener on its own: what it sends, and what its report says.

Flatten was covered only end to end (the demo engine, real time, "every venue ends flat"),
which never shows a venue that cannot close, and so never the residual report the operator
relies on. Here the real HedgeOrchestrator routes flatten orders to scripted venues, the
positions are put straight into the RiskGate's exposure book, and the EA's side (account
reports, `close` by ticket) is a fake. Checked: every venue closes -> a flat report; a venue
that rejects, fills part, has no quote, or holds less than its minimum -> a residual line
with its note and `after` != 0; dust below one lot step is left and counts as flat; MT5
positions are closed one `close` per ticket from the EA's report, which is also the truth
for `before` and `after`. The assets whose dust a pass makes stale (`zeroed_assets`): only
those it left at zero on every venue with nothing in doubt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import RiskConfig
from core.instruments import Instrument
from core.models import Fill, Order, OrderPurpose, OrderState, Side, Venue
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.flatten import MT5_CLOSES_IN_FLIGHT, Flattener, zeroed_assets
from engine.orchestrator import HedgeOrchestrator
from mt5_bridge.bridge import PositionState
from tests.execution_support import BINANCE, INSTRUMENTS, MT5, OKX, ScriptedGateway

ZERO = Decimal(0)
TOUCH: dict[tuple[Venue, str], tuple[float, float]] = {
    ("okx", OKX.symbol): (60000.0, 60010.0),
    ("binance", BINANCE.symbol): (60005.0, 60015.0),
    ("mt5", MT5.symbol): (59990.0, 60000.0),
}
MAGIC = 7701


class FakeEa:
    """The EA's side of a flatten: account reports (one per call, in order) and `close`
    commands by ticket, answered FILLED unless `answers` says otherwise. Each close takes
    100 ms of the manual clock."""

    def __init__(self, clock: ManualClock, reports: list[list[PositionState] | None],
                 answers: Mapping[int, OrderState] | None = None) -> None:
        self.clock = clock
        self.reports = list(reports)
        self.answers = dict(answers or {})
        self.report_calls: list[int | None] = []
        self.closes: list[tuple[int, str, Side, Decimal, str, str]] = []

    async def positions(self, after_ms: int | None) -> list[PositionState] | None:
        self.report_calls.append(after_ms)
        return self.reports.pop(0)

    async def close(self, ticket: int, symbol: str, side: Side, volume: Decimal, group_id: str,
                    client_order_id: str) -> OrderUpdate:
        self.closes.append((ticket, symbol, side, volume, group_id, client_order_id))
        self.clock.advance(ms=100)
        state = self.answers.get(ticket, OrderState.FILLED)
        if state is OrderState.FILLED:
            fill = Fill("mt5", f"deal-{ticket}", client_order_id, volume, Decimal(59990), Decimal(0), "USD",
                        self.clock.time_ms())
            return OrderUpdate(client_order_id, state, f"t{ticket}", [fill])
        reason = "retcode 10018: market closed" if state is OrderState.REJECTED else ""
        return OrderUpdate(client_order_id, state, f"t{ticket}", [], reason)


def ticket(n: int, side: Side, volume: str) -> PositionState:
    return PositionState(n, MT5.symbol, side, Decimal(volume), Decimal(60000), MAGIC)


@dataclass
class Rig:
    clock: ManualClock
    gate: RiskGate
    orch: HedgeOrchestrator
    gateways: dict[Venue, ScriptedGateway]
    flattener: Flattener
    ea: FakeEa | None = None
    started_ms: int = 0
    placed: dict[str, Order] = field(default_factory=dict)

    def hold(self, venue: Venue, qty: str) -> None:
        self.gate.exposure.set_position(venue, "BTC", Decimal(qty))

    def position(self, venue: Venue) -> Decimal:
        return self.gate.exposure.position(venue, "BTC")

    async def run(self) -> dict[str, Any]:
        self.started_ms = self.clock.time_ms()
        report = await self.flattener.run()
        for gw in self.gateways.values():
            self.placed.update({coid: placed.order for coid, placed in gw.orders.items()})
        return report


def _rig(scripts: Mapping[Venue, list[str]] | None = None, *,
         touch: Mapping[tuple[Venue, str], tuple[float, float]] = TOUCH,
         instruments: Mapping[tuple[Venue, str], Instrument] = INSTRUMENTS, ea: FakeEa | None = None,
         clock: ManualClock | None = None) -> Rig:
    clock = clock or ManualClock()
    gate = RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))
    scripts = scripts or {}
    gateways: dict[Venue, ScriptedGateway] = {
        v: ScriptedGateway(v, scripts.get(v, ["fill"]), clock) for v in ("mt5", "okx", "binance")}
    ports: dict[Venue, ExecutionGateway] = dict(gateways)
    orch = HedgeOrchestrator(ports, instruments, gate, clock, EventLog(), poll_interval_s=0.0,
                             asset_of=dict.fromkeys(instruments, "BTC"))
    # As Runtime.flatten leaves them: halted, and only flatten orders may leave.
    gate.kill("flatten: test")
    orch.begin_flatten()
    flattener = Flattener(
        orch, gate, instruments, clock, lambda v, s: touch.get((v, s)), max_slippage_bps=15.0,
        mt5_positions=ea.positions if ea is not None else None,
        mt5_close=ea.close if ea is not None else None, retry_pause_s=0.0,
    )
    return Rig(clock, gate, orch, gateways, flattener, ea)


def _line(report: dict[str, Any], venue: Venue) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [ln for ln in report["lines"] if ln["venue"] == venue]
    assert len(lines) == 1, lines
    return lines[0]


def _values(line: dict[str, Any]) -> tuple[Decimal, Decimal, bool]:
    return Decimal(line["before"]), Decimal(line["after"]), line["flat"]


async def test_every_venue_closes_and_the_report_is_flat() -> None:
    rig = _rig()
    rig.hold("okx", "0.05")
    rig.hold("binance", "-0.03")
    rig.hold("mt5", "0.02")  # no EA report wired: MT5 is closed from the book like any venue
    report = await rig.run()

    assert report["flat"] is True and report["residual"] == []
    assert [(ln["venue"], ln["asset"], ln["symbol"]) for ln in report["lines"]] == [
        ("binance", "BTC", BINANCE.symbol), ("mt5", "BTC", MT5.symbol), ("okx", "BTC", OKX.symbol)]
    assert _values(_line(report, "okx")) == (Decimal("0.05"), ZERO, True)
    assert _values(_line(report, "binance")) == (Decimal("-0.03"), ZERO, True)
    assert _values(_line(report, "mt5")) == (Decimal("0.02"), ZERO, True)
    assert all(ln["note"] == "" for ln in report["lines"])
    # One reducing order per venue, in venue units, marketable within the slippage bound.
    sent = {v: _line(report, v)["orders"] for v in ("okx", "binance", "mt5")}
    assert all(len(ids) == 1 and ids[0].startswith(report["batch"]) for ids in sent.values())
    assert len({ids[0] for ids in sent.values()}) == 3
    okx, binance, mt5 = (rig.placed[sent[v][0]] for v in ("okx", "binance", "mt5"))
    assert {o.purpose for o in (okx, binance, mt5)} == {OrderPurpose.FLATTEN}
    assert all(o.reduce_only for o in (okx, binance, mt5))  # sent after a kill: only ever reducing
    assert (okx.side, okx.qty, binance.side, binance.qty, mt5.side, mt5.qty) == (
        "sell", Decimal(5), "buy", Decimal("0.030"), "sell", Decimal("0.02"))
    # Priced max_slippage_bps through the touch, put on the tick grid away from it (a buy
    # rounds up, a sell down): 60015 x 1.0015 = 60105.0225 -> 60105.1 on a 0.1 tick.
    assert (okx.price, binance.price, mt5.price) == (Decimal("59910.0"), Decimal("60105.1"), Decimal("59900.01"))
    assert {v: rig.position(v) for v in ("okx", "binance", "mt5")} == {"okx": ZERO, "binance": ZERO, "mt5": ZERO}
    assert rig.gate.exposure.reservations == {}


@pytest.mark.parametrize(
    ("script", "touch", "after", "note"),
    [
        (["reject"], TOUCH, "0.05", "{coid} rejected"),
        (["partial:0.4", "reject"], TOUCH, "0.03", "{coid} rejected"),  # 2 of 5 filled, then refused
        ([], {k: v for k, v in TOUCH.items() if k[0] != "okx"}, "0.05", "no quote to price the order"),
    ],
    ids=["rejected", "partly-filled", "no-quote"],
)
async def test_a_venue_that_cannot_close_is_a_residual_line(
    script: list[str], touch: dict[tuple[Venue, str], tuple[float, float]], after: str, note: str,
) -> None:
    rig = _rig({"okx": script}, touch=touch)
    rig.hold("okx", "0.05")
    rig.hold("binance", "-0.03")
    report = await rig.run()

    okx = _line(report, "okx")
    coid = okx["orders"][-1] if okx["orders"] else ""
    expected_orders = 0 if note.startswith("no quote") else len(script)
    assert len(okx["orders"]) == expected_orders
    assert okx["note"] == note.format(coid=coid)
    assert _values(okx) == (Decimal("0.05"), Decimal(after), False)
    assert rig.position("okx") == Decimal(after)
    assert report["flat"] is False
    assert report["residual"] == [okx]
    assert _values(_line(report, "binance")) == (Decimal("-0.03"), ZERO, True)  # the other venue still closes


async def test_an_ioc_the_book_left_is_tried_again_at_the_new_touch_until_flat() -> None:
    rig = _rig({"okx": ["partial:0.4", "partial:0.5", "fill"]})
    rig.hold("okx", "0.05")
    report = await rig.run()
    okx = _line(report, "okx")
    # 5 contracts: 2 filled, then 1 of the 3 left (floor of 1.5), then the last 2.
    assert len(okx["orders"]) == 3 and okx["orders"][1] == okx["orders"][0] + "a"
    assert _values(okx) == (Decimal("0.05"), ZERO, True) and okx["note"] == ""
    assert report["flat"] is True


async def test_a_flatten_gives_up_after_five_attempts_and_says_what_is_left() -> None:
    rig = _rig({"okx": ["partial:0.2"] * 5})
    rig.hold("okx", "0.50")
    report = await rig.run()
    okx = _line(report, "okx")
    assert len(okx["orders"]) == 5  # each fills a fifth of what is left: never all of it
    assert okx["note"] == f"{okx['orders'][4]} expired" and report["flat"] is False
    assert _values(okx)[1] == rig.position("okx") and rig.position("okx") > 0


async def test_a_position_below_the_venue_minimum_is_a_residual_line() -> None:
    # A venue whose minimum order is ten lot steps.
    big_min = Instrument(venue="binance", symbol=BINANCE.symbol, pair="BTC", qty_per_unit=Decimal(1),
                         tick_size=Decimal("0.1"), lot_step=Decimal("0.001"), min_qty=Decimal("0.01"),
                         taker_fee_bps=5.0)
    rig = _rig(instruments={**INSTRUMENTS, big_min.key: big_min})
    rig.hold("binance", "-0.005")
    report = await rig.run()

    line = _line(report, "binance")
    assert (line["orders"], line["note"]) == ([], "below the venue minimum (0.01)")
    assert _values(line) == (Decimal("-0.005"), Decimal("-0.005"), False)
    assert report["flat"] is False and report["residual"] == [line]
    assert rig.gateways["binance"].places == []


async def test_dust_below_one_lot_step_is_left_and_counts_as_flat() -> None:
    rig = _rig()
    rig.hold("okx", "0.004")  # an OKX contract is 0.01 BTC
    report = await rig.run()

    line = _line(report, "okx")
    assert (line["orders"], line["note"]) == ([], "")
    assert _values(line) == (Decimal("0.004"), Decimal("0.004"), True)
    assert report["flat"] is True and report["residual"] == []
    assert rig.gateways["okx"].places == []


@pytest.mark.parametrize(("okx_script", "okx_held", "zeroed"), [
    (["fill"], "0.05", ["BTC"]),  # okx and binance closed fully, mt5 found flat
    (["reject"], "0.05", []),  # a close refused: okx still holds it all
    (["partial:0.2"] * 5, "0.05", []),  # a close that gave up part way
    (["partial:0.4", "partial:0.5", "fill"], "0.05", ["BTC"]),  # IOCs the book left, then all of it
    (["fill"], "0.004", []),  # under a lot step: "flat" in the report, but not zero (it may be the dust)
])
async def test_only_an_asset_left_at_zero_on_every_venue_has_stale_dust(
    okx_script: list[str], okx_held: str, zeroed: list[str],
) -> None:
    """Claim: a flatten makes an asset's dust stale only when it found every venue's position
    of it flat or closed it fully; a close refused, partial, or an untradeable remainder keeps
    the dust (engine.flatten.zeroed_assets, which the runtime clears the DustBook by)."""
    rig = _rig({"okx": okx_script})
    rig.hold("okx", okx_held)
    rig.hold("binance", "-0.03")
    report = await rig.run()
    assert _line(report, "mt5")["before"] == "0"
    assert Decimal(_line(report, "binance")["after"]) == 0
    assert zeroed_assets(report) == zeroed


def test_an_mt5_line_in_doubt_keeps_the_dust_though_it_reads_zero() -> None:
    """A line whose note says something went wrong (here MT5 with no report after its closes,
    `after` the book's guess) is in doubt: its asset's dust stays, whatever `after` says."""
    line = {"venue": "mt5", "asset": "BTC", "symbol": MT5.symbol, "before": "0.05", "after": "0",
            "orders": ["FLx0"], "flat": True, "note": "no report from the terminal after the closes"}
    other = {**line, "venue": "okx", "symbol": OKX.symbol, "note": ""}
    assert zeroed_assets({"lines": [other, line]}) == []
    assert zeroed_assets({"lines": [other]}) == ["BTC"]
    assert zeroed_assets({"lines": [other, {**line, "asset": "XAU"}]}) == ["BTC"]


async def test_mt5_positions_are_closed_per_ticket_from_the_ea_report() -> None:
    clock = ManualClock()
    # A hedging account: two longs and a short. The book (0.01) is stale; the report is the truth.
    ea = FakeEa(clock, [[ticket(11, "buy", "0.03"), ticket(12, "buy", "0.02"), ticket(13, "sell", "0.01")], []])
    rig = _rig(ea=ea, clock=clock)
    rig.hold("mt5", "0.01")
    report = await rig.run()

    line = _line(report, "mt5")
    batch = report["batch"]
    assert len(line["orders"]) == 3
    assert ea.closes == [
        (11, MT5.symbol, "sell", Decimal("0.03"), batch, line["orders"][0]),
        (12, MT5.symbol, "sell", Decimal("0.02"), batch, line["orders"][1]),
        (13, MT5.symbol, "buy", Decimal("0.01"), batch, line["orders"][2]),
    ]
    assert rig.gateways["mt5"].places == []  # by ticket, never a new opposite position
    # The first report is one made after flatten began, the second one after the closes.
    assert ea.report_calls == [rig.started_ms, rig.started_ms + 300]
    assert _values(line) == (Decimal("0.04"), ZERO, True)
    assert line["note"] == ""
    assert report["flat"] is True
    assert rig.position("mt5") == 0


async def test_an_mt5_ticket_that_does_not_close_is_a_residual_line() -> None:
    clock = ManualClock()
    ea = FakeEa(clock, [[ticket(11, "buy", "0.03"), ticket(12, "buy", "0.02")], [ticket(12, "buy", "0.02")]],
                answers={12: OrderState.REJECTED})
    rig = _rig(ea=ea, clock=clock)
    report = await rig.run()

    line = _line(report, "mt5")
    assert [c[0] for c in ea.closes] == [11, 12]
    assert line["note"] == f"ticket 12: {line['orders'][1]} rejected retcode 10018: market closed"
    assert _values(line) == (Decimal("0.05"), Decimal("0.02"), False)
    assert report["flat"] is False and report["residual"] == [line]
    assert rig.position("mt5") == Decimal("0.02")


async def test_the_ea_report_after_the_closes_decides_what_is_left_on_mt5() -> None:
    """A close the engine heard nothing final about (expired on our side), but the EA's next
    report shows the ticket gone: MT5 is flat, whatever the order's own state says."""
    clock = ManualClock()
    ea = FakeEa(clock, [[ticket(11, "buy", "0.03"), ticket(12, "buy", "0.02")], []],
                answers={12: OrderState.EXPIRED})
    rig = _rig(ea=ea, clock=clock)
    report = await rig.run()

    line = _line(report, "mt5")
    assert line["note"] == f"ticket 12: {line['orders'][1]} expired"
    assert _values(line) == (Decimal("0.05"), ZERO, True)
    assert report["flat"] is True
    assert rig.position("mt5") == 0  # the book follows the report (the fills alone left 0.02)


async def test_without_an_ea_report_mt5_is_closed_from_the_book() -> None:
    clock = ManualClock()
    ea = FakeEa(clock, [None])  # the terminal never reported
    rig = _rig(ea=ea, clock=clock)
    rig.hold("mt5", "-0.02")
    report = await rig.run()

    line = _line(report, "mt5")
    assert ea.report_calls == [rig.started_ms] and ea.closes == []
    [order] = [rig.placed[coid] for coid in line["orders"]]
    assert (order.side, order.qty, order.purpose) == ("buy", Decimal("0.02"), OrderPurpose.FLATTEN)
    assert _values(line) == (Decimal("-0.02"), ZERO, True)


async def test_no_ea_report_after_the_closes_is_not_reported_flat() -> None:
    clock = ManualClock()
    ea = FakeEa(clock, [[ticket(11, "buy", "0.03"), ticket(12, "buy", "0.02")], None],
                answers={12: OrderState.REJECTED})
    rig = _rig(ea=ea, clock=clock)
    report = await rig.run()

    line = _line(report, "mt5")
    assert rig.position("mt5") == Decimal("0.02")  # the book knows ticket 12 is still open
    assert line["flat"] is False
    assert Decimal(line["after"]) == Decimal("0.02")


class QueueingEa(FakeEa):
    """An EA whose closes take turns on the event loop, counting how many are in flight."""

    def __init__(self, clock: ManualClock, reports: list[list[PositionState] | None]) -> None:
        super().__init__(clock, reports)
        self.in_flight = 0
        self.most_in_flight = 0

    async def close(self, ticket: int, symbol: str, side: Side, volume: Decimal, group_id: str,
                    client_order_id: str) -> OrderUpdate:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return await super().close(ticket, symbol, side, volume, group_id, client_order_id)
        finally:
            self.in_flight -= 1


async def test_mt5_closes_go_out_a_few_at_a_time_and_every_ticket_closes() -> None:
    """A hedging account with tickets both ways (the accelerated soak held hundreds): the EA runs
    one poll's commands one after another, so closes sent all at once expired behind each other
    and the tickets piled up from flatten to flatten. At most MT5_CLOSES_IN_FLIGHT at a time,
    each made when its turn comes, in the report's order."""
    clock = ManualClock()
    tickets = [ticket(100 + i, "buy" if i % 2 else "sell", "0.01") for i in range(20)]
    ea = QueueingEa(clock, [tickets, []])
    rig = _rig(ea=ea, clock=clock)
    report = await rig.run()
    line = _line(report, "mt5")
    assert ea.most_in_flight == MT5_CLOSES_IN_FLIGHT
    assert [c[0] for c in ea.closes] == [t.ticket for t in tickets]
    assert len(line["orders"]) == 20 and line["note"] == ""
    assert report["flat"] is True


def test_closes_in_flight_must_be_one_or_more() -> None:
    with pytest.raises(ValueError, match="mt5_closes_in_flight 0"):
        Flattener(_rig().orch, RiskGate.from_config(ManualClock(), RiskConfig()), INSTRUMENTS, ManualClock(),
                  lambda v, s: None, max_slippage_bps=15.0, mt5_closes_in_flight=0)
