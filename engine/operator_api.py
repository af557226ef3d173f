"""The operator HTTP endpoints (docs/operator.md): control and metrics over the listener.

    GET  /api/status    bearer                  -> reader.status()
    POST /api/kill      bearer  {"reason":...}  -> ControlResult JSON
    POST /api/flatten   bearer  {"reason":...}  -> ControlResult JSON
    POST /api/rearm     bearer  {"reason":...}  -> ControlResult JSON (409 without a reason)
    POST /api/pause     bearer  {"reason":...}  -> ControlResult JSON
    POST /api/resume    bearer  {"reason":...}  -> ControlResult JSON
    POST /api/close     bearer  {"group":...,"reason":...}  -> ControlResult JSON (engine.manual_api)
    POST /api/orphans/cancel  bearer  {"reason":...}  -> ControlResult JSON (engine.manual_api)
    GET  /metrics       bearer                  -> Prometheus text format
    GET  /api/settings  bearer                  -> the steerable settings (engine.settings_api)
    POST /api/set       bearer  {"key","value","reason"[,"source"]} -> the change (422 bad value, 409 refused)
    GET  /              bearer or Basic         -> the read-only HTML status page (engine.status_page)

Every route needs `Authorization: Bearer <admin token>`, `/metrics` too: it shows positions
and PnL, and docs/operator.md lists it with the operator endpoints (Prometheus sends a bearer
token with `authorization: {credentials_file: ...}`). `/healthz` stays open and says only
ok/degraded/halted.

Order of checks: size (413, the app's BodyLimitMiddleware), token (401, compared in constant
time, before the body is read), body (422 with field errors), then the action; the engine
refusing it is 409 with its message. A refused request changes nothing. The body is optional
(no body means no reason); when present it is a JSON object whose only key is `reason`, a
string of at most 500 printable characters (it ends up in the ledger and on the TUI).

Errors use the listener's shape: `{"error":"..."}`, 422 adds `fields`, 401 is
`{"error":"unauthorized","reason":"token"}` with `WWW-Authenticate: Bearer`, 409 is
`{"error":"refused","message":"..."}`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.control import ACTIONS, Action, ControlRefused, ControlResult, EngineReader, OperatorControl
from engine.manual_api import manual_routes
from engine.settings_api import settings_routes
from engine.snapshot import RuntimeSnapshot
from engine.status_page import status_page_route
from engine.steering import SettingsControl
from mt5_bridge import protocol
from mt5_bridge.app import MAX_BODY_BYTES, BodyLimitMiddleware, http_error

__all__ = [
    "MAX_REASON_CHARS",
    "RuntimeCollector",
    "create_operator_app",
    "operator_routes",
    "parse_action_body",
]

MAX_REASON_CHARS = 500
JSON = "application/json"
TRADING_STATES = ("active", "paused", "reducing", "halted")
FEED_STATES = ("connecting", "live", "rest", "stopped")

_log = logging.getLogger(__name__)
_ENCODER = msgspec.json.Encoder(enc_hook=str)
_UNAUTHORIZED = protocol.encode(protocol.UnauthorizedBody(error="unauthorized", reason="token"))
_INTERNAL = protocol.encode(protocol.ErrorBody(error="internal error"))


class InvalidBody(ValueError):
    """An action body that fails validation; `fields` are (field, reason) pairs."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in fields))
        self.fields = fields

    def body(self) -> bytes:
        return protocol.encode(
            protocol.ErrorBody(
                error="invalid request",
                fields=[protocol.FieldErrorBody(field=f, reason=r) for f, r in self.fields],
            )
        )


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _printable(text: str) -> bool:
    """No control characters (terminal escapes on the TUI) and no lone surrogates."""
    if not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field_name(key: str) -> str:
    """An unknown key as shown in the error: only short plain names are echoed back."""
    return key if len(key) <= 64 and key.isascii() and key.isprintable() else "body"


def parse_action_body(body: bytes) -> str:
    """The reason in an action body: b"" or `{}` -> "", `{"reason": "..."}` -> the reason.

    Raises InvalidBody (answered 422) for anything else.
    """
    if not body.strip():
        return ""
    try:
        data: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError):
        raise InvalidBody([("body", "invalid JSON")]) from None
    if not isinstance(data, dict):
        raise InvalidBody([("body", 'expected a JSON object like {"reason": "..."}')])
    errors = [(_field_name(key), "unknown field") for key in data if key != "reason"]
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        errors.append(("reason", "expected string"))
        reason = ""
    elif len(reason) > MAX_REASON_CHARS:
        errors.append(("reason", f"at most {MAX_REASON_CHARS} characters"))
    elif not _printable(reason):
        errors.append(("reason", "must not contain control characters"))
    if errors:
        raise InvalidBody(errors)
    return reason


