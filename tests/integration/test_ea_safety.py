"""The EA's real-money safety logic, against the real listener over real sockets (issue 15).

quantarb's side is the real listener (`EmbeddedServer` + `create_app` + `Mt5Bridge` +
`CommandQueue`) and the real `MT5Gateway`; the terminal's side is the `EaSimulator`, which
implements the safety logic of `mql5/QuantArbBridge.mq5`, trading a `SimBroker`. Each test
switches on one broker behaviour that makes that logic matter (`BrokerBehaviour`,
`SymbolSpec.execution`) or runs a second EA instance, and checks that the protocol holds: a
command executes at most once, never at a price worse than its deviation allows before it is
sent, and quantarb learns exactly what happened (acks, fills, and `unknown` until the EA knows).

Each wait is bounded (`T`); the EAs poll every 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import RealClock
from core.commands import CommandState, Filling
from core.instruments import Instrument
from core.models import Order, OrderPurpose, OrderState, Side
from core.ports import OrderUpdate
from mt5_bridge.app import create_app
from mt5_bridge.auth import SignatureVerifier, sign
from mt5_bridge.bridge import Mt5Bridge
from mt5_bridge.gateway import MT5Gateway
from mt5_bridge.queue import CommandQueue, InMemoryCommandStore
from mt5_bridge.server import EmbeddedServer
from sim.ea_sim import EaSimulator, InstanceLocked, Mt5Tick
from sim.mt5_broker import (
    TRADE_ACTION_REMOVE,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_DONE_PARTIAL,
    TRADE_RETCODE_PLACED,
    TRADE_RETCODE_TIMEOUT,
    BrokerBehaviour,
    Deal,
    SimBroker,
    SymbolSpec,
    TradeRequest,
)
from tests.mt5_support import Ea
from tests.waiting import until

TERMINAL = "T1"
SECRET = b"safety-secret-of-T1"
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

    def set(self, bid: float, ask: float) -> None:
        self.quotes[SYMBOL] = (bid, ask, time.time_ns() // 1_000_000)

    def touch(self, symbol: str) -> tuple[float, float] | None:
        quote = self.quotes.get(symbol)
        return None if quote is None else quote[:2]

    def __call__(self) -> list[Mt5Tick]:
        return [Mt5Tick(s, b, a, t) for s, (b, a, t) in self.quotes.items()]


class Recorder(httpx.AsyncBaseTransport):
    """Real HTTP; records what the EA sent and how the listener answered. Paths in `down`
    fail to connect (the reports of an EA about to die)."""

    def __init__(self, down: set[str] | None = None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.down = set(down or ())
        self.sent: list[tuple[str, int, dict[str, Any]]] = []  # (path, status or 0, body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if request.url.path in self.down:
            self.sent.append((request.url.path, 0, body))
            raise httpx.ConnectError("down", request=request)
        response = await self.inner.handle_async_request(request)
        self.sent.append((request.url.path, response.status_code, body))
        return response

    def acks(self, command_id: str) -> list[tuple[str, int, str]]:
        """(status, retcode, reason) of every ack the listener took for `command_id`."""
        return [(b["status"], b["retcode"], b["reason"]) for p, code, b in self.sent
                if p == "/mt5/ack" and code == 200 and b["command_id"] == command_id]

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Listener:
    queue: CommandQueue
    bridge: Mt5Bridge
    server: EmbeddedServer
    gateway: MT5Gateway

    @property
    def url(self) -> str:
        return self.server.url

    async def place(self, coid: str, qty: str = "0.10", price: str = "2650.31", side: Side = "buy") -> OrderUpdate:
        order = Order(client_order_id=coid, group_id="g-safe", venue="mt5", symbol=SYMBOL, side=side,
                      qty=Decimal(qty), price=Decimal(price), purpose=OrderPurpose.ENTRY,
                      created_ms=time.time_ns() // 1_000_000)
        return await asyncio.wait_for(self.gateway.place(order), T)

    async def query(self, coid: str) -> OrderUpdate:
        order = Order(client_order_id=coid, group_id="g-safe", venue="mt5", symbol=SYMBOL, side="buy",
                      qty=Decimal("0.10"), price=Decimal("2650.31"), purpose=OrderPurpose.ENTRY, created_ms=0)
        return await self.gateway.query(order)


async def start_listener(*, ttl_ms: int = 5000, grace_ms: int = 300, deviation_points: int = 20,
                         filling: Filling = "IOC", lease_ms: int = 10_000) -> Listener:
    clock = RealClock()
    queue = CommandQueue(InMemoryCommandStore(), clock)
    bridge = Mt5Bridge(verifier=SignatureVerifier({TERMINAL: SECRET}, clock), queue=queue, clock=clock,
                       symbols={TERMINAL: [SYMBOL]}, quote_sink=lambda _q: None, magic=MAGIC,
                       instance_lease_ms=lease_ms)
    server = EmbeddedServer(create_app(bridge), "127.0.0.1", 0)
    await server.start()
    gateway = MT5Gateway(queue, TERMINAL, {SYMBOL: instrument()}, clock, magic=MAGIC,
                         deviation_points=deviation_points, filling=filling, command_ttl_ms=ttl_ms,
                         grace_ms=grace_ms)
    return Listener(queue, bridge, server, gateway)


@dataclass
class Terminal:
    """An MT5 terminal: its market, its broker account, its machine's common folder, its EAs."""

    common_dir: Path
    spec: SymbolSpec = field(default_factory=lambda: SymbolSpec(contract_size=100.0))
    behaviour: BrokerBehaviour = field(default_factory=BrokerBehaviour)
    book: Book = field(default_factory=Book)
    broker: SimBroker = field(init=False)
    tasks: list[tuple[EaSimulator, asyncio.Task[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = SimBroker(self.book.touch, seed=1, specs={SYMBOL: self.spec}, behaviour=self.behaviour)

    def start_ea(self, url: str, **kw: Any) -> EaSimulator:
        kw.setdefault("timer_ms", 20)
        kw.setdefault("account_every_s", 0.2)
        kw.setdefault("common_dir", self.common_dir)
        ea = EaSimulator(url, TERMINAL, SECRET, [SYMBOL], self.broker, self.book, RealClock(), magic=MAGIC, **kw)
        self.tasks.append((ea, asyncio.create_task(ea.run(), name=f"ea-{len(self.tasks)}")))
        return ea

    async def stop_all(self) -> None:
        for ea, task in self.tasks:
            await ea.stop(grace_s=0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, InstanceLocked):
                await task
        self.tasks.clear()

    def deals_of(self, order: int) -> list[Deal]:
        return self.broker.deals_of_order(order)


@contextlib.asynccontextmanager
async def running(listener: Listener, *terminals: Terminal) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for terminal in terminals:
            await terminal.stop_all()
        await listener.server.stop()


def fills_of(update: OrderUpdate) -> list[tuple[str, Decimal, Decimal]]:
    return [(f.venue_trade_id, f.qty, f.price) for f in update.fills]


def as_fills(deals: list[Deal]) -> list[tuple[str, Decimal, Decimal]]:
    return [(str(d.ticket), Decimal(repr(d.volume)), Decimal(repr(d.price))) for d in deals]


# ------------------------------------------------------------------ price: market execution


async def test_market_execution_ignores_the_price_so_the_ea_refuses_a_moved_market(tmp_path: Path) -> None:
    listener = await start_listener()
    terminal = Terminal(tmp_path / "common")  # Market execution: the server fills wherever the market is
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        # quantarb priced the buy at 2650.31 with 20 points of deviation; the ask is now 30 worse.
        terminal.book.set(2650.41, 2650.61)
        refused = await listener.place("px-1")
        assert refused.state is OrderState.REJECTED and refused.fills == []
        assert refused.reason == ("retcode 0: price moved: ask 2650.61 is 30 points worse than the command's "
                                  "2650.31 (deviation 20)")
        assert terminal.broker.requests == 0 and ea.price_refusals == 1 and ea.executed == 0
        # The server itself would have filled it there: the EA's check is the only guard.
        probe = SimBroker(terminal.book.touch, specs={SYMBOL: terminal.spec})
        assert probe.execute(TradeRequest(SYMBOL, "buy", 0.1, price=2650.31, deviation=20)).price == 2650.61

        terminal.book.set(2650.31, 2650.51)  # 20 points worse: within the deviation
        within = await listener.place("px-2")
        terminal.book.set(2649.90, 2650.00)  # better than asked: never refused
        better = await listener.place("px-3")
        assert (within.state, better.state) == (OrderState.FILLED, OrderState.FILLED)
        [deal_2, deal_3] = terminal.broker.history_deals()
        assert (deal_2.price, deal_3.price) == (2650.51, 2650.00)
        assert fills_of(within) == as_fills([deal_2]) and fills_of(better) == as_fills([deal_3])
        assert terminal.broker.requests == 2 and ea.executed == 2


async def test_zero_deviation_means_zero_not_the_default(tmp_path: Path) -> None:
    listener = await start_listener(deviation_points=0)
    terminal = Terminal(tmp_path / "common")
    async with running(listener, terminal):
        terminal.start_ea(listener.url)
        terminal.book.set(2650.12, 2650.32)  # one point worse
        refused = await listener.place("dev0-1")
        assert refused.state is OrderState.REJECTED
        assert refused.reason.endswith("is 1 points worse than the command's 2650.31 (deviation 0)")
        terminal.book.set(2650.11, 2650.31)  # exactly the command's price
        assert (await listener.place("dev0-2")).state is OrderState.FILLED
        assert [r.deviation for r in terminal.broker.request_log] == [0]


# ------------------------------------------------------------------ price and filling: Instant/Request


@pytest.mark.parametrize("execution", ["instant", "request"])
async def test_instant_and_request_execution_get_the_command_price_and_fok(tmp_path: Path, execution: str) -> None:
    listener = await start_listener(filling="IOC")  # quantarb's default filling
    spec = SymbolSpec(contract_size=100.0, execution=execution)  # type: ignore[arg-type]
    terminal = Terminal(tmp_path / "common", spec=spec)
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        terminal.book.set(2650.01, 2650.21)  # 10 points better than quantarb's price
        update = await listener.place("inst-1")
        assert update.state is OrderState.FILLED, update
        [sent] = terminal.broker.request_log
        # The price quantarb decided on, with its deviation, and the one filling these modes take.
        assert (sent.price, sent.deviation, sent.type_filling) == (2650.31, 20, "FOK")
        assert fills_of(update) == as_fills(terminal.broker.history_deals())

        # The market moves 30 points between the EA's check and the server: it requotes (the
        # request carries the price), nothing executes.
        terminal.behaviour.adverse_move_points = 30
        terminal.book.set(2650.11, 2650.31)
        requoted = await listener.place("inst-2")
        assert requoted.state is OrderState.REJECTED and requoted.reason == "retcode 10004: Requote"
        assert len(terminal.broker.history_deals()) == 1 and ea.executed == 2
        assert terminal.broker.request_log[-1].price == 2650.31


async def test_insisting_on_the_commands_ioc_under_instant_execution_is_refused_before_sending(
    tmp_path: Path,
) -> None:
    listener = await start_listener(filling="IOC")
    terminal = Terminal(tmp_path / "common", spec=SymbolSpec(contract_size=100.0, execution="instant"))
    async with running(listener, terminal):
        terminal.start_ea(listener.url, filling_policy="command")
        update = await listener.place("fill-1")
        assert update.state is OrderState.REJECTED
        assert update.reason == "retcode 0: the symbol does not allow IOC filling under instant execution"
        assert terminal.broker.requests == 0


# ------------------------------------------------------------------ comments rewritten or dropped


@pytest.mark.parametrize("comments", ["rewrite", "drop"])
async def test_rewritten_comments_cannot_make_a_restarted_ea_execute_twice(tmp_path: Path, comments: str) -> None:
    listener = await start_listener(ttl_ms=10_000)
    terminal = Terminal(tmp_path / "common", behaviour=BrokerBehaviour(comments=comments))  # type: ignore[arg-type]
    async with running(listener, terminal):
        # The first EA executes, then cannot report (and dies): the command stays delivered.
        first = terminal.start_ea(listener.url, transport=Recorder(down={"/mt5/ack", "/mt5/fill"}))
        placing = asyncio.create_task(listener.place("cm-1"))
        await until(lambda: first.executed == 1 and first.pending_reports > 0, what="execution, no report")
        await first.stop(grace_s=0.05)
        [deal] = terminal.broker.history_deals()
        assert deal.comment != "cm-1"  # the broker's own text, or nothing: the id is gone
        assert not placing.done()

        # The restarted EA (same machine, same common folder) is served the command again. It
        # re-reports nothing at start, so only its journal can stop a second execution.
        recorder = Recorder()
        second = terminal.start_ea(listener.url, transport=recorder, resync_fills_ms=0)
        update = await placing
        assert update.state is OrderState.FILLED and fills_of(update) == as_fills([deal])
        assert terminal.broker.requests == 1 and second.executed == 0 and second.duplicates_skipped >= 1
        assert recorder.acks("cm-1")[0] == ("accepted", TRADE_RETCODE_DONE, "")
        entry = second.journal_entry("cm-1")
        assert entry is not None and (entry.state, entry.order) == ("done", deal.order)


async def test_a_resting_order_found_by_its_comment_is_never_sent_again(tmp_path: Path) -> None:
    """The journal is lost (another machine), but the order on the trade server carries the id."""
    listener = await start_listener()
    spec = SymbolSpec(contract_size=100.0, execution="exchange")
    terminal = Terminal(tmp_path / "common", spec=spec, behaviour=BrokerBehaviour(fill_fraction=0.5))
    async with running(listener, terminal):
        # An earlier EA sent "sc-1" (RETURN): half filled, the rest rests as an active order.
        earlier = terminal.broker.execute(TradeRequest(SYMBOL, "buy", 0.1, type_filling="RETURN", magic=MAGIC,
                                                       comment="sc-1"))
        assert earlier.retcode == TRADE_RETCODE_DONE_PARTIAL and len(terminal.broker.orders()) == 1
        recorder = Recorder()
        ea = terminal.start_ea(listener.url, transport=recorder, common_dir=tmp_path / "new-machine",
                               resync_fills_ms=0)
        update = await listener.place("sc-1")
        assert update.state is OrderState.PARTIALLY_FILLED
        assert fills_of(update) == as_fills(terminal.deals_of(earlier.order))
        # Not sent again: the only request is the removal of the resting remainder.
        assert ea.executed == 0 and [r.action for r in terminal.broker.request_log] == [1, TRADE_ACTION_REMOVE]
        assert terminal.broker.orders() == [] and terminal.broker.history_orders()[-1].state == "canceled"
        assert recorder.acks("sc-1")[0] == ("accepted", TRADE_RETCODE_DONE_PARTIAL, "")


# ------------------------------------------------------------------ TIMEOUT: unknown, never resent


async def test_a_timeout_is_unknown_never_resent_and_its_late_deal_is_reported(tmp_path: Path) -> None:
    listener = await start_listener(ttl_ms=5000)
    terminal = Terminal(tmp_path / "common", behaviour=BrokerBehaviour(timeouts=1, timeout_delay_ms=400))
    async with running(listener, terminal):
        recorder = Recorder()
        ea = terminal.start_ea(listener.url, transport=recorder)
        update = await listener.place("to-1")
        assert update.state is OrderState.FILLED, update
        [deal] = terminal.broker.history_deals()
        assert fills_of(update) == as_fills([deal])
        # Sent once; the EA said it did not know, then what it found, and never sent it again.
        assert terminal.broker.requests == 1 and ea.executed == 1 and ea.unknown_outcomes == 1
        assert recorder.acks("to-1") == [
            ("unknown", TRADE_RETCODE_TIMEOUT, "TIMEOUT; never sent again"),
            ("accepted", TRADE_RETCODE_DONE, ""),
        ]
        cmd = listener.queue.get("to-1")
        assert cmd is not None and cmd.state is CommandState.ACCEPTED


async def test_a_timeout_whose_deal_comes_after_expiry_is_unknown_then_filled(tmp_path: Path) -> None:
    listener = await start_listener(ttl_ms=600, grace_ms=100)
    terminal = Terminal(tmp_path / "common", behaviour=BrokerBehaviour(timeouts=1, timeout_delay_ms=1500))
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        update = await listener.place("to-2")
        # The EA sent it and does not know: quantarb must not guess "expired".
        assert update.state is OrderState.UNKNOWN and update.fills == []
        assert update.reason == "retcode 10012: outcome unknown: TIMEOUT; never sent again"
        assert terminal.broker.requests == 1
        await until(lambda: bool(terminal.broker.history_deals()) and "to-2" not in ea.following, what="late deal")
        resolved = await listener.query("to-2")
        assert resolved.state is OrderState.FILLED and fills_of(resolved) == as_fills(terminal.broker.history_deals())
        assert terminal.broker.requests == 1 and ea.executed == 1


async def test_a_timeout_that_never_executes_is_rejected_after_the_settle_time(tmp_path: Path) -> None:
    listener = await start_listener(ttl_ms=5000)
    behaviour = BrokerBehaviour(timeouts=1, timeout_outcome="lost")
    terminal = Terminal(tmp_path / "common", behaviour=behaviour)
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url, unknown_settle_ms=1500)
        placing = asyncio.create_task(listener.place("to-3"))
        await until(lambda: ea.unknown_outcomes == 1, what="the unknown outcome")
        # While an order on XAUUSD has an unknown outcome, no other is sent on XAUUSD: a deal
        # that appears must be attributable to it, whatever the broker did to the comment.
        blocked = await listener.place("to-4")
        assert blocked.state is OrderState.REJECTED
        assert blocked.reason == "retcode 0: an order on XAUUSD (command to-3) has an unknown outcome"
        update = await placing
        assert update.state is OrderState.REJECTED
        assert update.reason == "retcode 10012: TIMEOUT: no order or deal appeared within 1500 ms"
        assert terminal.broker.requests == 1 and terminal.broker.history_deals() == []
        # Resolved: the symbol trades again.
        assert (await listener.place("to-5")).state is OrderState.FILLED
        assert terminal.broker.requests == 2


async def test_a_timeout_with_rewritten_comments_is_found_by_its_order(tmp_path: Path) -> None:
    listener = await start_listener(ttl_ms=5000)
    behaviour = BrokerBehaviour(timeouts=1, timeout_delay_ms=300, comments="rewrite")
    terminal = Terminal(tmp_path / "common", behaviour=behaviour)
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        update = await listener.place("to-6")
        assert update.state is OrderState.FILLED
        [deal] = terminal.broker.history_deals()
        assert deal.comment != "to-6" and fills_of(update) == as_fills([deal])
        entry = ea.journal_entry("to-6")
        assert entry is not None and (entry.state, entry.order) == ("done", deal.order)
        assert terminal.broker.requests == 1


# ------------------------------------------------------------------ RETURN remainders and PLACED orders


async def test_a_partial_return_fill_has_its_remainder_removed_and_is_reported_partial(tmp_path: Path) -> None:
    listener = await start_listener(filling="RETURN")
    spec = SymbolSpec(contract_size=100.0, execution="exchange")
    terminal = Terminal(tmp_path / "common", spec=spec, behaviour=BrokerBehaviour(fill_fraction=0.6))
    async with running(listener, terminal):
        recorder = Recorder()
        ea = terminal.start_ea(listener.url, transport=recorder)
        update = await listener.place("ret-1")
        assert update.state is OrderState.PARTIALLY_FILLED
        [deal] = terminal.broker.history_deals()
        assert deal.volume == 0.06 and fills_of(update) == as_fills([deal])
        assert recorder.acks("ret-1") == [("accepted", TRADE_RETCODE_DONE_PARTIAL, "")]
        # The remainder was removed at once: nothing rests, nothing fills later.
        [order] = terminal.broker.history_orders()
        assert (order.state, order.volume_current) == ("canceled", 0.04) and terminal.broker.orders() == []
        assert [r.action for r in terminal.broker.request_log] == [1, TRADE_ACTION_REMOVE]
        assert ea.remainders_removed == 1 and "ret-1" not in ea.following


async def test_a_placed_order_that_filled_nothing_is_removed_and_rejected(tmp_path: Path) -> None:
    listener = await start_listener(filling="RETURN")
    spec = SymbolSpec(contract_size=100.0, execution="exchange")
    terminal = Terminal(tmp_path / "common", spec=spec, behaviour=BrokerBehaviour(fill_fraction=0.0))
    async with running(listener, terminal):
        recorder = Recorder()
        terminal.start_ea(listener.url, transport=recorder)
        update = await listener.place("ret-2")
        assert update.state is OrderState.REJECTED and update.fills == []
        [order] = terminal.broker.history_orders()
        assert recorder.acks("ret-2") == [
            ("rejected", TRADE_RETCODE_PLACED, f"its order {order.ticket} filled nothing and was removed")]
        assert order.state == "canceled" and terminal.broker.orders() == [] and terminal.broker.positions() == []


async def test_a_remainder_that_fills_before_it_can_be_removed_is_followed_to_the_end(tmp_path: Path) -> None:
    listener = await start_listener(filling="RETURN")
    spec = SymbolSpec(contract_size=100.0, execution="exchange")
    behaviour = BrokerBehaviour(fill_fraction=0.6, resting_fill_after_ms=0)  # the rest fills at once
    terminal = Terminal(tmp_path / "common", spec=spec, behaviour=behaviour)
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        update = await listener.place("ret-3")
        assert update.state is OrderState.FILLED
        deals = terminal.broker.history_deals()
        assert [d.volume for d in deals] == [0.06, 0.04] and fills_of(update) == as_fills(deals)
        assert ea.remainders_removed == 0 and terminal.broker.orders() == []


async def test_return_is_not_used_for_market_orders_outside_exchange_execution(tmp_path: Path) -> None:
    listener = await start_listener(filling="RETURN")
    terminal = Terminal(tmp_path / "common")  # Market execution, FOK and IOC allowed
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        assert (await listener.place("ret-4")).state is OrderState.FILLED
        assert [r.type_filling for r in terminal.broker.request_log] == ["FOK"]
        await ea.stop()
        strict = terminal.start_ea(listener.url, filling_policy="command")
        refused = await listener.place("ret-5")
        assert refused.reason == "retcode 0: the symbol does not allow RETURN filling under market execution"
        assert terminal.broker.requests == 1 and strict.executed == 0


# ------------------------------------------------------------------ a second instance


async def test_a_second_instance_on_the_same_machine_refuses_to_start(tmp_path: Path) -> None:
    listener = await start_listener()
    terminal = Terminal(tmp_path / "common")
    async with running(listener, terminal):
        first = terminal.start_ea(listener.url)
        await until(lambda: first.polls + first.tick_posts > 0, what="the first EA running")
        second = EaSimulator(listener.url, TERMINAL, SECRET, [SYMBOL], terminal.broker, terminal.book, RealClock(),
                             magic=MAGIC, common_dir=tmp_path / "common")
        with pytest.raises(InstanceLocked, match="another EA instance for terminal T1"):
            await asyncio.wait_for(second.run(), T)
        assert (second.commands_seen, second.polls, second.tick_posts) == (0, 0, 0)
        assert (await listener.place("one-1")).state is OrderState.FILLED
        assert terminal.broker.requests == 1 and first.executed == 1


async def test_a_second_instance_elsewhere_is_refused_by_the_lease_and_takes_over_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    listener = await start_listener(lease_ms=800)
    terminal = Terminal(tmp_path / "machine-a")
    async with running(listener, terminal):
        first = terminal.start_ea(listener.url)
        await until(lambda: listener.bridge.leases.holder(TERMINAL) == first.instance_id, what="the first's lease")
        # The same terminal id on another machine (its own common folder), same account.
        with caplog.at_level(logging.WARNING, logger="mt5_bridge.bridge"):
            second = terminal.start_ea(listener.url, common_dir=tmp_path / "machine-b")
            await until(lambda: second.lease_refusals >= 3, what="the second refused")
        assert second.instance_id != first.instance_id and second.standby
        assert listener.bridge.rejected["instance_conflict"] >= 3
        assert any(f"refused EA instance {second.instance_id}" in r.getMessage() for r in caplog.records)

        update = await listener.place("two-1")
        assert update.state is OrderState.FILLED
        assert terminal.broker.requests == 1 and (first.executed, second.executed) == (1, 0)
        assert second.commands_seen == 0

        # The first stops; once its lease lapses the second holds the terminal and trades.
        await first.stop()
        await until(lambda: listener.bridge.leases.holder(TERMINAL) == second.instance_id, what="the takeover")
        assert (await listener.place("two-2")).state is OrderState.FILLED
        assert terminal.broker.requests == 2 and second.executed == 1 and not second.standby


async def test_an_ea_without_an_instance_header_is_outside_the_lease(tmp_path: Path) -> None:
    """Older EAs send no X-QA-Instance: they are served as before (backward compatible)."""
    listener = await start_listener()
    terminal = Terminal(tmp_path / "common")
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        await until(lambda: listener.bridge.leases.holder(TERMINAL) == ea.instance_id, what="the lease")
        async with httpx.AsyncClient(base_url=listener.url, timeout=T) as client:
            # (wait_ms=1: the running EA polls wait_ms=0; the same request signed in the same
            # millisecond would be the same signature, refused as a replay)
            resp = await Ea(client, RealClock()).request("GET", "/mt5/commands?wait_ms=1", secret=SECRET)
            assert resp.status_code == 200 and resp.json() == {"commands": []}
            bad = await client.get("/mt5/commands", headers={
                **_signed("GET", "/mt5/commands"), "X-QA-Instance": "no spaces allowed"})
            assert bad.status_code == 422
            assert bad.json()["fields"] == [{"field": "header x-qa-instance",
                                             "reason": "must be 1 to 64 characters of [A-Za-z0-9_-]"}]


def _signed(method: str, path: str) -> dict[str, str]:
    stamp = str(time.time_ns() // 1_000_000)
    return {"X-QA-Terminal": TERMINAL, "X-QA-Timestamp": stamp,
            "X-QA-Signature": sign(SECRET, stamp, method, path, b"")}


# ------------------------------------------------------------------ account, listener hangs


async def test_the_account_is_reported_right_after_a_trade_with_full_precision(tmp_path: Path) -> None:
    listener = await start_listener()
    terminal = Terminal(tmp_path / "common")
    # A BTC-denominated account: amounts have 8 decimals, not 2.
    terminal.broker = SimBroker(terminal.book.touch, seed=1, specs={SYMBOL: terminal.spec}, currency="BTC",
                                currency_digits=8, balance=1.23456789, leverage=1_000_000)
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url, account_every_s=3600.0)  # the timer would not report again
        await until(lambda: listener.bridge.account(TERMINAL) is not None, what="the first account report")
        first = listener.bridge.account(TERMINAL)
        assert first is not None and first.balance == 1.23456789 and first.positions == ()
        assert (await listener.place("acct-1", qty="0.01")).state is OrderState.FILLED
        await until(lambda: (a := listener.bridge.account(TERMINAL)) is not None and len(a.positions) == 1,
                    what="the account report after the trade")
        assert ea.accounts_sent == 2


async def test_a_hanging_listener_costs_one_blocking_request_per_timer_event(tmp_path: Path) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    terminal = Terminal(tmp_path / "common")
    terminal.broker.execute(TradeRequest(SYMBOL, "buy", 0.1, magic=MAGIC, comment="old-1"))  # a fill to re-report
    ea = EaSimulator(f"http://127.0.0.1:{port}", TERMINAL, SECRET, [SYMBOL], terminal.broker, terminal.book,
                     RealClock(), magic=MAGIC, http_timeout_s=0.2, common_dir=tmp_path / "common")
    try:
        await asyncio.wait_for(ea.step(), T)
        # The fill report timed out; the tick push, the poll and the account report were not
        # tried in the same timer event (the real EA is frozen while WebRequest waits).
        assert (ea.http_errors, ea.http_skipped, ea.pending_reports) == (1, 2, 1)
        assert (ea.tick_posts, ea.polls, ea.accounts_sent) == (0, 0, 0)
        assert len(hung) == 1
    finally:
        await ea.aclose()
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_the_session_forgets_acks_and_deals_older_than_its_memory_but_not_its_own_refusals_before_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 19: the EA simulator's per-session memory (the acks it reports again, the deals it
    reported) is bounded by age as well as by count. An executed command is in the journal
    (never sent again, as after a restart: tests above); a refusal by the EA itself is not, so
    the session keeps it until its command expires."""
    from sim import ea_sim

    monkeypatch.setattr(ea_sim, "SESSION_MEMORY_MS", 200)
    listener = await start_listener(ttl_ms=60_000)
    terminal = Terminal(tmp_path / "common")
    async with running(listener, terminal):
        ea = terminal.start_ea(listener.url)
        terminal.book.set(2650.11, 2650.31)
        assert (await listener.place("mem-1")).state is OrderState.FILLED
        assert ea.remembered() == (1, 1)
        terminal.book.set(2650.41, 2650.61)  # 30 points worse than the command's price
        assert (await listener.place("mem-2")).state is OrderState.REJECTED  # refused by the EA
        await asyncio.sleep(0.3)  # both acks and the deal are now older than the memory
        terminal.book.set(2650.11, 2650.31)
        assert (await listener.place("mem-3")).state is OrderState.FILLED
        # mem-1's ack and deal went; mem-2's refusal stays until its command expires (a minute).
        assert ea.remembered() == (2, 1)
        assert ea.journal_entry("mem-1") is not None and ea.journal_entry("mem-2") is None
