"""`quantarb mt5 sim`: a stand-alone simulated MT5 terminal posting to a running quantarb.

It owns a synthetic market (the demo pairs' MT5 symbols by default), a `SimBroker` account
(kept in `state_file` across restarts when one is given, with the EA's journal and instance
lock in `<state_file>.common/`) and an `EaSimulator` that talks to
the listener at `url` as terminal `terminal` with `secret`. It runs until `duration_s` has
passed, `stop` is set, or the task is cancelled (Ctrl-C), and returns a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.clock import Clock, RealClock
from sim.ea_sim import SIM_RESYNC_FILLS_MS, EaSimulator, MarketTickSource
from sim.mt5_broker import BrokerBehaviour, SimBroker

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8787"


async def run_mt5_sim(
    url: str,
    terminal: str,
    secret: bytes | str,
    *,
    duration_s: float | None = None,
    state_file: str | Path | None = None,
    seed: int = 7,
    epoch_ms: int | None = None,
    symbols: Iterable[str] | None = None,
    magic: int = 7701,
    timer_ms: float = 50,
    account_every_s: float = 2.0,
    fill_latency_ms: tuple[float, float] = (5.0, 40.0),
    behaviour: BrokerBehaviour | None = None,
    balance: float = 100_000.0,
    trade_allowed: bool = True,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    on_started: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """Run a simulated EA against `url`; return a summary dict when it ends.

    The EA keeps posting while the listener is down (each failure said once), so it can start
    before the engine and outlives an engine restart. `epoch_ms` puts its market on the grid a
    rehearsal world shares (`sim.epoch_market`). `on_started(symbols)` is called once the EA
    runs. Cancellation (Ctrl-C under `asyncio.run`) ends it cleanly: the summary is still
    returned, and the broker state is saved when `state_file` is set.
    """
    if duration_s is not None and duration_s < 0:
        raise ValueError("duration_s must be >= 0")
    secret_bytes = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not secret_bytes:
        raise ValueError("the terminal secret is empty")
    clk: Clock = clock if clock is not None else RealClock()
    source = MarketTickSource(seed=seed, clock=clk, symbols=symbols, epoch_ms=epoch_ms)
    broker = SimBroker(
        source.touch,
        clock=clk,
        seed=seed,
        balance=balance,
        specs=source.specs(),
        behaviour=behaviour if behaviour is not None else BrokerBehaviour(slippage_points=2, commission_per_lot=7.0),
        state_file=state_file,
    )
    # With a state file the terminal outlives this process: so do the EA's journal and its
    # instance id (the listener's lease), in a common folder next to it.
    common_dir = Path(state_file).with_name(Path(state_file).name + ".common") if state_file is not None else None
    ea = EaSimulator(
        url, terminal, secret_bytes, source.symbols, broker, source, clk,
        timer_ms=timer_ms, account_every_s=account_every_s, fill_latency_ms=fill_latency_ms,
        seed=seed, magic=magic, common_dir=common_dir, trade_allowed=trade_allowed,
        resync_fills_ms=SIM_RESYNC_FILLS_MS,
    )
    started_ns = clk.monotonic_ns()
    cancelled = False
    run_task = asyncio.create_task(ea.run(), name=f"ea-sim-{terminal}")
    waiters: list[asyncio.Task[Any]] = [run_task]
    if stop is not None:
        waiters.append(asyncio.create_task(stop.wait(), name="ea-sim-stop"))
    log.info("EA simulator %s -> %s (%s)", terminal, url, ", ".join(source.symbols))
    if on_started is not None:
        on_started(list(source.symbols))
    try:
        await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled = True
    finally:
        for w in waiters[1:]:
            w.cancel()
        if not run_task.done():
            await _shielded_stop(ea)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run_task
        if broker.state_file is not None:
            with contextlib.suppress(OSError):
                broker.save()
    acct = broker.account()
    return {
        "url": url,
        "terminal": terminal,
        "symbols": list(source.symbols),
        "elapsed_s": round((clk.monotonic_ns() - started_ns) / 1e9, 3),
        "cancelled": cancelled,
        **ea.stats(),
        "broker_requests": broker.requests,
        "balance": acct.balance,
        "equity": acct.equity,
        "margin_free": acct.margin_free,
        "open_positions": len(broker.positions(magic)),
        "deals": len(broker.history_deals()),
        "state_file": str(broker.state_file) if broker.state_file is not None else None,
    }


async def _shielded_stop(ea: EaSimulator) -> None:
    """Stop the EA even while our own task is being cancelled."""
    stopper = asyncio.ensure_future(ea.stop(grace_s=1.0))
    try:
        await asyncio.shield(stopper)
    except asyncio.CancelledError:
        await stopper


__all__ = ["DEFAULT_URL", "run_mt5_sim"]
