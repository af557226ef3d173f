"""`quantarb doctor [--config PATH] [--json]`: is this machine ready to trade this config?

The checks are `engine.doctor`'s; this is the face: it asks the running engine for its status
(the way `quantarb status` finds it: `<ledger>.listener`, else the configured listener, with
the admin token next to the ledger or QUANTARB_ADMIN_TOKEN), runs every check and prints one
line each, or with `--json` exactly `{"checks": [{"name", "venue", "ok", "detail"}, ...]}`.

Exit codes: 0 every check passed (warnings included); 3 one or more failed; 2 the
configuration is invalid (nothing was checked).
"""

from __future__ import annotations

import asyncio
import json

import typer

from engine.doctor import DEFAULT_TIMEOUT_S, EngineProbe, run_doctor
from engine.doctor_checks import Check
from engine.settings import ConfigError, LoadedConfig, load_config
from quantarb_tui.operator_cli import UsageError, fetch_status, resolve_target

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_FAILED = 3

_MARK = {"pass": "ok", "warn": "WARN", "fail": "FAIL"}


def probe_engine(config: str | None, ledger: str | None, timeout_s: float) -> EngineProbe:
    """The running engine's status, or why there is none (never raises)."""
    try:
        target = resolve_target(None, config, ledger)
    except UsageError as exc:
        return EngineProbe(None, None, str(exc))
    status, problem = fetch_status(target, timeout_s)
    return EngineProbe(target.url, status, problem)


def render(checks: list[Check], loaded: LoadedConfig) -> str:
    """One aligned line per check, then the verdict."""
    rows = [(_MARK[c.level], c.venue or "-", c.name, c.detail) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"quantarb doctor: {loaded.source} (execution {loaded.config.engine.execution})"]
    lines += [f"  {m:<{widths[0]}}  {v:<{widths[1]}}  {n:<{widths[2]}}  {d}" for m, v, n, d in rows]
    bad = [c for c in checks if not c.ok]
    warnings = sum(c.level == "warn" for c in checks)
    tail = f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else ""
    if bad:
        names = ", ".join(f"{c.venue + ' ' if c.venue else ''}{c.name}" for c in bad)
        lines.append(f"{len(bad)} of {len(checks)} checks failed: {names}{tail}")
    else:
        lines.append(f"all {len(checks)} checks passed{tail}")
    return "\n".join(lines)


def main(config: str | None, ledger: str | None, *, as_json: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        for line in exc.lines:
            typer.echo(f"quantarb: {line}", err=True)
        return EXIT_INVALID
    probe = probe_engine(config, ledger, timeout_s)
    checks = asyncio.run(run_doctor(loaded, probe, timeout_s=timeout_s, ledger_path=ledger))
    if as_json:
        typer.echo(json.dumps({"checks": [c.to_json() for c in checks]}, indent=2))
    else:
        typer.echo(render(checks, loaded))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "main", "probe_engine", "render"]
