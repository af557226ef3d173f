"""The operator API against a real demo Runtime: in process (httpx.ASGITransport) and over a
real socket (EmbeddedServer on 127.0.0.1, alone and mounted into the MT5 listener).

Auth is checked before anything else, bad bodies get 422 with field errors and change
nothing (hypothesis over arbitrary bytes and JSON), a refused action is 409, and /metrics
parses as Prometheus text built from one snapshot per scrape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from core.clock import ManualClock, RealClock
from core.config import demo_config
from engine.control import ACTIONS
from engine.operator_api import MAX_REASON_CHARS, create_operator_app, operator_routes, parse_action_body
from engine.runtime import Runtime
from engine.snapshot import RuntimeSnapshot
from mt5_bridge.app import MAX_BODY_BYTES, create_app
from mt5_bridge.server import EmbeddedServer
from tests.mt5_support import make_rig

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "t.db"),
                   mt5_in_process=True)


def _snapshot(runtime: Runtime) -> RuntimeSnapshot:
    return runtime.view.snapshot(groups=0, log=0)


def _app(runtime: Runtime) -> Any:
    return create_operator_app(runtime.control, runtime.view, TOKEN)


def _state(runtime: Runtime) -> tuple[str, str, int]:
    return str(runtime.gate.state), runtime.gate.reason, runtime.events.total


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return _runtime(tmp_path)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://quantarb") as c:
        yield c


# ------------------------------------------------------------------------------------------------
# Auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Bearer {TOKEN[:-1]}"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
    ],
)
async def test_every_operator_route_refuses_a_missing_or_wrong_token(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    before = _state(runtime)
    requests = [("GET", "/api/status"), ("GET", "/metrics")] + [("POST", f"/api/{a}") for a in ACTIONS]
    for method, path in requests:
        resp = await client.request(method, path, headers=headers, json={"reason": "x"})
        assert resp.status_code == 401, (method, path)
        assert resp.json() == {"error": "unauthorized", "reason": "token"}
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert _state(runtime) == before


async def test_two_authorization_headers_are_refused(client: httpx.AsyncClient) -> None:
    headers = [("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")]
    resp = await client.get("/api/status", headers=headers)
    assert resp.status_code == 401


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/status", headers={"authorization": f"bearer {TOKEN}"})
    assert resp.status_code == 200


async def test_the_token_is_compared_in_constant_time(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # looked up at call time by the endpoint
    assert (await client.get("/api/status", headers={"authorization": "Bearer nope"})).status_code == 401
    assert (await client.get("/api/status", headers=AUTH)).status_code == 200
    assert calls == [(bytes, bytes), (bytes, bytes)]


async def test_healthz_needs_no_token_and_says_only_the_status(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    await runtime.control.kill("test")
    assert (await client.get("/healthz")).json() == {"status": "halted"}


def test_an_empty_token_is_a_programming_error(runtime: Runtime) -> None:
    with pytest.raises(ValueError):
        operator_routes(runtime.control, runtime.view, "")


# ------------------------------------------------------------------------------------------------
# Actions


async def test_status_is_the_runtimes_picture(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.get("/api/status", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body == json.loads(json.dumps(runtime.view.status(), default=str))
    assert body["trading_state"] == "active" and body["mode"] == "demo"


async def test_kill_halts_and_answers_the_result(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.post("/api/kill", headers=AUTH, json={"reason": "desk says stop"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["action"] == "kill" and body["trading_state"] == "halted" and body["changed"] is True
    assert body["reason"] == "desk says stop"
    assert str(runtime.gate.state) == "halted"
    status = (await client.get("/api/status", headers=AUTH)).json()
    assert status["trading_state"] == "halted" and status["reason"] == "desk says stop"


async def test_an_empty_body_is_an_action_without_a_reason(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.post("/api/kill", headers=AUTH)
    assert resp.status_code == 200 and resp.json()["trading_state"] == "halted"


async def test_rearm_without_a_reason_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post("/api/kill", headers=AUTH, json={"reason": "halt first"})
    before = _state(runtime)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        resp = await client.post("/api/rearm", headers=AUTH, json=body)
        assert resp.status_code == 409
        assert resp.json() == {"error": "refused", "message": "rearm needs a reason"}
    assert _state(runtime) == before
    resp = await client.post("/api/rearm", headers=AUTH, json={"reason": "checked the venues"})
    assert resp.status_code == 200 and resp.json()["trading_state"] == "active"


async def test_pause_and_resume(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.post("/api/pause", headers=AUTH, json={"reason": "lunch"})
    assert resp.status_code == 200 and resp.json()["trading_state"] == "paused"
    assert (await client.get("/healthz")).json() == {"status": "degraded"}
    resp = await client.post("/api/resume", headers=AUTH, json={})
    assert resp.status_code == 200 and resp.json()["trading_state"] == "active"


async def test_a_failing_action_is_a_json_500_without_details(tmp_path: Path) -> None:
    runtime = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=None, mt5_in_process=True)

    class Broken:
        """The engine's control, with a flatten that blows up."""

        def __getattr__(self, name: str) -> Any:
            return getattr(runtime.control, name)

        async def flatten(self, reason: str = "") -> Any:
            raise RuntimeError("venue exploded")

    transport = httpx.ASGITransport(app=create_operator_app(Broken(), runtime.view, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://quantarb") as c:
        resp = await c.post("/api/flatten", headers=AUTH, json={"reason": "x"})
    assert resp.status_code == 500 and resp.json() == {"error": "internal error"}


async def test_wrong_method_and_unknown_path_answer_json(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/kill", headers=AUTH)
    assert resp.status_code == 405 and resp.json() == {"error": "method not allowed"}
    resp = await client.get("/api/nothing", headers=AUTH)
    assert resp.status_code == 404 and resp.json() == {"error": "not found"}


# ------------------------------------------------------------------------------------------------
# Bodies


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b"{", [("body", "invalid JSON")]),
        (b"[]", [("body", 'expected a JSON object like {"reason": "..."}')]),
        (b'"kill"', [("body", 'expected a JSON object like {"reason": "..."}')]),
        (b"null", [("body", 'expected a JSON object like {"reason": "..."}')]),
        (b'{"reason": 5}', [("reason", "expected string")]),
        (b'{"reason": null}', [("reason", "expected string")]),
        (b'{"reason": "x", "force": true}', [("force", "unknown field")]),
        (b'{"why": "x", "reason": ["a"]}', [("why", "unknown field"), ("reason", "expected string")]),
        (json.dumps({"reason": "r" * (MAX_REASON_CHARS + 1)}).encode(), [("reason", "at most 500 characters")]),
        (b'{"reason": "\\u001b[2Jgone"}', [("reason", "must not contain control characters")]),
        (b'{"reason": "line\\nbreak"}', [("reason", "must not contain control characters")]),
        (b'{"reason": "\\ud800"}', None),  # a lone surrogate: refused, whatever the decoder says
        (b"\xff\xfe", [("body", "invalid JSON")]),
    ],
)
async def test_bad_bodies_get_422_with_field_errors_and_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: bytes, fields: list[tuple[str, str]] | None
) -> None:
    before = _state(runtime)
    for action in ACTIONS:
        resp = await client.post(f"/api/{action}", headers=AUTH, content=body)
        assert resp.status_code == 422, (action, resp.text)
        answer = resp.json()
        assert answer["error"] == "invalid request"
        if fields is not None:
            assert [(f["field"], f["reason"]) for f in answer["fields"]] == fields
    assert _state(runtime) == before


