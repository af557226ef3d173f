"""Binance signing against the documented examples, and secrets kept out of reprs and errors."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchanges.binance.auth import (
    Credentials,
    SigningError,
    ed25519_available,
    ed25519_sign,
    hmac_hex,
    logon_params,
    sign_ws_params,
    signed_query,
    ws_payload,
)

# The key and secret of the Binance docs' SIGNED examples (spot REST and WebSocket API).
DOC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def test_the_documented_rest_example() -> None:
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
               "&timestamp=1499827319559")
    assert hmac_hex(DOC_SECRET, payload) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_signed_query_builds_the_documented_request() -> None:
    params = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"),
              ("price", "0.1")]
    query = signed_query(params, DOC_SECRET, timestamp_ms=1499827319559, recv_window_ms=5000)
    assert query == ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
                     "&timestamp=1499827319559&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")


def test_the_documented_websocket_api_example() -> None:
    params = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01000000",
              "price": "52000.00", "newOrderRespType": "ACK"}
    signed = sign_ws_params(params, Credentials(DOC_KEY, DOC_SECRET), timestamp_ms=1645423376532, recv_window_ms=100)
    assert ws_payload(signed) == (
        "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&newOrderRespType=ACK&price=52000.00"
        "&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532"
        "&type=LIMIT")
    assert signed["signature"] == "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"


@given(st.dictionaries(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8),
                       st.one_of(st.text("abcXYZ019._-", max_size=8), st.integers(), st.booleans()), max_size=6))
def test_ws_payload_is_sorted_and_never_includes_the_signature(params: dict[str, object]) -> None:
    payload = ws_payload({**params, "signature": "x"})
    keys = [part.split("=", 1)[0] for part in payload.split("&")] if payload else []
    assert keys == sorted(k for k in params if k != "signature")


@given(st.lists(st.tuples(st.sampled_from(["symbol", "side", "quantity", "price", "newClientOrderId"]),
                          st.text(max_size=10)), max_size=5))
def test_a_signed_query_round_trips_and_its_signature_covers_everything_before_it(pairs: list[tuple[str, str]]) -> None:
    query = signed_query(pairs, "s", timestamp_ms=1, recv_window_ms=5000)
    body, _, signature = query.rpartition("&signature=")
    assert signature == hmac_hex("s", body)
    assert parse_qsl(body, keep_blank_values=True) == [*pairs, ("recvWindow", "5000"), ("timestamp", "1")]


def test_credentials_never_show_the_secret() -> None:
    creds = Credentials("key1", "very-secret", b"-----BEGIN PRIVATE KEY-----")
    assert "very-secret" not in repr(creds) and "PRIVATE" not in repr(creds)
    with pytest.raises(ValueError, match="required"):
        Credentials("", "x")
    with pytest.raises(ValueError, match="whitespace"):
        Credentials("key with space", "x")


def test_logon_without_an_ed25519_key_is_a_clear_error() -> None:
    with pytest.raises(SigningError, match="needs an Ed25519 key"):
        logon_params(Credentials("k", "s"), timestamp_ms=1, recv_window_ms=5000)


@pytest.mark.skipif(not ed25519_available(), reason="the cryptography package is not installed")
def test_ed25519_logon_signs_the_sorted_payload_verifiably() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    params = logon_params(Credentials(DOC_KEY, "unused", pem), timestamp_ms=1649729878532, recv_window_ms=5000)
    assert set(params) == {"apiKey", "recvWindow", "timestamp", "signature"}
    payload = f"apiKey={DOC_KEY}&recvWindow=5000&timestamp=1649729878532"
    key.public_key().verify(base64.b64decode(params["signature"]), payload.encode())  # raises if wrong
    with pytest.raises(SigningError, match="not a readable"):
        ed25519_sign(b"not a pem", "x")
