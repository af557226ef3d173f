"""`GET /api/settings` and `POST /api/set` on a real demo Runtime with a real ledger
(httpx.ASGITransport in process): bearer first, 422 with field errors for bad bodies and bad
values (the setting's key and its range), 409 when the ledger cannot write, 200 journaled;
anything refused changes nothing (hypothesis over arbitrary bodies)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import demo_config
from engine.operator_api import create_operator_app
from engine.runtime import Runtime
from engine.settings_api import InvalidSetBody, parse_set_body
from ledger import queries

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "t.db"),
                 mt5_in_process=True)
    await rt.open_ledger()
    yield rt
    await rt.close_ledger()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_operator_app(runtime.control, runtime.view, TOKEN, settings=runtime.steering)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://quantarb") as c:
        yield c


async def _journaled(runtime: Runtime) -> list[dict[str, Any]]:
    assert runtime.ledger is not None
    return await runtime.ledger.read(queries.setting_changes)


async def test_the_routes_need_the_token(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = {"key": "strategy.threshold_bps", "value": "6", "reason": "x"}
    for headers in ({}, {"authorization": "Bearer wrong"}):
        assert (await client.post("/api/set", json=body, headers=headers)).status_code == 401
        assert (await client.get("/api/settings", headers=headers)).status_code == 401
    assert runtime.pipeline.threshold_bps == 8.0
    assert await _journaled(runtime) == []


async def test_settings_lists_values_file_values_and_ranges(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/settings", headers=AUTH)
    assert answer.status_code == 200
    rows = answer.json()["settings"]
    assert [r["key"] for r in rows] == ["strategy.threshold_bps", "strategy.cooldown_ms", "risk.max_leg_notional",
                                        "pairs.XAU.enabled", "pairs.BTC.enabled", "pairs.ETH.enabled"]
    assert rows[0] == {"key": "strategy.threshold_bps", "value": "8", "config": "8", "type": "float",
                       "range": "a number, 0 <= value < 300 bps",
                       "description": "Minimum net edge (after both fees) to trade."}


async def test_a_valid_set_is_journaled_and_answered(client: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await client.post("/api/set", headers=AUTH, json={
        "key": "strategy.cooldown_ms", "value": 500, "reason": "faster retries", "source": "cli"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"key": "strategy.cooldown_ms", "old": "3000", "new": "500", "changed": True,
                             "journaled": True, "message": "strategy.cooldown_ms 3000 -> 500"}
    assert runtime.pipeline.cooldown_ms == 500
    [record] = await _journaled(runtime)
    assert (record["key"], record["old"], record["new"], record["source"], record["reason"]) == (
        "strategy.cooldown_ms", "3000", "500", "cli", "faster retries")
    listed = (await client.get("/api/settings", headers=AUTH)).json()["settings"]
    assert [(r["value"], r["config"]) for r in listed if r["key"] == "strategy.cooldown_ms"] == [("500", "3000")]


async def test_booleans_and_the_default_source(client: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await client.post("/api/set", headers=AUTH, json={
        "key": "pairs.XAU.enabled", "value": False, "reason": "gold is closed"})
    assert answer.status_code == 200
    assert runtime.pipeline.pair_enabled("XAU") is False
    assert [r["source"] for r in await _journaled(runtime)] == ["api"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"key": "strategy.threshold_bps", "value": "300", "reason": "x"},
         [("strategy.threshold_bps", "300 is out of range: a number, 0 <= value < 300 bps")]),
        ({"key": "strategy.threshold_bps", "value": 1e-7, "reason": "x"},
         [("strategy.threshold_bps", "expected a number, 0 <= value < 300 bps, got '1e-07'")]),
        ({"key": "risk.max_leg_notional", "value": "-5", "reason": "x"},
         [("risk.max_leg_notional", "expected a decimal, 0 < value <= 60000, got '-5'")]),
        ({"key": "pairs.BTC.enabled", "value": "2", "reason": "x"},
         [("pairs.BTC.enabled", "expected true or false, got '2'")]),
        ({"key": "risk.daily_loss_limit", "value": "1", "reason": "x"},
         [("key", "risk.daily_loss_limit is not steerable; steerable: strategy.threshold_bps, "
                  "strategy.cooldown_ms, risk.max_leg_notional, pairs.XAU.enabled, pairs.BTC.enabled, "
                  "pairs.ETH.enabled")]),
        ({"key": "strategy.threshold_bps", "value": "6"},
         [("reason", "required: say why (it is journaled with the change)")]),
        ({"key": "strategy.threshold_bps", "value": "6", "reason": "x", "source": "tui"},
         [("source", "one of cli, api")]),
        ({"value": [6], "reason": 3, "extra": 1},
         [("extra", "unknown field"), ("key", "required: a setting's dotted name (GET /api/settings lists them)"),
          ("value", "required: a string, a number or true/false"),
          ("reason", "required: say why (it is journaled with the change)")]),
    ],
)
async def test_bad_bodies_and_values_are_422_with_field_errors(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], fields: list[tuple[str, str]]
) -> None:
    before = runtime.steering.current()
    answer = await client.post("/api/set", headers=AUTH, json=body)
    assert answer.status_code == 422
    assert answer.json() == {"error": "invalid request", "fields": [{"field": f, "reason": r} for f, r in fields]}
    assert runtime.steering.current() == before
    assert await _journaled(runtime) == []


async def test_a_ledger_that_cannot_write_is_409_and_nothing_changes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert runtime.ledger is not None and runtime.journal is not None
    runtime.ledger.writer._fail(sqlite3.OperationalError("database or disk is full"))
    await runtime.journal.flush()
    answer = await client.post("/api/set", headers=AUTH, json={
        "key": "strategy.threshold_bps", "value": "6", "reason": "x"})
    assert answer.status_code == 409
    assert answer.json()["error"] == "refused"
    assert "the ledger cannot write" in answer.json()["message"]
    assert runtime.pipeline.threshold_bps == 8.0


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["key", "value", "reason", "source", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
))
def test_any_body_is_parsed_or_refused_with_fields(body: bytes) -> None:
    try:
        req = parse_set_body(body)
    except InvalidSetBody as exc:
        assert exc.fields and all(f and r for f, r in exc.fields)
        decoded = json.loads(exc.body())
        assert decoded["error"] == "invalid request"
        return
    assert req.key and req.reason.strip() and req.source in ("cli", "api")


_KEYS = st.sampled_from(["strategy.threshold_bps", "strategy.cooldown_ms", "risk.max_leg_notional",
                         "pairs.BTC.enabled", "pairs.SOL.enabled", "risk.daily_loss_limit", ""])
_VALUES = st.one_of(st.text(max_size=12), st.integers(-10, 10**9), st.floats(), st.booleans(), st.none(),
                    st.decimals(places=3, allow_nan=False, allow_infinity=False).map(str))
_SET_BODIES = st.one_of(
    st.binary(max_size=100),
    st.fixed_dictionaries({"key": _KEYS, "value": _VALUES},
                          optional={"reason": st.text(max_size=8), "source": st.sampled_from(["cli", "api", "tui", ""])}
                          ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_SET_BODIES)
def test_arbitrary_set_bodies_never_5xx_and_only_a_200_changes_anything(tmp_path: Path, body: bytes) -> None:
    """Through the real route on a real runtime without a ledger: a refusal leaves every value
    as it was; a 200 changed exactly the key it names, to the value it reports."""
    runtime = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path="", mt5_in_process=True)
    app = create_operator_app(runtime.control, runtime.view, TOKEN, settings=runtime.steering)

    async def scenario() -> None:
        before = runtime.steering.current()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://quantarb") as c:
            resp = await c.post("/api/set", headers=AUTH, content=body)
        assert resp.status_code in (200, 422), resp.text
        after = runtime.steering.current()
        if resp.status_code == 422:
            assert resp.json()["fields"]
            assert after == before
            return
        answer = resp.json()
        changed = {k for k in after if after[k] != before[k]}
        assert changed == ({answer["key"]} if answer["changed"] else set())

    asyncio.run(scenario())
