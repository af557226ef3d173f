"""The admin token: env first, else the 0600 file next to the ledger, else generated."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from engine.admin_token import (
    AdminTokenError,
    client_admin_token,
    engine_admin_token,
    token_file_path,
)

ENV_TOKEN = "env-token-0123456789abcdef"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_file_sits_next_to_the_ledger() -> None:
    assert token_file_path("/var/q/demo.db") == Path("/var/q/demo.db.admin-token")
    assert token_file_path("~/x.db") == Path.home() / "x.db.admin-token"


def test_engine_generates_a_0600_file_and_reuses_it_across_restarts(tmp_path: Path) -> None:
    ledger = tmp_path / "data" / "demo.db"  # the directory does not exist yet
    first = engine_admin_token(str(ledger))
    path = token_file_path(ledger)
    assert _mode(path) == 0o600
    assert path.read_text().strip() == first
    assert len(first) >= 40
    assert engine_admin_token(str(ledger)) == first  # a restart keeps the token
    assert client_admin_token(str(ledger)) == first  # and the CLI finds it
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        engine_admin_token(str(tmp_path / "l.db"))
    finally:
        os.umask(old)
    assert _mode(token_file_path(tmp_path / "l.db")) == 0o600


def test_env_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    ledger = str(tmp_path / "l.db")
    assert engine_admin_token(ledger, SecretStr(ENV_TOKEN)) == ENV_TOKEN
    assert not token_file_path(ledger).exists()
    engine_admin_token(ledger)  # a file exists now ...
    assert engine_admin_token(ledger, ENV_TOKEN) == ENV_TOKEN  # ... and the env still wins
    assert client_admin_token(ledger, SecretStr(ENV_TOKEN)) == ENV_TOKEN


def test_without_a_ledger_the_token_lives_in_memory(tmp_path: Path) -> None:
    a, b = engine_admin_token(None), engine_admin_token(None)
    assert a != b and len(a) >= 40
    assert client_admin_token(None) is None
    assert client_admin_token(str(tmp_path / "none.db")) is None  # no engine has written one


def test_a_file_others_can_read_is_refused_on_both_sides(tmp_path: Path) -> None:
    ledger = str(tmp_path / "l.db")
    token = engine_admin_token(ledger)
    path = token_file_path(ledger)
    path.chmod(0o644)
    for resolve in (engine_admin_token, client_admin_token):
        with pytest.raises(AdminTokenError) as info:
            resolve(ledger)
        assert "0644" in str(info.value) and str(path) in str(info.value)
        assert token not in str(info.value)


def test_symlink_and_garbage_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("x" * 40)
    target.chmod(0o600)
    ledger = tmp_path / "l.db"
    token_file_path(ledger).symlink_to(target)
    with pytest.raises(AdminTokenError, match="symbolic link"):
        client_admin_token(str(ledger))
    other = tmp_path / "m.db"
    path = token_file_path(other)
    path.write_bytes(b"\xff\xfe not a token")
    path.chmod(0o600)
    with pytest.raises(AdminTokenError, match="not a valid admin token file"):
        engine_admin_token(str(other))


def test_a_weak_configured_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(AdminTokenError) as info:
        engine_admin_token(None, "short")
    assert "short" not in str(info.value)
    with pytest.raises(AdminTokenError):
        engine_admin_token(None, "has spaces in the middle of it")
    generated = engine_admin_token(None, "   ")  # blank means unset: one is generated
    assert len(generated) >= 40 and generated == generated.strip() and " " not in generated


def test_the_token_never_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ledger = str(tmp_path / "l.db")
    token = engine_admin_token(ledger)
    client_admin_token(ledger)
    assert token not in caplog.text


def test_the_cli_reads_the_running_engines_address_and_ignores_a_bad_listener_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.listener_file import listener_file_path
    from quantarb_tui.operator_cli import UsageError, resolve_target

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUANTARB_ADMIN_TOKEN", "t" * 32)
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "0")
    ledger = tmp_path / "x.db"
    address = listener_file_path(ledger)
    address.write_text("http://127.0.0.1:45123\n")
    assert resolve_target(None, None, str(ledger)).url == "http://127.0.0.1:45123"
    for garbage in ("", "not a url", "ftp://127.0.0.1:1", "http://" + "a" * 400, "\x00\xff"):
        address.write_text(garbage, errors="surrogateescape")
        with pytest.raises(UsageError, match="pass --url"):  # falls back to the config: port 0
            resolve_target(None, None, str(ledger))
    assert resolve_target("http://127.0.0.1:1", None, str(ledger)).url == "http://127.0.0.1:1"