def _bearer(request: Request) -> bytes | None:
    """The credentials of the single `Authorization: Bearer ...` header, as raw bytes."""
    headers: list[tuple[bytes, bytes]] = request.scope.get("headers", [])
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credentials.strip()


Endpoint = Callable[[Request], Awaitable[Response]]


def operator_routes(
    control: OperatorControl, reader: EngineReader, token: str, *, settings: SettingsControl | None = None
) -> list[BaseRoute]:
    """The operator routes, to mount into the listener (`create_app(extra_routes=...)`) or
    into `create_operator_app`. `/metrics` reads one cheap snapshot per scrape."""
    expected = token.encode("utf-8")
    if not expected:
        raise ValueError("the admin token is empty")

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            given = _bearer(request)
            # compare_digest: the time taken does not depend on where the tokens differ.
            if given is None or not hmac.compare_digest(given, expected):
                return _json(401, _UNAUTHORIZED, {"www-authenticate": 'Bearer realm="quantarb"'})
            return await handler(request)

        return endpoint

    async def status(request: Request) -> Response:
        return _json(200, _ENCODER.encode(reader.status()))

    def action(name: Action) -> Endpoint:
        method: Callable[[str], Awaitable[ControlResult]] = getattr(control, name)

        async def endpoint(request: Request) -> Response:
            try:
                reason = parse_action_body(await request.body())
            except InvalidBody as exc:
                return _json(422, exc.body())
            try:
                result = await method(reason)
            except ControlRefused as exc:
                return _json(409, _ENCODER.encode({"error": "refused", "message": str(exc)}))
            except Exception:
                _log.exception("operator action %s failed", name)
                return _json(500, _INTERNAL)
            return _json(200, _ENCODER.encode(result.to_json()))

        return endpoint

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(lambda: reader.snapshot(groups=0, log=0)))

    async def metrics(request: Request) -> Response:
        # In the event loop, not a thread: the snapshot reads engine state the loop mutates.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    routes: list[BaseRoute] = [Route("/api/status", guarded(status), methods=["GET"])]
    routes += [Route(f"/api/{name}", guarded(action(name)), methods=["POST"]) for name in ACTIONS]
    routes += manual_routes(control, guarded)  # /api/close, /api/orphans/cancel (engine.manual_api)
    routes.append(Route("/metrics", guarded(metrics), methods=["GET"]))
    if settings is not None:
        routes += settings_routes(settings, guarded)
    routes.append(status_page_route(reader, token))
    return routes


def create_operator_app(
    control: OperatorControl, reader: EngineReader, token: str, *, settings: SettingsControl | None = None
) -> Starlette:
    """A listener app for an engine without MT5: the operator routes and an open `/healthz`,
    with the same body limit and JSON errors as the MT5 listener."""

    async def healthz(request: Request) -> Response:
        return _json(200, protocol.encode(protocol.HealthBody(status=reader.health_status())))

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        *operator_routes(control, reader, token, settings=settings),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)],
        exception_handlers={HTTPException: http_error},
    )


# --------------------------------------------------------------------------------------------
# Prometheus


def _number(text: str) -> float:
    try:
        return float(Decimal(text))
    except (InvalidOperation, ValueError):
        return float("nan")


