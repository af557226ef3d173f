"""Shared rig for the OKX gateway tests: the simulator on loopback and a gateway pointed at it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from core.clock import ManualClock
from core.models import Order, OrderPurpose, Side
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import OkxGateway, OkxGatewayConfig
from exchanges.okx.stream import StreamTiming
from sim.market import SimTick
from sim.okx_accounts import SimInstrumentSpec
from sim.okx_server import OkxSimServer

KEY = "sim-key-1"
SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
PASSPHRASE = "Pass-phrase1"
CREDS = OkxCredentials(KEY, SECRET, PASSPHRASE)
BTC = "BTC-USDT-SWAP"
ETH = "ETH-USDT-SWAP"
SPOT = "BTC-USDT"
SPECS = (
    SimInstrumentSpec(BTC, Decimal("0.1"), Decimal(1), Decimal(1), ct_val=Decimal("0.01")),
    SimInstrumentSpec(ETH, Decimal("0.01"), Decimal(1), Decimal(1), ct_val=Decimal("0.1")),
    SimInstrumentSpec(SPOT, Decimal("0.1"), Decimal("0.0001"), Decimal("0.0001")),
)
T = 3.0  # the bound on every wait

_ids = itertools.count(1)


def tick(symbol: str = BTC, bid: float = 97000.0, ask: float = 97000.1, size: float = 5.0,
         clock: ManualClock | None = None) -> SimTick:
    ts = clock.time_ms() if clock is not None else 1_732_150_000_000
    return SimTick("okx", symbol, bid, ask, size, size, ts)


def order(qty: str = "2", price: str = "97001", side: Side = "buy", symbol: str = BTC, cid: str | None = None) -> Order:
    return Order(
        client_order_id=cid or f"qagtest{next(_ids)}",
        group_id="gtest",
        venue="okx",
        symbol=symbol,
        side=side,
        qty=Decimal(qty),
        price=Decimal(price),
        purpose=OrderPurpose.ENTRY,
        created_ms=0,
    )


@asynccontextmanager
async def okx_sim(clock: ManualClock, **account: Any) -> AsyncIterator[OkxSimServer]:
    server = OkxSimServer("127.0.0.1", 0, symbols=[s.inst_id for s in SPECS], clock=clock, specs=SPECS,
                          idle_timeout_s=30.0)
    server.private.add_account(KEY, SECRET, PASSPHRASE, **account)
    async with server:
        for spec in SPECS:
            server.publish(tick(spec.inst_id, clock=clock) if spec.inst_id != ETH else
                           tick(ETH, 3400.0, 3400.01, 50.0, clock))
        yield server


def config(server: OkxSimServer, **changes: Any) -> OkxGatewayConfig:
    base: dict[str, Any] = {
        "rest_url": server.rest_url,
        "ws_private_url": server.private_ws_url,
        "request_timeout_s": 1.0,
        "outcome_wait_s": 1.0,
        "not_found_grace_s": 0.0,
        "rate_limit_wait_s": 0.2,
    }
    base.update(changes)
    return OkxGatewayConfig(**base)


FAST = StreamTiming(ping_after_s=5.0, pong_timeout_s=2.0, connect_timeout_s=2.0, login_timeout_s=2.0,
                    backoff_initial_s=0.05, backoff_cap_s=0.2)


@asynccontextmanager
async def gateway(server: OkxSimServer, clock: ManualClock, *, creds: OkxCredentials = CREDS,
                  stream: bool = True, **changes: Any) -> AsyncIterator[OkxGateway]:
    gw = OkxGateway(creds, clock, config(server, stream=stream, **changes), stream_timing=FAST)
    await gw.start([s.inst_id for s in SPECS])
    try:
        if stream:
            await gw.stream.wait_ready(T)
        yield gw
    finally:
        await gw.stop()


async def until(predicate: Callable[[], bool], what: str, within: float = T) -> None:
    """Wait until `predicate()` holds; fail with `what` if it does not within `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
