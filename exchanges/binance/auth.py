"""Binance request signing: HMAC-SHA256 for REST and WebSocket API requests, Ed25519 for the
WebSocket API's `session.logon`.

REST (SIGNED endpoints): the payload is the percent-encoded query string followed, with no
separator, by the request body; the signature is the lowercase hex HMAC-SHA256 of the secret
over it, sent last as `signature`, with the key in the `X-MBX-APIKEY` header. `timestamp`
(ms) and `recvWindow` go in before signing. WebSocket API: every parameter except
`signature`, sorted by name, joined as `key=value&...`; HMAC keys sign each request, an
Ed25519 key signs `session.logon` (base64 signature) and the session is then authorized.

Secrets never leave this module in a string meant for people: `Credentials` hides them from
`repr`, and no error message here includes one. Ed25519 needs the `cryptography` package;
without it `ed25519_available()` is False and a logon is refused with a clear error.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode


class SigningError(ValueError):
    """A key cannot sign (no Ed25519 support, an unreadable key); never holds the key."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key, its HMAC secret, and optionally an Ed25519 private key (PEM) for logon."""

    api_key: str
    secret: str = field(repr=False)
    ed25519_private_pem: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.api_key or not self.secret:
            raise ValueError("a Binance API key and secret are both required")
        if any(c.isspace() for c in self.api_key):
            raise ValueError("the Binance API key contains whitespace (a copy-paste error?)")


def hmac_hex(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of `payload` under `secret`."""
    return hmac.new(secret.encode(), payload.encode(), sha256).hexdigest()


def encode_params(params: Iterable[tuple[str, str]]) -> str:
    """The query string as sent (and as signed): order kept, percent-encoded."""
    return urlencode(list(params))


def signed_query(
    params: Iterable[tuple[str, str]], secret: str, *, timestamp_ms: int, recv_window_ms: int
) -> str:
    """`params` + recvWindow + timestamp + signature, ready for the URL or a form body."""
    items = [*params, ("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))]
    query = encode_params(items)
    return f"{query}&signature={hmac_hex(secret, query)}"


def ws_payload(params: Mapping[str, Any]) -> str:
    """The WebSocket API signature payload: every parameter but `signature`, sorted by name."""
    return "&".join(f"{k}={_text(params[k])}" for k in sorted(params) if k != "signature")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sign_ws_params(
    params: Mapping[str, Any], credentials: Credentials, *, timestamp_ms: int, recv_window_ms: int
) -> dict[str, Any]:
    """A signed WebSocket API request's params (apiKey, recvWindow, timestamp, signature added)."""
    out: dict[str, Any] = {**params, "apiKey": credentials.api_key, "recvWindow": recv_window_ms,
                           "timestamp": timestamp_ms}
    out["signature"] = hmac_hex(credentials.secret, ws_payload(out))
    return out


def ed25519_available() -> bool:
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ImportError:  # pragma: no cover - cryptography is installed in the dev venv
        return False
    return True


def ed25519_sign(private_pem: bytes, payload: str) -> str:
    """Base64 Ed25519 signature of `payload` (Binance's format for Ed25519 keys)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as exc:  # pragma: no cover - see ed25519_available()
        raise SigningError("Ed25519 signing needs the 'cryptography' package") from exc
    try:
        key = load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("the Ed25519 private key is not a readable unencrypted PEM key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("the private key is not an Ed25519 key")
    return base64.b64encode(key.sign(payload.encode())).decode()


def logon_params(credentials: Credentials, *, timestamp_ms: int, recv_window_ms: int) -> dict[str, Any]:
    """`session.logon` params, signed with the Ed25519 key."""
    if credentials.ed25519_private_pem is None:
        raise SigningError("session.logon needs an Ed25519 key; this key has none")
    params: dict[str, Any] = {"apiKey": credentials.api_key, "recvWindow": recv_window_ms,
                              "timestamp": timestamp_ms}
    params["signature"] = ed25519_sign(credentials.ed25519_private_pem, ws_payload(params))
    return params


__all__ = [
    "Credentials",
    "SigningError",
    "ed25519_available",
    "ed25519_sign",
    "encode_params",
    "hmac_hex",
    "logon_params",
    "sign_ws_params",
    "signed_query",
    "ws_payload",
]
