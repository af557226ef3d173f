"""The bodies of the manual venue actions (engine.manual_api): a clear field error for anything
wrong and nothing done; arbitrary input never reaches the engine unless it is valid, and the
demo runtime (paper: nothing quarantined, no such group) refuses with 409, never a 5xx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import demo_config
from engine.manual_api import MAX_REASON_CHARS, ManualBodyError, parse_manual_body
from engine.operator_api import create_operator_app
from engine.runtime import Runtime

TOKEN = "manual-api-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CLOSE = ("group", "reason")


def test_a_valid_close_body() -> None:
    body = json.dumps({"group": "gabc001", "reason": "  held too long ", "by": "cli alice"}).encode()
    assert parse_manual_body(body, CLOSE) == {"group": "gabc001", "reason": "held too long", "by": "cli alice"}
    assert parse_manual_body(b'{"reason": "tidy"}', ("reason",)) == {"reason": "tidy", "by": ""}
    limit = json.dumps({"reason": "é" * MAX_REASON_CHARS}).encode()
    assert parse_manual_body(limit, ("reason",))["reason"] == "é" * MAX_REASON_CHARS


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b"", [("group", "required"), ("reason", "required")]),
        (b"[]", [("body", 'expected a JSON object like {"reason": "..."}')]),
        (b"{", [("body", "invalid JSON")]),
        (b'{"group": 7, "reason": "x"}', [("group", "expected string")]),
        (b'{"group": "g 1", "reason": "x"}', [("group", "a group id is letters and digits")]),
        (b'{"group": "g1", "reason": "   "}', [("reason", "required")]),
        (b'{"group": "g1", "reason": "a\\nb"}', [("reason", "must not contain control characters")]),
        (b'{"group": "g1", "reason": "x", "force": true}', [("force", "unknown field")]),
        (b'{"group": "g1", "reason": "x", "by": 3}', [("by", "expected string")]),
        (json.dumps({"group": "g" * 65, "reason": "x"}).encode(), [("group", "at most 64 characters")]),
        (json.dumps({"group": "g1", "reason": "r" * (MAX_REASON_CHARS + 1)}).encode(),
         [("reason", "at most 500 characters")]),
    ],
)
def test_bad_close_bodies_name_the_field(body: bytes, fields: list[tuple[str, str]]) -> None:
    with pytest.raises(ManualBodyError) as caught:
        parse_manual_body(body, CLOSE)
    assert caught.value.fields == fields


_TEXT = st.text(max_size=80)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({"group": st.text("abcg0123456789", max_size=20), "reason": _TEXT},
                          optional={"by": _TEXT}).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["group", "reason", "by", "force", ""]),
                    st.none() | st.integers() | _TEXT, max_size=4).map(lambda v: json.dumps(v).encode()),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES)
def test_the_parser_either_answers_every_key_or_raises_a_field_error(body: bytes) -> None:
    try:
        out = parse_manual_body(body, CLOSE)
    except ManualBodyError as exc:
        assert exc.fields and all(isinstance(f, str) and isinstance(r, str) for f, r in exc.fields)
        return
    assert set(out) == {"group", "reason", "by"}
    assert out["group"].isalnum() and out["reason"].strip() == out["reason"] != ""


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_BODIES, path=st.sampled_from(["/api/close", "/api/orphans/cancel"]))
def test_arbitrary_bodies_never_get_5xx_and_change_nothing(tmp_path: Path, body: bytes, path: str) -> None:
    runtime = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "m.db"),
                      mt5_in_process=True)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_operator_app(runtime.control, runtime.view, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://quantarb") as c:
            before = (runtime.events.total, str(runtime.gate.state))
            resp = await c.post(path, headers=AUTH, content=body)
        assert resp.status_code in (409, 422), resp.text
        resp.json()
        assert (runtime.events.total, str(runtime.gate.state)) == before

    asyncio.run(scenario())
