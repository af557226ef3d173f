"""`<ledger>.listener`: where a running engine listens, for `quantarb kill` and friends
(docs/operator.md, The command line).

The engine writes the URL it actually listens on (port 0 included) next to its ledger at start
and removes it at stop, so the CLI on the same machine needs no `--url`. The CLI sends the
admin token to that URL, so the file is treated like the token file:

- written to a fresh, randomly named temporary file created exclusively (`O_EXCL`, no
  symbolic link followed) with mode 0600, then renamed into place: a link planted at a
  predictable name cannot redirect the write;
- read without following a symbolic link, and only when it is a regular file owned by this
  user that neither the group nor others may write: anyone else could plant it;
- and only a loopback URL (`127.0.0.0/8`, `::1`, `localhost`) is taken from it: an engine on
  another machine is reached with `--url` only.

A file that fails a check raises `ListenerFileError`, whose message names the file and why;
the CLI stops there (exit 2) rather than guess where to send the token.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "LISTENER_FILE_SUFFIX",
    "ListenerFileError",
    "listener_file_path",
    "loopback_url",
    "read_listener_file",
    "remove_listener_file",
    "write_listener_file",
]

LISTENER_FILE_SUFFIX = ".listener"
_MAX_BYTES = 300
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ListenerFileError(Exception):
    """The listener file cannot be trusted; the message names the file and the reason."""


def listener_file_path(ledger_path: str | os.PathLike[str]) -> Path:
    """`<ledger>.listener`, next to the ledger file (`~` expanded)."""
    ledger = Path(ledger_path).expanduser()
    return ledger.with_name(ledger.name + LISTENER_FILE_SUFFIX)


def local_url(url: str) -> str:
    """`url` as reached from this machine: a wildcard bind address becomes loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in _WILDCARDS:
        return url
    mapped = _WILDCARDS[host]
    netloc = f"[{mapped}]" if ":" in mapped else mapped
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def write_listener_file(ledger_path: str | os.PathLike[str], url: str) -> str | None:
    """Write where this engine listens (wildcards as loopback); returns an error to report, or None."""
    path = listener_file_path(ledger_path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask can only have removed bits; make it exact
                os.write(fd, (local_url(url) + "\n").encode("utf-8"))
            finally:
                os.close(fd)
            os.replace(tmp, path)  # renames over a planted link, never through it
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or type(exc).__name__}"
    return None


def remove_listener_file(ledger_path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        listener_file_path(ledger_path).unlink()


def read_listener_file(
    ledger_path: str | os.PathLike[str], *, getuid: Callable[[], int] | None = None
) -> str | None:
    """The loopback URL the engine on this ledger wrote; None when there is no file.

    Raises ListenerFileError for a file that is a link, not a regular file, owned by another
    user (`getuid`: whose files to trust, this process's user by default), writable by the
    group or others, or that does not hold a loopback http(s) URL.
    """
    path = listener_file_path(ledger_path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # O_NOFOLLOW on a symlink fails with ELOOP: a link could point anywhere.
        reason = "it is a symbolic link" if os.path.islink(path) else (exc.strerror or type(exc).__name__)
        raise ListenerFileError(f"{path}: cannot use the listener file: {reason}") from None
    try:
        _check_trusted(path, os.fstat(fd), getuid)
        raw = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ListenerFileError(f"{path}: the listener file does not hold a URL") from None
    if len(raw) > _MAX_BYTES:
        raise ListenerFileError(f"{path}: the listener file does not hold a URL (too long)")
    try:
        return loopback_url(text)
    except ValueError as exc:
        raise ListenerFileError(f"{path}: {exc}") from None


def _check_trusted(path: Path, info: os.stat_result, getuid: Callable[[], int] | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ListenerFileError(f"{path}: the listener file is not a regular file")
    uid = getuid if getuid is not None else getattr(os, "getuid", None)
    if uid is not None and info.st_uid != uid():
        raise ListenerFileError(f"{path}: the listener file belongs to another user (uid {info.st_uid})")
    if info.st_mode & 0o022:
        raise ListenerFileError(
            f"{path}: the listener file is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            "anyone could have written it"
        )


def loopback_url(text: str) -> str:
    """`http(s)://<loopback host>:<port>` from `text`, which must be exactly that (no user,
    path, query or whitespace); raises ValueError saying why not. The reason quotes the text
    only when it is short and printable."""
    plain = text.isascii() and text.isprintable() and " " not in text
    shown = repr(text) if plain and len(text) <= 80 else "an unreadable value"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"the listener file does not hold a URL ({shown})") from None
    if not plain or parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise ValueError(f"the listener file does not hold an http(s)://host:port URL ({shown})")
    if parts.username is not None or parts.password is not None or parts.path not in ("", "/") \
            or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"the listener file holds more than http(s)://host:port ({shown})")
    host = parts.hostname
    if not _is_loopback(host):
        raise ValueError(
            f"the listener file names {host!r}, not a loopback address; "
            "an engine elsewhere is reached only with --url"
        )
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
