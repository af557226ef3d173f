"""`quantarb status | kill | flatten | rearm | pause | resume`: the operator API from a shell.

The URL is `--url`, else the one the running engine wrote to `<ledger>.listener` (trusted
only when it is ours and loopback), else the configured listener (`listener.host:port`, the
demo's when there is no config; a wildcard bind address is reached over loopback). The token is
`QUANTARB_ADMIN_TOKEN` (or `_FILE`), else the engine's token file next to the configured
ledger (`--ledger` when the engine was started with one).

Exit codes (docs/operator.md, The command line): 0 done; 2 usage or configuration (a rearm
without a reason is refused here, before anything is sent; an unsafe token file; a listener
file that is unsafe or names a non-loopback address, see `engine.listener_file`); 3 the
engine answered with an error: refused (409), the token refused (401), or no answer in time
once connected (the action may still have happened); 4 no instance answers at the URL
(refused, unreachable, unknown host, connect timeout).

With `--json` stdout holds exactly one JSON document, the engine's answer (errors included
when the engine answered); messages go to stderr.
"""

from __future__ import annotations

import json
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from engine.admin_token import AdminTokenError, client_admin_token, token_file_path
from engine.control import Action
from engine.listener_file import ListenerFileError, read_listener_file
from engine.settings import ConfigError, load_config

__all__ = [
    "EXIT_NO_INSTANCE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Target",
    "fetch_status",
    "main",
    "print_page_password",
    "render_status",
    "resolve_target",
    "run_action",
    "run_status",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_NO_INSTANCE = 4

MAX_REASON_CHARS = 500  # the API's limit (operator_api.MAX_REASON_CHARS), checked before sending
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
FLATTEN_READ_TIMEOUT_S = 60.0


class UsageError(Exception):
    """Bad arguments or configuration (exit 2); the message says what to fix."""


@dataclass(frozen=True)
class Target:
    """Where to send and what to send it with; `token_source` names the token's origin for
    messages (never the token itself)."""

    url: str
    token: str | None
    token_source: str
    verify: ssl.SSLContext | bool = True

    def __repr__(self) -> str:
        return f"Target(url={self.url!r}, token={'***' if self.token else None}, source={self.token_source!r})"


def _connect_host(host: str) -> str:
    """The address to reach a listener bound to `host` (a wildcard bind means this machine)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def resolve_target(url: str | None, config: str | None, ledger: str | None) -> Target:
    """The URL and token from the options and the configuration. Raises UsageError."""
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    listener = loaded.config.listener
    verify: ssl.SSLContext | bool = True
    ledger_path = ledger if ledger is not None else (loaded.config.engine.ledger or None)
    if url is None and ledger_path is not None:
        url = _running_url(ledger_path)  # the running engine's own word, port 0 included
        if url is not None and url.startswith("https://") and listener.tls_cert:
            verify = _trusting(listener.tls_cert)
    if url is None:
        if listener.port == 0:
            raise UsageError("the configured listener port is 0 (picked at start): pass --url")
        scheme = "https" if listener.tls_cert else "http"
        url = f"{scheme}://{_connect_host(listener.host)}:{listener.port}"
        if listener.tls_cert:
            verify = _trusting(listener.tls_cert)
    elif not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    configured = loaded.secrets.admin_token
    try:
        token = client_admin_token(ledger_path, configured)
    except AdminTokenError as exc:
        raise UsageError(str(exc)) from None
    if configured is not None:
        source = "QUANTARB_ADMIN_TOKEN"
    elif ledger_path is not None:
        source = str(token_file_path(ledger_path))
    else:
        source = "none"
    return Target(url, token, source, verify)


def _running_url(ledger_path: str) -> str | None:
    """The loopback URL the engine on this ledger wrote at start (None: no file). A file that
    anyone else could have planted, or that names another machine, is a UsageError: the token
    goes nowhere the operator did not choose."""
    try:
        return read_listener_file(ledger_path)
    except ListenerFileError as exc:
        raise UsageError(f"{exc}; not using it: pass --url to say where the engine listens") from None


def _trusting(cert: str) -> ssl.SSLContext | bool:
    """Verify against the system CAs plus the listener's own (possibly self-signed) cert."""
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=cert)
    except (OSError, ssl.SSLError):
        return True
    return context


@dataclass(frozen=True)
class Answer:
    status: int
    data: Any  # the decoded JSON body, or None
    raw: str


