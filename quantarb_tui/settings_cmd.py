"""`quantarb set KEY VALUE --reason TEXT` and `quantarb settings`: runtime settings of a running
engine over the operator API (`POST /api/set`, `GET /api/settings`), found and authenticated
like every operator command (quantarb_tui.operator_cli).

A change without a reason is refused here (exit 2) before anything is sent; the engine judges
the key and the value (its ranges come from its own config): a bad one is exit 3 with the
field and the allowed range, and nothing changed.
"""

from __future__ import annotations

from typing import Any

from quantarb_tui.operator_cli import (
    EXIT_USAGE,
    MAX_REASON_CHARS,
    READ_TIMEOUT_S,
    UsageError,
    _call,
    _err,
    resolve_target,
)

__all__ = ["render_settings", "run_set", "run_settings"]


def run_set(
    key: str, value: str, *, reason: str | None, url: str | None, config: str | None, ledger: str | None,
    as_json: bool,
) -> int:
    if not (reason or "").strip():
        _err('set needs a reason: quantarb set KEY VALUE --reason "why" (it is journaled with the change)')
        return EXIT_USAGE
    assert reason is not None
    if len(reason) > MAX_REASON_CHARS:
        _err(f"--reason is at most {MAX_REASON_CHARS} characters")
        return EXIT_USAGE
    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    body = {"key": key, "value": value, "reason": reason, "source": "cli"}
    code, answer = _call(target, "POST", "/api/set", body, READ_TIMEOUT_S, as_json)
    if answer is not None and not as_json:
        print(f"set: {answer.data.get('message', '')}")
    return code


def run_settings(*, url: str | None, config: str | None, ledger: str | None, as_json: bool) -> int:
    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    code, answer = _call(target, "GET", "/api/settings", None, READ_TIMEOUT_S, as_json)
    if answer is not None and not as_json:
        print(render_settings(answer.data.get("settings") or []))
    return code


def render_settings(rows: list[Any]) -> str:
    """key, value in force, the config file's value, the allowed range: aligned columns."""
    table = [("key", "value", "config", "allowed")]
    table += [(str(r.get("key")), str(r.get("value")), str(r.get("config")), str(r.get("range")))
              for r in rows if isinstance(r, dict)]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)
