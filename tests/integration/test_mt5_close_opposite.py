"""On a hedging account an MT5 leg against an open position of ours closes (part of) it
instead of opening an offsetting ticket (`MT5Gateway(close_opposite=True)`, issue 19): the net
position is the same, and the account does not pile up tickets (the demo's hedging account
held hundreds within the hour, each in every account report).

The real listener, queue, bridge and gateway against the EA simulator trading a `SimBroker`
over loopback HTTP (the rig of test_mt5_end_to_end). Each wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from core.clock import RealClock
from core.models import Order, OrderState
from mt5_bridge.gateway import MT5Gateway
from mt5_bridge.queue import InMemoryCommandStore
from sim.ea_sim import EaSimulator
from tests.integration.test_mt5_end_to_end import (
    MAGIC,
    SYMBOL,
    TERMINAL,
    Listener,
    T,
    Terminal,
    instrument,
    order,
    start_listener,
)
from tests.waiting import until

BID = "2650.11"


def sell(cid: str, qty: str) -> Order:
    return replace(order(cid, qty, side="sell"), price=Decimal(BID))


@pytest.fixture
async def netting_rig() -> AsyncIterator[tuple[Listener, Terminal, MT5Gateway]]:
    listener = await start_listener(InMemoryCommandStore())
    gateway = MT5Gateway(listener.queue, TERMINAL, {SYMBOL: instrument()}, RealClock(), magic=MAGIC,
                         deviation_points=20, filling="IOC", command_ttl_ms=5000, grace_ms=300,
                         account=lambda: listener.bridge.account(TERMINAL))
    terminal = Terminal()
    try:
        yield listener, terminal, gateway
    finally:
        await terminal.stop_all()
        await listener.server.stop()


def tickets(terminal: Terminal) -> list[tuple[str, Decimal]]:
    return [(p.type, Decimal(repr(p.volume))) for p in sorted(terminal.broker.positions(MAGIC), key=lambda p: p.ticket)]


async def reported(listener: Listener, ea: EaSimulator, expected: list[tuple[str, Decimal]]) -> None:
    """Wait for an account report, sent after now, that shows `expected`."""
    sent = ea.accounts_sent

    def shows() -> bool:
        acct = listener.bridge.account(TERMINAL)
        return (ea.accounts_sent > sent + 1 and acct is not None
                and [(p.side, p.volume) for p in sorted(acct.positions, key=lambda p: p.ticket)] == expected)

    await until(shows, what=f"an account report showing {expected}")


async def test_a_leg_against_an_open_position_closes_it_instead_of_opening_another(
    netting_rig: tuple[Listener, Terminal, MT5Gateway],
) -> None:
    listener, terminal, gw = netting_rig
    ea = terminal.start_ea(listener.server.url)
    await until(lambda: listener.bridge.account(TERMINAL) is not None, what="the first account report")

    opened = await asyncio.wait_for(gw.place(order("co-1", "0.30")), T)  # nothing to close: opens
    assert opened.state is OrderState.FILLED
    assert tickets(terminal) == [("buy", Decimal("0.3"))]
    [first] = terminal.broker.positions(MAGIC)
    await reported(listener, ea, [("buy", Decimal("0.3"))])

    part = sell("co-2", "0.10")
    closed = await asyncio.wait_for(gw.place(part), T)
    assert closed.state is OrderState.FILLED and sum(f.qty for f in closed.fills) == Decimal("0.1")
    assert tickets(terminal) == [("buy", Decimal("0.2"))]  # the same ticket, smaller
    command = listener.queue.get("co-2")
    assert command is not None and (command.kind, command.position) == ("close", first.ticket)

    # At once, whatever the last report says: the 0.1 taken is held until a report shows it,
    # so the rest (0.2) is closed and nothing more.
    rest = sell("co-3", "0.20")
    assert (await asyncio.wait_for(gw.place(rest), T)).state is OrderState.FILLED
    assert tickets(terminal) == []
    more = sell("co-4", "0.20")
    assert (await asyncio.wait_for(gw.place(more), T)).state is OrderState.FILLED
    assert tickets(terminal) == [("sell", Decimal("0.2"))]  # nothing left to close: opened
    assert gw.closed_opposite == 2
    await reported(listener, ea, [("sell", Decimal("0.2"))])
    # A buy larger than the sell ticket does not cover it: opened (the net is +0.1 either way).
    assert (await asyncio.wait_for(gw.place(order("co-5", "0.30")), T)).state is OrderState.FILLED
    assert tickets(terminal) == [("sell", Decimal("0.2")), ("buy", Decimal("0.3"))]
    assert gw.holds() == 0  # released by the report that showed the ticket gone


async def test_on_a_netting_account_every_leg_opens(
    netting_rig: tuple[Listener, Terminal, MT5Gateway],
) -> None:
    listener, terminal, gw = netting_rig
    ea = terminal.start_ea(listener.server.url, margin_mode="netting")
    await until(lambda: listener.bridge.account(TERMINAL) is not None, what="the first account report")
    assert (await asyncio.wait_for(gw.place(order("cn-1", "0.30")), T)).state is OrderState.FILLED
    await reported(listener, ea, [("buy", Decimal("0.3"))])
    against = sell("cn-2", "0.10")
    assert (await asyncio.wait_for(gw.place(against), T)).state is OrderState.FILLED
    # The simulated broker is a hedging one whatever the EA says: the open shows as a ticket.
    assert tickets(terminal) == [("buy", Decimal("0.3")), ("sell", Decimal("0.1"))]
    assert gw.closed_opposite == 0


async def test_the_smallest_ticket_that_covers_the_leg_is_closed(
    netting_rig: tuple[Listener, Terminal, MT5Gateway],
) -> None:
    """Small remainders are used up by small legs (a repair leg after a partial fill), instead
    of staying open beside the big tickets."""
    listener, terminal, gw = netting_rig
    ea = terminal.start_ea(listener.server.url)
    await until(lambda: listener.bridge.account(TERMINAL) is not None, what="the first account report")
    for cid, qty in (("bf-1", "0.30"), ("bf-2", "0.10"), ("bf-3", "0.20")):
        assert (await asyncio.wait_for(gw.place(order(cid, qty)), T)).state is OrderState.FILLED
    await reported(listener, ea, [("buy", Decimal("0.3")), ("buy", Decimal("0.1")), ("buy", Decimal("0.2"))])
    assert (await asyncio.wait_for(gw.place(sell("bf-4", "0.15")), T)).state is OrderState.FILLED
    assert tickets(terminal) == [("buy", Decimal("0.3")), ("buy", Decimal("0.1")), ("buy", Decimal("0.05"))]
    assert (await asyncio.wait_for(gw.place(sell("bf-5", "0.10")), T)).state is OrderState.FILLED
    assert tickets(terminal) == [("buy", Decimal("0.3")), ("buy", Decimal("0.05"))]