def test_reason_limits_are_inclusive() -> None:
    assert parse_action_body(json.dumps({"reason": "é" * MAX_REASON_CHARS}).encode()) == "é" * MAX_REASON_CHARS
    assert parse_action_body(b"  ") == ""
    assert parse_action_body(b"{}") == ""


async def test_oversize_bodies_get_413_and_change_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    before = _state(runtime)
    big = json.dumps({"reason": "x" * MAX_BODY_BYTES}).encode()
    resp = await client.post("/api/kill", headers=AUTH, content=big)
    assert resp.status_code == 413 and resp.json() == {"error": "body too large"}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    resp = await client.post("/api/kill", headers=AUTH, content=chunks())
    assert resp.status_code == 413
    assert _state(runtime) == before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["reason", "Reason", "force", ""]), _JSON, max_size=3).map(
        lambda v: json.dumps(v).encode()
    ),
    st.text(max_size=600).map(lambda r: json.dumps({"reason": r}).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, action=st.sampled_from(ACTIONS), authorized=st.booleans())
def test_arbitrary_bodies_never_get_5xx_and_refusals_change_nothing(
    tmp_path: Path, body: bytes, action: str, authorized: bool
) -> None:
    runtime = _runtime(tmp_path)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://quantarb") as c:
            before = _state(runtime)
            resp = await c.post(f"/api/{action}", headers=AUTH if authorized else {}, content=body)
        assert resp.status_code < 500, resp.text
        resp.json()  # always JSON
        if not authorized:
            assert resp.status_code == 401
        if resp.status_code != 200:
            assert resp.status_code in (401, 409, 422), resp.text
            assert _state(runtime) == before

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------------
# Metrics


