"""`GET /api/settings` and `POST /api/set`: runtime settings over the operator API.

    GET  /api/settings  -> {"settings": [{key, value, config, type, range, description}, ...]}
    POST /api/set       {"key": "strategy.threshold_bps", "value": "6", "reason": "...",
                         "source": "cli"}  -> {key, old, new, changed, journaled, message}

Both sit behind the operator routes' bearer check (`engine.operator_api.operator_routes`).
The body is a JSON object with exactly these keys; `value` is a string, a number or a boolean
(read as its text by the same parser as the CLI and the TUI), `reason` is required (the audit
record), `source` is `cli` or `api` (default `api`; only the TUI, in process, says `tui`).
Answers: 422 with field errors for a bad body, an unknown key or a value out of range (the
field is the setting's dotted key and the reason states the allowed range); 409 when the
engine refuses (the ledger cannot write); 200 otherwise, `changed: false` when the value was
already in force. A refused request changes nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.runtime_settings import MAX_REASON_CHARS, MAX_VALUE_CHARS, InvalidSetting
from engine.control import ControlRefused
from engine.steering import SettingsControl
from mt5_bridge import protocol

__all__ = ["SetRequest", "parse_set_body", "settings_routes"]

_log = logging.getLogger(__name__)
_ENCODER = msgspec.json.Encoder(enc_hook=str)
_FIELDS = ("key", "value", "reason", "source")
_API_SOURCES = ("cli", "api")
MAX_KEY_CHARS = 64

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class SetRequest:
    key: str
    value: str
    reason: str
    source: str


class InvalidSetBody(ValueError):
    """(field, reason) pairs, answered 422."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in fields))
        self.fields = fields

    def body(self) -> bytes:
        return protocol.encode(protocol.ErrorBody(
            error="invalid request",
            fields=[protocol.FieldErrorBody(field=f, reason=r) for f, r in self.fields],
        ))


def _value_text(value: Any) -> str | None:
    """A JSON value as the parser's text; None for anything but a string, number or boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _short(key: str) -> str:
    return key if len(key) <= MAX_KEY_CHARS and key.isascii() and key.isprintable() else "body"


def parse_set_body(body: bytes) -> SetRequest:
    """The request in a `/api/set` body; InvalidSetBody for anything malformed. The value
    itself is judged by the engine (`Steering.set`), which knows the ranges."""
    try:
        data: Any = msgspec.json.decode(body) if body.strip() else None
    except (msgspec.DecodeError, RecursionError, ValueError):
        raise InvalidSetBody([("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise InvalidSetBody([("body", 'expected a JSON object like {"key": ..., "value": ..., "reason": ...}')])
    errors = [(_short(str(k)), "unknown field") for k in data if k not in _FIELDS]
    key, value, reason, source = (data.get(f) for f in _FIELDS)
    if not isinstance(key, str) or not key:
        errors.append(("key", "required: a setting's dotted name (GET /api/settings lists them)"))
    elif len(key) > MAX_KEY_CHARS:
        errors.append(("key", f"at most {MAX_KEY_CHARS} characters"))
    text = _value_text(value)
    if text is None:
        errors.append(("value", "required: a string, a number or true/false"))
    elif len(text) > MAX_VALUE_CHARS:
        errors.append(("value", f"at most {MAX_VALUE_CHARS} characters"))
    if not isinstance(reason, str) or not reason.strip():
        errors.append(("reason", "required: say why (it is journaled with the change)"))
    elif len(reason) > MAX_REASON_CHARS:
        errors.append(("reason", f"at most {MAX_REASON_CHARS} characters"))
    if source is None:
        source = "api"
    elif source not in _API_SOURCES:
        errors.append(("source", f"one of {', '.join(_API_SOURCES)}"))
    if errors:
        raise InvalidSetBody(errors)
    assert isinstance(key, str) and isinstance(reason, str) and text is not None and isinstance(source, str)
    return SetRequest(key, text, reason, source)


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def settings_routes(settings: SettingsControl, guarded: Callable[[Endpoint], Endpoint]) -> list[BaseRoute]:
    async def listing(request: Request) -> Response:
        return _json(200, _ENCODER.encode({"settings": settings.settings()}))

    async def set_one(request: Request) -> Response:
        try:
            req = parse_set_body(await request.body())
            result = await settings.set(req.key, req.value, req.reason, req.source)
        except InvalidSetBody as exc:
            return _json(422, exc.body())
        except InvalidSetting as exc:
            return _json(422, InvalidSetBody([(exc.field, exc.reason)]).body())
        except ControlRefused as exc:
            return _json(409, _ENCODER.encode({"error": "refused", "message": str(exc)}))
        except Exception:
            _log.exception("setting change failed")
            return _json(500, protocol.encode(protocol.ErrorBody(error="internal error")))
        return _json(200, _ENCODER.encode(result.to_json()))

    return [
        Route("/api/settings", guarded(listing), methods=["GET"]),
        Route("/api/set", guarded(set_one), methods=["POST"]),
    ]
