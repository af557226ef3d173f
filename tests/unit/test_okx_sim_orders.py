"""The OKX simulator's order boundary: any request body is answered with an OKX code, and a
refused one changes nothing (no order, no fill, no balance moved)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from sim.market import SimTick
from sim.okx_accounts import OkxExchange, SimInstrumentSpec
from sim.okx_private import OkxPrivateVenue

BTC = "BTC-USDT-SWAP"
SPEC = SimInstrumentSpec(BTC, Decimal("0.1"), Decimal(1), Decimal(1), ct_val=Decimal("0.01"))
BOOK = SimTick("okx", BTC, 97000.0, 97000.1, 5.0, 5.0, 0)

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**9), st.floats(),
                   st.sampled_from(["", "1", "2", "1.5", "97001", "97000.05", "nan", "-1", "1e3", BTC, "BTC-USDT",
                                    "cross", "cash", "buy", "sell", "ioc", "limit", "market", "fok", "post_only",
                                    "abc", "x" * 40]),
                   st.text(max_size=8), st.lists(st.integers(), max_size=2))
bodies = st.one_of(values, st.dictionaries(
    st.sampled_from(["instId", "tdMode", "side", "ordType", "px", "sz", "clOrdId", "tag", "ordId"]), values,
    max_size=9))


def _venue() -> OkxExchange:
    venue = OkxExchange(ManualClock().time_ms, {BTC: BOOK}.get, [SPEC])
    venue.add_account("k", "s", "p")
    return venue


@settings(max_examples=400)
@given(bodies)
def test_place_answers_any_body_with_a_code_and_a_refusal_changes_nothing(body: Any) -> None:
    venue = _venue()
    account = venue.accounts["k"]
    ack = venue.place_order(account, body)
    assert set(ack) >= {"sCode", "sMsg", "ordId", "clOrdId"}
    assert ack["sCode"].isdigit()
    if ack["sCode"] != "0":
        assert ack["ordId"] == "" and ack["sMsg"]
        assert account.orders == {} and account.fills == [] and account.cash == {"USDT": Decimal(100_000)}
    else:
        assert list(account.orders) == [ack["ordId"]]


@settings(max_examples=300)
@given(bodies)
def test_cancel_answers_any_body_with_a_code(body: Any) -> None:
    venue = _venue()
    ack = venue.cancel_order(venue.accounts["k"], body)
    assert ack["sCode"] in ("50014", "51000", "51400")  # no order exists: never "0"


def test_cancel_with_a_non_text_id_is_a_parameter_error() -> None:
    venue = _venue()
    ack = venue.cancel_order(venue.accounts["k"], {"instId": BTC, "clOrdId": [0]})
    assert (ack["sCode"], ack["sMsg"]) == ("51000", "Parameter ordId or clOrdId error")


ws_messages = st.dictionaries(
    st.sampled_from(["op", "id", "args"]),
    st.one_of(st.sampled_from(["login", "subscribe", "unsubscribe", "order", "cancel-order", "batch-orders", "x1"]),
              values, st.lists(st.one_of(values, st.dictionaries(
                  st.sampled_from(["apiKey", "passphrase", "timestamp", "sign", "channel", "instType", "instId",
                                   "tdMode", "side", "ordType", "px", "sz", "clOrdId"]), values, max_size=8)),
                  max_size=3)),
    max_size=3)


@settings(max_examples=300)
@given(st.lists(ws_messages, min_size=1, max_size=4))
def test_private_socket_answers_any_request_and_never_raises(messages: list[dict[str, Any]]) -> None:
    async def drive() -> list[str]:
        venue = OkxPrivateVenue(ManualClock(), {BTC: BOOK}.get, [SPEC])
        venue.add_account("k", "s", "p")
        out: list[str] = []
        session = venue.open_session("c1", out.append, out.append)
        for msg in messages:
            venue.on_ws(session, msg, json.dumps(msg, default=str))
        for _ in range(3):
            await asyncio.sleep(0)
        return out

    for text in asyncio.run(drive()):
        assert isinstance(json.loads(text), dict)


def test_login_with_a_timestamp_that_is_not_a_number_is_refused() -> None:
    async def drive() -> list[str]:
        venue = OkxPrivateVenue(ManualClock(), {BTC: BOOK}.get, [SPEC])
        venue.add_account("k", "s", "p")
        out: list[str] = []
        session = venue.open_session("c1", out.append, out.append)
        sign = base64.b64encode(hmac.new(b"s", b"nanGET/users/self/verify", hashlib.sha256).digest()).decode()
        venue.on_ws(session, {"op": "login", "args": [{"apiKey": "k", "passphrase": "p", "timestamp": "nan",
                                                        "sign": sign}]}, "")
        return out

    (answer,) = asyncio.run(drive())
    assert json.loads(answer)["code"] == "60006"
