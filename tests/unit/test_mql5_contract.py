"""The MQL5 Expert Advisor against the protocol contract (docs/mt5-protocol.md).

MQL5 cannot be compiled here, so the source is checked as text: every protocol field is
emitted or parsed under its exact name, the three headers are sent, the signing string is
built as documented, the OnInit self-test embeds the shared signing test vectors, and a
Python transliteration of the EA's HMAC construction (ipad/opad over SHA-256, as the MQL5 code
does it with CryptEncode) reproduces every vector.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EA_PATH = ROOT / "mql5" / "QuantArbBridge.mq5"
VECTORS_PATH = ROOT / "tests" / "fixtures" / "mt5_signing_vectors.json"

# Fields the EA writes into its JSON bodies, and fields it reads from the command answers.
EMITTED = [
    "ticks", "symbol", "bid", "ask", "time_msc",  # POST /mt5/tick
    "command_id", "status", "retcode", "reason",  # POST /mt5/ack
    "deal", "order", "position", "side", "volume", "price", "commission", "swap",  # POST /mt5/fill
    "balance", "equity", "margin_free", "positions", "ticket", "type", "price_open", "magic",  # /mt5/account
    "margin_mode", "trade_allowed",
]
PARSED = [
    "commands", "id", "group_id", "kind", "symbol", "side", "volume", "price", "deviation_points", "filling",
    "magic", "position", "expires_msc",
]
ALL_FIELDS = [
    "symbol", "bid", "ask", "time_msc", "id", "group_id", "kind", "side", "volume", "price", "deviation_points",
    "filling", "magic", "position", "expires_msc", "command_id", "status", "retcode", "reason", "deal", "order",
    "commission", "swap", "balance", "equity", "margin_free", "positions", "ticket", "type", "price_open",
    "commands", "ticks", "margin_mode", "trade_allowed",
]
HEADERS = ["X-QA-Terminal", "X-QA-Timestamp", "X-QA-Signature", "X-QA-Instance"]


@pytest.fixture(scope="module")
def source() -> str:
    return EA_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def code(source: str) -> str:
    """The source without // comments (string literals never contain //... except URLs)."""
    return "\n".join(re.sub(r"(?<!:)//.*$", "", line) for line in source.splitlines())


@pytest.fixture(scope="module")
def vectors() -> list[dict[str, Any]]:
    data = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = data["vectors"] if isinstance(data, dict) else data
    assert found, "no signing vectors in the fixture"
    return found


def mql5_string(literal: str) -> str:
    """The value of an MQL5 string literal's body (C-style escapes)."""
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "'": "'", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes[m.group(1)], literal)


def defines(source: str) -> dict[str, str]:
    return {m["name"]: mql5_string(m["value"])
            for m in re.finditer(r'^#define\s+(?P<name>QA_\w+)\s+"(?P<value>(?:[^"\\]|\\.)*)"', source, re.M)}


def function_body(code: str, name: str) -> str:
    match = re.search(rf"^\w[\w\s]*\b{name}\s*\([^)]*\)\s*\{{", code, re.M)
    assert match is not None, f"{name} not found"
    depth, i = 1, match.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        i += 1
    return code[match.end():i - 1]


# ------------------------------------------------------------------ (a) field and header names


@pytest.mark.parametrize("name", EMITTED)
def test_emitted_field_is_written_as_a_json_key(code: str, name: str) -> None:
    assert f'\\"{name}\\":' in code, f'the EA never writes \\"{name}\\":'


@pytest.mark.parametrize("name", PARSED)
def test_parsed_field_is_read_by_name(code: str, name: str) -> None:
    assert re.search(rf'QA_Json\w+\(\s*\w+\s*,\s*"{name}"', code), f"the EA never reads {name!r}"


def test_every_protocol_field_is_covered(code: str) -> None:
    assert set(ALL_FIELDS) <= set(EMITTED) | set(PARSED)
    for name in ALL_FIELDS:
        assert f'\\"{name}\\"' in code or f'"{name}"' in code, name


@pytest.mark.parametrize("header", HEADERS)
def test_header_is_sent(code: str, header: str) -> None:
    assert re.search(rf'"(?:\\r\\n)?{header}: "', code), f"{header} is not sent as a header line"


def test_headers_are_joined_with_crlf(code: str) -> None:
    body = function_body(code, "QA_Http")
    assert body.count('\\r\\nX-QA-') == 3
    assert 'WebRequest(method, g_baseUrl + path_with_query, headers,' in body


# ------------------------------------------------------------------ (b) signing string and transport


def test_signing_string_is_the_documented_one(code: str) -> None:
    body = function_body(code, "QA_SigningString")
    assert re.search(
        r'return\s+timestamp\s*\+\s*"\\n"\s*\+\s*method\s*\+\s*"\\n"\s*\+\s*path_with_query\s*\+\s*"\\n"\s*\+\s*body\s*;',
        body,
    ), body


