"""Shared pieces of the MT5 bridge tests: a bridge on known secrets, signed requests, commands."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from core.clock import Clock
from core.commands import CommandState, Mt5Command
from core.instruments import Instrument
from core.models import Order, OrderPurpose, Quote, Side
from mt5_bridge.auth import SignatureVerifier, sign
from mt5_bridge.bridge import Mt5Bridge
from mt5_bridge.queue import CommandQueue, InMemoryCommandStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VECTORS_FILE = FIXTURES / "mt5_signing_vectors.json"
DOC_FILE = Path(__file__).resolve().parents[1] / "docs" / "mt5-protocol.md"

SECRETS = {"T1": b"secret-of-terminal-one", "T2": b"secret-of-terminal-two"}
SYMBOLS = {"T1": {"XAUUSD", "BTCUSD"}, "T2": {"XAUUSD"}}
MAGIC = 7701


def instrument(symbol: str = "XAUUSD") -> Instrument:
    return Instrument(
        venue="mt5", symbol=symbol, pair="XAU", qty_per_unit=Decimal(100), tick_size=Decimal("0.01"),
        lot_step=Decimal("0.01"), min_qty=Decimal("0.01"), taker_fee_bps=0.0,
    )


def make_command(
    command_id: str = "c-1",
    *,
    terminal: str = "T1",
    volume: str = "0.10",
    expires_msc: int = 1_732_150_002_000,
    created_ms: int = 1_732_150_000_000,
    side: Side = "buy",
    symbol: str = "XAUUSD",
) -> Mt5Command:
    return Mt5Command(
        command_id=command_id, terminal=terminal, group_id="g-1", client_order_id=command_id, kind="open",
        symbol=symbol, side=side, volume=Decimal(volume), price=Decimal("2650.31"), deviation_points=20,
        filling="IOC", magic=MAGIC, position=0, expires_msc=expires_msc, created_ms=created_ms,
        state=CommandState.PENDING,
    )


def held(queue: CommandQueue, command_id: str) -> Mt5Command:
    """The command `command_id` the queue holds (failing the test when it holds none)."""
    command = queue.get(command_id)
    assert command is not None, f"the queue holds no command {command_id!r}"
    return command


def make_order(client_order_id: str = "ord-1", qty: str = "0.10", *, created_ms: int = 0, side: Side = "buy",
               symbol: str = "XAUUSD") -> Order:
    return Order(
        client_order_id=client_order_id, group_id="g-1", venue="mt5", symbol=symbol, side=side,
        qty=Decimal(qty), price=Decimal("2650.31"), purpose=OrderPurpose.ENTRY, created_ms=created_ms,
    )


@dataclass
class Rig:
    """A bridge on the test secrets, with the quotes it emitted and a settable health status."""

    clock: Clock
    store: InMemoryCommandStore
    queue: CommandQueue
    bridge: Mt5Bridge
    quotes: list[Quote] = field(default_factory=list)
    status: list[str] = field(default_factory=lambda: ["ok"])


def make_rig(clock: Clock, *, window_ms: int = 30_000) -> Rig:
    store = InMemoryCommandStore()
    queue = CommandQueue(store, clock)
    quotes: list[Quote] = []
    status = ["ok"]
    bridge = Mt5Bridge(
        verifier=SignatureVerifier(SECRETS, clock, window_ms),
        queue=queue,
        clock=clock,
        symbols=SYMBOLS,
        quote_sink=quotes.append,
        magic=MAGIC,
        status=lambda: status[0],
    )
    return Rig(clock, store, queue, bridge, quotes, status)


def signed_headers(method: str, path_with_query: str, body: bytes, *, clock: Clock, terminal: str = "T1",
                   secret: bytes | None = None, ts: int | None = None) -> dict[str, str]:
    stamp = str(clock.time_ms() if ts is None else ts)
    key = SECRETS.get(terminal, b"no-such-secret") if secret is None else secret
    return {
        "X-QA-Terminal": terminal,
        "X-QA-Timestamp": stamp,
        "X-QA-Signature": sign(key, stamp, method, path_with_query, body),
    }


class Ea:
    """The EA side of the tests: signed requests with a fresh timestamp each."""

    def __init__(self, client: httpx.AsyncClient, clock: Clock, terminal: str = "T1") -> None:
        self.client = client
        self.clock = clock
        self.terminal = terminal
        self._last_ts = 0

    def _stamp(self) -> int:
        # Two identical requests in one millisecond would be a replay: keep stamps distinct.
        self._last_ts = max(self.clock.time_ms(), self._last_ts + 1)
        return self._last_ts

    async def request(self, method: str, path: str, body: bytes | dict[str, Any] = b"", **kw: Any) -> httpx.Response:
        raw = json.dumps(body, separators=(",", ":")).encode() if isinstance(body, dict) else body
        headers = signed_headers(method, path, raw, clock=self.clock, terminal=self.terminal, ts=self._stamp(), **kw)
        return await self.client.request(method, path, content=raw, headers=headers)

    async def tick(self, *ticks: dict[str, Any]) -> httpx.Response:
        return await self.request("POST", "/mt5/tick", {"ticks": list(ticks)})

    async def poll(self, wait_ms: int = 0) -> list[dict[str, Any]]:
        resp = await self.request("GET", f"/mt5/commands?wait_ms={wait_ms}")
        assert resp.status_code == 200, resp.text
        commands: list[dict[str, Any]] = resp.json()["commands"]
        return commands

    async def ack(self, command_id: str, status: str = "accepted", retcode: int = 10009,
                  reason: str = "") -> httpx.Response:
        return await self.request("POST", "/mt5/ack", {"command_id": command_id, "status": status,
                                                        "retcode": retcode, "reason": reason})

    async def fill(self, command_id: str, deal: int, volume: float, price: float = 2650.35, *,
                   side: str = "buy", symbol: str = "XAUUSD", commission: float = -0.35) -> httpx.Response:
        return await self.request("POST", "/mt5/fill", {
            "command_id": command_id, "deal": deal, "order": 456, "position": 789, "symbol": symbol,
            "side": side, "volume": volume, "price": price, "commission": commission,
            "time_msc": 1_732_150_000_456,
        })


def tick(symbol: str = "XAUUSD", bid: float = 2650.11, ask: float = 2650.31,
         time_msc: int = 1_732_150_000_123) -> dict[str, Any]:
    return {"symbol": symbol, "bid": bid, "ask": ask, "time_msc": time_msc}


def state_of(rig: Rig) -> object:
    """Everything a request could change, for no-change assertions."""
    commands = sorted(
        (c.command_id, c.state, c.deliveries, c.retcode, c.reason, tuple((f.deal, f.volume) for f in c.fills))
        for c in rig.queue.commands()
    )
    healths = map(rig.bridge.health, rig.bridge.terminals)
    health = tuple((h.terminal, h.ticks, h.last_tick_ns, h.account) for h in healths)
    return (commands, len(rig.quotes), health, rig.store.saves)

