"""`quantarb close GROUP --reason` and `quantarb orphans cancel --reason`: the manual venue
actions of a running engine, over its operator API (`POST /api/close`,
`POST /api/orphans/cancel`), found and authenticated as every operator command is
(quantarb_tui.operator_cli).

Both need a reason (refused here with exit 2 before anything is sent): it is journaled with
the action, with the OS user name as who asked. Exit codes as the other operator commands,
and 3 also when the engine did the action but not all of it: a group left with a residual,
an orphan whose cancel failed. With `--json` stdout holds exactly the engine's answer.
"""

from __future__ import annotations

import getpass
from typing import Any

from quantarb_tui.operator_cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    MAX_REASON_CHARS,
    UsageError,
    _call,
    _err,
    resolve_target,
)

CLOSE_READ_TIMEOUT_S = 60.0  # both legs, with up to five IOC attempts each
ORPHANS_READ_TIMEOUT_S = 60.0  # one read, one audit, one cancel and one read per order


def _who() -> str:
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):  # no user name in this environment: the API records the address alone
        return ""


def _reason_error(reason: str | None, usage: str) -> str | None:
    if not (reason or "").strip():
        return f"a reason is required (it is journaled with the action): {usage}"
    if len(reason or "") > MAX_REASON_CHARS:
        return f"--reason is at most {MAX_REASON_CHARS} characters"
    return None


def _body(reason: str, **extra: str) -> dict[str, str]:
    body = {**extra, "reason": reason}
    who = _who()
    if who and who.isprintable():
        body["by"] = f"cli {who}"
    return body


def close_group(group: str, *, url: str | None, config: str | None, ledger: str | None, reason: str | None,
                as_json: bool) -> int:
    """POST /api/close; prints each leg's outcome; returns the exit code."""
    problem = _reason_error(reason, f'quantarb close {group or "GROUP"} --reason "why"')
    if problem is None and not (group.isalnum() and len(group) <= 64):
        problem = f"{group!r} is not a group id (letters and digits, as the groups table shows)"
    if problem is not None:
        _err(problem)
        return EXIT_USAGE
    assert reason is not None
    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    code, answer = _call(target, "POST", "/api/close", _body(reason.strip(), group=group), CLOSE_READ_TIMEOUT_S,
                         as_json)
    if answer is None:
        return code
    detail: dict[str, Any] = answer.data.get("detail") or {}
    if not as_json:
        print(f"close: {answer.data.get('message', '')} (trading {answer.data.get('trading_state', '?')})")
        for leg in detail.get("legs") or []:
            note = f"  {leg.get('note')}" if leg.get("note") else ""
            print(f"  {leg.get('venue')} {leg.get('symbol')}: {leg.get('before')} -> {leg.get('after')} "
                  f"({', '.join(leg.get('orders') or []) or 'no order'}){note}")
    return EXIT_OK if detail.get("flat") is True else EXIT_REFUSED


def cancel_orphans(*, url: str | None, config: str | None, ledger: str | None, reason: str | None,
                   as_json: bool) -> int:
    """POST /api/orphans/cancel; prints one line per order; returns the exit code."""
    problem = _reason_error(reason, 'quantarb orphans cancel --reason "why"')
    if problem is not None:
        _err(problem)
        return EXIT_USAGE
    assert reason is not None
    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    code, answer = _call(target, "POST", "/api/orphans/cancel", _body(reason.strip()), ORPHANS_READ_TIMEOUT_S,
                         as_json)
    if answer is None:
        return code
    detail: dict[str, Any] = answer.data.get("detail") or {}
    results = [r for r in detail.get("results") or [] if isinstance(r, dict)]
    if not as_json:
        print(answer.data.get("message", ""))
        for r in results:
            print(f"  {r.get('venue')} {r.get('client_order_id')}: {r.get('result')} ({r.get('detail')})")
    return EXIT_REFUSED if any(r.get("result") == "failed" for r in results) else EXIT_OK