def _request(target: Target, method: str, path: str, body: dict[str, Any] | None, read_timeout: float) -> Answer:
    headers = {"accept": "application/json"}
    if target.token:
        headers["authorization"] = f"Bearer {target.token}"
    timeout = httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_S)
    # trust_env=False: the token goes straight to the engine, never through a proxy from the env.
    with httpx.Client(timeout=timeout, verify=target.verify, trust_env=False, follow_redirects=False) as client:
        response = client.request(method, target.url + path, headers=headers, json=body)
    try:
        data = response.json()
    except ValueError:
        data = None
    return Answer(response.status_code, data, response.text)


def _call(
    target: Target, method: str, path: str, body: dict[str, Any] | None, read_timeout: float, as_json: bool
) -> tuple[int, Answer | None]:
    """Send one request; print errors on stderr (and the engine's JSON on stdout with --json).
    Returns the exit code and, on success, the answer."""
    try:
        answer = _request(target, method, path, body, read_timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        _err(f"no quantarb instance answers at {target.url} ({_why(exc)})")
        return EXIT_NO_INSTANCE, None
    except httpx.TimeoutException:
        _err(f"{target.url} did not answer within {read_timeout:g}s; the action may still complete: "
             "check `quantarb status`")
        return EXIT_REFUSED, None
    except httpx.HTTPError as exc:
        _err(f"{target.url}: {_why(exc)}")
        return EXIT_REFUSED, None
    if as_json and answer.data is not None:
        print(json.dumps(answer.data, indent=2, sort_keys=True))
    if answer.status == 200 and isinstance(answer.data, dict):
        return EXIT_OK, answer
    _err(_explain(target, answer))
    return EXIT_REFUSED, None


def _why(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _explain(target: Target, answer: Answer) -> str:
    data = answer.data if isinstance(answer.data, dict) else {}
    if answer.status == 401:
        if target.token is None:
            return ("no admin token: set QUANTARB_ADMIN_TOKEN, or run this on the engine's machine "
                    f"(its token file {target.token_source} was not found)"
                    if target.token_source != "none"
                    else "no admin token: set QUANTARB_ADMIN_TOKEN")
        return f"the admin token was refused (token from {target.token_source})"
    if answer.status == 409:
        return f"refused: {data.get('message') or data.get('error') or 'no reason given'}"
    if answer.status == 422:
        fields = data.get("fields") or []
        detail = "; ".join(f"{f.get('field')}: {f.get('reason')}" for f in fields if isinstance(f, dict))
        return f"invalid request: {detail or data.get('error', '')}"
    if answer.data is None:
        return f"unexpected answer from {target.url} (HTTP {answer.status}): is this a quantarb listener?"
    return f"the engine answered HTTP {answer.status}: {data.get('error', answer.raw[:200])}"


def _err(message: str) -> None:
    print(f"quantarb: {message}", file=sys.stderr)


def main(
    command: Action | Literal["status"],
    *,
    url: str | None,
    config: str | None,
    ledger: str | None,
    reason: str | None,
    as_json: bool,
) -> int:
    """One CLI command, start to end; returns the exit code."""
    if command == "rearm" and not (reason or "").strip():
        # Refused here, before the config is read or anything is sent.
        _err('rearm needs a reason: quantarb rearm --reason "why it is safe to trade again"')
        return EXIT_USAGE
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        _err(f"--reason is at most {MAX_REASON_CHARS} characters")
        return EXIT_USAGE
    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if command == "status":
        return run_status(target, as_json=as_json)
    return run_action(command, target, reason, as_json=as_json)


def print_page_password(*, url: str | None, config: str | None, ledger: str | None) -> int:
    """`quantarb status --page-password`: the status page's HTTP Basic password on stdout (it is
    derived from the admin token, found as for every command); where to open it on stderr."""
    from engine.status_page import page_password

    try:
        target = resolve_target(url, config, ledger)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if target.token is None:
        _err("no admin token: set QUANTARB_ADMIN_TOKEN, or run this on the engine's machine"
             + (f" (its token file {target.token_source} was not found)" if target.token_source != "none" else ""))
        return EXIT_USAGE
    print(page_password(target.token))
    _err(f"the status page: {target.url}/ (any user name, this password; token from {target.token_source})")
    return EXIT_OK


def run_action(action: Action, target: Target, reason: str | None, *, as_json: bool) -> int:
    """POST /api/<action>; prints the outcome; returns the exit code."""
    if action == "rearm" and not (reason or "").strip():
        _err('rearm needs a reason: quantarb rearm --reason "why it is safe to trade again"')
        return EXIT_USAGE
    body = {"reason": reason} if reason is not None else {}
    read_timeout = FLATTEN_READ_TIMEOUT_S if action == "flatten" else READ_TIMEOUT_S
    code, answer = _call(target, "POST", f"/api/{action}", body, read_timeout, as_json)
    if answer is not None and not as_json:
        data = answer.data
        print(f"{action}: {data.get('message', '')} (trading {data.get('trading_state', '?')}"
              f"{'' if data.get('changed', True) else ', unchanged'})")
    return code


def fetch_status(target: Target, read_timeout: float = READ_TIMEOUT_S) -> tuple[dict[str, Any] | None, str]:
    """GET /api/status quietly: (the document, "") or (None, why not), for `quantarb doctor`."""
    try:
        answer = _request(target, "GET", "/api/status", None, read_timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        return None, f"no engine answers at {target.url} ({_why(exc)}): is it running? (quantarb headless or tui)"
    except httpx.TimeoutException:
        return None, f"{target.url} did not answer within {read_timeout:g}s"
    except httpx.HTTPError as exc:
        return None, f"{target.url}: {_why(exc)}"
    if answer.status == 200 and isinstance(answer.data, dict):
        return answer.data, ""
    return None, _explain(target, answer)


def run_status(target: Target, *, as_json: bool) -> int:
    """GET /api/status; prints a compact table (or the JSON); returns the exit code."""
    code, answer = _call(target, "GET", "/api/status", None, READ_TIMEOUT_S, as_json)
    if answer is not None and not as_json:
        print(render_status(answer.data, target.url))
    return code


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _rates_line(equity: Any) -> str:
    """The rates in force with their source and age, then the missing ones and stale books."""
    if not isinstance(equity, dict):
        return ""
    parts: list[str] = []
    rates = equity.get("rates")
    if isinstance(rates, dict):
        for ccy, r in rates.items():
            if isinstance(r, dict):
                age = r.get("age_ms")
                when = f", {age / 1000:.1f}s" if isinstance(age, int | float) and r.get("source") != "given" else ""
                parts.append(f"{ccy} {_cell(r.get('rate'))} ({_cell(r.get('source'))}{when})")
    parts += [f"{ccy} missing" for ccy in equity.get("missing_rates") or []]
    books = equity.get("rate_books")
    if isinstance(books, list):
        parts += [f"{b.get('book')} stale" for b in books if isinstance(b, dict) and b.get("stale")]
    return "  ".join(parts)


def render_status(status: dict[str, Any], url: str) -> str:
    """The status as a few aligned lines: state, mode, PnL, groups, breakers, feeds."""
    state = _cell(status.get("trading_state")).upper()
    reason = status.get("reason")
    lines = [
        ("instance", url),
        ("trading", f"{state}" + (f" ({reason})" if reason else "")),
        ("health", _cell(status.get("health"))),
        ("mode", _cell(status.get("mode"))),
        ("pnl", f"realized {_cell(status.get('realized_pnl'))}  today {_cell(status.get('daily_pnl'))}"),
        ("open groups", _cell(status.get("open_groups"))),
    ]
    by_state = status.get("groups_by_state")
    if isinstance(by_state, dict) and by_state:
        lines.append(("groups", "  ".join(f"{k}={v}" for k, v in sorted(by_state.items()))))
    breakers = status.get("breakers")
    if isinstance(breakers, list):
        tripped = [b for b in breakers if isinstance(b, dict) and b.get("state") == "tripped"]
        text = ", ".join(f"{b.get('name')} ({b.get('effect', '')})" for b in tripped) if tripped else "none"
        lines.append(("breakers tripped", text))
    blocked = status.get("blocked_venues")
    if blocked:
        lines.append(("blocked venues", ", ".join(map(str, blocked))))
    outliers = status.get("price_outliers")
    if isinstance(outliers, dict) and outliers:
        lines.append(("price outliers", "  ".join(f"{k}={v}" for k, v in sorted(outliers.items()))))
    rates = _rates_line(status.get("equity"))
    if rates:
        lines.append(("rates", rates))
    width = max(len(k) for k, _ in lines)
    out = [f"{k:<{width}}  {v}" for k, v in lines]
    feeds = [f for f in status.get("feeds") or [] if isinstance(f, dict)]
    if feeds:
        out.append("")
        rows = [("feed", "venue", "state", "last frame")]
        for f in feeds:
            age = f.get("last_frame_age_ms")
            rows.append((_cell(f.get("name")), _cell(f.get("venue")), _cell(f.get("state")),
                         "-" if not isinstance(age, int | float) else f"{age / 1000:.1f}s ago"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)
