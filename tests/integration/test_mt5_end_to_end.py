"""The MT5 venue end to end over real HTTP on 127.0.0.1, with no fakes on either side.

quantarb's side is the real listener (`EmbeddedServer` + `create_app` + `Mt5Bridge` +
`CommandQueue` on an `InMemoryCommandStore`) and the real `MT5Gateway`; the terminal's side
is the real `EaSimulator` trading a `SimBroker`. Every request is signed and goes through a
socket. Checked: ticks become quotes; a buy is filled with the deal ticket as trade id and a
close by ticket flattens it; an EA restarted in the middle of a command executes it exactly
once; a command nobody acknowledges expires and a late EA refuses it; a listener restarted on
the same store redelivers an un-acked command, executed once; account reports keep our magic's
positions; and the demo runtime runs an MT5 leg through all of it.

Each wait is bounded (`T`); the EA polls every 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import Clock, ManualClock, RealClock
from core.commands import CommandState
from core.config import demo_config
from core.instruments import Instrument
from core.models import Order, OrderPurpose, OrderState, Quote, Side
from core.ports import OrderUpdate
from mt5_bridge.app import create_app
from mt5_bridge.auth import SignatureVerifier, sign
from mt5_bridge.bridge import Mt5Bridge
from mt5_bridge.gateway import MT5Gateway, command_id_for
from mt5_bridge.queue import CommandQueue, InMemoryCommandStore
from mt5_bridge.server import EmbeddedServer
from sim.ea_sim import EaSimulator, Mt5Tick
from sim.mt5_broker import BrokerBehaviour, Deal, SimBroker, SymbolSpec, TradeRequest
from sim.mt5_swap import SwapTerms
from tests.waiting import until

TERMINAL = "T1"
SECRET = b"end-to-end-secret-of-T1"
MAGIC = 7701
SYMBOL = "XAUUSD"
T = 10.0  # bound on every wait


def instrument() -> Instrument:
    return Instrument(
        venue="mt5", symbol=SYMBOL, pair="XAU", qty_per_unit=Decimal(100), tick_size=Decimal("0.01"),
        lot_step=Decimal("0.01"), min_qty=Decimal("0.01"), taker_fee_bps=0.0,
    )


class Book:
    """The terminal's market: what the EA reads with SymbolInfoTick and the broker fills at."""

    def __init__(self, bid: float = 2650.11, ask: float = 2650.31) -> None:
        self.quotes: dict[str, tuple[float, float, int]] = {}
        self.set(bid, ask)

    def set(self, bid: float, ask: float, symbol: str = SYMBOL) -> int:
        time_msc = time.time_ns() // 1_000_000
        self.quotes[symbol] = (bid, ask, time_msc)
        return time_msc

    def touch(self, symbol: str) -> tuple[float, float] | None:
        quote = self.quotes.get(symbol)
        return None if quote is None else quote[:2]

    def __call__(self) -> list[Mt5Tick]:
        return [Mt5Tick(s, b, a, t) for s, (b, a, t) in self.quotes.items()]


@dataclass
class Listener:
    """quantarb's MT5 side on one store: verifier, queue, bridge, server and gateway."""

    store: InMemoryCommandStore
    queue: CommandQueue
    bridge: Mt5Bridge
    server: EmbeddedServer
    gateway: MT5Gateway
    quotes: list[Quote]


async def start_listener(
    store: InMemoryCommandStore, *, port: int = 0, ttl_ms: int = 5000, grace_ms: int = 300,
    clock: Clock | None = None,
) -> Listener:
    clock = clock if clock is not None else RealClock()
    queue = CommandQueue(store, clock)
    await queue.restore()
    quotes: list[Quote] = []
    bridge = Mt5Bridge(
        verifier=SignatureVerifier({TERMINAL: SECRET}, clock),
        queue=queue,
        clock=clock,
        symbols={TERMINAL: [SYMBOL]},
        quote_sink=quotes.append,
        magic=MAGIC,
    )
    server = EmbeddedServer(create_app(bridge), "127.0.0.1", port)
    await server.start()
    gateway = MT5Gateway(queue, TERMINAL, {SYMBOL: instrument()}, clock, magic=MAGIC, deviation_points=20,
                         filling="IOC", command_ttl_ms=ttl_ms, grace_ms=grace_ms)
    return Listener(store, queue, bridge, server, gateway, quotes)


