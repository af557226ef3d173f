"""The operator endpoints of manual venue actions (docs/operator.md): closing one group and
cancelling quarantined orders. Mounted by `engine.operator_api.operator_routes`, behind the
same bearer token, with the same order of checks and error shapes.

    POST /api/close            {"group": "...", "reason": "...", "by": "..."} -> ControlResult JSON
    POST /api/orphans/cancel   {"reason": "...", "orders": [{"venue": "...", "client_order_id": "...",
                                "venue_order_id": "..."}, ...], "by": "..."} -> ControlResult JSON

`orders` is the list the operator confirmed (as GET /api/status lists the quarantine): only
those still quarantined are cancelled, the rest are reported `skipped`.

`reason` is required (the action is journaled with it); `by` is optional, who asked (the CLI
sends its user name), recorded in the audit record with the caller's address. A body that
fails validation is 422 with field errors and changes nothing; the engine refusing the action
(an unknown, in-flight or flat group; nothing quarantined) is 409 with its message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.control import ControlRefused, ControlResult, OperatorControl, OrphanRef
from mt5_bridge import protocol

MAX_REASON_CHARS = 500
MAX_GROUP_CHARS = 64
MAX_BY_CHARS = 64
MAX_REF_CHARS = 64
MAX_ORDERS = 500
JSON = "application/json"

_log = logging.getLogger(__name__)
_ENCODER = msgspec.json.Encoder(enc_hook=str)
Endpoint = Callable[[Request], Awaitable[Response]]


class ManualBodyError(ValueError):
    """A body that fails validation; `fields` are (field, reason) pairs (answered 422)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in fields))
        self.fields = fields

    def body(self) -> bytes:
        return protocol.encode(protocol.ErrorBody(
            error="invalid request", fields=[protocol.FieldErrorBody(field=f, reason=r) for f, r in self.fields]))


def _printable(text: str) -> bool:
    if not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(data: dict[str, Any], key: str, limit: int, errors: list[tuple[str, str]], *, required: bool) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        errors.append((key, "expected string"))
        return ""
    if len(value) > limit:
        errors.append((key, f"at most {limit} characters"))
    elif not _printable(value):
        errors.append((key, "must not contain control characters"))
    elif required and not value.strip():
        errors.append((key, "required"))
    return value.strip()


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data: Any = msgspec.json.decode(body) if body.strip() else {}
    except (msgspec.DecodeError, RecursionError, ValueError):
        raise ManualBodyError([("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise ManualBodyError([("body", "expected a JSON object like {\"reason\": \"...\"}")])
    return data


def _ref_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_REF_CHARS and (
        value == "" or (value.isascii() and value.isalnum()))


def parse_orders(value: Any) -> list[OrphanRef]:
    """The `orders` the operator confirmed: a list of {"venue", "client_order_id",
    "venue_order_id"} (the last two letters and digits; at least one of them given)."""
    if not isinstance(value, list) or not value:
        raise ManualBodyError([("orders", "a non-empty list of the orders confirmed, as the status lists them")])
    if len(value) > MAX_ORDERS:
        raise ManualBodyError([("orders", f"at most {MAX_ORDERS} orders")])
    refs: list[OrphanRef] = []
    for i, item in enumerate(value):
        where = f"orders[{i}]"
        if not isinstance(item, dict) or not set(item) <= {"venue", "client_order_id", "venue_order_id"}:
            raise ManualBodyError([(where, "expected {\"venue\", \"client_order_id\", \"venue_order_id\"}")])
        venue, cid, voi = item.get("venue"), item.get("client_order_id", ""), item.get("venue_order_id", "")
        if not (isinstance(venue, str) and venue.isascii() and venue.isalnum() and 0 < len(venue) <= 16):
            raise ManualBodyError([(f"{where}.venue", "a venue name (letters and digits)")])
        if not (_ref_text(cid) and _ref_text(voi)) or not (cid or voi):
            raise ManualBodyError([(where, f"client_order_id or venue_order_id: letters and digits, at most "
                                           f"{MAX_REF_CHARS}")])
        refs.append(OrphanRef(venue, cid, voi))
    return refs


def parse_orphans_body(body: bytes) -> tuple[dict[str, str], list[OrphanRef]]:
    """`reason`, `by` and the confirmed `orders` of POST /api/orphans/cancel; ManualBodyError
    for anything else (nothing is done)."""
    data = _decode(body)
    orders = data.pop("orders", None)
    errors: list[tuple[str, str]] = []
    try:
        fields = parse_manual_body(msgspec.json.encode(data), ("reason",))
    except ManualBodyError as exc:
        errors += exc.fields
        fields = {}
    try:
        refs = parse_orders(orders)
    except ManualBodyError as exc:
        errors += exc.fields
        refs = []
    if errors:
        raise ManualBodyError(errors)
    return fields, refs


def parse_manual_body(body: bytes, keys: tuple[str, ...]) -> dict[str, str]:
    """The fields of a manual action's body: `keys` required (`group`, `reason`), `by` optional.

    Raises ManualBodyError for anything else (nothing is done)."""
    data = _decode(body)
    allowed = (*keys, "by")
    errors = [(key if len(key) <= 64 and key.isascii() and key.isprintable() else "body", "unknown field")
              for key in data if key not in allowed]
    out: dict[str, str] = {}
    for key in keys:
        limit = MAX_GROUP_CHARS if key == "group" else MAX_REASON_CHARS
        out[key] = _text(data, key, limit, errors, required=True)
    if "group" in out and out["group"] and not out["group"].isalnum():
        errors.append(("group", "a group id is letters and digits"))
    out["by"] = _text(data, "by", MAX_BY_CHARS, errors, required=False)
    if errors:
        raise ManualBodyError(errors)
    return out


def actor_of(request: Request, by: str) -> str:
    """Who asked, for the audit record: `by` (the CLI's user) and the caller's address."""
    host = request.client.host if request.client is not None else "?"
    return f"{by} via api {host}" if by else f"api {host}"


def manual_routes(control: OperatorControl, guarded: Callable[[Endpoint], Endpoint]) -> list[BaseRoute]:
    def answer(status: int, body: bytes) -> Response:
        return Response(body, status_code=status, media_type=JSON)

    def endpoint(keys: tuple[str, ...], call: Callable[[dict[str, str], list[OrphanRef], str],
                                                       Awaitable[ControlResult]], name: str) -> Endpoint:
        async def handle(request: Request) -> Response:
            try:
                if name == "orphans_cancel":
                    fields, refs = parse_orphans_body(await request.body())
                else:
                    fields, refs = parse_manual_body(await request.body(), keys), []
            except ManualBodyError as exc:
                return answer(422, exc.body())
            try:
                result = await call(fields, refs, actor_of(request, fields["by"]))
            except ControlRefused as exc:
                return answer(409, _ENCODER.encode({"error": "refused", "message": str(exc)}))
            except Exception:
                _log.exception("operator action %s failed", name)
                return answer(500, protocol.encode(protocol.ErrorBody(error="internal error")))
            return answer(200, _ENCODER.encode(result.to_json()))

        return handle

    close = endpoint(("group", "reason"), lambda f, _r, who: control.close_group(f["group"], f["reason"], who),
                     "close")
    orphans = endpoint(("reason",), lambda f, refs, who: control.cancel_orphans(f["reason"], who, refs),
                       "orphans_cancel")
    return [Route("/api/close", guarded(close), methods=["POST"]),
            Route("/api/orphans/cancel", guarded(orphans), methods=["POST"])]
