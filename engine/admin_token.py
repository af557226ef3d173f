"""The admin token that guards the operator API (docs/operator.md, The admin token).

Where it comes from, in order:

1. `QUANTARB_ADMIN_TOKEN` (or `QUANTARB_ADMIN_TOKEN_FILE`), read with the other secrets by
   `engine.settings.read_secrets` and passed in here as `configured`;
2. the token file next to the ledger, `<ledger>.admin-token`, so that `quantarb kill` and
   friends on the same machine find the engine's token without any setup;
3. the engine generates one (256 bits, URL-safe) and writes that file; with no ledger
   (ledger disabled) the token lives in memory only and the operator must set the env var.

The file is created with mode 0600 from its first byte (a private temp file, then linked into
place, so a reader never sees a partial token and two engines starting together agree on one).
Like ssh with a private key, both sides refuse a token file that is not a regular file owned
by this user or that the group or others can access: such a token may have leaked, and the fix
(`chmod 600 FILE`, or delete it and restart) is the operator's call. Messages and exceptions
name the file, never the token; nothing here logs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

__all__ = [
    "TOKEN_FILE_SUFFIX",
    "AdminTokenError",
    "client_admin_token",
    "engine_admin_token",
    "generate_token",
    "token_file_path",
]

TOKEN_FILE_SUFFIX = ".admin-token"
_MAX_TOKEN_BYTES = 1024
_MIN_TOKEN_CHARS = 16


class _SecretLike(Protocol):
    def get_secret_value(self) -> str: ...


class AdminTokenError(Exception):
    """The token file cannot be used; the message names the file and the fix, never the token."""


def generate_token() -> str:
    """A fresh token: 32 random bytes, URL-safe base64 (43 characters, safe in a header)."""
    return secrets.token_urlsafe(32)


def listener_file_path(ledger_path: str | os.PathLike[str]) -> Path:
    """`<ledger>.listener`: the URL a running engine actually listens on (port 0 picks one),
    written at start and removed at stop, so `quantarb kill` needs no `--url` on this machine."""
    ledger = Path(ledger_path).expanduser()
    return ledger.with_name(ledger.name + ".listener")


def write_listener_file(ledger_path: str | os.PathLike[str], url: str) -> str | None:
    """Write where this engine listens next to its ledger, mode 0600 like the ledger's other
    files whatever the umask (a private temp file, then renamed into place); returns an error
    to report, or None."""
    path = listener_file_path(ledger_path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask can only have removed bits; make it exact
            os.write(fd, (url + "\n").encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"cannot write {path}: {exc}"
    return None


def remove_listener_file(ledger_path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):
        listener_file_path(ledger_path).unlink()


def token_file_path(ledger_path: str | os.PathLike[str]) -> Path:
    """`<ledger>.admin-token`, next to the ledger file (`~` expanded)."""
    ledger = Path(ledger_path).expanduser()
    return ledger.with_name(ledger.name + TOKEN_FILE_SUFFIX)


def _configured(value: str | _SecretLike | None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else value.get_secret_value()
    text = text.strip()
    if not text:
        return None
    if not _valid(text):
        raise AdminTokenError(
            "QUANTARB_ADMIN_TOKEN: must be printable ASCII without spaces, "
            f"{_MIN_TOKEN_CHARS} to {_MAX_TOKEN_BYTES} characters"
        )
    return text


def _valid(token: str) -> bool:
    return _MIN_TOKEN_CHARS <= len(token) <= _MAX_TOKEN_BYTES and all("!" <= c <= "~" for c in token)


def engine_admin_token(
    ledger_path: str | os.PathLike[str] | None, configured: str | _SecretLike | None = None
) -> str:
    """The token the engine accepts: `configured` (the env secret) when set, else the token
    file next to the ledger, else a new one written there (or kept in memory without a ledger).

    Raises AdminTokenError for a token file that is unsafe or unreadable, or that cannot be
    written.
    """
    token = _configured(configured)
    if token is not None:
        return token
    if ledger_path is None:
        return generate_token()
    path = token_file_path(ledger_path)
    existing = _read(path)
    if existing is not None:
        return existing
    return _write_new(path)


def client_admin_token(
    ledger_path: str | os.PathLike[str] | None, configured: str | _SecretLike | None = None
) -> str | None:
    """The token a client (the CLI) sends: `configured` when set, else the engine's token
    file next to the ledger; None when there is neither. Raises AdminTokenError for an
    unsafe or unreadable token file."""
    token = _configured(configured)
    if token is not None:
        return token
    if ledger_path is None:
        return None
    return _read(token_file_path(ledger_path))


def _read(path: Path) -> str | None:
    """The token in `path`, None when there is no such file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # O_NOFOLLOW on a symlink fails with ELOOP: a link could point anywhere.
        reason = "is a symbolic link" if os.path.islink(path) else (exc.strerror or type(exc).__name__)
        raise AdminTokenError(f"{path}: cannot read the admin token file: {reason}") from None
    try:
        info = os.fstat(fd)
        _check_private(path, info)
        raw = os.read(fd, _MAX_TOKEN_BYTES + 2)
    finally:
        os.close(fd)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not _valid(token):
        raise AdminTokenError(
            f"{path}: not a valid admin token file; delete it and restart the engine to make a new one"
        )
    return token


def _check_private(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise AdminTokenError(f"{path}: the admin token file is not a regular file")
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        raise AdminTokenError(f"{path}: the admin token file belongs to another user")
    if info.st_mode & 0o077:
        raise AdminTokenError(
            f"{path}: the admin token file is accessible to other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); the token may have leaked: "
            f"delete the file and restart the engine (or chmod 600 it if you trust it)"
        )


def _write_new(path: Path) -> str:
    """Create `path` with a new token, mode 0600 from creation; if another process created it
    first, use theirs."""
    token = generate_token()
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask can only have removed bits; make it exact
                os.write(fd, (token + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # never replaces: a token another engine wrote wins
            except FileExistsError:
                existing = _read(path)
                if existing is None:  # pragma: no cover - deleted between link and read
                    raise AdminTokenError(f"{path}: the admin token file vanished while it was created") from None
                return existing
            except OSError:  # a filesystem without hard links
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(directory)
    except AdminTokenError:
        raise
    except OSError as exc:
        raise AdminTokenError(
            f"{path}: cannot write the admin token file: {exc.strerror or type(exc).__name__}"
        ) from None
    return token


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
