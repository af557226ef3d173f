"""`quantarb doctor`'s own checks, without venues: the MT5 terminals as the engine's status
shows them, the listener (a real socket on loopback), the ledger (real SQLite files), the
secrets a config needs, and the JSON shape of one finding."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import ListenerConfig
from engine.doctor import EngineProbe, config_checks, ledger_checks, listener_checks, mt5_checks
from engine.doctor_checks import Check, failed, passed, warned
from engine.settings import LoadedConfig, load_config
from ledger.ledger import Ledger

NOW = 1_732_150_000_000
SECRET = "unit-test-terminal-secret"

MT5_TOML = """
[venues.mt5]
terminals = ["T1"]
[venues.okx]
[[pairs]]
name = "BTC"
[pairs.instruments.mt5]
symbol = "BTCUSD"
[pairs.instruments.okx]
symbol = "BTC-USDT-SWAP"
"""


def loaded(tmp_path: Path, text: str = MT5_TOML, **env: str) -> LoadedConfig:
    path = tmp_path / "quantarb.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), environ=env)


def engine(**row: Any) -> EngineProbe:
    base = {"terminal": "T1", "last_seen_ms": NOW - 400, "last_tick_ms": NOW - 300, "account_ms": NOW - 1500,
            "margin_mode": "hedging", "trade_allowed": True}
    return EngineProbe("http://127.0.0.1:8787", {"ts_ms": NOW, "mt5_terminals": [{**base, **row}]})


def summary(checks: list[Check]) -> list[tuple[str, str, str]]:
    return [(c.name, c.level, c.detail) for c in checks]


def test_one_finding_is_the_four_documented_keys_and_a_warning_says_so() -> None:
    assert passed("clock", "okx", "+3 ms").to_json() == {"name": "clock", "venue": "okx", "ok": True,
                                                         "detail": "+3 ms"}
    assert warned("permissions", "okx", "can withdraw").to_json() == {
        "name": "permissions", "venue": "okx", "ok": True, "detail": "warning: can withdraw"}
    assert failed("ledger file", None, "damaged").to_json() == {"name": "ledger file", "venue": None, "ok": False,
                                                                 "detail": "damaged"}


# ------------------------------------------------------------------------------ MT5


def test_a_healthy_terminal_passes_with_when_it_was_seen(tmp_path: Path) -> None:
    checks = mt5_checks(loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET), engine())
    assert summary(checks) == [
        ("T1 secret", "pass", "QUANTARB_MT5_SECRET_T1 is set (from QUANTARB_MT5_SECRET_T1)"),
        ("T1 ea", "pass", "seen 0.4 s ago (2024-11-21 00:46:39 UTC); last tick 0.3 s ago (2024-11-21 00:46:39 UTC)"),
        ("T1 account mode", "pass", "hedging"),
        ("T1 autotrading", "pass", "on"),
    ]
    assert SECRET not in str(checks)


def test_without_a_running_engine_the_ea_check_fails_and_says_why(tmp_path: Path) -> None:
    probe = EngineProbe("http://127.0.0.1:8787", None, "no engine answers at http://127.0.0.1:8787 (refused)")
    checks = mt5_checks(loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET), probe)
    assert summary(checks)[1:] == [("T1 ea", "fail", "not checked: no engine answers at http://127.0.0.1:8787 "
                                    "(refused); the EA, its account mode and AutoTrading are read from the running "
                                    "engine")]


def test_a_missing_secret_fails_naming_the_variable(tmp_path: Path) -> None:
    [secret, *_] = mt5_checks(loaded(tmp_path), engine())
    assert (secret.level, secret.detail) == ("fail", "QUANTARB_MT5_SECRET_T1 is not set: the engine will not start; "
                                             "set QUANTARB_MT5_SECRET_T1 (or QUANTARB_MT5_SECRET_T1_FILE) to the "
                                             "secret in the EA's InpSecret")


def test_a_silent_ea_fails_with_its_last_contact(tmp_path: Path) -> None:
    config = loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET)
    stale = mt5_checks(config, engine(last_seen_ms=NOW - 60_000))[1]
    assert (stale.level, stale.detail) == (
        "fail", "last seen 60.0 s ago (2024-11-21 00:45:40 UTC): the EA stopped talking to the listener")
    never = mt5_checks(config, engine(last_seen_ms=None, last_tick_ms=None))[1]
    assert never.level == "fail" and "WebRequest" in never.detail and "http://127.0.0.1:8787" in never.detail


def test_netting_warns_autotrading_off_fails_an_old_ea_warns(tmp_path: Path) -> None:
    config = loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET)
    netting = summary(mt5_checks(config, engine(margin_mode="netting", trade_allowed=False)))
    assert netting[2][:2] == ("T1 account mode", "warn") and netting[2][2].startswith("netting: ")
    assert netting[3][:2] == ("T1 autotrading", "fail") and netting[3][2].startswith("off: ")
    old = summary(mt5_checks(config, engine(margin_mode=None, trade_allowed=None)))
    assert [row[1] for row in old] == ["pass", "pass", "warn", "warn"]
    assert "update QuantArbBridge.mq5" in old[2][2] and "update QuantArbBridge.mq5" in old[3][2]


def test_no_account_report_yet_fails_mode_and_autotrading(tmp_path: Path) -> None:
    checks = summary(mt5_checks(loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET), engine(account_ms=None)))
    why = "no account report from the EA yet (it sends one every few seconds)"
    assert checks[2:] == [("T1 account mode", "fail", why), ("T1 autotrading", "fail", why)]


def test_an_engine_that_does_not_know_the_terminal_or_the_field_fails(tmp_path: Path) -> None:
    config = loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET)
    other = mt5_checks(config, engine(terminal="T9"))[1]
    assert other.level == "fail" and "has no terminal T1" in other.detail
    older = mt5_checks(config, EngineProbe("http://x", {"ts_ms": NOW, "feeds": []}))[1]
    assert older.level == "fail" and "no mt5_terminals" in older.detail


# ------------------------------------------------------------------------------ config


def test_live_without_keys_fails_the_secrets_check_naming_them(tmp_path: Path) -> None:
    [secrets] = config_checks(loaded(tmp_path, QUANTARB_MT5_SECRET_T1=SECRET, QUANTARB_ENGINE__EXECUTION="live",
                                     QUANTARB_OKX_API_KEY="k"))
    assert secrets.level == "fail"
    assert secrets.detail == (
        "QUANTARB_OKX_API_SECRET: missing (okx trading credentials); live orders cannot be signed; "
        "QUANTARB_OKX_API_PASSPHRASE: missing (okx trading credentials); live orders cannot be signed")


def test_a_secret_file_others_can_read_is_a_warning(tmp_path: Path) -> None:
    secret = tmp_path / "t1.secret"
    secret.write_text(SECRET, encoding="utf-8")
    secret.chmod(0o644)
    checks = config_checks(loaded(tmp_path, QUANTARB_MT5_SECRET_T1_FILE=str(secret)))
    assert summary(checks) == [
        ("secrets", "pass", "every required secret is set: QUANTARB_MT5_SECRET_T1"),
        ("config", "warn", f"QUANTARB_MT5_SECRET_T1_FILE: {secret} is readable by group and others (mode 0644); "
                           f"run: chmod 600 {secret}"),
    ]


# ------------------------------------------------------------------------------ listener


def test_a_port_another_program_holds_fails_and_one_our_engine_holds_passes() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = ListenerConfig(host="127.0.0.1", port=port)
        nobody = EngineProbe(None, None, "no engine")
        bind = listener_checks(listener, nobody)[0]
        assert (bind.level, bind.detail) == (
            "fail", f"127.0.0.1:{port} is in use by another program (see: ss -ltnp 'sport = :{port}')")
        ours = listener_checks(listener, EngineProbe(f"http://127.0.0.1:{port}", {"ts_ms": NOW}))[0]
        assert (ours.level, ours.detail) == (
            "pass", f"127.0.0.1:{port} is held by the running quantarb (http://127.0.0.1:{port})")
    free = listener_checks(listener, nobody)[0]
    assert (free.level, free.detail) == ("pass", f"127.0.0.1:{port} can be bound")
    assert listener_checks(ListenerConfig(port=0), nobody)[0].level == "pass"


def test_a_listener_off_loopback_without_tls_is_a_warning() -> None:
    tls = listener_checks(ListenerConfig(host="0.0.0.0", port=0), EngineProbe(None, None, ""))[1]
    assert tls.level == "warn" and "'0.0.0.0' is not a loopback address" in tls.detail


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A self-signed certificate, its key, and a key of another certificate."""
    out = []
    for name in ("a", "b"):
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        try:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pytest.skip("openssl is not available to make a test certificate")
        out.append((str(cert), str(key)))
    yield out[0][0], out[0][1], out[1][1]


