"""Fixtures for the TUI tests: a deterministic demo runtime on a manual clock.

The demo's groups write to a real SQLite ledger in tmp_path, so group detail and history
come from the real ledger. `Runtime.start()` would also start the loopback venues, so the
tests open the ledger themselves (`open_ledger`) and step the market with `drive()`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import demo_config
from core.models import Order, Venue
from core.orders import is_terminal
from core.ports import ExecutionGateway, OrderUpdate
from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp


@pytest.fixture
def demo_runtime(tmp_path: Path) -> Runtime:
    """The built-in demo on a manual clock with its fixed seed: same data on every run."""
    runtime = Runtime(
        demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "t.db"), mt5_in_process=True
    )
    for gateway in runtime.gateways.values():
        if hasattr(gateway, "_run"):
            gateway._run = "run"  # paper venue ids carry a wall-clock run id; the pictures must not
    return runtime


def make_app(runtime: Runtime) -> QuantArbApp:
    """The app without its timer or autostart: tests refresh explicitly (deterministic)."""
    app = QuantArbApp(runtime, autostart=False, refresh_hz=None)
    app.animation_level = "none"
    return app


async def open_ledger(runtime: Runtime) -> None:
    """What `Runtime.start()` does for the ledger, without starting the loopback venues."""
    await runtime.open_ledger()


async def close_ledger(runtime: Runtime) -> None:
    await runtime.close_ledger()


async def warm(app: QuantArbApp, runtime: Runtime, steps: int = 1500, chunks: int = 15) -> None:
    """Open the ledger and drive the demo market, refreshing the view between chunks so the
    edge sparklines have a history (30 simulated seconds by default)."""
    await open_ledger(runtime)
    for _ in range(chunks):
        await runtime.driver.drive(steps // chunks, 20.0)
        app.refresh_view()
    if runtime.ledger is not None:
        await runtime.ledger.flush()


class SilentVenue:
    """A gateway that never answers until released: its legs stay in flight."""

    def __init__(self, inner: ExecutionGateway) -> None:
        self.inner = inner
        self.released = asyncio.Event()

    @property
    def venue(self) -> Venue:
        return self.inner.venue

    async def place(self, order: Order) -> OrderUpdate:
        await self.released.wait()
        return await self.inner.place(order)

    async def cancel(self, order: Order) -> OrderUpdate:
        await self.released.wait()
        return await self.inner.cancel(order)

    async def query(self, order: Order) -> OrderUpdate:
        await self.released.wait()
        return await self.inner.query(order)


def step_market(runtime: Runtime, steps: int, dt_ms: float = 20.0) -> None:
    """Like `drive()` but without running the groups: intents stay in flight."""
    for _ in range(steps):
        runtime.driver.step_market(dt_ms)


async def groups_in_flight(runtime: Runtime, venue: Venue = "okx", want: int = 2, max_steps: int = 3000) -> Any:
    """Silence one venue and run the orchestrator: the next groups on that venue stay
    `working` with their other leg filled. Returns (silent venue, orchestrator task).

    After every market step the other groups are let to finish (bounded wait on a condition:
    the ledger's durable writes run in a thread), so which groups end up in flight does not
    depend on scheduling and the picture is the same on every run. Either bound running out
    fails the test, naming what did not happen."""
    silent = SilentVenue(runtime.gateways[venue])
    runtime.gateways[venue] = silent
    task = asyncio.create_task(runtime.orchestrator.run())
    for _ in range(max_steps):
        step_market(runtime, 1)
        for _ in range(2000):
            if all(_settled_but(group, venue) for group in runtime.orchestrator.open.values()):
                break
            await asyncio.sleep(0.001)
        else:
            unsettled = [g.group_id for g in runtime.orchestrator.open.values() if not _settled_but(g, venue)]
            raise AssertionError(f"groups not waiting on {venue} did not settle within ~2 s: {unsettled}")
        if len(runtime.orchestrator.open) >= want:
            break
    else:
        raise AssertionError(f"only {len(runtime.orchestrator.open)} of {want} groups in flight on {venue} "
                             f"after {max_steps} market steps")
    if runtime.ledger is not None:
        await runtime.ledger.flush()
    return silent, task


def _settled_but(group: Any, venue: Venue) -> bool:
    """A group that can only be waiting on the silent venue (any other group must have closed)."""
    entries = [o for o in group.orders if o.purpose == "entry"]
    return (len(entries) == 2 and any(o.venue == venue for o in entries)
            and all(is_terminal(o.state) for o in entries if o.venue != venue))
