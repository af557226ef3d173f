"""OKX signing against the documented example secret (vectors in venue-protocols.md B)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchanges.okx.auth import DEMO_HEADER, OkxCredentials, iso_timestamp, rest_headers, sign, ws_login_args
from exchanges.okx.gateway import OkxGatewayConfig

DOC_SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
DOC_TS = "2020-12-08T09:08:57.715Z"
ORDER_BODY = '{"instId":"BTC-USDT","tdMode":"cash","clOrdId":"b15","side":"buy","ordType":"limit","px":"2.15","sz":"2"}'


def test_get_with_query_vector() -> None:
    assert sign(DOC_SECRET, f"{DOC_TS}GET/api/v5/account/balance?ccy=BTC") == (
        "HiZhvSfMtWJA3uUIVXV3a/bSXNPCWvYFXoGCVS8V4zY=")


def test_post_with_body_vector() -> None:
    creds = OkxCredentials("key", DOC_SECRET, "pass")
    headers = rest_headers(creds, DOC_TS, "post", "/api/v5/trade/order", ORDER_BODY)
    assert headers["OK-ACCESS-SIGN"] == "dI6rrL9rXW/HdaPKJ/6LC1OgvH4/PYju6R3CqixMTNQ="
    assert headers["OK-ACCESS-TIMESTAMP"] == DOC_TS
    assert (headers["OK-ACCESS-KEY"], headers["OK-ACCESS-PASSPHRASE"]) == ("key", "pass")
    assert DEMO_HEADER not in headers


def test_websocket_login_vector() -> None:
    args = ws_login_args(OkxCredentials("key", DOC_SECRET, "pass"), 1538054050)
    assert args == {"apiKey": "key", "passphrase": "pass", "timestamp": "1538054050",
                    "sign": "+LdIr8lkkvhr5hoA3g9TMC0+uQJ849ftAcocA/ouu4M="}


def test_demo_switch_adds_the_simulated_trading_header() -> None:
    headers = rest_headers(OkxCredentials("k", "s", "p"), DOC_TS, "GET", "/api/v5/account/balance", demo=True)
    assert headers[DEMO_HEADER] == "1"


def test_iso_timestamp_matches_the_documented_form() -> None:
    assert iso_timestamp(1607418537715) == DOC_TS
    assert iso_timestamp(1607418537005) == "2020-12-08T09:08:57.005Z"


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_iso_timestamp_round_trips(ms: int) -> None:
    text = iso_timestamp(ms)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert round(parsed.timestamp() * 1000) == ms


def test_credentials_never_show_the_secret_or_passphrase() -> None:
    creds = OkxCredentials("visible-key", "very-secret-value", "my-passphrase")
    shown = repr(creds) + str(creds)
    assert "visible-key" in shown
    assert "very-secret-value" not in shown and "my-passphrase" not in shown


S = "Zq9SecretValue"
P = "Xw7PassValue"


@pytest.mark.parametrize(("key", "secret", "passphrase"), [("", S, P), ("k", "", P), ("k", S, ""),
                                                         ("k ", S, P), ("k", S + "\n", P), ("k", S, " " + P)])
def test_bad_credentials_are_refused_without_echoing_them(key: str, secret: str, passphrase: str) -> None:
    with pytest.raises(ValueError, match="okx credentials") as info:
        OkxCredentials(key, secret, passphrase)
    assert S not in str(info.value) and P not in str(info.value)


def test_demo_switch_moves_the_private_socket_to_the_demo_host() -> None:
    assert OkxGatewayConfig(demo=True).ws_private_url == "wss://wspap.okx.com:8443/ws/v5/private"
    assert OkxGatewayConfig().ws_private_url == "wss://ws.okx.com:8443/ws/v5/private"
    assert OkxGatewayConfig(demo=True, ws_private_url="ws://127.0.0.1:1/x").ws_private_url == "ws://127.0.0.1:1/x"
    with pytest.raises(ValueError, match="td_mode"):
        OkxGatewayConfig(td_mode="cash")