def test_requests_are_signed_over_what_is_sent(code: str) -> None:
    body = function_body(code, "QA_Http")
    # the signed path is the path on the wire (base path prefix + path and query) ...
    assert re.search(r"wire_path\s*=\s*g_basePath\s*\+\s*path_with_query", body)
    assert re.search(r"QA_Sign\(\s*InpSecret\s*,\s*ts\s*,\s*method\s*,\s*wire_path\s*,\s*body\s*\)", body)
    # ... the timestamp header is the signed timestamp, and the body bytes are the signed string's
    assert re.search(r'"\\r\\nX-QA-Timestamp: "\s*\+\s*ts', body)
    assert re.search(r"QA_Utf8\(\s*body\s*,", body)
    sign = function_body(code, "QA_Sign")
    assert re.search(r"QA_Utf8\(\s*secret\s*,\s*key\s*\)", sign)
    assert re.search(r"QA_Utf8\(\s*QA_SigningString\(\s*timestamp\s*,\s*method\s*,\s*path_with_query\s*,\s*body\s*\)",
                     sign)


def test_utf8_conversion_drops_the_trailing_nul(code: str) -> None:
    body = function_body(code, "QA_Utf8")
    assert "StringToCharArray(s, out, 0, WHOLE_ARRAY, CP_UTF8)" in body
    assert re.search(r"out\[n - 1\] == 0\)\s*n--;", body)
    assert "ArrayResize(out, n)" in body


def test_hmac_is_built_on_cryptencode_sha256(code: str) -> None:
    sha = function_body(code, "QA_Sha256")
    assert "CryptEncode(CRYPT_HASH_SHA256, data, nokey, digest)" in sha
    mac = function_body(code, "QA_HmacSha256")
    assert "ArraySize(key) > 64" in mac and "ArrayResize(k, 64)" in mac
    assert "k[i] ^ 0x36" in mac and "k[i] ^ 0x5c" in mac
    assert 'StringFormat("%02x"' in function_body(code, "QA_Hex")  # lowercase hex


def test_never_long_polls_and_times_with_a_millisecond_timer(code: str) -> None:
    assert set(re.findall(r"wait_ms=(\d+)", code)) == {"0"}
    assert "EventSetMillisecondTimer(InpTimerMs)" in function_body(code, "OnInit")
    assert "EventKillTimer()" in function_body(code, "OnDeinit")


def test_timestamps_strictly_increase(code: str) -> None:
    body = function_body(code, "QA_NextTimestamp")
    assert re.search(r"if\(ts <= g_lastTs\)\s*ts = g_lastTs \+ 1;", body)


def test_command_handling_order(code: str) -> None:
    """Session, journal and trade-server traces (no double execution) before expiry, checks,
    then the journal line, then OrderSend; the ack before the fills."""
    body = function_body(code, "QA_HandleCommand")
    steps = ("QA_HandledFind(id)", "QA_ReportKnown(j, true)", "QA_Trace(id)", '"expired"', "price moved",
             "QA_UnknownOn(symbol)", "QA_JournalWrite(j)", "OrderSend(request")
    at = 0
    for step in steps:  # each one after the one before (str.index raises when it is not there)
        at = body.index(step, at)
    assert body.index('QA_ReportKnown(j, true)') < body.index('"expired"')
    after = body[body.index("OrderSend(request"):]
    assert after.index('QA_JournalOutcome(j, "done"') < after.index("QA_Conclude(j, false)")
    conclude = function_body(code, "QA_Conclude")
    assert conclude.index("QA_RemoveRest(j)") < conclude.index('QA_Ack(id, "accepted"') < conclude.index(
        "QA_ReportFills(j, true, force")
    assert "request.comment      = StringSubstr(id, 0, QA_COMMENT_MAX)" in body
    assert "request.position  = position" in body and "TRADE_ACTION_DEAL" in body
    assert "result.retcode" in body
    for name in ("DONE", "DONE_PARTIAL", "PLACED", "TIMEOUT"):
        assert f"TRADE_RETCODE_{name}" in body
    transient = function_body(code, "QA_IsTransient")
    assert "TRADE_RETCODE_CONNECTION" in transient and "TRADE_RETCODE_TOO_MANY_REQUESTS" in transient
    assert "TIMEOUT" not in transient  # the order may still execute: never resent
    names = function_body(code, "QA_RetcodeName")
    for retcode in ("REQUOTE", "REJECT", "MARKET_CLOSED", "NO_MONEY", "CONNECTION", "INVALID_FILL"):
        assert f"TRADE_RETCODE_{retcode}:" in names
    fill = function_body(code, "QA_FillJson")
    assert "HistoryDealGetDouble(deal, DEAL_COMMISSION)" in fill


