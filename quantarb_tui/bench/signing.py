"""Signing cost per order request: ours (`exchanges/*/auth.py`) and ccxt's `sign()` for the
same order, nanoseconds per request.

What one signed order costs on each path, with the timestamp and everything the request's
signature needs (not the HTTP send):

- OKX REST: `iso_timestamp` + `rest_headers` (HMAC-SHA256 of ts + POST + path + JSON body,
  base64, and the header map). OKX WebSocket order entry signs nothing per order: the
  session logged in once.
- Binance REST: `signed_query` (recvWindow, timestamp, url-encoding, hex HMAC-SHA256).
  Binance WebSocket API with an HMAC key: `sign_ws_params` (sorted params, hex HMAC) on
  every request (an Ed25519 `session.logon` would make it 0 per order).
- ccxt: `exchange.sign(path, ["private"], "POST", params)` for the same order, which also
  builds the URL and JSON/url-encodes the body (ours does that outside signing: the body
  text is made once and signed as sent).

Each figure is the best of `repeat` loops of `n` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exchanges.binance.auth import sign_ws_params, signed_query
from exchanges.okx.auth import iso_timestamp, rest_headers
from exchanges.okx.endpoints import dumps
from quantarb_tui.bench.venues import BN_SYMBOL, OKX_SYMBOL, binance_credentials, okx_credentials

OKX_ORDER = {"instId": OKX_SYMBOL, "tdMode": "cross", "side": "buy", "ordType": "ioc", "px": "97000.1", "sz": "5",
             "clOrdId": "qa1732150000000x1l0a0"}
BN_ORDER = [("symbol", BN_SYMBOL), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "IOC"),
            ("quantity", "0.05"), ("price", "97000.01"), ("newClientOrderId", "qa1732150000000x1l1a0"),
            ("newOrderRespType", "FULL")]


def _ns_per_call(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return round(best, 1)


def ours(n: int, repeat: int = 3) -> dict[str, float]:
    """ns per signed order request on each of our paths."""
    okx = okx_credentials()
    bn = binance_credentials()
    body = dumps(OKX_ORDER)

    def okx_rest() -> object:
        return rest_headers(okx, iso_timestamp(int(time.time() * 1000)), "POST", "/api/v5/trade/order", body)

    def bn_rest() -> object:
        return signed_query(BN_ORDER, bn.secret, timestamp_ms=int(time.time() * 1000), recv_window_ms=5000)

    def bn_ws() -> object:
        return sign_ws_params(dict(BN_ORDER), bn, timestamp_ms=int(time.time() * 1000), recv_window_ms=5000)

    return {
        "okx_rest_ns": _ns_per_call(okx_rest, n, repeat),
        "okx_ws_order_ns": 0.0,  # the logged-in session signs nothing per order
        "binance_rest_ns": _ns_per_call(bn_rest, n, repeat),
        "binance_ws_api_ns": _ns_per_call(bn_ws, n, repeat),
    }


def ccxt_sign(okx_exchange: Any, binance_exchange: Any, n: int, repeat: int = 3) -> dict[str, float]:
    """ns per `sign()` of the same orders by ccxt's OKX and Binance clients (credentials set)."""
    bn_params = dict(BN_ORDER)

    def okx() -> object:
        return okx_exchange.sign("trade/order", ["private"], "POST", dict(OKX_ORDER))

    def binance() -> object:
        return binance_exchange.sign("order", ["private"], "POST", dict(bn_params))

    return {"okx_rest_ns": _ns_per_call(okx, n, repeat), "binance_rest_ns": _ns_per_call(binance, n, repeat)}


__all__ = ["ccxt_sign", "ours"]
