"""`<ledger>.listener`: written without following planted links, trusted only when it is ours,
private to writes, and names a loopback address."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.listener_file import (
    ListenerFileError,
    listener_file_path,
    loopback_url,
    read_listener_file,
    write_listener_file,
)

URL = "http://127.0.0.1:45123"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_file_sits_next_to_the_ledger() -> None:
    assert listener_file_path("/var/q/demo.db") == Path("/var/q/demo.db.listener")
    assert listener_file_path("~/x.db") == Path.home() / "x.db.listener"


def test_written_0600_and_read_back(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    assert write_listener_file(ledger, URL) is None
    path = listener_file_path(ledger)
    assert path.read_text() == URL + "\n"
    assert _mode(path) == 0o600 and not path.is_symlink()
    assert read_listener_file(ledger) == URL
    assert [p.name for p in tmp_path.iterdir()] == ["l.db.listener"]  # no temporary file left


def test_a_link_planted_at_the_old_fixed_temp_name_is_not_followed(tmp_path: Path) -> None:
    """The engine wrote `<ledger>.listener.tmp` with a plain open(): a link planted there by
    someone who can write the directory made it overwrite the link's target (root-owned files
    included when the engine runs as root)."""
    ledger = tmp_path / "l.db"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "l.db.listener.tmp").symlink_to(victim)
    assert write_listener_file(ledger, URL) is None
    assert victim.read_text() == "precious\n"
    assert listener_file_path(ledger).read_text() == URL + "\n"


def test_a_link_planted_at_the_random_temp_name_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "l.db"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr("engine.listener_file.secrets.token_hex", lambda n: "guessed")
    (tmp_path / ".l.db.listener.guessed.tmp").symlink_to(victim)
    error = write_listener_file(ledger, URL)
    assert error is not None and str(listener_file_path(ledger)) in error
    assert victim.read_text() == "precious\n"
    assert not listener_file_path(ledger).exists()


def test_a_link_planted_at_the_file_itself_is_replaced_not_followed(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    listener_file_path(ledger).symlink_to(victim)
    assert write_listener_file(ledger, URL) is None
    assert victim.read_text() == "precious\n"
    assert not listener_file_path(ledger).is_symlink()
    assert read_listener_file(ledger) == URL


@pytest.mark.parametrize(("bound", "written"), [
    ("http://0.0.0.0:8787", "http://127.0.0.1:8787"),
    ("https://[::]:8787", "https://[::1]:8787"),
    ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
])
def test_a_wildcard_bind_is_written_as_loopback(tmp_path: Path, bound: str, written: str) -> None:
    assert write_listener_file(tmp_path / "l.db", bound) is None
    assert read_listener_file(tmp_path / "l.db") == written


def test_no_file_is_none(tmp_path: Path) -> None:
    assert read_listener_file(tmp_path / "l.db") is None


def _planted(tmp_path: Path, text: str = URL, mode: int = 0o600) -> Path:
    ledger = tmp_path / "l.db"
    path = listener_file_path(ledger)
    path.write_text(text)
    os.chmod(path, mode)
    return ledger


@pytest.mark.parametrize(("mode", "accepted"), [
    (0o600, True), (0o644, True), (0o640, True), (0o400, True),
    (0o620, False), (0o602, False), (0o666, False), (0o660, False),
])
def test_a_file_others_may_write_is_refused(tmp_path: Path, mode: int, accepted: bool) -> None:
    ledger = _planted(tmp_path, mode=mode)
    if accepted:
        assert read_listener_file(ledger) == URL
    else:
        with pytest.raises(ListenerFileError, match="writable by other users"):
            read_listener_file(ledger)


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    ledger = _planted(tmp_path)
    mine = os.stat(listener_file_path(ledger)).st_uid
    assert read_listener_file(ledger, getuid=lambda: mine) == URL
    with pytest.raises(ListenerFileError, match="belongs to another user"):
        read_listener_file(ledger, getuid=lambda: mine + 1)


def test_a_symlink_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    good = _planted(tmp_path)
    ledger = tmp_path / "other.db"
    listener_file_path(ledger).symlink_to(listener_file_path(good))
    with pytest.raises(ListenerFileError, match="symbolic link"):
        read_listener_file(ledger)


def test_a_directory_or_fifo_is_refused(tmp_path: Path) -> None:
    listener_file_path(tmp_path / "d.db").mkdir()
    with pytest.raises(ListenerFileError):
        read_listener_file(tmp_path / "d.db")
    os.mkfifo(listener_file_path(tmp_path / "f.db"), 0o600)  # opened without blocking, then refused
    with pytest.raises(ListenerFileError, match="not a regular file"):
        read_listener_file(tmp_path / "f.db")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8787", "http://127.5.6.7:1", "https://localhost:8787", "http://LOCALHOST:9",
    "http://[::1]:8787", "http://127.0.0.1:8787/",
])
def test_loopback_urls_are_accepted(url: str) -> None:
    host_port = url.split("://", 1)[1].rstrip("/").lower()
    assert loopback_url(url) == url.split("://", 1)[0] + "://" + host_port


@pytest.mark.parametrize(("text", "why"), [
    ("http://10.0.0.5:8787", "not a loopback address"),
    ("http://0.0.0.0:8787", "not a loopback address"),
    ("http://[::]:8787", "not a loopback address"),
    ("http://[::ffff:127.0.0.1]:8787", "not a loopback address"),
    ("http://evil.example:80", "not a loopback address"),
    ("http://127.0.0.1.evil.example:80", "not a loopback address"),
    ("http://localhost.:80", "not a loopback address"),
    ("http://user:pw@127.0.0.1:8787", "more than"),
    ("http://127.0.0.1@10.0.0.5:8787", "more than"),
    ("http://127.0.0.1:8787/api", "more than"),
    ("http://127.0.0.1:8787?x=1", "more than"),
    ("http://127.0.0.1:8787#x", "more than"),
    ("http://127.0.0.1", "http(s)://host:port"),
    ("http://127.0.0.1:0", "http(s)://host:port"),
    ("ftp://127.0.0.1:21", "http(s)://host:port"),
    ("http://127.0.0.\n1:8787", "unreadable"),
    ("http://127.0.0.1:99999", "does not hold a URL"),
    ("", "http(s)://host:port"),
    ("not a url", "unreadable"),
])
def test_other_urls_are_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        loopback_url(text)


def test_garbage_in_the_file_is_refused(tmp_path: Path) -> None:
    for raw in (b"", b"\x00\xff", b"http://" + b"a" * 400, b"\xe2\x80\xae"):
        ledger = tmp_path / "l.db"
        listener_file_path(ledger).write_bytes(raw)
        with pytest.raises(ListenerFileError, match="does not hold"):
            read_listener_file(ledger)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, host, port, tail: f"{scheme}://{host}:{port}{tail}",
              st.sampled_from(["http", "https", "ftp", "HTTP"]),
              st.sampled_from(["127.0.0.1", "localhost", "[::1]", "10.0.0.1", "0.0.0.0", "[::]", "a@127.0.0.1",
                               "127.1", "2130706433", "0x7f.1", "[::ffff:7f00:1]", "localhost.", "x.localhost"]),
              st.integers(-1, 70000), st.sampled_from(["", "/", "/x", "?a", "#f", " ", "\n"])),
))
def test_loopback_url_returns_a_loopback_url_or_says_why(text: str) -> None:
    try:
        url = loopback_url(text)
    except ValueError as exc:
        assert str(exc).startswith("the listener file ")
        return
    scheme, rest = url.split("://", 1)
    host, port = rest.rsplit(":", 1)
    assert scheme in ("http", "https") and 0 < int(port) <= 65535
    assert host in ("localhost", "[::1]") or host.startswith("127."), url
