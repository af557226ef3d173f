"""`quantarb headless`: the same runtime as the TUI, unattended.

Prints one line per notable event (text or JSON lines), stops after `--duration` or on
SIGINT/SIGTERM/SIGHUP, and ends with a one-line summary. The signal handlers belong to this
loop, so a SIGTERM, or the SIGHUP of a dropped SSH session, stops the whole engine cleanly
(groups in flight settle first). When the terminal is gone, writing to it fails: the lines
are dropped from then on, and the engine still stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from engine.events import EngineEvent
from engine.runtime import LedgerRefused, Runtime, RuntimeFailure
from engine.signals import stop_on_signals


def format_ts(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_event(event: EngineEvent, *, as_json: bool, mode: str = "") -> str:
    """One log line; `mode` (live, paper, demo, sim) is on every line, so a line copied out
    of context still says whether real money was involved."""
    if as_json:
        doc: dict[str, object] = {
            "ts": format_ts(event.ts_ms),
            "ts_ms": event.ts_ms,
            "mode": mode,
            "level": event.level,
            "kind": event.kind,
            "msg": event.text,
        }
        doc.update(event.data)
        return json.dumps(doc, separators=(",", ":"), default=str)
    return f"{format_ts(event.ts_ms)} {mode:<5} {event.level:<5} {event.kind:<7} {event.text}"


def format_summary(summary: Mapping[str, object], *, as_json: bool) -> str:
    groups = summary["groups"]
    assert isinstance(groups, dict)
    if as_json:
        doc = {"kind": "summary", **summary, "groups": {str(k): v for k, v in groups.items()}}
        return json.dumps(doc, separators=(",", ":"), default=str)
    by_state = " ".join(f"{state}={n}" for state, n in sorted(groups.items()))
    line = (
        f"summary quotes={summary['quotes']} decisions={summary['decisions']} "
        f"intents={summary['intents']} groups {by_state or 'none'} "
        f"pnl={summary.get('equity') or summary['realized_pnl']} {summary.get('account_ccy') or ''} "
        f"state={summary['trading_state']}"
    )
    # Decisions by reason (price_outlier, edge_above_ceiling, ... included) and the quotes the
    # price guard refused per venue.
    reasons = summary.get("reasons")
    if isinstance(reasons, dict) and reasons:
        line += " reasons " + " ".join(f"{k}={v}" for k, v in reasons.items())
    outliers = summary.get("price_outliers")
    if isinstance(outliers, dict) and outliers:
        line += " price_outliers " + " ".join(f"{k}={v}" for k, v in outliers.items())
    return line


class _Lines:
    """Writes lines to `out` until it fails (EIO or EPIPE: the terminal or the pipe went away
    with the SSH session); from then on lines are dropped, and the stream is pointed at
    /dev/null so that no later flush, at exit included, fails either."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.gone = False

    def write(self, line: str) -> None:
        if self.gone:
            return
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError):
            self.gone = True
            with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, self._out.fileno())
                finally:
                    os.close(devnull)


async def _run(runtime: Runtime, duration: float | None, out: TextIO, as_json: bool) -> None:
    stop = asyncio.Event()
    lines = _Lines(out)

    def _print(event: EngineEvent) -> None:
        lines.write(format_event(event, as_json=as_json, mode=runtime.mode))

    runtime.events.subscribe(_print)
    with stop_on_signals(stop):
        try:
            await runtime.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration)
        finally:
            await runtime.stop()
    lines.write(format_summary(runtime.view.summary(), as_json=as_json))


def run_headless(
    runtime: Runtime, *, duration: float | None, json_logs: bool, out: TextIO | None = None
) -> int:
    """Run until the duration ends or a signal arrives; returns the process exit code."""
    try:
        asyncio.run(_run(runtime, duration, out or sys.stdout, json_logs))
    except LedgerRefused as exc:
        sys.stderr.write(f"quantarb: {exc}\n")
        return 2
    except RuntimeFailure as exc:
        sys.stderr.write(f"quantarb: {exc}\n")
        return 3
    if runtime.ledger_failures:
        # The ledger stopped writing during the run: trading halted; say so in the exit code.
        sys.stderr.write("quantarb: the ledger could not be written during this run (trading was halted)\n")
        return 3
    return 0