class RuntimeCollector(Collector):
    """The engine's metrics, built from ONE snapshot per scrape so that the numbers of one
    scrape agree with each other (nothing is registered per quote on the hot path)."""

    def __init__(self, snapshot: Callable[[], RuntimeSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics(self._snapshot()))

    @staticmethod
    def _metrics(snap: RuntimeSnapshot) -> Iterator[Metric]:
        yield CounterMetricFamily("quantarb_quotes", "Quotes judged by the pipeline.", value=snap.quotes_total)
        yield CounterMetricFamily("quantarb_decisions", "Decisions (intents and blocked).", value=snap.decisions_total)
        yield CounterMetricFamily("quantarb_intents", "Decisions that became hedge groups.", value=snap.intents_total)
        reasons = CounterMetricFamily("quantarb_decision_reasons", "Decisions by reason.", labels=["reason"])
        for reason, count in sorted(snap.reasons.items()):
            reasons.add_metric([reason], count)
        yield reasons
        outliers = CounterMetricFamily(
            "quantarb_price_outliers", "Quotes refused by the price guard, per venue.", labels=["venue"]
        )
        for venue, count in sorted(snap.price_outliers.items()):
            outliers.add_metric([venue], count)
        yield outliers
        yield GaugeMetricFamily("quantarb_open_groups", "Hedge groups not yet terminal.", value=snap.open_groups)
        groups = GaugeMetricFamily("quantarb_groups", "Hedge groups by state (this run).", labels=["state"])
        for state, count in sorted(snap.groups_by_state.items()):
            groups.add_metric([state], count)
        yield groups
        yield GaugeMetricFamily("quantarb_realized_pnl", "Realized PnL of this run.", value=_number(snap.realized_pnl))
        if snap.equity and snap.equity != "n/a":
            equity = GaugeMetricFamily("quantarb_equity", "Equity change: realized + unrealized - fees + carry "
                                       "(docs/ledger.md, Money), in the account currency.", labels=["currency"])
            equity.add_metric([snap.account_ccy], _number(snap.equity))
            yield equity
        yield GaugeMetricFamily("quantarb_daily_pnl", "Equity change today (UTC): what the daily loss judges.",
                                value=_number(snap.daily_pnl))
        trading = GaugeMetricFamily(
            "quantarb_trading_state", "1 for the current trading state, 0 for the others.", labels=["state"]
        )
        states = TRADING_STATES if snap.trading_state in TRADING_STATES else (*TRADING_STATES, snap.trading_state)
        for state in states:
            trading.add_metric([state], 1.0 if state == snap.trading_state else 0.0)
        yield trading
        mode = GaugeMetricFamily("quantarb_mode", "The engine's mode (always 1).", labels=["mode"])
        mode.add_metric([snap.mode], 1.0)
        yield mode
        yield from RuntimeCollector._feed_metrics(snap)
        yield from RuntimeCollector._pair_metrics(snap)
        breakers = GaugeMetricFamily("quantarb_breaker_tripped", "1 while a breaker is tripped.", labels=["breaker"])
        for b in snap.breakers:
            breakers.add_metric([b.name], 1.0 if b.state == "tripped" else 0.0)
        yield breakers

    @staticmethod
    def _feed_metrics(snap: RuntimeSnapshot) -> Iterator[Metric]:
        labels = ["feed", "venue"]
        frames = CounterMetricFamily("quantarb_feed_frames", "Frames received per feed.", labels=labels)
        quotes = CounterMetricFamily("quantarb_feed_quotes", "Quotes produced per feed.", labels=labels)
        reconnects = CounterMetricFamily("quantarb_feed_reconnects", "Reconnects per feed.", labels=labels)
        dropped = CounterMetricFamily("quantarb_feed_dropped", "Frames dropped per feed.", labels=labels)
        age = GaugeMetricFamily(
            "quantarb_feed_last_frame_age_seconds", "Seconds since the feed's last frame.", labels=labels
        )
        state = GaugeMetricFamily(
            "quantarb_feed_state", "1 for the feed's current state, 0 for the others.", labels=[*labels, "state"]
        )
        for f in snap.feeds:
            key = [f.name, f.venue]
            frames.add_metric(key, f.frames)
            quotes.add_metric(key, f.quotes)
            reconnects.add_metric(key, f.reconnects)
            dropped.add_metric(key, f.dropped)
            if f.last_frame_age_ms is not None:
                age.add_metric(key, f.last_frame_age_ms / 1000.0)
            known = FEED_STATES if f.state in FEED_STATES else (*FEED_STATES, f.state)
            for s in known:
                state.add_metric([*key, s], 1.0 if s == f.state else 0.0)
        yield from (frames, quotes, reconnects, dropped, age, state)

    @staticmethod
    def _pair_metrics(snap: RuntimeSnapshot) -> Iterator[Metric]:
        groups = CounterMetricFamily("quantarb_pair_groups", "Hedge groups closed per pair.", labels=["pair"])
        hit = GaugeMetricFamily("quantarb_pair_hit_rate", "Share of a pair's groups that hedged.", labels=["pair"])
        pnl = GaugeMetricFamily("quantarb_pair_pnl", "Realized PnL per pair.", labels=["pair"])
        for p in snap.pairs:
            groups.add_metric([p.key], p.groups)
            hit.add_metric([p.key], p.hit_rate)
            pnl.add_metric([p.key], _number(p.total_pnl))
        yield from (groups, hit, pnl)