def test_tls_files_must_load_as_a_certificate_and_its_key(tls_files: tuple[str, str, str], tmp_path: Path) -> None:
    cert, key, other_key = tls_files
    probe = EngineProbe(None, None, "")
    good = listener_checks(ListenerConfig(port=0, tls_cert=cert, tls_key=key), probe)[1]
    assert (good.level, good.detail) == ("pass", f"certificate {cert} and its key load (on loopback)")
    mismatched = listener_checks(ListenerConfig(port=0, tls_cert=cert, tls_key=other_key), probe)[1]
    assert mismatched.level == "fail" and mismatched.detail.startswith(
        f"{cert} and {other_key} do not load as a certificate and its key: ")
    missing = listener_checks(ListenerConfig(port=0, tls_cert=str(tmp_path / "none.crt"), tls_key=key), probe)[1]
    assert missing.level == "fail" and missing.detail.startswith(f"cannot read {tmp_path / 'none.crt'}: ")


# ------------------------------------------------------------------------------ ledger


async def test_a_new_ledger_passes_and_its_directory_must_be_a_directory(tmp_path: Path) -> None:
    fresh = summary(await ledger_checks(str(tmp_path / "data" / "ledger.db")))
    assert fresh == [
        ("ledger directory", "pass", f"{tmp_path / 'data'} does not exist yet; the first start creates it under "
                                     f"{tmp_path}"),
        ("ledger file", "pass", f"{tmp_path / 'data' / 'ledger.db'} does not exist yet: the first start creates it"),
        ("ledger in use", "pass", "no engine holds it"),
    ]
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    under_a_file = (await ledger_checks(str(blocker / "ledger.db")))[0]
    assert (under_a_file.level, under_a_file.detail) == ("fail", f"{blocker} is not a directory")


async def test_an_open_ledger_is_intact_and_held_and_a_damaged_one_fails(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = await Ledger.open(path)
    try:
        checks = summary(await ledger_checks(str(path)))
    finally:
        await ledger.close()
    assert checks[1][:2] == ("ledger file", "pass") and checks[1][2].startswith(f"{path}: intact (")
    assert checks[2] == ("ledger in use", "pass", f"held by a running engine (pid {os.getpid()}); one engine per "
                                                  "ledger")
    assert summary(await ledger_checks(str(path)))[2] == ("ledger in use", "pass", "no engine holds it")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    found = (await ledger_checks(str(damaged)))[1]
    assert found.level == "fail" and found.detail.startswith(
        f"{damaged}: the ledger is damaged (SQLite: file is not a database). Do not trade on it")
