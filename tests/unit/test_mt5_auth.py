"""Request signing of the MT5 protocol: vectors, window edges, replay, unknown terminals, secrecy."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import pytest

from core.clock import ManualClock
from mt5_bridge.auth import AuthError, SignatureVerifier, sign, signing_string
from tests.mt5_support import DOC_FILE, SECRETS, VECTORS_FILE

NOW = 1_732_150_000_000


def _vectors() -> list[dict[str, str]]:
    data: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    vectors: list[dict[str, str]] = data["vectors"]
    return vectors


def _doc_vectors() -> list[dict[str, str]]:
    text = DOC_FILE.read_text(encoding="utf-8")
    blocks = re.findall(r"```mt5-signing-vector\n(.*?)```", text, re.DOTALL)
    out = []
    for block in blocks:
        fields = {}
        for line in block.strip().splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = json.loads(value.strip())
        out.append(fields)
    return out


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_signing_vectors_match_sign(vector: dict[str, str]) -> None:
    body = vector["body"].encode("utf-8")
    wire = signing_string(vector["timestamp"], vector["method"], vector["path_with_query"], body)
    assert wire == vector["signing_string"].encode("utf-8")
    got = sign(vector["secret"].encode("utf-8"), vector["timestamp"], vector["method"], vector["path_with_query"], body)
    assert got == vector["signature"]
    # Independently: the documented formula with the standard library only.
    assert hmac.new(vector["secret"].encode(), vector["signing_string"].encode(), "sha256").hexdigest() == got


def test_vector_set_covers_the_required_cases() -> None:
    vectors = _vectors()
    assert len(vectors) >= 3
    assert any(v["method"] == "GET" and v["body"] == "" and "?" in v["path_with_query"] for v in vectors)
    assert any(v["method"] == "POST" and v["path_with_query"] == "/mt5/tick" for v in vectors)
    assert any(v["method"] == "POST" and v["path_with_query"] == "/mt5/fill" for v in vectors)


def test_doc_vectors_are_the_fixture_vectors() -> None:
    assert _doc_vectors() == _vectors()


def test_vectors_verify_through_the_verifier() -> None:
    for v in _vectors():
        clock = ManualClock(wall_ms=int(v["timestamp"]))
        verifier = SignatureVerifier({v["terminal"]: v["secret"].encode()}, clock)
        target = v["path_with_query"].encode()
        got = verifier.verify(terminal=v["terminal"], timestamp=v["timestamp"], signature=v["signature"],
                              method=v["method"], target=target, body=v["body"].encode())
        assert got == v["terminal"]


def test_sign_uppercases_the_method_and_is_lowercase_hex() -> None:
    assert sign(b"k", "1", "get", "/p", b"") == sign(b"k", "1", "GET", "/p", b"")
    assert re.fullmatch(r"[0-9a-f]{64}", sign(b"k", "1", "POST", "/p", b"{}"))


# ------------------------------------------------------------------------------------------------


def _verifier(clock: ManualClock, **kw: Any) -> SignatureVerifier:
    return SignatureVerifier(SECRETS, clock, **kw)


def _verify(verifier: SignatureVerifier, *, ts: int | str | None, terminal: str | None = "T1",
            secret: bytes | None = None, method: str = "POST", path: str = "/mt5/tick", body: bytes = b"{}",
            signature: str | None = None, sign_path: str | None = None, sign_body: bytes | None = None) -> str:
    stamp = None if ts is None else str(ts)
    if signature is None:
        key = SECRETS.get(terminal or "", b"x") if secret is None else secret
        signature = sign(key, stamp or "", method, sign_path or path, body if sign_body is None else sign_body)
    return verifier.verify(terminal=terminal, timestamp=stamp, signature=signature, method=method,
                           target=path.encode(), body=body)


def _reason(fn: Any) -> str:
    with pytest.raises(AuthError) as info:
        fn()
    return info.value.reason


def test_fresh_request_is_accepted() -> None:
    clock = ManualClock(wall_ms=NOW)
    assert _verify(_verifier(clock), ts=NOW) == "T1"
    assert _verify(_verifier(clock), ts=NOW, terminal="T2") == "T2"


@pytest.mark.parametrize("offset", [-30_000, -29_999, 0, 29_999, 30_000])
def test_window_edges_inside(offset: int) -> None:
    clock = ManualClock(wall_ms=NOW)
    assert _verify(_verifier(clock), ts=NOW + offset) == "T1"


@pytest.mark.parametrize("offset", [-30_001, 30_001, -3_600_000, 10**9])
def test_window_edges_outside(offset: int) -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    assert _reason(lambda: _verify(verifier, ts=NOW + offset)) == "timestamp"
    assert verifier.replay_cache_size == 0


def test_custom_window() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock, window_ms=1000)
    assert _verify(verifier, ts=NOW - 1000) == "T1"
    assert _reason(lambda: _verify(verifier, ts=NOW - 1001)) == "timestamp"


@pytest.mark.parametrize("stamp", [None, "", "abc", "-5", "1.5e12", " 1732150000000", f"{NOW}\n", "1" * 17, "１２３"])
def test_malformed_timestamp(stamp: str | None) -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    assert _reason(lambda: _verify(verifier, ts=stamp, signature="0" * 64)) == "timestamp"


def test_bad_signatures_all_say_signature() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    cases = [
        lambda: _verify(verifier, ts=NOW, secret=b"wrong"),
        lambda: _verify(verifier, ts=NOW, sign_body=b"{ }"),
        lambda: _verify(verifier, ts=NOW, sign_path="/mt5/ack"),
        lambda: _verify(verifier, ts=NOW, terminal="T2", secret=SECRETS["T1"]),
        lambda: _verify(verifier, ts=NOW, signature=sign(SECRETS["T1"], str(NOW), "POST", "/mt5/tick", b"{}").upper()),
        lambda: _verify(verifier, ts=NOW, signature="zz" * 32),
        lambda: _verify(verifier, ts=NOW, signature="ab"),
        lambda: _verify(verifier, ts=NOW, signature=""),
        lambda: _verify(verifier, ts=NOW, terminal=None),
        lambda: _verify(verifier, ts=NOW, terminal="T1\n"),
        lambda: verifier.verify(terminal="T1", timestamp=str(NOW), signature=None, method="POST",
                                target=b"/mt5/tick", body=b"{}"),
    ]
    for case in cases:
        assert _reason(case) == "signature"
    assert verifier.replay_cache_size == 0


def test_signature_over_another_method_is_refused() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    sig = sign(SECRETS["T1"], str(NOW), "GET", "/mt5/tick", b"{}")
    assert _reason(lambda: _verify(verifier, ts=NOW, signature=sig)) == "signature"


def test_unknown_terminal_answers_like_a_bad_signature_and_takes_the_same_path(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    unknown = _reason(lambda: _verify(verifier, ts=NOW, terminal="T9", secret=b"anything"))
    wrong = _reason(lambda: _verify(verifier, ts=NOW, terminal="T1", secret=b"anything"))
    assert unknown == wrong == "signature"
    # Both compared a full-length HMAC in constant time; the known one was a real comparison.
    assert len(calls) == 2
    assert all(len(a) == len(b) == 64 for a, b in calls)
    # The signature matching the dummy key still never authenticates an unknown terminal.
    assert _verify(verifier, ts=NOW) == "T1"
    assert len(calls) == 3


def test_replay_is_refused_within_the_window_and_forgotten_after() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    assert _verify(verifier, ts=NOW) == "T1"
    assert _reason(lambda: _verify(verifier, ts=NOW)) == "signature"
    # Still refused as a replay on the last millisecond of the window ...
    clock.advance(ms=30_000)
    assert _reason(lambda: _verify(verifier, ts=NOW)) == "signature"
    # ... and as a stale request one millisecond later; the cache forgets it on the next check.
    clock.advance(ms=1)
    assert _reason(lambda: _verify(verifier, ts=NOW)) == "timestamp"
    assert verifier.replay_cache_size == 1
    assert _verify(verifier, ts=NOW + 30_001) == "T1"
    assert verifier.replay_cache_size == 1


def test_same_body_with_another_timestamp_is_not_a_replay() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    assert _verify(verifier, ts=NOW) == "T1"
    assert _verify(verifier, ts=NOW + 1) == "T1"
    assert verifier.replay_cache_size == 2


def test_refused_request_does_not_enter_the_replay_cache() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    _reason(lambda: _verify(verifier, ts=NOW, secret=b"wrong"))
    assert verifier.replay_cache_size == 0
    assert _verify(verifier, ts=NOW) == "T1"


def test_replay_cache_is_bounded() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock, max_replay_entries=3)
    for i in range(5):
        assert _verify(verifier, ts=NOW + i) == "T1"
    assert verifier.replay_cache_size == 3
    assert verifier.evictions == 2
    # The newest ones are still refused as replays.
    assert _reason(lambda: _verify(verifier, ts=NOW + 4)) == "signature"


def test_replay_cache_forgets_by_timestamp_not_by_arrival() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    _verify(verifier, ts=NOW + 20_000)  # from a clock ahead: lives until NOW + 50 s
    _verify(verifier, ts=NOW - 20_000)  # from a clock behind: lives until NOW + 10 s
    clock.advance(ms=10_001)
    _verify(verifier, ts=NOW + 10_001)
    assert verifier.replay_cache_size == 2
    assert _reason(lambda: _verify(verifier, ts=NOW + 20_000)) == "signature"


def test_secrets_never_show() -> None:
    clock = ManualClock(wall_ms=NOW)
    verifier = _verifier(clock)
    text = repr(verifier) + str(verifier)
    for secret in SECRETS.values():
        assert secret.decode() not in text
    assert "T1" in text
    with pytest.raises(AuthError) as info:
        _verify(verifier, ts=NOW, secret=b"wrong")
    assert str(info.value) == "signature"
    assert all(secret.decode() not in repr(info.value) for secret in SECRETS.values())
    held = list(verifier._secrets.values())
    assert all(repr(s) == "<secret>" for s in held)


def test_bad_configuration_is_refused_without_showing_the_secret() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError) as info:
        SignatureVerifier({"T1": b""}, clock)
    assert str(info.value) == "the secret of terminal T1 is empty"
    with pytest.raises(TypeError) as tinfo:
        # Deliberately the wrong type: a str secret must be refused, not encoded.
        SignatureVerifier({"T1": "plain-text-secret"}, clock)  # type: ignore[dict-item]
    assert str(tinfo.value) == "the secret of terminal T1 must be bytes"
    assert "plain-text-secret" not in repr(tinfo.value)
    with pytest.raises(ValueError, match="invalid terminal id"):
        SignatureVerifier({"bad id": b"x"}, clock)
    with pytest.raises(ValueError):
        SignatureVerifier({"T1": b"x"}, clock, window_ms=0)
    assert SignatureVerifier({"T1": b"x", "T2": b"y"}, clock).terminals == frozenset({"T1", "T2"})
