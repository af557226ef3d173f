"""`quantarb bench orders`: the live order path against the simulated venues on loopback.

Three figures, one run, one process (the OKX and Binance spot simulators run in this event
loop on 127.0.0.1:0; `quantarb_tui/bench/venues.py`):

- (a) tick to trade (`tick_to_trade.py`): a raw market frame's arrival to both legs' order
  requests written to their sockets, through the real normalizer, pipeline, risk gate,
  journal (write-ahead committed with fsync before each send) and live gateways;
- (b) order to wire (`order_wire.py`): one order at a time, our gateway's `place()` (over
  its WebSocket order entry and over REST) next to ccxt's `create_order_ws` and async
  `create_order` against the same simulator, interleaved, to the request's last byte on the
  socket; and their ratios;
- (c) signing cost per order request (`signing.py`), ours and ccxt's `sign()`.

Targets (issue 14): tick-to-trade p99 <= 1 ms; ours >= 5x faster to the wire than ccxt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.clock import RealClock
from core.models import Venue
from quantarb_tui.bench import signing
from quantarb_tui.bench.order_wire import bench_venue, load_ccxt
from quantarb_tui.bench.tick_to_trade import bench_config, bench_tick_to_trade
from quantarb_tui.bench.venues import simulated_venues
from quantarb_tui.bench.wire import WireProbe

TARGET_TICK_TO_TRADE_P99_US = 1000.0
TARGET_RATIO = 5.0


async def _bench(intents: int, orders: int, sign_n: int, warmup: int) -> dict[str, Any]:
    clock = RealClock()  # ccxt signs with the machine's clock: the simulators check it
    probe = WireProbe()
    ccxt = load_ccxt()
    with probe.installed():
        async with simulated_venues(bench_config(), clock) as venues:
            t2t = await bench_tick_to_trade(venues, clock, probe, intents=intents, warmup=warmup)
            wire: dict[str, Any] = {}
            ccxt_clients: dict[Venue, Any] = {}
            for venue in ("okx", "binance"):
                result, client = await bench_venue(venue, venues, clock, probe, orders=orders, warmup=warmup,
                                                   ccxt=ccxt)
                wire[venue] = result
                if client is not None:
                    ccxt_clients[venue] = client
    sign: dict[str, Any] = {"ours": signing.ours(sign_n)}
    sign["ccxt"] = (signing.ccxt_sign(ccxt_clients["okx"], ccxt_clients["binance"], sign_n)
                    if len(ccxt_clients) == 2 else None)
    return {
        "tick_to_trade": t2t,
        "order_to_wire": {"orders_per_client": orders, "ccxt": _ccxt_version(ccxt), **wire},
        "signing": {"iterations": sign_n, **sign},
        "targets": {"tick_to_trade_p99_us": TARGET_TICK_TO_TRADE_P99_US, "ratio_ccxt_over_ours": TARGET_RATIO},
        "notes": {
            "simulators": "in process on 127.0.0.1:0; OKX per-key rate windows off; accounts never short",
            "ccxt": "enableRateLimit off (its throttle would sleep between orders this close together)",
            "to_wire": "call -> the write that held the order request's last byte (asyncio transport write)",
        },
    }


def _ccxt_version(ccxt: Any | None) -> str | None:
    if ccxt is None:
        return None
    version = getattr(ccxt, "__version__", None)
    return str(version) if version is not None else "unknown"


def _lines(r: dict[str, Any]) -> list[str]:
    t = r["tick_to_trade"]
    tt = t["tick_to_trade_us"]
    br = t["breakdown_us"]
    share = t["journal_share"]
    less = t["less_write_ahead_us"]
    lines = [
        f"(a) tick->trade ({t['intents']} intents, both legs on the wire): p50 {tt['p50']} us  p99 {tt['p99']} us  "
        f"max {tt['max']} us (target p99 <= {TARGET_TICK_TO_TRADE_P99_US:.0f} us)",
        f"    decide p50 {br['decide']['p50']} us, to write-ahead {br['to_write_ahead']['p50']} us, "
        f"write-ahead (fsync) {br['write_ahead']['p50']} us, after it {br['after_write_ahead']['p50']} us; "
        f"journal share p50 {share['p50']:.0%}",
        f"    less the write-ahead: p50 {less['p50']} us  p99 {less['p99']} us; "
        f"groups {t['groups']}",
    ]
    for venue in ("okx", "binance"):
        w = r["order_to_wire"][venue]
        parts = [f"{name} {w[name]['to_wire_us']['p50']} / {w[name]['to_wire_us']['p99']}"
                 for name in ("ours_ws", "ours_rest", "ccxt_ws", "ccxt_rest") if name in w]
        lines.append(f"(b) {venue} order->wire p50 / p99 us: " + ", ".join(parts))
        ratios = w.get("ratios")
        if ratios is not None:
            lines.append("    ccxt / ours: " + ", ".join(f"{name} p50 x{x['p50']} p99 x{x['p99']}"
                                                         for name, x in ratios.items())
                         + f" (target >= x{TARGET_RATIO:g})")
    s = r["signing"]
    ours = s["ours"]
    theirs = s["ccxt"] or {}
    lines.append(f"(c) signing ns/request: okx REST {ours['okx_rest_ns']} (ccxt {theirs.get('okx_rest_ns', '-')}), "
                 f"okx WS 0, binance REST {ours['binance_rest_ns']} (ccxt {theirs.get('binance_rest_ns', '-')}), "
                 f"binance WS API {ours['binance_ws_api_ns']}")
    return lines


def bench_orders(*, intents: int = 1000, orders: int = 500, sign_iterations: int = 20_000,
                 warmup: int = 20) -> dict[str, Any]:
    result = asyncio.run(_bench(intents, orders, sign_iterations, warmup))
    result["lines"] = _lines(result)
    return result


__all__ = ["bench_orders"]
