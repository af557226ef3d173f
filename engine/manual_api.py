"""The operator endpoints of manual venue actions (docs/operator.md): closing one group and
cancelling quarantined orders. Mounted by `engine.operator_api.operator_routes`, behind the
same bearer token, with the same order of checks and error shapes.

    POST /api/close            {"group": "...", "reason": "...", "by": "..."} -> ControlResult JSON
    POST /api/orphans/cancel   {"reason": "...", "by": "..."}                 -> ControlResult JSON

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

from engine.control import ControlRefused, ControlResult, OperatorControl
from mt5_bridge import protocol

MAX_REASON_CHARS = 500
MAX_GROUP_CHARS = 64
MAX_BY_CHARS = 64
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


def parse_manual_body(body: bytes, keys: tuple[str, ...]) -> dict[str, str]:
    """The fields of a manual action's body: `keys` required (`group`, `reason`), `by` optional.

    Raises ManualBodyError for anything else (nothing is done)."""
    try:
        data: Any = msgspec.json.decode(body) if body.strip() else {}
    except (msgspec.DecodeError, RecursionError, ValueError):
        raise ManualBodyError([("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise ManualBodyError([("body", "expected a JSON object like {\"reason\": \"...\"}")])
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

    def endpoint(keys: tuple[str, ...], call: Callable[[dict[str, str], str], Awaitable[ControlResult]],
                 name: str) -> Endpoint:
        async def handle(request: Request) -> Response:
            try:
                fields = parse_manual_body(await request.body(), keys)
            except ManualBodyError as exc:
                return answer(422, exc.body())
            try:
                result = await call(fields, actor_of(request, fields["by"]))
            except ControlRefused as exc:
                return answer(409, _ENCODER.encode({"error": "refused", "message": str(exc)}))
            except Exception:
                _log.exception("operator action %s failed", name)
                return answer(500, protocol.encode(protocol.ErrorBody(error="internal error")))
            return answer(200, _ENCODER.encode(result.to_json()))

        return handle

    close = endpoint(("group", "reason"), lambda f, who: control.close_group(f["group"], f["reason"], who), "close")
    orphans = endpoint(("reason",), lambda f, who: control.cancel_orphans(f["reason"], who), "orphans_cancel")
    return [Route("/api/close", guarded(close), methods=["POST"]),
            Route("/api/orphans/cancel", guarded(orphans), methods=["POST"])]
