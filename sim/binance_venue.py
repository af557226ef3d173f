"""A whole simulated Binance market (spot or USD-M) that trades, on one loopback port.

`BinanceVenueSim` puts together the public market-data server (`BinanceSimServer`), the
account and matching engine (`BinanceExchange`), the private REST API
(`BinancePrivateRest`) and the WebSocket API / user data stream (`BinancePrivateWs`) behind
one `HttpFront` port: REST of both kinds on it, WebSocket upgrades routed by path (market
streams to the public server, `/ws-api/v3`, `/ws-fapi/v1` and `/private/ws...` to the
private one). `publish(tick)` moves the book for the streams and for matching alike.

Run one alone with `python -m sim.binance_venue --market spot|usdm --port N --api-key K
--secret S`: it prints `listening on http://HOST:PORT` and serves a seeded synthetic market
until SIGTERM (or Ctrl-C). `serve_binance(...)` is the same as a coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Self

from core.clock import Clock, RealClock
from core.instruments import Instrument, Pair
from sim.binance_exchange import DEFAULT_SYMBOLS, RATE_LIMITS, BinanceExchange, BinanceMarket, SimSymbol
from sim.binance_private import BinancePrivateRest, PrivateFaults, RateMeter, SimCredentials
from sim.binance_server import BinanceSimServer
from sim.binance_wsapi import BinancePrivateWs
from sim.epoch_market import pacer
from sim.http_front import HttpFront
from sim.market import SimTick

_ASSET_PAIR = {"BTC": "BTC", "ETH": "ETH", "PAXG": "XAU"}


class BinanceVenueSim:
    """Public streams, private REST, WebSocket API and user data of one Binance market."""

    def __init__(
        self,
        *,
        market: BinanceMarket,
        credentials: SimCredentials,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        symbols: Iterable[SimSymbol] | None = None,
        balances: Mapping[str, Decimal | str] | None = None,
        weight_limit: int | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else RealClock()
        listed = tuple(symbols or DEFAULT_SYMBOLS[market])
        self.market: BinanceMarket = market
        self.public = BinanceSimServer("127.0.0.1", 0, symbols=[s.symbol for s in listed], market=market,
                                       clock=self.clock)
        self.exchange = BinanceExchange(market, self.clock, symbols=listed, balances=balances)
        self.faults = PrivateFaults()
        limit = weight_limit or next(r["limit"] for r in RATE_LIMITS[market] if r["rateLimitType"] == "REQUEST_WEIGHT")
        self.meter = RateMeter(self.clock.time_ms, limit)
        self.rest = BinancePrivateRest(self.exchange, credentials, faults=self.faults, meter=self.meter,
                                       public_rest=self._public_rest)
        self.ws = BinancePrivateWs(self.exchange, credentials, faults=self.faults, meter=self.meter)
        self.front = HttpFront(host, port, self.rest.handle, self._upgrade_route)
        # Fault: private WebSocket handshakes (WS API, user data) are refused with 404 while set.
        self.refuse_private = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.public.start()
        await self.ws.start()
        await self.front.start()

    async def stop(self) -> None:
        await self.front.stop()
        await self.ws.stop()
        await self.public.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self.front.port

    @property
    def base_url(self) -> str:
        return self.front.base_url

    @property
    def ws_base_url(self) -> str:
        return f"ws://{self.front.host}:{self.front.port}"

    # ------------------------------------------------------------------ market

    def publish(self, tick: SimTick) -> None:
        """One top-of-book update: to the market streams, and to matching."""
        self.public.publish(tick)
        self.exchange.set_book(tick.symbol, Decimal(repr(tick.bid)), Decimal(repr(tick.ask)),
                               Decimal(repr(tick.bid_size)), Decimal(repr(tick.ask_size)))

    def set_book(self, symbol: str, bid: str, ask: str, bid_size: str, ask_size: str) -> None:
        """Exact decimals for tests (the streams get the float view of the same book)."""
        self.public.publish(SimTick("binance", symbol, float(bid), float(ask), float(bid_size), float(ask_size),
                                    self.clock.time_ms()))
        self.exchange.set_book(symbol, Decimal(bid), Decimal(ask), Decimal(bid_size), Decimal(ask_size))

    # ------------------------------------------------------------------ faults

    def drop_user_streams(self) -> int:
        """Close every private WebSocket (WS API and user data) abruptly."""
        return self.ws.drop_all()

    # ------------------------------------------------------------------ routing

    def _upgrade_route(self, path: str) -> tuple[str, int] | None:
        if self.ws.owns(path):
            if self.refuse_private:
                return None
            return "127.0.0.1", self.ws.port
        return "127.0.0.1", self.public.port

    def _public_rest(self, path: str, query: dict[str, list[str]]) -> tuple[int, object]:
        return self.public.rest(path, query)


def _demo_pairs(symbols: Iterable[SimSymbol]) -> list[Pair]:
    """One Binance instrument per listed symbol for the synthetic market's random walk (a pair
    needs two venues: an MT5 twin rides along, and its quotes are not published)."""
    pairs = []
    for s in symbols:
        name = _ASSET_PAIR.get(s.base, s.base)
        inst = Instrument(venue="binance", symbol=s.symbol, pair=name, qty_per_unit=Decimal(1),
                          tick_size=s.tick_size, lot_step=s.step_size, min_qty=s.min_qty, taker_fee_bps=5.0)
        twin = Instrument(venue="mt5", symbol=f"{name}USD", pair=name, qty_per_unit=Decimal(1),
                          tick_size=s.tick_size, lot_step=s.step_size, min_qty=s.min_qty, taker_fee_bps=0.0)
        pairs.append(Pair(name=name, instruments=(inst, twin)))
    return pairs


async def serve_binance(
    host: str,
    port: int,
    api_key: str,
    secret: str,
    passphrase: str | None = None,
    *,
    market: BinanceMarket = "spot",
    seed: int = 7,
    epoch_ms: int | None = None,
    ed25519_public_pem: bytes | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    step_interval_s: float = 0.05,
) -> None:
    """Serve a simulated Binance market with a moving synthetic book until `stop` is set (or
    the task is cancelled). `passphrase` is accepted for a uniform signature and ignored:
    Binance keys have none. With `epoch_ms` the book follows the grid a rehearsal world's
    processes share (`sim.epoch_market`). Prints `listening on http://HOST:PORT` once the port
    is open."""
    del passphrase
    sim = BinanceVenueSim(market=market, credentials=SimCredentials(api_key, secret, ed25519_public_pem),
                          host=host, port=port)
    book = pacer(_demo_pairs(sim.exchange.symbols.values()), seed=seed, clock=sim.clock, epoch_ms=epoch_ms)
    listed = sim.exchange.symbols
    done = stop or asyncio.Event()
    async with sim:
        for tick in book.snapshot():
            if tick.venue == "binance" and tick.symbol in listed:
                sim.publish(tick)
        print(f"listening on {sim.base_url}", flush=True)
        if ready is not None:
            ready.set()
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), step_interval_s)
            for tick in book.due():
                if tick.venue == "binance" and tick.symbol in listed:
                    sim.publish(tick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.binance_venue", description=__doc__.splitlines()[0])
    parser.add_argument("--market", choices=("spot", "usdm"), default="spot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--ed25519-public-key", help="PEM file of the Ed25519 public key (enables session.logon)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epoch-ms", type=int, default=None,
                        help="step the market on the grid shared from this epoch (ms since 1970)")
    args = parser.parse_args(argv)
    pem = None
    if args.ed25519_public_key:
        with open(args.ed25519_public_key, "rb") as fh:
            pem = fh.read()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_binance(args.host, args.port, args.api_key, args.secret, market=args.market, seed=args.seed,
                            epoch_ms=args.epoch_ms, ed25519_public_pem=pem, stop=stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BinanceVenueSim", "main", "serve_binance"]
