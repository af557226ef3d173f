"""Order to wire: one order at a time to the same simulator, our gateway next to ccxt.

For each venue (OKX swap, Binance spot) four clients take turns, interleaved in a rotating
order within the same run against the same simulated venue, each order a marketable IOC
with our client order id:

- `ours_ws`: our gateway's `place()`, order entry over the WebSocket (OKX private WS `order`
  op on the logged-in session; Binance WebSocket API `order.place`, HMAC-signed): the path
  the engine uses;
- `ours_rest`: our gateway with REST order entry (httpx; `POST /api/v5/trade/order`,
  `POST /api/v3/order`);
- `ccxt_ws`: ccxt's `create_order_ws` (ccxt.pro, the same WebSocket endpoints, aiohttp);
- `ccxt_rest`: ccxt's async `create_order(symbol, "limit", side, amount, price,
  {"timeInForce": "IOC", "clientOrderId": cid})` (aiohttp).

ccxt is pointed at the simulators by its URLs only, with its markets loaded beforehand and
its client-side throttle off (`enableRateLimit: False`: with it ccxt sleeps between calls
this close together, which is not what is measured).

`to_wire`: from the call to the moment the order request's last byte was written to the
socket (`WireProbe`: the same probe under httpx, websockets and aiohttp). Ratios (ccxt /
ours) like for like: `ws` (ccxt_ws / ours_ws), `rest` (ccxt_rest / ours_rest), and
`create_order` (ccxt's plain `create_order` / our engine's path, ours_ws). `round_trip`
(informational, not like for like): until the call returned; ours returns the order's
outcome with its fills (after the `orders` push, or a REST query), ccxt the venue's answer.

Positions stay flat (buys and sells alternate) and the book is published afresh before each
order so it always finds size.
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.clock import Clock
from core.models import Order, OrderPurpose, Side, Venue
from core.ports import ExecutionGateway
from quantarb_tui.bench.common import percentile
from quantarb_tui.bench.venues import (
    BN_SYMBOL,
    OKX_SYMBOL,
    Venues,
    binance_credentials,
    binance_gateway,
    okx_credentials,
    okx_gateway,
)
from quantarb_tui.bench.wire import WireProbe

MID = 97_000.0
CCXT_SYMBOL: dict[Venue, str] = {"okx": "BTC/USDT:USDT", "binance": "BTC/USDT"}
SYMBOL: dict[Venue, str] = {"okx": OKX_SYMBOL, "binance": BN_SYMBOL}
QTY: dict[Venue, Decimal] = {"okx": Decimal(1), "binance": Decimal("0.0001")}  # 1 contract = 0.01 BTC
TICK: dict[Venue, float] = {"okx": 0.1, "binance": 0.01}

Place = Callable[[str, Side, Decimal], Awaitable[object]]


@dataclass
class _Samples:
    to_wire_ns: list[int] = field(default_factory=list)
    round_trip_ns: list[int] = field(default_factory=list)


def load_ccxt() -> Any | None:
    """`ccxt.pro` (async REST and WebSocket), or None when ccxt is not installed (skipped)."""
    try:
        return importlib.import_module("ccxt.pro")
    except ImportError:
        return None


def ccxt_client(ccxt: Any, venue: Venue, venues: Venues) -> Any:
    """ccxt's client for the simulated venue: only its URLs changed (and its throttle off)."""
    if venue == "okx":
        exchange = ccxt.okx({"apiKey": okx_credentials().api_key, "secret": okx_credentials().secret,
                             "password": okx_credentials().passphrase, "enableRateLimit": False, "timeout": 5000})
        exchange.hostname = f"127.0.0.1:{venues.okx_port}"
        exchange.urls["api"] = {"rest": "http://{hostname}", "ws": f"ws://127.0.0.1:{venues.okx_port}/ws/v5"}
        return exchange
    creds = binance_credentials()
    exchange = ccxt.binance({"apiKey": creds.api_key, "secret": creds.secret, "enableRateLimit": False,
                             "timeout": 5000})
    exchange.urls["api"] = _pointed_at(exchange.urls["api"], f"127.0.0.1:{venues.binance_port}")
    return exchange


def _pointed_at(url_map: Any, host: str) -> Any:
    """The same URL map with every host replaced by the simulator's (paths kept)."""
    if isinstance(url_map, dict):
        return {k: _pointed_at(v, host) for k, v in url_map.items()}
    if isinstance(url_map, str):
        for scheme, plain in (("https://", "http://"), ("wss://", "ws://")):
            if url_map.startswith(scheme):
                rest = url_map[len(scheme):]
                path = rest[rest.find("/"):] if "/" in rest else ""
                return f"{plain}{host}{path}"
    return url_map


