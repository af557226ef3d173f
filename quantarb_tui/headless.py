"""`quantarb headless`: the same runtime as the TUI, unattended.

Prints one line per notable event (text or JSON lines), a `heartbeat` line every
`engine.heartbeat_s`, stops after `--duration` or on SIGINT/SIGTERM/SIGHUP, and ends with a
one-line summary. The signal handlers belong to this loop, so a SIGTERM, or the SIGHUP of a
dropped SSH session, stops the whole engine cleanly (groups in flight settle first). When the
terminal is gone, writing to it fails: the lines are dropped from then on, and the engine
still stops cleanly. With `--log-file` the lines also go to a file rotated by size.

Under systemd (`Type=notify`, deploy/quantarb.service) it says READY once the engine runs,
feeds the watchdog from this loop, keeps `systemctl status` current and says STOPPING when
a stop begins (engine.sdnotify; docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from engine.events import EngineEvent
from engine.heartbeat import Heartbeat, status_line
from engine.runtime import LedgerRefused, Runtime, RuntimeFailure
from engine.sdnotify import NotifyError, SdNotifier
from engine.signals import stop_on_signals
from quantarb_tui.log_file import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, RotatingLog

# The part of the engine an event comes from, by kind (JSON logs: `component`); an event may
# name its own in its data.
COMPONENTS: dict[str, str] = {
    "intent": "execution", "group": "execution", "compensation": "execution", "dust": "execution",
    "late_fill": "execution", "alert": "execution", "kill": "execution", "pair": "execution",
    "recover": "recovery", "risk": "risk", "refused": "risk", "breaker": "risk", "state": "risk",
    "reconcile": "reconcile", "flatten": "operator", "ledger": "ledger", "feed": "feed",
    "demo": "demo", "heartbeat": "engine", "start": "engine", "stop": "engine", "config": "engine",
    "error": "engine", "systemd": "engine",
}


def format_ts(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_event(event: EngineEvent, *, as_json: bool, mode: str = "") -> str:
    """One log line; `mode` (live, paper, demo, sim) is on every line, so a line copied out
    of context still says whether real money was involved."""
    if as_json:
        # component, event and group_id are on every line (group_id null outside a group), so
        # a log query can filter on them without knowing which kinds carry them.
        doc: dict[str, object] = {
            "ts": format_ts(event.ts_ms),
            "ts_ms": event.ts_ms,
            "mode": mode,
            "level": event.level,
            "kind": event.kind,
            "component": COMPONENTS.get(event.kind, "engine"),
            "event": event.kind,
            "group_id": None,
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


class _Sinks:
    """Every line to stdout (until it goes away) and to the log file, if any."""

    def __init__(self, out: TextIO, log_file: RotatingLog | None) -> None:
        self._lines = _Lines(out)
        self._file = log_file

    def write(self, line: str) -> None:
        self._lines.write(line)
        if self._file is not None:
            self._file.write(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def _beats(runtime: Runtime, interval_s: float, sinks: _Sinks, as_json: bool,
                 notifier: SdNotifier | None) -> None:
    """A heartbeat line every `interval_s`, and the same news as systemd's STATUS."""
    heartbeat = Heartbeat()
    heartbeat.beat(runtime.view.snapshot(groups=0, log=0), runtime.clock.monotonic_ns())  # rates from here
    while True:
        await asyncio.sleep(interval_s)
        snap = runtime.view.snapshot(groups=0, log=0)
        sinks.write(format_event(heartbeat.beat(snap, runtime.clock.monotonic_ns()), as_json=as_json,
                                 mode=runtime.mode))
        if notifier is not None:
            notifier.status(status_line(snap))


async def serve(
    runtime: Runtime,
    *,
    duration: float | None,
    out: TextIO,
    as_json: bool,
    log_file: RotatingLog | None = None,
    notifier: SdNotifier | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the engine until `duration` ends, a stop signal arrives or `stop` is set."""
    stop = stop or asyncio.Event()
    sinks = _Sinks(out, log_file)

    def _print(event: EngineEvent) -> None:
        sinks.write(format_event(event, as_json=as_json, mode=runtime.mode))

    runtime.events.subscribe(_print)
    # The watchdog is fed from the first moment to the last (a stop lets groups settle, which
    # takes a while); the heartbeat runs only while the engine does.
    watchdog = asyncio.create_task(notifier.watchdog(), name="sd-watchdog") if notifier is not None else None
    beats: asyncio.Task[None] | None = None
    try:
        with stop_on_signals(stop):
            try:
                try:
                    await runtime.start()
                except (LedgerRefused, RuntimeFailure) as exc:
                    if notifier is not None:
                        notifier.status(f"failed: {exc}")
                    raise
                if notifier is not None:
                    notifier.ready(status_line(runtime.view.snapshot(groups=0, log=0)))
                beats = asyncio.create_task(
                    _beats(runtime, runtime.config.engine.heartbeat_s, sinks, as_json, notifier), name="heartbeat")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration)
            finally:
                await _cancel(beats)
                if notifier is not None:
                    notifier.stopping("stopping: groups in flight settle first")
                await runtime.stop()
        sinks.write(format_summary(runtime.view.summary(), as_json=as_json))
    finally:
        await _cancel(watchdog)
        sinks.close()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _notifier() -> SdNotifier | None:
    """The systemd notifier when run by systemd; a value it cannot use is said and ignored."""
    def said(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"quantarb: {message}\n")

    try:
        notifier = SdNotifier.from_env(on_error=said)
    except NotifyError as exc:
        said(f"{exc}; systemd notifications off")
        return None
    if notifier is not None and notifier.watchdog_s is not None:
        # systemd's watchdog ends a hung engine with SIGABRT: the stack of every thread goes
        # to stderr (the journal) first, to show where the loop was stuck.
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            faulthandler.enable(file=sys.stderr, all_threads=True)
    return notifier


def run_headless(
    runtime: Runtime,
    *,
    duration: float | None,
    json_logs: bool,
    out: TextIO | None = None,
    log_file: Path | None = None,
    log_max_bytes: int = DEFAULT_MAX_BYTES,
    log_backups: int = DEFAULT_BACKUPS,
) -> int:
    """Run until the duration ends or a signal arrives; returns the process exit code."""
    out = out or sys.stdout
    rotating: RotatingLog | None = None
    if log_file is not None:
        try:
            rotating = RotatingLog(log_file, max_bytes=log_max_bytes, backups=log_backups)
        except OSError as exc:
            sys.stderr.write(f"quantarb: --log-file {log_file}: {exc.strerror or exc}\n")
            return 2
    notifier = _notifier()
    try:
        asyncio.run(serve(runtime, duration=duration, out=out, as_json=json_logs, log_file=rotating,
                          notifier=notifier))
    except LedgerRefused as exc:
        sys.stderr.write(f"quantarb: {exc}\n")
        return 2
    except RuntimeFailure as exc:
        sys.stderr.write(f"quantarb: {exc}\n")
        return 3
    finally:
        if notifier is not None:
            notifier.close()
    if runtime.ledger_failures:
        # The ledger stopped writing during the run: trading halted; say so in the exit code.
        sys.stderr.write("quantarb: the ledger could not be written during this run (trading was halted)\n")
        return 3
    return 0