@dataclass
class Terminal:
    """The MT5 terminal: its market, its broker account, and the EA simulators run on it."""

    book: Book = field(default_factory=Book)
    broker: SimBroker = field(init=False)
    tasks: list[tuple[EaSimulator, asyncio.Task[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = SimBroker(self.book.touch, seed=1, specs={SYMBOL: SymbolSpec(contract_size=100.0)},
                                behaviour=BrokerBehaviour(commission_per_lot=7.0))

    def start_ea(self, url: str, **kw: Any) -> EaSimulator:
        kw.setdefault("timer_ms", 20)
        kw.setdefault("account_every_s", 0.2)
        ea = EaSimulator(url, TERMINAL, SECRET, [SYMBOL], self.broker, self.book, RealClock(), magic=MAGIC, **kw)
        self.tasks.append((ea, asyncio.create_task(ea.run(), name=f"ea-{len(self.tasks)}")))
        return ea

    async def stop_all(self) -> None:
        for ea, task in self.tasks:
            await ea.stop(grace_s=0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    def deals_of(self, command_id: str) -> list[Deal]:
        return self.broker.deals_with_comment(command_id)


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Listener, Terminal]]:
    listener = await start_listener(InMemoryCommandStore())
    terminal = Terminal()
    try:
        yield listener, terminal
    finally:
        await terminal.stop_all()
        await listener.server.stop()


def order(client_order_id: str, qty: str = "0.10", side: Side = "buy") -> Order:
    return Order(client_order_id=client_order_id, group_id="g-e2e", venue="mt5", symbol=SYMBOL, side=side,
                 qty=Decimal(qty), price=Decimal("2650.31"), purpose=OrderPurpose.ENTRY,
                 created_ms=time.time_ns() // 1_000_000)


def assert_fills_are_deals(update: OrderUpdate, deals: list[Deal]) -> None:
    assert [f.venue_trade_id for f in update.fills] == [str(d.ticket) for d in deals]
    assert [(f.qty, f.price, f.fee) for f in update.fills] == [
        (Decimal(repr(d.volume)), Decimal(repr(d.price)), -Decimal(repr(d.commission))) for d in deals
    ]
    assert update.venue_order_id == str(deals[0].order)


# ------------------------------------------------------------------------------------------ (a)


async def test_ticks_from_the_ea_reach_the_quote_sink(rig: tuple[Listener, Terminal]) -> None:
    listener, terminal = rig
    first_ms = terminal.book.quotes[SYMBOL][2]
    ea = terminal.start_ea(listener.server.url)
    await until(lambda: len(listener.quotes) >= 1, what="first quote")
    second_ms = terminal.book.set(2651.02, 2651.30)
    await until(lambda: len(listener.quotes) >= 2 and ea.ticks_sent >= 2, what="second quote")

    first, second = listener.quotes[:2]
    assert (first.venue, first.symbol, first.bid, first.ask, first.venue_ts_ms) == (
        "mt5", SYMBOL, 2650.11, 2650.31, first_ms)
    assert (second.bid, second.ask, second.venue_ts_ms) == (2651.02, 2651.30, second_ms)
    assert math.isinf(first.bid_size) and math.isinf(first.ask_size)
    assert 0 < first.recv_ns <= second.recv_ns
    health = listener.bridge.health(TERMINAL)
    assert health.ticks == len(listener.quotes) == ea.ticks_sent
    assert health.last_tick_ns == listener.quotes[-1].recv_ns
    assert sum(listener.bridge.rejected.values()) == 0 and ea.http_errors == 0


# ------------------------------------------------------------------------------------------ (b)


async def test_place_fills_with_the_deal_ticket_and_close_by_ticket_flattens(
    rig: tuple[Listener, Terminal],
) -> None:
    listener, terminal = rig
    terminal.start_ea(listener.server.url)

    opened = await asyncio.wait_for(listener.gateway.place(order("e2e-open-1")), T)
    assert opened.state is OrderState.FILLED, opened
    deals = terminal.deals_of("e2e-open-1")
    assert [(d.side, d.entry, d.volume, d.magic) for d in deals] == [("buy", "in", 0.1, MAGIC)]
    assert_fills_are_deals(opened, deals)
    [position] = terminal.broker.positions(MAGIC)
    assert (position.ticket, position.type, position.volume, position.magic) == (deals[0].position, "buy", 0.1, MAGIC)
    cmd = listener.queue.get("e2e-open-1")
    assert cmd is not None and cmd.state is CommandState.ACCEPTED and cmd.retcode == 10009

    closed = await asyncio.wait_for(
        listener.gateway.close_position(position.ticket, SYMBOL, "sell", Decimal("0.10"), "g-e2e", "e2e-close-1"),
        T,
    )
    assert closed.state is OrderState.FILLED, closed
    close_deals = terminal.deals_of("e2e-close-1")
    assert [(d.side, d.entry, d.position, d.volume) for d in close_deals] == [("sell", "out", position.ticket, 0.1)]
    assert_fills_are_deals(closed, close_deals)
    assert terminal.broker.positions() == []
    assert terminal.broker.requests == 2 and len(terminal.broker.history_deals()) == 2


# ------------------------------------------------------------------------------------------ (c)


async def test_ea_restart_during_execution_executes_exactly_once(rig: tuple[Listener, Terminal]) -> None:
    listener, terminal = rig
    first = terminal.start_ea(listener.server.url, fill_latency_ms=(5000.0, 5000.0))  # stuck in OrderSend
    placing = asyncio.create_task(listener.gateway.place(order("e2e-restart-1")))
    await until(lambda: first.commands_seen >= 1, what="command served to the first EA")
    await first.stop(grace_s=0.05)  # the EA dies before OrderSend returns
    assert terminal.broker.requests == 0 and not placing.done()
    cmd = listener.queue.get("e2e-restart-1")
    assert cmd is not None and cmd.state is CommandState.DELIVERED

    second = terminal.start_ea(listener.server.url)  # a new EA on the same terminal and account
    update = await asyncio.wait_for(placing, T)
    await asyncio.sleep(0.2)  # more timer events, more deliveries: nothing more may happen

    assert update.state is OrderState.FILLED, update
    deals = terminal.deals_of("e2e-restart-1")
    assert len(deals) == 1 and len(update.fills) == 1
    assert_fills_are_deals(update, deals)
    assert terminal.broker.requests == 1 and len(terminal.broker.history_deals()) == 1
    assert second.executed == 1 and first.executed == 0
    cmd = listener.queue.get("e2e-restart-1")
    assert cmd is not None and cmd.deliveries >= 2 and [f.deal for f in cmd.fills] == [deals[0].ticket]
    assert len(terminal.broker.positions(MAGIC)) == 1


class _FailingReports(httpx.AsyncBaseTransport):
    """Real HTTP, except that acks and fills fail to connect (the EA dies before reporting)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/mt5/ack", "/mt5/fill"):
            raise httpx.ConnectError("reports are down", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_ea_restart_after_execution_reports_and_does_not_execute_again(
    rig: tuple[Listener, Terminal],
) -> None:
    listener, terminal = rig
    first = terminal.start_ea(listener.server.url, transport=_FailingReports())
    placing = asyncio.create_task(listener.gateway.place(order("e2e-restart-2")))
    await until(lambda: first.executed == 1 and first.pending_reports > 0, what="execution without a report")
    await first.stop(grace_s=0.05)
    cmd = listener.queue.get("e2e-restart-2")
    assert cmd is not None and cmd.state is CommandState.DELIVERED and not placing.done()

    # The new EA re-reports its recent deals on start (the fill proves execution), and would
    # find the deal by its comment in the history if the command were served again.
    second = terminal.start_ea(listener.server.url)
    update = await asyncio.wait_for(placing, T)
    await asyncio.sleep(0.2)

    assert update.state is OrderState.FILLED, update
    deals = terminal.deals_of("e2e-restart-2")
    assert len(deals) == 1 and len(update.fills) == 1
    assert_fills_are_deals(update, deals)
    assert terminal.broker.requests == 1 and second.executed == 0 and second.fills_sent >= 1
    cmd = listener.queue.get("e2e-restart-2")
    assert cmd is not None and cmd.state is CommandState.ACCEPTED and [f.deal for f in cmd.fills] == [deals[0].ticket]


# ------------------------------------------------------------------------------------------ (d)


class _LateResponses(httpx.AsyncBaseTransport):
    """Real HTTP; the first answer that carries a command reaches the EA `delay_s` late, as
    when the terminal freezes in `WebRequest` (the listener has served it meanwhile)."""

    def __init__(self, delay_s: float) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.delay_s = delay_s
        self.delayed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.delayed or request.url.path not in ("/mt5/tick", "/mt5/commands"):
            return response
        body = await response.aread()
        await response.aclose()
        if b'"id"' in body:
            self.delayed += 1
            await asyncio.sleep(self.delay_s)
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_unacknowledged_command_expires_and_a_late_ea_refuses_it() -> None:
    listener = await start_listener(InMemoryCommandStore(), ttl_ms=400, grace_ms=200)
    terminal = Terminal()
    try:
        # No EA at all: nobody takes the command; it expires and place says so.
        update = await asyncio.wait_for(listener.gateway.place(order("e2e-expire-1")), T)
        assert update.state is OrderState.EXPIRED and update.fills == []
        cmd = listener.queue.get("e2e-expire-1")
        assert cmd is not None and cmd.state is CommandState.EXPIRED and cmd.deliveries == 0

        # An EA that is served the next command but answers too late (frozen in WebRequest
        # past expires_msc): the command expires at the listener, the EA refuses it.
        late = _LateResponses(delay_s=1.0)
        ea = terminal.start_ea(listener.server.url, transport=late)
        await until(lambda: ea.polls + ea.tick_posts >= 2, what="EA contact")
        update = await asyncio.wait_for(listener.gateway.place(order("e2e-expire-2")), T)
        # The EA had it: until it answers, the outcome is unknown, not "expired".
        assert update.state is OrderState.UNKNOWN and update.fills == []
        cmd = listener.queue.get("e2e-expire-2")
        assert cmd is not None and cmd.state is CommandState.EXPIRED and cmd.deliveries >= 1
        await until(lambda: ea.expired_refused == 1 and ea.acks_sent == 1, what="the EA's expired ack")
        await asyncio.sleep(0.2)
        # The EA's own "expired" resolves it: a query by client order id now says expired.
        resolved = await listener.gateway.query(order("e2e-expire-2"))
        assert resolved.state is OrderState.EXPIRED and resolved.fills == []

        assert late.delayed == 1
        assert ea.executed == 0 and terminal.broker.requests == 0 and terminal.broker.history_deals() == []
        cmd = listener.queue.get("e2e-expire-2")
        assert cmd is not None and cmd.state is CommandState.EXPIRED and cmd.fills == []
        assert listener.queue.open_commands(TERMINAL) == []
        # The first one was never served to anybody after it expired.
        first = listener.queue.get("e2e-expire-1")
        assert first is not None and first.deliveries == 0 and ea.commands_seen == 1
        assert [c.state for c in listener.store.all()] == [CommandState.EXPIRED, CommandState.EXPIRED]
    finally:
        await terminal.stop_all()
        await listener.server.stop()


# ------------------------------------------------------------------------------------------ (e)


async def signed_poll(url: str) -> list[dict[str, Any]]:
    """One `GET /mt5/commands?wait_ms=1000`, signed as the EA signs it."""
    path = "/mt5/commands?wait_ms=1000"
    stamp = str(time.time_ns() // 1_000_000)
    headers = {"X-QA-Terminal": TERMINAL, "X-QA-Timestamp": stamp,
               "X-QA-Signature": sign(SECRET, stamp, "GET", path, b"")}
    async with httpx.AsyncClient(base_url=url, timeout=T) as client:
        resp = await client.get(path, headers=headers)
    assert resp.status_code == 200, resp.text
    commands: list[dict[str, Any]] = resp.json()["commands"]
    return commands


async def test_listener_restart_redelivers_from_the_store_and_the_ea_executes_once() -> None:
    store = InMemoryCommandStore()
    terminal = Terminal()
    first = await start_listener(store, ttl_ms=20_000)
    port = first.server.port
    second: Listener | None = None
    try:
        placing = asyncio.create_task(first.gateway.place(order("e2e-durable-1")))
        await until(lambda: first.queue.get("e2e-durable-1") is not None, what="enqueue")
        # Served once over HTTP (to an EA that then vanished), never acknowledged.
        assert [c["id"] for c in await signed_poll(first.server.url)] == ["e2e-durable-1"]
        assert [c.state for c in store.all()] == [CommandState.DELIVERED]

        # quantarb goes down: the listener, the queue and the waiting place() with it.
        placing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await placing
        await first.server.stop()

        ea = terminal.start_ea(f"http://127.0.0.1:{port}")  # the EA keeps trying meanwhile
        await until(lambda: ea.http_errors >= 2, what="EA failing against the stopped listener")
        assert terminal.broker.requests == 0

        # quantarb comes back on the same port with a new queue restored from the same store.
        second = await start_listener(store, port=port, ttl_ms=20_000)
        assert second.server.port == port and second.queue.get("e2e-durable-1") is not None
        # Placing the same order again finds the restored command: nothing is sent twice.
        update = await asyncio.wait_for(second.gateway.place(order("e2e-durable-1")), T)
        await asyncio.sleep(0.2)

        assert update.state is OrderState.FILLED, update
        deals = terminal.deals_of("e2e-durable-1")
        assert len(deals) == 1
        assert_fills_are_deals(update, deals)
        assert terminal.broker.requests == 1 and ea.executed == 1
        saved = [c for c in store.all() if c.command_id == "e2e-durable-1"]
        assert [(c.state, [f.deal for f in c.fills]) for c in saved] == [(CommandState.ACCEPTED, [deals[0].ticket])]
        assert len(store.all()) == 1
    finally:
        await terminal.stop_all()
        await first.server.stop()
        if second is not None:
            await second.server.stop()


# ------------------------------------------------------------------------------------------ (f)


async def test_account_reports_update_the_bridge_with_our_positions_only(rig: tuple[Listener, Terminal]) -> None:
    listener, terminal = rig
    foreign = terminal.broker.execute(TradeRequest(symbol=SYMBOL, type="sell", volume=0.2, magic=4242,
                                                   comment="manual trade"))
    assert foreign.done
    ea = terminal.start_ea(listener.server.url)
    await until(lambda: listener.bridge.account(TERMINAL) is not None, what="first account report")
    account = listener.bridge.account(TERMINAL)
    assert account is not None and account.positions == ()

    update = await asyncio.wait_for(listener.gateway.place(order("e2e-acct-1", "0.30")), T)
    assert update.state is OrderState.FILLED
    [ours] = terminal.broker.positions(MAGIC)
    reports = ea.accounts_sent

    def shows_ours() -> bool:
        acct = listener.bridge.account(TERMINAL)
        return ea.accounts_sent > reports and acct is not None and len(acct.positions) == 1

    await until(shows_ours, what="account report with our position")
    account = listener.bridge.account(TERMINAL)
    assert account is not None
    [position] = account.positions
    assert (position.ticket, position.symbol, position.side, position.volume, position.price_open, position.magic) == (
        ours.ticket, SYMBOL, "buy", Decimal("0.3"), Decimal(repr(ours.price_open)), MAGIC)
    expected = terminal.broker.account()  # the book does not move: the report is current
    assert (account.balance, account.equity, account.margin_free) == (
        expected.balance, expected.equity, expected.margin_free)
    assert len(terminal.broker.positions()) == 2  # the foreign position is there, not reported as ours
    assert listener.bridge.health(TERMINAL).account == account

    closed = await asyncio.wait_for(
        listener.gateway.close_position(ours.ticket, SYMBOL, "sell", Decimal("0.30"), "g-e2e", "e2e-acct-close"), T)
    assert closed.state is OrderState.FILLED
    reports = ea.accounts_sent

    def shows_none() -> bool:
        acct = listener.bridge.account(TERMINAL)
        return ea.accounts_sent > reports and acct is not None and acct.positions == ()

    await until(shows_none, what="account report without our position")


async def test_swap_charged_at_the_rollover_reaches_the_account_report_and_the_closing_fill() -> None:
    """The broker charges -30 points a night on a long (0.1 lot x 100 oz x 0.01 x -30 = -3.00 USD,
    `sim.mt5_swap`'s worked example); the EA reports it as POSITION_SWAP, then the closing deal's
    DEAL_SWAP, and quantarb's side reads both (the figures `RunningEquity` books as carry). The
    listener, the EA and the broker share one manual clock, so that a night passes at once."""
    clock = ManualClock(1_796_032_800_000)  # 2026-11-30 10:00 UTC, a Monday
    listener = await start_listener(InMemoryCommandStore(), clock=clock)
    terminal = Terminal()
    terminal.broker = SimBroker(terminal.book.touch, clock=clock, seed=1, specs={SYMBOL: SymbolSpec(
        contract_size=100.0, swap=SwapTerms("points", long=-30.0, short=-12.0))})
    try:
        ea = EaSimulator(listener.server.url, TERMINAL, SECRET, [SYMBOL], terminal.broker, terminal.book, clock,
                         magic=MAGIC, timer_ms=20, account_every_s=0.2)
        terminal.tasks.append((ea, asyncio.create_task(ea.run(), name="ea-swap")))
        opened = await asyncio.wait_for(listener.gateway.place(order("e2e-swap-1")), T)
        assert opened.state is OrderState.FILLED, opened
        [ours] = terminal.broker.positions(MAGIC)
        assert ours.swap == 0.0
        opening = listener.queue.get("e2e-swap-1")
        assert opening is not None and [f.swap for f in opening.fills] == [Decimal(0)]
        clock.advance(ms=24 * 3_600_000)  # Tuesday 10:00: Monday's rollover, one night
        assert await ea.post_account()  # the EA's timer runs on the (stopped) clock: report now
        account = listener.bridge.account(TERMINAL)
        assert account is not None and account.positions[0].swap == Decimal("-3.0")
        assert account.equity == pytest.approx(terminal.broker.balance + terminal.broker.floating_profit() - 3.0)

        closed = await asyncio.wait_for(listener.gateway.close_position(
            ours.ticket, SYMBOL, "sell", Decimal("0.10"), "g-e2e", "e2e-swap-close"), T)
        assert closed.state is OrderState.FILLED, closed
        cmd = listener.queue.get("e2e-swap-close")
        assert cmd is not None and [f.swap for f in cmd.fills] == [Decimal("-3.0")]
    finally:
        await terminal.stop_all()
        await listener.server.stop()


# ------------------------------------------------------------------------------------------ (g)


async def test_demo_runtime_runs_an_mt5_leg_through_the_listener_and_the_ea(tmp_path: Path) -> None:
    from engine.runtime import Runtime

    config = demo_config()
    assert config.venues.mt5 is not None
    config = config.model_copy(update={
        "listener": config.listener.model_copy(update={"port": 0}),
        "demo": config.demo.model_copy(update={"dislocation_every_s": 0.5}),
        # The EA refuses a command whose price the market has moved beyond its deviation; the
        # demo's BTC moves by dollars between decision and execution (20 points are 0.20 USD).
        "venues": config.venues.model_copy(update={
            "mt5": config.venues.mt5.model_copy(update={"deviation_points": 1_000_000})}),
    })
    runtime = Runtime(config, is_demo=True, secrets=None, ledger_path=str(tmp_path / "demo.db"))
    assert runtime.mt5 is not None
    await runtime.start()
    try:
        assert runtime.mt5.server.port != 0 and runtime.mt5.server.running

        def mt5_group_done() -> bool:
            return any(g.terminal and any(o.venue == "mt5" for o in g.orders) for g in runtime.orchestrator.closed)

        await until(mt5_group_done, within=15.0, what="a terminal hedge group with an MT5 leg")
        group = next(g for g in runtime.orchestrator.closed if any(o.venue == "mt5" for o in g.orders))
        mt5_orders = [o for o in group.orders if o.venue == "mt5"]
        entry = next(o for o in mt5_orders if o.purpose is OrderPurpose.ENTRY)
        assert entry.state is OrderState.FILLED, (group.state, entry)
        assert runtime.demo_ea is not None
        deals = runtime.demo_ea.broker.deals_with_comment(command_id_for(entry.client_order_id))
        assert deals and [f.venue_trade_id for f in entry.fills] == [str(d.ticket) for d in deals]
        assert entry.filled_qty == sum((Decimal(repr(d.volume)) for d in deals), Decimal(0))

        snap = runtime.view.snapshot()
        [row] = [f for f in snap.feeds if f.name == "mt5-DEMO"]
        assert row.transport == "http" and row.frames > 0 and row.venue == "mt5"
    finally:
        await runtime.stop()
    assert not runtime.mt5.server.running
    assert asyncio.all_tasks() == {asyncio.current_task()}


# ------------------------------------------------------------------------------------------ (h)


async def test_an_absurd_signed_mt5_tick_produces_no_command_and_a_sane_one_does(tmp_path: Path) -> None:
    """Issue 13: a signed XAUUSD tick at 100.0/100.1 while OKX and Binance show ~2650 reaches
    the engine through the real listener and is refused as a price outlier: no intent, no
    command. A sane tick with a real edge, through the same path, does become a command."""
    from pydantic import SecretStr

    from core.clock import ManualClock
    from core.models import Reason
    from engine.runtime import Runtime
    from engine.settings import Secrets
    from tests.mt5_support import Ea

    secret = "e2e-secret-of-the-demo-terminal"
    config = demo_config()
    config = config.model_copy(update={
        "listener": config.listener.model_copy(update={"port": 0}),
        "demo": config.demo.model_copy(update={"dislocation_every_s": 1e9}),  # no edge of its own
    })
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)  # the market only moves when told
    runtime = Runtime(config, is_demo=True, clock=clock, ledger_path=str(tmp_path / "demo.db"),
                      secrets=Secrets(mt5_terminals={"DEMO": SecretStr(secret)}))
    await runtime.start()
    try:
        assert runtime.mt5 is not None and runtime.listener_url is not None
        queue = runtime.mt5.queue

        def xau_quoted() -> bool:
            clock.advance(ms=5)  # the simulated market steps on this clock: quotes keep coming
            books = [runtime.compare.book(v, s) for v, s in
                     (("mt5", "XAUUSD"), ("okx", "XAUT-USDT-SWAP"), ("binance", "PAXGUSDT"))]
            return all(b is not None and b.has_quote for b in books)

        await until(xau_quoted, what="XAU quoted on all three venues (feeds and the EA simulator)")
        okx = runtime.compare.book("okx", "XAUT-USDT-SWAP")
        assert okx is not None and 2600 < okx.mid < 2700
        assert runtime.pipeline.intents == 0 and queue.commands() == []

        async with httpx.AsyncClient(base_url=runtime.listener_url, timeout=T) as client:
            ea = Ea(client, clock, terminal="DEMO")
            stamp = clock.time_ms()
            resp = await ea.request("POST", "/mt5/tick", {"ticks": [
                {"symbol": "XAUUSD", "bid": 100.0, "ask": 100.1, "time_msc": stamp}]}, secret=secret.encode())
            assert resp.status_code == 200, resp.text
            # The tick was judged inside the request: refused, counted, nothing to execute.
            assert runtime.pipeline.reasons[Reason.PRICE_OUTLIER] == 1
            assert runtime.pipeline.intents == 0 and not runtime.orchestrator.open
            mt5 = runtime.compare.book("mt5", "XAUUSD")
            assert mt5 is not None and mt5.outlier and not mt5.has_quote
            snap = runtime.view.snapshot()
            assert snap.price_outliers == {"mt5": 1} and snap.reasons["price_outlier"] == 1
            assert [q.outlier for q in snap.quotes if q.key == "mt5:XAUUSD"] == [True]
            await asyncio.sleep(0.3)  # the EA polls every 50 ms: nothing was ever queued
            assert queue.commands() == []

            # Control: the same path with a sane tick 0.35 % under the others trades.
            resp = await ea.request("POST", "/mt5/tick", {"ticks": [
                {"symbol": "XAUUSD", "bid": okx.mid * 0.9965, "ask": okx.mid * 0.9966,
                 "time_msc": stamp + 1}]}, secret=secret.encode())
            assert resp.status_code == 200, resp.text
            assert runtime.pipeline.intents == 1, runtime.pipeline.reasons
            await until(lambda: bool(queue.commands()), what="the MT5 leg's command")
            [command] = queue.commands()
            assert (command.symbol, command.side, command.terminal) == ("XAUUSD", "buy", "DEMO")
    finally:
        await runtime.stop()
