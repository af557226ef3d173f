"""`GET /` on the listener: a read-only status page for a browser (docs/operations.md, The
status page).

Credentials: `Authorization: Bearer <admin token>` (curl, a monitoring probe), or HTTP Basic
with any user name and the page password, which is derived from the admin token
(`page_password`, printed by `quantarb status --page-password`). A browser keeps what it is
given; the page password it keeps can read this page and nothing else: the API's actions need
the token itself. Rotating the admin token rotates the page password.

Without valid credentials: 401 with `WWW-Authenticate: Basic`, so the browser asks. The
document refreshes itself (`<meta http-equiv="refresh">`: no script, so the strict
Content-Security-Policy forbids every script) and has no action on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.control import EngineReader
from engine.status_html import CURVE_GROUPS, equity_points, render_page

__all__ = ["PAGE_PASSWORD_CONTEXT", "REFRESH_S", "page_password", "status_page_route"]

PAGE_PASSWORD_CONTEXT = b"quantarb status page v1"
REFRESH_S = 10
_log = logging.getLogger(__name__)

_HEADERS = {
    "cache-control": "no-store",
    # Inline style only: no script, no frame, no form, nothing fetched from anywhere.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_CHALLENGE = {"www-authenticate": 'Basic realm="quantarb status", charset="UTF-8"', **_HEADERS}


def page_password(token: str) -> str:
    """The page's HTTP Basic password: HMAC-SHA256 of a fixed label under the admin token,
    128 bits as URL-safe base64 (22 characters)."""
    digest = hmac.new(token.encode("utf-8"), PAGE_PASSWORD_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def _authorized(request: Request, token: bytes, password: bytes) -> bool:
    """One `Authorization` header: Bearer with the token, or Basic with the page password
    (any user name). Compared in constant time."""
    headers: list[tuple[bytes, bytes]] = request.scope.get("headers", [])
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return False
    scheme, _, credentials = values[0].strip().partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() == b"bearer":
        return hmac.compare_digest(credentials, token)
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return False
    _, colon, given = decoded.partition(b":")
    return bool(colon) and hmac.compare_digest(given, password)


def status_page_route(reader: EngineReader, token: str) -> Route:
    """The `GET /` route, to mount with the operator routes."""
    expected = token.encode("utf-8")
    if not expected:
        raise ValueError("the admin token is empty")
    password = page_password(token).encode("ascii")

    async def page(request: Request) -> Response:
        if not _authorized(request, expected, password):
            return Response("authentication required: the admin token (Bearer), or the page password "
                            "(quantarb status --page-password)\n", status_code=401, media_type="text/plain",
                            headers=_CHALLENGE)
        status = reader.status()
        snap = reader.snapshot(groups=50, log=0)
        try:
            curve = equity_points(await reader.history(limit=CURVE_GROUPS))
        except Exception as exc:  # the page still shows the engine; it says the ledger could not be read
            _log.warning("status page: ledger history unreadable: %s", type(exc).__name__)
            curve = None
        body = render_page(status, snap, curve, refresh_s=REFRESH_S)
        # `replace`: a lone surrogate in some error text must not turn the page into a 500.
        return Response(body.encode("utf-8", "replace"), media_type="text/html; charset=utf-8", headers=_HEADERS)

    return Route("/", page, methods=["GET"])
