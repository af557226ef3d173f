"""OKX v5 URLs, paths and request bodies: what goes on the wire, built in one place.

Base URLs are configurable (venue-protocols.md trap 4: `https://www.okx.com` and
`https://openapi.okx.com` both appear in the docs). Demo trading uses the same REST host with
the `x-simulated-trading: 1` header and its own WebSocket host. Bodies are serialized here
once, compactly, and the exact text is both signed and sent.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Literal
from urllib.parse import urlencode

from core.models import Side

REST_URL = "https://www.okx.com"
REST_URL_ALT = "https://openapi.okx.com"
WS_PRIVATE_URL = "wss://ws.okx.com:8443/ws/v5/private"
WS_PRIVATE_DEMO_URL = "wss://wspap.okx.com:8443/ws/v5/private"

TIME = "/api/v5/public/time"
INSTRUMENTS = "/api/v5/public/instruments"
PLACE_ORDER = "/api/v5/trade/order"
CANCEL_ORDER = "/api/v5/trade/cancel-order"
ORDER = "/api/v5/trade/order"
ORDERS_PENDING = "/api/v5/trade/orders-pending"
FILLS = "/api/v5/trade/fills"
BALANCE = "/api/v5/account/balance"
POSITIONS = "/api/v5/account/positions"
TRADE_FEE = "/api/v5/account/trade-fee"

InstType = Literal["SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"]
TdMode = Literal["cash", "cross", "isolated"]

# OKX clOrdId: case-sensitive alphanumerics, 1-32 characters (no '-' or '_').
CL_ORD_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FUTURES_RE = re.compile(r"-\d{6}$")


def inst_type_of(inst_id: str) -> InstType:
    """SWAP, FUTURES or SPOT from the shape of an instrument id (`BTC-USDT-SWAP`, ...)."""
    if inst_id.endswith("-SWAP"):
        return "SWAP"
    if _FUTURES_RE.search(inst_id):
        return "FUTURES"
    return "SPOT"


def check_cl_ord_id(cl_ord_id: str) -> str:
    """The id itself, or ValueError: OKX refuses anything but 1-32 alphanumerics."""
    if not isinstance(cl_ord_id, str) or not CL_ORD_ID_RE.match(cl_ord_id):
        raise ValueError(f"okx clOrdId must be 1-32 letters or digits, got {cl_ord_id!r}")
    return cl_ord_id


def dumps(obj: object) -> str:
    """Compact JSON: the exact text that is signed is the text that is sent."""
    return json.dumps(obj, separators=(",", ":"))


def decimal_text(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros ("97000.1", "2")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def order_args(
    inst_id: str, cl_ord_id: str, side: Side, qty: Decimal, price: Decimal, td_mode: TdMode, *, tag: str = ""
) -> dict[str, str]:
    """One marketable IOC limit order: the REST body and the WebSocket `order` args entry."""
    args = {
        "instId": inst_id,
        "tdMode": td_mode,
        "clOrdId": check_cl_ord_id(cl_ord_id),
        "side": side,
        "ordType": "ioc",
        "px": decimal_text(price),
        "sz": decimal_text(qty),
    }
    if tag:
        args["tag"] = tag
    return args


def cancel_args(inst_id: str, cl_ord_id: str) -> dict[str, str]:
    return {"instId": inst_id, "clOrdId": check_cl_ord_id(cl_ord_id)}


def with_query(path: str, params: dict[str, str]) -> str:
    """The request path with its query string: what a GET signs and requests."""
    present = {k: v for k, v in params.items() if v != ""}
    return f"{path}?{urlencode(present)}" if present else path


__all__ = [
    "BALANCE", "CANCEL_ORDER", "CL_ORD_ID_RE", "FILLS", "INSTRUMENTS", "ORDER", "ORDERS_PENDING", "PLACE_ORDER",
    "POSITIONS", "REST_URL", "REST_URL_ALT", "TIME", "TRADE_FEE", "WS_PRIVATE_DEMO_URL", "WS_PRIVATE_URL",
    "InstType", "TdMode", "cancel_args", "check_cl_ord_id", "decimal_text", "dumps", "inst_type_of", "order_args",
    "with_query",
]  # fmt: skip
