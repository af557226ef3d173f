"""Credentials out of anything printed: `user:password@` in a URL, and query or fragment
parameters that name a key, a secret, a token, a signature or a password.

`config show` runs every string of the effective configuration through `redact_config`, so a
URL someone wrote with credentials in it (an authenticated proxy, a signed endpoint) is never
echoed. Only the values go: the URL's shape and its other parameters stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

REDACTED = "***"
# A parameter whose name contains one of these holds a credential.
_SENSITIVE = re.compile(r"key|secret|token|sig|pass|pwd|auth|credential|session", re.IGNORECASE)
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", re.DOTALL)


def is_sensitive(name: str) -> bool:
    return _SENSITIVE.search(unquote(name)) is not None


def redact_url(text: str) -> str:
    """`text` with the userinfo and sensitive parameters of a URL replaced by `***`; text that
    is not a `scheme://` URL is returned as it is. Never raises."""
    found = _URL.match(text)
    if found is None:
        return text
    rest = found["rest"]
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            cut = min(cut, i)
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rsplit("@", 1)[1]
    path, hash_mark, fragment = tail.partition("#")
    path, question, query = path.partition("?")
    if question:
        query = _redact_params(query)
    if hash_mark:
        fragment = _redact_params(fragment)
    return f"{found['scheme']}{authority}{path}{question}{query}{hash_mark}{fragment}"


def _redact_params(params: str) -> str:
    out = []
    for piece in params.split("&"):
        name, eq, value = piece.partition("=")
        out.append(f"{name}={REDACTED}" if eq and value and is_sensitive(name) else piece)
    return "&".join(out)


def redact_config(value: Any) -> Any:
    """A copy of plain data (what `model_dump` gives) with every string URL-redacted."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {k: redact_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_config(v) for v in value]
    return value
