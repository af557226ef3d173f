"""The MT5 venue, composed: embedded listener, bridge, command queue, gateway (and in the
simulated world, the EA simulator on its own simulated broker).

The EA pushes ticks and pulls commands over signed HTTP (DESIGN.md 5.4); ticks become quotes
through the same `ingest()` as every other venue, and MT5 legs are executed by enqueuing
commands that the EA acknowledges and fills. In the demo the EA simulator is a real HTTP
client of the real listener, so the demo exercises the whole handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets as _secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from core.clock import Clock
from core.commands import CommandStore, Mt5Command
from core.config import ListenerConfig, Mt5VenueConfig
from core.instruments import Instrument
from core.models import Quote
from engine.snapshot import FeedRow
from mt5_bridge.app import create_app
from mt5_bridge.auth import SignatureVerifier
from mt5_bridge.bridge import Mt5Bridge
from mt5_bridge.gateway import MT5Gateway
from mt5_bridge.queue import CommandQueue
from mt5_bridge.server import EmbeddedServer
from sim.ea_sim import EaSimulator, TickBoard
from sim.market import SimTick
from sim.mt5_broker import BrokerBehaviour, SimBroker, spec_from_instrument

DEMO_TERMINAL = "DEMO"
# A terminal whose last tick is older than this is shown as stale.
STALE_MS = 5_000


class StoreSlot:
    """The command queue's durable store, attached once the ledger is open (at start).

    Until then (and in runs without a ledger) commands live in memory only.
    """

    def __init__(self) -> None:
        self.target: CommandStore | None = None

    @property
    def authoritative(self) -> bool:
        """Only a store that can be asked by id knows every command ever saved."""
        return self.target is not None and hasattr(self.target, "get_command")

    async def save(self, command: Mt5Command) -> None:
        if self.target is not None:
            await self.target.save(command)

    async def load_open(self) -> list[Mt5Command]:
        return await self.target.load_open() if self.target is not None else []

    async def get(self, command_id: str) -> Mt5Command | None:
        getter = getattr(self.target, "get_command", None)
        if getter is None:
            return None
        command: Mt5Command | None = await getter(command_id)
        return command


class Mt5Side:
    def __init__(
        self,
        venue: Mt5VenueConfig,
        listener: ListenerConfig,
        terminal_secrets: Mapping[str, bytes],
        instruments: Sequence[Instrument],
        clock: Clock,
        sink: Callable[[Quote], object],
        *,
        status: Callable[[], str],
        store: CommandStore | None = None,
        simulate_ea: bool = False,
        seed: int = 7,
        broker_state: Path | None = None,
        extra_routes: Sequence[object] = (),
    ) -> None:
        terminals = list(venue.terminals)
        missing = [t for t in terminals if t not in terminal_secrets]
        if missing:
            raise ValueError(f"no secret for MT5 terminal(s) {', '.join(missing)}")
        self.clock = clock
        self.terminals = terminals
        self.instruments = {i.symbol: i for i in instruments}
        symbols = list(self.instruments)
        self.store = StoreSlot()
        self.store.target = store
        self.queue = CommandQueue(self.store, clock)
        self.bridge = Mt5Bridge(
            verifier=SignatureVerifier({t: terminal_secrets[t] for t in terminals}, clock),
            queue=self.queue,
            clock=clock,
            symbols={t: symbols for t in terminals},
            quote_sink=sink,
            magic=venue.magic,
            status=status,
        )
        # Every MT5 leg goes to the first terminal; the others may still stream ticks.
        self.gateway = MT5Gateway(
            self.queue,
            terminals[0],
            self.instruments,
            clock,
            magic=venue.magic,
            deviation_points=venue.deviation_points,
            filling=venue.filling,
            command_ttl_ms=venue.command_ttl_ms,
        )
        self._listener = listener
        self.extra_routes: Sequence[object] = extra_routes
        self.server = self._server()
        self.board: TickBoard | None = None
        self.ea: EaSimulator | None = None
        self._ea_task: asyncio.Task[None] | None = None
        if simulate_ea:
            self.board = TickBoard(symbols)
            self.broker = SimBroker(
                self.board.touch,
                clock=clock,
                seed=seed,
                specs={s: spec_from_instrument(i) for s, i in self.instruments.items()},
                behaviour=BrokerBehaviour(),
                state_file=broker_state,
            )
            self._ea_secret = terminal_secrets[terminals[0]]
            self._ea_seed = seed

    def _server(self) -> EmbeddedServer:
        listener = self._listener
        return EmbeddedServer(
            create_app(self.bridge, extra_routes=self.extra_routes),  # type: ignore[arg-type]
            listener.host,
            listener.port,
            tls_cert=listener.tls_cert,
            tls_key=listener.tls_key,
        )

    @staticmethod
    def demo_secret() -> bytes:
        """A secret for the demo terminal, generated for this run (known only to the EA sim)."""
        return _secrets.token_hex(32).encode()

    def on_sim_tick(self, tick: SimTick) -> None:
        """The simulated world's MT5 quotes, as the EA's terminal sees them."""
        if self.board is not None:
            self.board.on_tick(tick)

    async def start(self, extra_routes: Sequence[object] | None = None) -> None:
        """`extra_routes` (the operator API) join the MT5 routes on the same listener."""
        await self.queue.restore()
        if extra_routes is not None:
            self.extra_routes = extra_routes
            self.server = self._server()
        await self.server.start()
        if self.board is not None:
            self.ea = EaSimulator(
                self.server.url,
                self.terminals[0],
                self._ea_secret,
                list(self.instruments),
                self.broker,
                self.board,
                self.clock,
                timer_ms=50,
                fill_latency_ms=(5.0, 40.0),
                seed=self._ea_seed,
                magic=self.gateway.magic,
            )
            self._ea_task = asyncio.create_task(self.ea.run(), name="ea-sim")

    async def stop(self) -> None:
        if self.ea is not None:
            await self.ea.stop()
        if self._ea_task is not None:
            self._ea_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ea_task
            self._ea_task = None
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def health_rows(self) -> list[FeedRow]:
        rows = []
        now = self.clock.monotonic_ns()
        for terminal in self.terminals:
            h = self.bridge.health(terminal)
            age = (now - h.last_tick_ns) / 1e6 if h.last_tick_ns else None
            state = "waiting" if age is None else "live" if age <= STALE_MS else "stale"
            rows.append(
                FeedRow(
                    key=f"mt5-{terminal}",
                    name=f"mt5-{terminal}",
                    venue="mt5",
                    transport="http",
                    state=state,
                    last_frame_age_ms=age,
                    frames_per_s=h.ticks_per_s,
                    frames=h.ticks,
                    quotes=h.ticks,
                    reconnects=0,
                    rest_polls=0,
                    dropped=sum(self.bridge.rejected.values()),
                    dropped_by_reason=dict(self.bridge.rejected),
                    seq_resets=0,
                    last_error="",
                )
            )
        return rows
