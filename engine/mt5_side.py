"""The MT5 venue, composed: embedded listener, bridge, command queue, gateway (and in the
demo, a companion terminal: the EA simulator on its own broker, from `engine.demo`).

The EA pushes ticks and pulls commands over signed HTTP (docs/mt5-protocol.md); ticks become
quotes through the same `ingest()` as every other venue, and MT5 legs are executed by
enqueuing commands that the EA acknowledges and fills. In the demo the EA simulator is a real
HTTP client of the real listener, so the demo exercises the whole handshake.
"""

from __future__ import annotations

import asyncio
import secrets as _secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from starlette.types import ASGIApp

from core.clock import Clock
from core.commands import CommandStore, Mt5Command
from core.config import ListenerConfig, Mt5VenueConfig
from core.instruments import Instrument
from core.models import Quote
from engine.settings import Secrets, mt5_secret_env_var
from engine.snapshot import FeedRow, TerminalRow
from mt5_bridge.app import create_app
from mt5_bridge.auth import SignatureVerifier
from mt5_bridge.bridge import Mt5Bridge, PositionState
from mt5_bridge.gateway import MT5Gateway
from mt5_bridge.lease import DEFAULT_LEASE_MS
from mt5_bridge.queue import CommandQueue
from mt5_bridge.server import EmbeddedServer, ListenerLimits

DEMO_TERMINAL = "DEMO"
# A terminal whose last tick is older than this is shown as stale.
STALE_MS = 5_000


def listener_server(app: ASGIApp, listener: ListenerConfig) -> EmbeddedServer:
    """The embedded listener for `app` as `[listener]` configures it (address, TLS, limits)."""
    return EmbeddedServer(
        app,
        listener.host,
        listener.port,
        tls_cert=listener.tls_cert,
        tls_key=listener.tls_key,
        limits=ListenerLimits(
            max_connections=listener.max_connections,
            request_timeout_s=listener.request_timeout_s,
            keep_alive_s=listener.keep_alive_s,
        ),
    )


class Terminal(Protocol):
    """A terminal that runs beside the engine (the demo's EA simulator): started once the
    listener listens, stopped before it closes."""

    async def start(self, url: str) -> None: ...

    async def stop(self) -> None: ...


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


class MissingTerminalSecret(ValueError):
    """A real MT5 terminal of the config has no secret in the environment."""

    def __init__(self, terminal: str) -> None:
        self.terminal = terminal
        super().__init__(f"MT5 terminal {terminal} has no secret: set {mt5_secret_env_var(terminal)} "
                         f"(or {mt5_secret_env_var(terminal)}_FILE)")


def terminal_secrets(venue: Mt5VenueConfig, secrets: Secrets | None, simulated: bool) -> dict[str, bytes]:
    """Each configured terminal's shared secret: from the environment, or (simulated terminals
    only) one generated for the run. MissingTerminalSecret names the first one missing."""
    out: dict[str, bytes] = {}
    for terminal in venue.terminals:
        secret = secrets.mt5_secret(terminal) if secrets is not None else None
        if secret is not None:
            out[terminal] = secret.get_secret_value().encode()
        elif simulated:
            out[terminal] = Mt5Side.demo_secret()
        else:
            raise MissingTerminalSecret(terminal)
    return out


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
        terminal: Terminal | None = None,
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
            # A lease must outlive a command the EA holds, or a second instance could take over
            # while the first still executes it.
            instance_lease_ms=max(DEFAULT_LEASE_MS, 2 * venue.command_ttl_ms),
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
            account=lambda: self.bridge.account(terminals[0]),
            close_opposite=venue.close_opposite,
        )
        self._listener = listener
        self.extra_routes: Sequence[object] = extra_routes
        self.server = self._server()
        self._terminal = terminal

    def _server(self) -> EmbeddedServer:
        return listener_server(
            create_app(self.bridge, extra_routes=self.extra_routes),  # type: ignore[arg-type]
            self._listener,
        )

    @staticmethod
    def demo_secret() -> bytes:
        """A secret for the demo terminal, generated for this run (known only to the EA sim)."""
        return _secrets.token_hex(32).encode()

    async def start(self, extra_routes: Sequence[object] | None = None) -> None:
        """`extra_routes` (the operator API) join the MT5 routes on the same listener."""
        await self.queue.restore()
        if extra_routes is not None:
            self.extra_routes = extra_routes
            self.server = self._server()
        await self.server.start()
        if self._terminal is not None:
            await self._terminal.start(self.server.url)

    async def stop(self) -> None:
        if self._terminal is not None:
            await self._terminal.stop()
        await self.server.stop()

    async def positions_after(self, after_ms: int | None, timeout_s: float = 8.0) -> list[PositionState] | None:
        """The first terminal's positions with our magic; with `after_ms`, waits (bounded) for
        a report made after it. None when the terminal has never reported."""
        terminal = self.terminals[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            account = self.bridge.account(terminal)
            if account is not None and (after_ms is None or account.ts_ms >= after_ms):
                return list(account.positions)
            if loop.time() > deadline:
                return list(account.positions) if account is not None else None
            await asyncio.sleep(0.1)

    @property
    def url(self) -> str:
        return self.server.url

    def health_rows(self) -> list[FeedRow]:
        rows = []
        now = self.clock.monotonic_ns()
        wall = self.clock.time_ms()

        def at(ns: int) -> int | None:  # a monotonic instant on the wall clock
            return wall - (now - ns) // 1_000_000 if ns else None

        for terminal in self.terminals:
            h = self.bridge.health(terminal)
            age = (now - h.last_tick_ns) / 1e6 if h.last_tick_ns else None
            state = "waiting" if age is None else "live" if age <= STALE_MS else "stale"
            account = h.account
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
                    terminal=TerminalRow(
                        terminal=terminal,
                        last_seen_ms=at(h.last_seen_ns),
                        last_tick_ms=at(h.last_tick_ns),
                        account_ms=account.ts_ms if account is not None else None,
                        margin_mode=account.margin_mode if account is not None else None,
                        trade_allowed=account.trade_allowed if account is not None else None,
                    ),
                )
            )
        return rows
