"""An engine to SIGKILL: one hedge group, its OKX leg through the live OKX gateway, a real ledger.

Run by `tests/integration/test_okx_kill9.py` as `python -m tests.okx_kill9_engine`, against an
OKX simulator running in the test's own process. It opens the ledger, starts the OKX gateway
(REST, and order entry over the logged-in private WebSocket), submits one group whose OKX leg
goes first (`leg_policy = "exchange_first"`: the MT5 leg waits for it) and runs it through the
real HedgeOrchestrator and GuardedJournal. It prints `group <id> <okx client order id>` once
submitted, and then the test kills it at one of two points:

- `--hold-before-send FLAG`: the gateway's `place()` is reached and never sends: FLAG gets
  `<client order id> <its state as committed in the ledger file at that moment> <ahead|absent>`
  (read by another connection: `new` when the write-ahead committed before the send, `none`
  if not; `ahead` when its row is in the write-ahead file), then it waits; with
  `--write-ahead file` it SIGKILLs itself right there instead, before the event loop runs
  again, so the journal's writer cannot have committed the row (ledger.ahead);
- without it: the order is sent; the test's simulator acts on it and holds its answer, so the
  engine waits for an answer that it never journals.

`FillingVenue` is the MT5 leg's venue, shared with the test's restarted engine: it fills every
order at its limit and logs every call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path

import httpx

from core.clock import RealClock
from core.config import RiskConfig, demo_config
from core.hedge import client_order_id
from core.instruments import Instrument
from core.models import ExecutionIntent, ExecutionLeg, Fill, Order, OrderState, Venue
from core.ports import ExecutionGateway, OrderUpdate
from core.risk import RiskGate
from engine.events import EventLog
from engine.journal import GuardedJournal, WriteAhead
from engine.orchestrator import HedgeOrchestrator
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import OkxGateway, OkxGatewayConfig
from ledger.ahead import ahead_path, read_ahead
from ledger.ledger import Ledger

KEY = "kill9-okx-key"
SECRET = "KILL9SECRET0000000000000000000000"
PASSPHRASE = "Kill9-pass"
PAIRS = demo_config().build_pairs()
INSTRUMENTS: dict[tuple[Venue, str], Instrument] = {i.key: i for p in PAIRS for i in p.instruments}
ASSET_OF: dict[tuple[Venue, str], str] = {i.key: p.name for p in PAIRS for i in p.instruments}
OKX_BTC = INSTRUMENTS[("okx", "BTC-USDT-SWAP")]
MT5_BTC = INSTRUMENTS[("mt5", "BTCUSD")]
BASE_QTY = Decimal("0.05")  # 5 OKX contracts of 0.01 BTC
OKX_BID, OKX_ASK = 97000.0, 97000.1
TOUCH: dict[tuple[Venue, str], tuple[float, float]] = {
    ("okx", OKX_BTC.symbol): (OKX_BID, OKX_ASK),
    ("mt5", MT5_BTC.symbol): (97090.0, 97100.0),
}
ORDER_TIMEOUT_MS = 120_000  # longer than the test ever waits: the kill comes first


class FillingVenue:
    """A venue that fills every order in full at its limit, remembers it by client order id,
    answers queries from what it holds (not found: rejected) and logs every call."""

    def __init__(self, venue: Venue) -> None:
        self._venue = venue
        self.calls: list[tuple[str, str]] = []
        self.orders: dict[str, OrderUpdate] = {}

    @property
    def venue(self) -> Venue:
        return self._venue

    async def place(self, order: Order) -> OrderUpdate:
        self.calls.append(("place", order.client_order_id))
        held = self.orders.get(order.client_order_id)
        if held is None:
            fill = Fill(self._venue, f"{self._venue}-{order.client_order_id}", order.client_order_id, order.qty,
                        order.price, Decimal(0), "USD", order.created_ms)
            held = self.orders[order.client_order_id] = OrderUpdate(
                order.client_order_id, OrderState.FILLED, f"v-{order.client_order_id}", [fill])
        return held

    async def query(self, order: Order) -> OrderUpdate:
        self.calls.append(("query", order.client_order_id))
        held = self.orders.get(order.client_order_id)
        return held or OrderUpdate(order.client_order_id, OrderState.REJECTED, reason="order not found")

    async def cancel(self, order: Order) -> OrderUpdate:
        self.calls.append(("cancel", order.client_order_id))
        return await self.query(order)


def wide_gate(clock: RealClock) -> RiskGate:
    return RiskGate.from_config(clock, RiskConfig(max_leg_notional=Decimal(10**6), max_gross_exposure=Decimal(10**7)))


def orchestrator(gateways: dict[Venue, ExecutionGateway], journal: GuardedJournal, clock: RealClock,
                 gate: RiskGate) -> HedgeOrchestrator:
    return HedgeOrchestrator(
        gateways, INSTRUMENTS, gate, clock, EventLog(), leg_policy="exchange_first", journal=journal,
        order_timeout_ms=ORDER_TIMEOUT_MS, group_deadline_ms=ORDER_TIMEOUT_MS, poll_interval_s=0.0,
        touch=lambda v, s: TOUCH.get((v, s)), asset_of=ASSET_OF,
    )


def okx_gateway(rest_url: str, ws_url: str, clock: RealClock, client: httpx.AsyncClient | None = None) -> OkxGateway:
    """The live OKX gateway on the simulator (no not-found grace: a restart has nothing in flight)."""
    config = OkxGatewayConfig(rest_url=rest_url, ws_private_url=ws_url, request_timeout_s=110.0,
                              outcome_wait_s=1.0, not_found_grace_s=0.0)
    return OkxGateway(OkxCredentials(KEY, SECRET, PASSPHRASE), clock, config, client=client)


def intent(now_ms: int) -> ExecutionIntent:
    """Buy 5 contracts on OKX at 97001 (marketable against the simulator's 97000.1), sell on MT5."""
    return ExecutionIntent(
        pair="BTC",
        buy=ExecutionLeg("okx", OKX_BTC.symbol, "buy", OKX_BTC.to_venue_qty(BASE_QTY), Decimal("97001"), BASE_QTY),
        sell=ExecutionLeg("mt5", MT5_BTC.symbol, "sell", MT5_BTC.to_venue_qty(BASE_QTY), Decimal("97090"), BASE_QTY),
        base_qty=BASE_QTY,
        expected_edge_bps=9.0,
        buy_price=97001.0,
        sell_price=97090.0,
        created_ms=now_ms,
    )


def committed_state(ledger_path: Path, cid: str) -> str:
    """The order's state as committed in the ledger file (read by a separate connection), or
    `none` when it has no committed row."""
    con = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        found = con.execute("SELECT state FROM orders WHERE client_order_id = ?", (cid,)).fetchall()
    finally:
        con.close()
    return str(found[0][0]) if found else "none"


def in_ahead_file(ledger_path: Path, cid: str) -> bool:
    rows = read_ahead(ahead_path(ledger_path)).rows
    return any(kind == "order_created" and cid in bytes(payload).decode() for _, _, kind, _, payload in rows)


async def run(ledger_path: Path, rest_url: str, ws_url: str, hold_flag: Path | None, write_ahead: WriteAhead) -> None:
    clock = RealClock()
    ledger = await Ledger.open(ledger_path, clock=clock)
    journal = GuardedJournal(ledger, on_failure=lambda error: print(f"ledger failed: {error}", flush=True),
                             write_ahead=write_ahead)
    okx = okx_gateway(rest_url, ws_url, clock)
    await okx.start([OKX_BTC.symbol])
    await okx.stream.wait_ready(10.0)
    if hold_flag is not None:
        async def held(order: Order) -> OrderUpdate:
            # What another connection reads now is what was durable when the send began (read
            # synchronously: no await may let the writer commit more in between).
            state = committed_state(ledger_path, order.client_order_id)
            ahead = "ahead" if in_ahead_file(ledger_path, order.client_order_id) else "absent"
            hold_flag.write_text(f"{order.client_order_id} {state} {ahead}")  # noqa: ASYNC240 - see above
            if write_ahead == "file":
                os.kill(os.getpid(), signal.SIGKILL)  # before the writer task can run again
            await asyncio.get_running_loop().create_future()  # never sent: the kill comes here
            raise AssertionError("unreachable")

        okx.place = held  # type: ignore[method-assign]
    orch = orchestrator({"okx": okx, "mt5": FillingVenue("mt5")}, journal, clock, wide_gate(clock))
    group = orch.submit(intent(clock.time_ms()))
    print(f"group {group.group_id} {client_order_id(group.group_id, 0, 0)}", flush=True)
    await orch.execute(group)
    print("group finished: the kill came too late", flush=True)  # the test fails on this


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.okx_kill9_engine")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--rest-url", required=True)
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--hold-before-send", type=Path, default=None)
    parser.add_argument("--write-ahead", choices=["file", "commit"], default="file")
    args = parser.parse_args(argv)
    asyncio.run(run(args.ledger, args.rest_url, args.ws_url, args.hold_before_send, args.write_ahead))
    return 0


if __name__ == "__main__":
    sys.exit(main())