def test_a_timeout_is_acked_unknown_and_journaled_never_retried(code: str) -> None:
    body = function_body(code, "QA_HandleCommand")
    timeout = body[body.index("if(rc == TRADE_RETCODE_TIMEOUT)"):]
    timeout = timeout[:timeout.index("return;")]
    assert 'QA_JournalOutcome(j, "unknown"' in timeout and 'QA_Ack(id, "unknown", rc,' in timeout
    assert "QA_RetryLater" not in timeout
    # a journaled command is never sent again; only `retry` (nothing executed) falls through
    assert 'if(j >= 0 && g_journal[j].state != "retry")' in body


def test_a_journal_that_cannot_be_written_refuses_the_command(code: str) -> None:
    body = function_body(code, "QA_HandleCommand")
    guard = body[body.index("if(!QA_JournalWrite(j))"):body.index("OrderSend(request")]
    assert "QA_Refuse(id, reason);" in guard and "return;" in guard
    assert "FileFlush(g_journalFile)" in function_body(code, "QA_JournalWrite")


def test_refusals_by_the_ea_carry_retcode_zero(code: str) -> None:
    assert 'QA_Ack(id, "rejected", 0, reason);' in function_body(code, "QA_Refuse")
    body = function_body(code, "QA_HandleCommand")
    before_send = body[:body.index("OrderSend(request")]
    assert 'QA_Ack(id, "rejected"' not in before_send  # every refusal goes through QA_Refuse


def test_the_price_guard_and_the_command_price_under_request_instant(code: str) -> None:
    body = function_body(code, "QA_HandleCommand")
    assert re.search(r"double worse = \(side == \"buy\"\) \? market - price : price - market;", body)
    assert "if(worse - deviation * point > point * 1e-6)" in body
    assert "request.price        = (priced && price > 0.0) ? price : market;" in body
    assert "priced = (exe == SYMBOL_TRADE_EXECUTION_REQUEST || exe == SYMBOL_TRADE_EXECUTION_INSTANT)" in body
    assert "if(InpMaxDeviation >= 0 && deviation > InpMaxDeviation)" in body  # 0 stays 0
    assert re.search(r"input long\s+InpMaxDeviation\s+= -1;", code)


def test_filling_follows_the_execution_mode_and_defaults_to_auto(code: str) -> None:
    allowed = function_body(code, "QA_AllowedFillings")
    assert "SYMBOL_TRADE_EXEMODE" in allowed and "SYMBOL_FILLING_MODE" in allowed
    assert "ret = (exe == SYMBOL_TRADE_EXECUTION_EXCHANGE);" in allowed
    assert re.search(r"input QA_FILLING_POLICY\s+InpFilling\s+= QA_FILLING_AUTO;", code)


def test_one_instance_per_terminal(code: str) -> None:
    lock = function_body(code, "QA_TakeLock")
    opened = re.search(r"g_lockFile = FileOpen\(path, ([^)]*)\);", lock)
    assert opened is not None and "FILE_COMMON" in opened[1] and "FILE_SHARE" not in opened[1]
    assert re.search(r"if\(!QA_TakeLock\(\)\)\s*return INIT_FAILED;", function_body(code, "OnInit"))
    assert "FileClose(g_lockFile)" in function_body(code, "QA_CloseFiles")
    http = function_body(code, "QA_Http")
    assert '"\\r\\nX-QA-Instance: " + g_instance' in http and "status == 409" in http


def test_one_blocking_request_per_timer_event_and_no_busy_wait_in_ontimer(code: str) -> None:
    http = function_body(code, "QA_Http")
    assert http.index("if(g_httpBlocked || GetTickCount64() < g_httpDownUntil)") < http.index("WebRequest(")
    assert "g_httpBlocked = true;" in http
    ontimer = function_body(code, "OnTimer")
    assert ontimer.index("g_httpBlocked = false;") < ontimer.index("QA_FlushOutbox")
    assert "QA_AnchorClock" not in ontimer and "while" not in function_body(code, "QA_CheckClock")


def test_account_amounts_are_not_rounded_to_cents_and_follow_trades(code: str) -> None:
    account = function_body(code, "QA_PostAccount")
    for name in ("ACCOUNT_BALANCE", "ACCOUNT_EQUITY", "ACCOUNT_MARGIN_FREE"):
        assert f"QA_Num(AccountInfoDouble({name}), 8)" in account
    assert "g_nextAccount = 0;" in function_body(code, "QA_Conclude")


# ------------------------------------------------------------------ (c) the embedded test vectors