def _order(venue: Venue, cid: str, side: Side, price: Decimal, clock: Clock) -> Order:
    return Order(client_order_id=cid, group_id="bench", venue=venue, symbol=SYMBOL[venue], side=side,
                 qty=QTY[venue], price=price, purpose=OrderPurpose.ENTRY, created_ms=clock.time_ms())


def _ours(gateway: ExecutionGateway, venue: Venue, clock: Clock) -> Place:
    async def place(cid: str, side: Side, price: Decimal) -> object:
        return await gateway.place(_order(venue, cid, side, price, clock))

    return place


def _theirs(exchange: Any, venue: Venue, *, websocket: bool) -> Place:
    symbol = CCXT_SYMBOL[venue]
    amount = float(QTY[venue])
    create = exchange.create_order_ws if websocket else exchange.create_order

    async def place(cid: str, side: Side, price: Decimal) -> object:
        return await create(symbol, "limit", side, amount, float(price), {"timeInForce": "IOC", "clientOrderId": cid})

    return place


def _stats(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(percentile(ordered, 50) / 1000, 1), "p99": round(percentile(ordered, 99) / 1000, 1),
            "max": round(ordered[-1] / 1000, 1) if ordered else 0.0, "count": len(ordered)}


async def bench_venue(venue: Venue, venues: Venues, clock: Clock, probe: WireProbe, *, orders: int,
                      warmup: int, ccxt: Any | None) -> tuple[dict[str, Any], Any | None]:
    """Interleaved orders of each client to one venue; (results, the ccxt client or None)."""
    port = venues.okx_port if venue == "okx" else venues.binance_port
    exchange = ccxt_client(ccxt, venue, venues) if ccxt is not None else None
    async with AsyncExitStack() as stack:
        ws_gateway: ExecutionGateway
        rest_gateway: ExecutionGateway
        if venue == "okx":
            ws_gateway = await stack.enter_async_context(okx_gateway(venues, clock, websocket=True))
            rest_gateway = await stack.enter_async_context(okx_gateway(venues, clock, websocket=False))
        else:
            ws_gateway = await stack.enter_async_context(binance_gateway(venues, clock, websocket=True))
            rest_gateway = await stack.enter_async_context(binance_gateway(venues, clock, websocket=False))
        clients: dict[str, Place] = {"ours_ws": _ours(ws_gateway, venue, clock),
                                     "ours_rest": _ours(rest_gateway, venue, clock)}
        if exchange is not None:
            stack.push_async_callback(exchange.close)
            await exchange.load_markets()
            clients["ccxt_ws"] = _theirs(exchange, venue, websocket=True)
            clients["ccxt_rest"] = _theirs(exchange, venue, websocket=False)
        samples = {name: _Samples() for name in clients}
        names = list(clients)
        seq = itertools.count(1)
        tick = TICK[venue]
        for i in range(warmup + orders):
            turn = names[i % len(names):] + names[: i % len(names)]
            for name in turn:
                n = next(seq)
                side: Side = "buy" if n % 2 else "sell"
                venues.set_books((MID - 0.1, MID), (MID - 0.01, MID))
                price = Decimal(repr(MID + 10 * tick if side == "buy" else MID - 10 * tick))
                cid = f"bw{venue[0]}{name[-2:]}{n}"
                probe.arm()
                t0 = time.perf_counter_ns()
                await clients[name](cid, side, price)
                t1 = time.perf_counter_ns()
                probe.disarm()
                done = probe.request_done_ns(port, cid.encode())
                if done is None:
                    seen = [m.first_line for m in probe.messages(port, cid.encode())]
                    raise RuntimeError(f"{venue} {name}: the order request {cid} was not seen on the wire ({seen})")
                if i >= warmup:
                    samples[name].to_wire_ns.append(done - t0)
                    samples[name].round_trip_ns.append(t1 - t0)
    result: dict[str, Any] = {name: {"to_wire_us": _stats(s.to_wire_ns), "round_trip_us": _stats(s.round_trip_ns)}
                              for name, s in samples.items()}
    if exchange is not None:
        result["ratios"] = {name: _ratio(result[theirs]["to_wire_us"], result[ours]["to_wire_us"])
                            for name, theirs, ours in RATIOS}
    return result, exchange


RATIOS = (("ws", "ccxt_ws", "ours_ws"), ("rest", "ccxt_rest", "ours_rest"), ("create_order", "ccxt_rest", "ours_ws"))


def _ratio(theirs: dict[str, float], ours: dict[str, float]) -> dict[str, float | None]:
    """ccxt's time over ours (how many times faster ours is), at p50 and p99."""
    return {q: round(theirs[q] / ours[q], 1) if ours[q] > 0 else None for q in ("p50", "p99")}


__all__ = ["RATIOS", "bench_venue", "ccxt_client", "load_ccxt"]
