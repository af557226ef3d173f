"""OKX v5 request signing: the REST headers and the private WebSocket login.

OKX signs `timestamp + METHOD + requestPath + body` with HMAC-SHA256 over the API secret and
sends the digest base64-encoded (venue-protocols.md B). For a GET the query string is part of
`requestPath` and the body is empty; for a POST the body is the exact JSON text sent, so the
caller signs the bytes it sends and never re-serializes. REST timestamps are ISO-8601 UTC with
milliseconds; the WebSocket login signs `seconds + "GET" + "/users/self/verify"`.

The credentials never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime

WS_LOGIN_PATH = "/users/self/verify"
DEMO_HEADER = "x-simulated-trading"


@dataclass(frozen=True, slots=True)
class OkxCredentials:
    """An API key with its secret and passphrase (the secret parts are hidden from repr)."""

    api_key: str
    secret: str = field(repr=False)
    passphrase: str = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("api_key", "secret", "passphrase"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"okx credentials: {name} must be a non-empty string")
            if not value.isprintable() or value != value.strip():
                raise ValueError(f"okx credentials: {name} has whitespace or control characters")


def sign(secret: str, prehash: str) -> str:
    """Base64 of HMAC-SHA256(secret, prehash): the OK-ACCESS-SIGN value."""
    digest = hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def iso_timestamp(ms: int) -> str:
    """Milliseconds since the epoch as OKX wants them: `2020-12-08T09:08:57.715Z`."""
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def rest_headers(
    creds: OkxCredentials, timestamp: str, method: str, request_path: str, body: str = "", *, demo: bool = False
) -> dict[str, str]:
    """The headers of one signed REST request. `request_path` includes the query string."""
    method = method.upper()
    headers = {
        "OK-ACCESS-KEY": creds.api_key,
        "OK-ACCESS-SIGN": sign(creds.secret, f"{timestamp}{method}{request_path}{body}"),
        "OK-ACCESS-TIMESTAMP": timestamp,
        "OK-ACCESS-PASSPHRASE": creds.passphrase,
        "Content-Type": "application/json",
    }
    if demo:
        headers[DEMO_HEADER] = "1"
    return headers


def ws_login_args(creds: OkxCredentials, timestamp_s: int) -> dict[str, str]:
    """The one `args` entry of a private WebSocket `login` request."""
    ts = str(timestamp_s)
    return {
        "apiKey": creds.api_key,
        "passphrase": creds.passphrase,
        "timestamp": ts,
        "sign": sign(creds.secret, f"{ts}GET{WS_LOGIN_PATH}"),
    }


__all__ = ["DEMO_HEADER", "WS_LOGIN_PATH", "OkxCredentials", "iso_timestamp", "rest_headers", "sign", "ws_login_args"]
