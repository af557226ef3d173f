"""Run the OKX simulator on its own: `python -m sim.okx_sim_cli --port N --api-key K --secret S --passphrase P`.

`serve_okx` prices the demo's OKX instruments (or the ones given) from a seeded synthetic market
stepped in real time (with `epoch_ms`: the demo's, on the grid a rehearsal world's processes
share, `sim.epoch_market`), serves REST and WebSocket (public and private) on one port, prints
one line `listening on http://HOST:PORT` and serves until SIGTERM or SIGINT. The account behind
the key starts with 100 000 USDT unless `balances` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from core.clock import Clock, RealClock
from core.config import demo_config
from core.instruments import Pair
from sim.epoch_market import pacer
from sim.okx_accounts import spec_from_instrument
from sim.okx_server import OkxSimServer


async def serve_okx(
    host: str,
    port: int,
    api_key: str,
    secret: str,
    passphrase: str | None = None,
    *,
    demo: bool = False,
    pairs: Sequence[Pair] | None = None,
    balances: Mapping[str, Decimal | str | int] | None = None,
    seed: int = 7,
    epoch_ms: int | None = None,
    step_s: float = 0.05,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when none is given)."""
    if not api_key or not secret or not passphrase:
        raise ValueError("okx simulator: api key, secret and passphrase must all be given")
    if epoch_ms is not None and pairs is not None:
        raise ValueError("okx simulator: a shared market (epoch_ms) prices the world's pairs, not given ones")
    clk = clock if clock is not None else RealClock()
    chosen = tuple(pairs) if pairs is not None else demo_config().build_pairs()
    insts = [i for p in chosen for i in p.instruments if i.venue == "okx"]
    market = pacer([p for p in chosen if any(i.venue == "okx" for i in p.instruments)], seed=seed, clock=clk,
                   epoch_ms=epoch_ms)
    server = OkxSimServer(host, port, symbols=[i.symbol for i in insts], clock=clk,
                          specs=[spec_from_instrument(i) for i in insts])
    server.private.add_account(api_key, secret, passphrase, balances=balances, demo=demo)
    own_stop = stop is None
    done = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    if own_stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
    async with server:
        for tick in market.snapshot():
            if tick.venue == "okx":
                server.publish(tick)
        (announce or print)(f"listening on {server.http_base_url}")
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), step_s)
            for tick in market.due():
                if tick.venue == "okx":
                    server.publish(tick)
    if own_stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.okx_sim_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--passphrase", required=True)
    parser.add_argument("--demo", action="store_true", help="the key is a demo-trading key (x-simulated-trading: 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epoch-ms", type=int, default=None,
                        help="step the market on the grid shared from this epoch (ms since 1970)")
    args = parser.parse_args(argv)

    def announce(line: str) -> None:
        print(line, flush=True)

    asyncio.run(serve_okx(args.host, args.port, args.api_key, args.secret, args.passphrase, demo=args.demo,
                          seed=args.seed, epoch_ms=args.epoch_ms, announce=announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