def test_ea_embeds_signing_vectors_from_the_fixture(source: str, vectors: list[dict[str, Any]]) -> None:
    consts = defines(source)
    embedded = []
    prefixes = {m.removesuffix("_SIGNATURE") for m in consts if m.startswith("QA_TV") and m.endswith("_SIGNATURE")}
    for prefix in sorted(prefixes):
        embedded.append({
            "secret": consts[f"{prefix}_SECRET"], "timestamp": consts[f"{prefix}_TIMESTAMP"],
            "method": consts[f"{prefix}_METHOD"], "path_with_query": consts[f"{prefix}_PATH"],
            "body": consts[f"{prefix}_BODY"], "signature": consts[f"{prefix}_SIGNATURE"],
        })
        selftest = source[source.index("bool QA_SelfTest()"):]
        assert (f"QA_Sign({prefix}_SECRET, {prefix}_TIMESTAMP, {prefix}_METHOD, {prefix}_PATH, {prefix}_BODY)"
                in selftest), f"{prefix} is not checked by the self-test"
        assert f"{prefix}_SIGNATURE" in selftest
    assert embedded, "the EA embeds no signing test vector"
    keys = ("secret", "timestamp", "method", "path_with_query", "body", "signature")
    fixture = [{k: v[k] for k in keys} for v in vectors]
    for vec in embedded:
        assert vec in fixture, f"embedded vector {vec} is not in {VECTORS_PATH.name}"
    assert any(v["method"] == "POST" and v["body"] for v in embedded), "no vector with a body"
    assert any("?" in v["path_with_query"] for v in embedded), "no vector with a query string"


def test_selftest_refuses_to_start_on_mismatch(code: str) -> None:
    oninit = function_body(code, "OnInit")
    assert re.search(r"if\(!QA_SelfTest\(\)\)\s*\{[^}]*return INIT_FAILED;", oninit)


# ------------------------------------------------------------------ (d) the EA's HMAC, transliterated


def mql5_utf8(text: str) -> bytes:
    """QA_Utf8: StringToCharArray(CP_UTF8) copies a terminating NUL, which is dropped."""
    out = text.encode("utf-8") + b"\0"
    return out[:-1] if out.endswith(b"\0") else out


def mql5_sha256(data: bytes) -> bytes:
    """QA_Sha256: CryptEncode(CRYPT_HASH_SHA256, data, <no key>, digest)."""
    return hashlib.sha256(data).digest()


def mql5_hmac_sha256(key: bytes, message: bytes) -> bytes:
    """QA_HmacSha256, step for step."""
    k = bytearray(mql5_sha256(key) if len(key) > 64 else key)
    k.extend(b"\0" * (64 - len(k)))
    inner = bytes(b ^ 0x36 for b in k) + message
    inner_hash = mql5_sha256(inner)
    outer = bytes(b ^ 0x5C for b in k) + inner_hash
    return mql5_sha256(outer)


def mql5_sign(secret: str, timestamp: str, method: str, path_with_query: str, body: str) -> str:
    """QA_Sign with QA_SigningString."""
    signing = timestamp + "\n" + method + "\n" + path_with_query + "\n" + body
    return mql5_hmac_sha256(mql5_utf8(secret), mql5_utf8(signing)).hex()


def test_transliteration_reproduces_every_fixture_vector(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        assert mql5_sign(v["secret"], v["timestamp"], v["method"], v["path_with_query"], v["body"]) == v["signature"]
        if "signing_string" in v:
            assert v["timestamp"] + "\n" + v["method"] + "\n" + v["path_with_query"] + "\n" + v["body"] == \
                v["signing_string"]


def test_embedded_rfc4231_cases_are_right(source: str) -> None:
    consts = defines(source)
    rfc2 = mql5_hmac_sha256(mql5_utf8(consts["QA_RFC2_KEY"]), mql5_utf8(consts["QA_RFC2_DATA"])).hex()
    assert rfc2 == consts["QA_RFC2_MAC"] == hmac.new(b"Jefe", b"what do ya want for nothing?", "sha256").hexdigest()
    rfc6 = mql5_hmac_sha256(b"\xaa" * 131, mql5_utf8(consts["QA_RFC6_DATA"])).hex()
    assert rfc6 == consts["QA_RFC6_MAC"]
    assert "key[i] = 0xaa;" in source and "ArrayResize(key, 131);" in source


@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_transliteration_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert mql5_hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


@given(secret=st.text(min_size=1, max_size=80), body=st.text(max_size=200))
def test_transliteration_matches_the_python_signer(secret: str, body: str) -> None:
    want = hmac.new(secret.encode(), f"1\nPOST\n/mt5/ack\n{body}".encode(), hashlib.sha256).hexdigest()
    assert mql5_sign(secret, "1", "POST", "/mt5/ack", body) == want