async def test_metrics_parse_as_prometheus_text(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.driver.drive(100)
    await runtime.control.kill("metrics test")
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    snap = _snapshot(runtime)
    assert families["quantarb_quotes"].type == "counter"
    assert families["quantarb_quotes"].samples[0].value == snap.quotes_total > 0
    assert families["quantarb_decisions"].samples[0].value == snap.decisions_total
    assert families["quantarb_intents"].samples[0].value == snap.intents_total
    assert families["quantarb_open_groups"].samples[0].value == snap.open_groups
    states = {s.labels["state"]: s.value for s in families["quantarb_trading_state"].samples}
    assert states == {"active": 0.0, "paused": 0.0, "reducing": 0.0, "halted": 1.0}
    groups = {s.labels["state"]: s.value for s in families["quantarb_groups"].samples}
    assert groups == {k: float(v) for k, v in snap.groups_by_state.items()}
    assert families["quantarb_realized_pnl"].samples[0].value == pytest.approx(float(snap.realized_pnl))
    pairs = {s.labels["pair"] for s in families["quantarb_pair_hit_rate"].samples}
    assert pairs == {p.key for p in snap.pairs}
    feeds = {s.labels["feed"] for s in families["quantarb_feed_frames"].samples}
    assert feeds == {f.name for f in snap.feeds} and feeds
    for name in ("quantarb_feed_quotes", "quantarb_feed_reconnects", "quantarb_feed_dropped",
                 "quantarb_feed_last_frame_age_seconds", "quantarb_feed_state", "quantarb_pair_groups",
                 "quantarb_mode", "quantarb_daily_pnl"):
        assert name in families, name


async def test_metrics_read_one_snapshot_per_scrape(runtime: Runtime) -> None:
    taken: list[RuntimeSnapshot] = []
    view = runtime.view

    class CountingReader:
        """The engine's reader, counting the snapshots taken."""

        def __getattr__(self, name: str) -> Any:
            return getattr(view, name)

        def snapshot(self, *, groups: int = 50, log: int = 200) -> RuntimeSnapshot:
            taken.append(view.snapshot(groups=groups, log=log))
            return taken[-1]

    app = create_operator_app(runtime.control, CountingReader(), TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q") as c:
        assert not taken  # registering the collector reads nothing
        await c.get("/metrics", headers=AUTH)
        assert len(taken) == 1
        await c.get("/metrics", headers=AUTH)
        assert len(taken) == 2


async def test_metrics_speak_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    resp = await client.get("/metrics", headers={**AUTH, "accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


# ------------------------------------------------------------------------------------------------
# Real sockets


async def test_operator_app_over_a_real_socket(runtime: Runtime) -> None:
    server = EmbeddedServer(_app(runtime), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            assert (await c.get("/api/status")).status_code == 401
            resp = await c.post("/api/kill", headers=AUTH, json={"reason": "socket"})
            assert resp.status_code == 200 and resp.json()["trading_state"] == "halted"
            resp = await c.post("/api/kill", headers=AUTH, content=b"x" * (MAX_BODY_BYTES + 1))
            assert resp.status_code == 413
    finally:
        await server.stop()


async def test_routes_mount_into_the_mt5_listener(runtime: Runtime) -> None:
    rig = make_rig(RealClock())
    app = create_app(rig.bridge, extra_routes=operator_routes(runtime.control, runtime.view, TOKEN))
    server = EmbeddedServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            assert (await c.get("/api/status", headers=AUTH)).json()["trading_state"] == "active"
            assert (await c.post("/api/pause", headers=AUTH, json={"reason": "x"})).json()["trading_state"] == "paused"
            resp = await c.post("/api/pause", headers=AUTH, content=b"[1]")
            assert resp.status_code == 422
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers=AUTH)).status_code == 200
    finally:
        await server.stop()
