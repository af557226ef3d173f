"""The read-only status page (`GET /`) against a real demo Runtime and its ledger.

Auth first (401 with a Basic challenge without valid credentials; Bearer with the admin token,
or Basic with the page password derived from it), then the document, checked as a DOM (the
standard library's parser): the trading state and its reason, positions, open groups,
compensation, risk events, reconciliation and the equity curve, everything from data escaped,
no script, form or link, a self-refresh.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.clock import ManualClock, RealClock
from core.config import demo_config
from engine.live_venues import OpenOrder
from engine.operator_api import create_operator_app, operator_routes
from engine.runtime import Runtime
from engine.status_html import equity_points, render_page
from engine.status_page import REFRESH_S, page_password
from mt5_bridge.app import create_app
from mt5_bridge.server import EmbeddedServer
from quantarb_tui.cli import app as cli_app
from tests.html_support import Element, parse
from tests.mt5_support import make_rig
from tests.unit.test_reconcile import rig

TOKEN = "test-admin-token-0123456789abcdef"
BEARER = {"authorization": f"Bearer {TOKEN}"}
HOSTILE = "<script>alert('x')</script> & \"quotes\" <img src=x onerror=alert(1)>"
# What a page may contain: no script, no form, no frame, no link, no image, nothing fetched.
ALLOWED_TAGS = {"#document", "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "table",
                "thead", "tbody", "tr", "th", "td", "code", "div", "svg", "line", "polyline", "text"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "p.db"),
                 mt5_in_process=True)
    await rt.open_ledger()
    try:
        yield rt
    finally:
        await rt.close_ledger()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_operator_app(runtime.control, runtime.view, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://quantarb") as c:
        yield c


async def page(client: httpx.AsyncClient) -> Element:
    resp = await client.get("/", headers=basic("operator", page_password(TOKEN)))
    assert resp.status_code == 200
    return parse(resp.text)


# -- auth ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {TOKEN}x"},
        basic("operator", TOKEN),  # the token itself is not the page password
        basic("operator", page_password(TOKEN) + "x"),
        basic("operator", page_password("another-token-0123456789")),
        basic(page_password(TOKEN), ""),  # the password goes after the colon
        {"authorization": "Basic " + base64.b64encode(page_password(TOKEN).encode()).decode()},  # no colon
        {"authorization": "Basic !!!not-base64"},
        {"authorization": f"Digest {TOKEN}"},
        {"authorization": TOKEN},
    ],
)
async def test_without_valid_credentials_the_page_is_401_with_a_basic_challenge(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    resp = await client.get("/", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Basic realm="quantarb status", charset="UTF-8"'
    assert TOKEN not in resp.text and page_password(TOKEN) not in resp.text
    assert "<html" not in resp.text


async def test_two_authorization_headers_are_refused(client: httpx.AsyncClient) -> None:
    resp = await client.get("/", headers=[("authorization", f"Bearer {TOKEN}"),
                                          ("authorization", f"Bearer {TOKEN}")])
    assert resp.status_code == 401


@pytest.mark.parametrize("headers", [BEARER, {"authorization": f"bearer {TOKEN}"},
                                     basic("operator", page_password(TOKEN)), basic("", page_password(TOKEN))])
async def test_the_token_or_the_page_password_opens_it(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    resp = await client.get("/", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.headers["cache-control"] == "no-store"
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp


async def test_the_page_takes_no_action(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for method in ("POST", "PUT", "DELETE"):
        resp = await client.request(method, "/", headers=BEARER)
        assert resp.status_code == 405 and resp.json() == {"error": "method not allowed"}
    assert str(runtime.gate.state) == "active"


def test_the_page_password_is_derived_from_the_token() -> None:
    pw = page_password(TOKEN)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", pw)
    assert pw == page_password(TOKEN) and pw != page_password(TOKEN + "x") and TOKEN not in pw


# -- the document ----------------------------------------------------------------------------
def assert_inert(doc: Element) -> None:
    """Nothing that runs, submits, links or fetches; the refresh is the only instruction."""
    tags = {e.tag for e in doc.iter()}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    for e in doc.iter():
        assert not {a for a in e.attrs if a.startswith("on") or a in ("src", "href", "action")}, e


async def test_the_state_and_its_reason_with_data_escaped(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.control.kill(HOSTILE)
    doc = await page(client)
    assert_inert(doc)
    state = doc.by_id("state")
    assert state.text == "HALTED" and state.attrs["class"] == "state state-halted"
    assert doc.by_id("reason").text == HOSTILE  # text, exactly: never markup
    assert doc.find_all("title")[0].text == "quantarb: HALTED"
    [refresh] = [m for m in doc.find_all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert refresh.attrs["content"] == str(REFRESH_S)
    assert doc.by_id("risk-events").rows()[0][1:] == ["kill", HOSTILE, "halted"]
    summary = dict((tr.find_all("th")[0].text, tr.find_all("td")[0].text) for tr in doc.by_id("summary").find_all("tr"))
    assert summary["mode"] == "demo" and summary["health"] == "halted" and summary["ledger"] == "writing"


async def test_positions_groups_compensation_and_the_curve_come_from_the_engine(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.driver.drive(6000)
    for _ in range(400):  # groups in flight: the market steps, the orchestrator does not drain
        runtime.driver.step_market()
        if runtime.orchestrator.open:
            break
    snap = runtime.view.snapshot(groups=50, log=0)
    assert snap.positions and snap.compensation and runtime.orchestrator.open
    doc = await page(client)
    assert_inert(doc)
    assert doc.by_id("positions").rows() == [[p.venue, p.asset, p.qty] for p in snap.positions]
    open_rows = doc.by_id("open-groups").rows()
    assert sorted(r[0] for r in open_rows) == sorted(runtime.orchestrator.open)
    assert doc.by_id("compensation").rows() == [
        [datetime.fromtimestamp(c.ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"), c.group_id, c.pair, c.kind,
         c.reason, c.outcome] for c in snap.compensation[:10]]
    history = await runtime.view.history(limit=500)
    closed = [g for g in history if g["closed_at_ms"] is not None and g["state"] != "rejected"]
    curve = doc.by_id("equity")
    assert curve.tag == "svg"
    [line] = curve.find_all("polyline")
    assert len((line.attrs["points"] or "").split()) == len(closed) >= 2
    assert [r[0] for r in doc.by_id("venues").rows()] == ["mt5-sim", "binance-sim", "okx-sim"]
    assert doc.by_id("breakers").text == "none"
    assert "not reconciled in this mode" in doc.by_id("reconcile").text


async def test_the_reconciliation_block(tmp_path: Path, runtime: Runtime) -> None:
    async with rig(tmp_path) as r:
        r.okx.held = None
        r.okx.orders = [OpenOrder("<b>web</b>123", "9", "BTC-USDT-SWAP")]
        await r.reconciler.run_once()
        status = {**runtime.view.status(), "reconcile": r.reconciler.status()}
    doc = parse(render_page(status, runtime.view.snapshot(), [], refresh_s=10))
    assert_inert(doc)
    assert doc.by_id("reconcile").find_all("p")[0].text == "1 pass(es), every 30.0 s"
    [[venue, verdict, _, detail, booked]] = doc.by_id("reconcile-venues").rows()
    assert (venue, verdict, booked) == ("okx", "ok", "0") and detail.startswith("open orders and fills agree")
    assert doc.by_id("quarantined").rows()[0][:3] == ["okx", "<b>web</b>123", "an open order that is not ours"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80),
       detail=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80))
def test_any_text_from_data_stays_text(runtime: Runtime, reason: str, detail: str) -> None:
    status = {**runtime.view.status(), "trading_state": "halted", "reason": reason,
              "breakers": [{"name": detail, "state": "tripped", "effect": "halt", "detail": detail, "since_ms": 1}],
              "feeds": [{"name": detail, "venue": reason, "state": detail, "last_frame_age_ms": 5.0}]}
    doc = parse(render_page(status, runtime.view.snapshot(), None, refresh_s=10))
    assert_inert(doc)
    assert doc.by_id("reason").text == (reason or "no reason given")
    assert doc.by_id("breakers").rows() == [[detail, "halt", detail, "1970-01-01 00:00:00"]]
    assert doc.by_id("venues").rows()[0][:3] == [detail, reason, detail]
    assert doc.by_id("equity").text == "the ledger could not be read for the curve"


def test_equity_points_add_up_the_closed_groups_in_closing_order() -> None:
    rows: list[dict[str, object]] = [
        {"group_id": "g3", "state": "hedged", "closed_at_ms": 300, "realized_pnl": "-2.5"},
        {"group_id": "g1", "state": "repaired", "closed_at_ms": 100, "realized_pnl": "10"},
        {"group_id": "g2", "state": "rejected", "closed_at_ms": 200, "realized_pnl": "0"},
        {"group_id": "g4", "state": "working", "closed_at_ms": None, "realized_pnl": "0"},
        {"group_id": "g5", "state": "failed", "closed_at_ms": 400, "realized_pnl": "-1"},
        {"group_id": "g6", "state": "hedged", "closed_at_ms": 500, "realized_pnl": "not a number"},
    ]
    assert equity_points(rows) == [(100, Decimal(10)), (300, Decimal("7.5")), (400, Decimal("6.5"))]


# -- over real sockets, mounted in the MT5 listener ------------------------------------------
async def test_the_page_is_served_by_the_mt5_listener(runtime: Runtime) -> None:
    mt5 = make_rig(RealClock())
    server = EmbeddedServer(create_app(mt5.bridge, extra_routes=operator_routes(runtime.control, runtime.view, TOKEN)),
                            "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            assert (await c.get("/")).status_code == 401
            resp = await c.get("/", auth=("operator", page_password(TOKEN)))
            assert resp.status_code == 200 and parse(resp.text).by_id("state").text == "ACTIVE"
            assert (await c.get("/", headers=BEARER)).status_code == 200
    finally:
        await server.stop()


# -- quantarb status --page-password ------------------------------------------------------------
def test_the_cli_prints_the_page_password(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "QUANTARB_ADMIN_TOKEN": TOKEN}
    result = CliRunner().invoke(cli_app, ["status", "--page-password", "--url", "http://127.0.0.1:1"], env=env)
    assert result.exit_code == 0
    assert result.stdout == page_password(TOKEN) + "\n"
    assert "the status page: http://127.0.0.1:1/ (any user name, this password; token from QUANTARB_ADMIN_TOKEN)" \
        in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_the_cli_without_a_token_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["status", "--page-password", "--url", "http://127.0.0.1:1"],
                                env={"HOME": str(tmp_path), "QUANTARB_ENGINE__LEDGER": str(tmp_path / "none.db")})
    assert result.exit_code == 2 and result.stdout == ""
    assert "no admin token" in result.stderr
