"""The `quantarb` command line (README.md, Commands).

Only typer is imported at module level: `quantarb --help` must stay fast, so the engine,
pydantic, textual and the benches are imported inside the commands that need them.
Exit codes: 0 success, 2 usage or invalid configuration, 3 runtime failure, 4 no instance.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from quantarb_tui.alerts_cmd import alerts_app
from quantarb_tui.config_cmd import config_app
from quantarb_tui.ledger_cmd import ledger_app
from quantarb_tui.recording_cmd import recording_app

if TYPE_CHECKING:
    from engine.control import Action
    from engine.runtime import Runtime
    from engine.settings import LoadedConfig
    from feeds.recording import FrameRecorder

EXIT_CONFIG = 2
EXIT_RUNTIME = 3

app = typer.Typer(
    name="quantarb",
    help="Terminal workstation for cross-venue arbitrage (MT5, OKX, Binance). "
    "With no configuration, `tui` and `headless` run the built-in demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_app, name="config")
app.add_typer(ledger_app, name="ledger")
app.add_typer(alerts_app, name="alerts")
app.add_typer(recording_app, name="recording")

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file (else $QUANTARB_CONFIG, ./quantarb.toml, "
                 "~/.config/quantarb/quantarb.toml, else the built-in demo)."),
]
LedgerOpt = Annotated[
    str | None, typer.Option("--ledger", help="Ledger file (default from the config).")
]

RotateMbOpt = Annotated[float | None, typer.Option(
    "--rotate-mb", min=0.001, help="Start a new numbered part when the recording file reaches this many MB.")]
RotateHoursOpt = Annotated[float | None, typer.Option(
    "--rotate-hours", min=0.001, max=168.0, help="Start a new numbered part at every multiple of this many "
                                                "hours of UTC time (1: on the hour).")]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"quantarb: {message}", err=True)
    return typer.Exit(code)


def _load(config: str | None) -> LoadedConfig:
    from engine.settings import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        raise _fail(EXIT_CONFIG, str(exc)) from None


def _runtime(loaded: LoadedConfig, ledger: str | None) -> Runtime:
    from engine.runtime import Runtime, RuntimeFailure

    try:
        return Runtime(loaded.config, is_demo=loaded.is_demo, ledger_path=ledger, secrets=loaded.secrets,
                       warnings=loaded.warnings)
    except RuntimeFailure as exc:
        raise _fail(EXIT_RUNTIME, str(exc)) from None


@app.command()
def tui(config: ConfigOpt = None, ledger: LedgerOpt = None) -> None:
    """Open the workstation (the demo when there is no configuration)."""
    loaded = _load(config)
    runtime = _runtime(loaded, ledger)
    from quantarb_tui.app import QuantArbApp

    driver = None
    if sys.platform != "win32":
        from quantarb_tui.terminal import HangupSafeDriver

        driver = HangupSafeDriver  # a dropped SSH session stops the engine cleanly
    tui_app = QuantArbApp(runtime, driver_class=driver)
    tui_app.run()
    raise typer.Exit(tui_app.return_code or 0)


@app.command()
def headless(
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds.")
    ] = None,
    json_logs: Annotated[bool, typer.Option(
        "--json-logs", "--json", help="One JSON object per line (with component, event and group_id).")] = False,
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", help="Also write the lines to this file, rotated by size (mode 0600).")] = None,
    log_max_bytes: Annotated[int, typer.Option(
        "--log-max-bytes", min=4096, help="Rotate the log file when it would pass this size.")] = 10 * 1024 * 1024,
    log_backups: Annotated[int, typer.Option(
        "--log-backups", min=1, max=100, help="Rotated log files kept (PATH.1 ... PATH.N).")] = 5,
    record_out: Annotated[Path | None, typer.Option(
        "--record", help="Also record this run: frames, MT5 ticks, our orders, fills and events (gzip "
                         "when it ends in .gz; docs/feeds.md).")] = None,
    rotate_mb: RotateMbOpt = None,
    rotate_hours: RotateHoursOpt = None,
) -> None:
    """Run the engine without a UI; one line per notable event, a heartbeat line every
    engine.heartbeat_s, a summary at the end. Under systemd (Type=notify) it reports readiness
    and feeds the watchdog (docs/operations.md)."""
    loaded = _load(config)
    runtime = _runtime(loaded, ledger)
    from quantarb_tui.headless import run_headless

    recorder = _live_recorder(runtime, record_out, rotate_mb, rotate_hours) if record_out is not None else None
    try:
        code = run_headless(runtime, duration=duration, json_logs=json_logs, log_file=log_file,
                            log_max_bytes=log_max_bytes, log_backups=log_backups)
    finally:
        if recorder is not None:
            recorder.close()
    raise typer.Exit(code)


def _recorder_args(rotate_mb: float | None, rotate_hours: float | None) -> dict[str, Any]:
    return {"max_bytes": None if rotate_mb is None else max(1024, round(rotate_mb * 1_000_000)),
            "rotate_s": None if rotate_hours is None else max(1.0, rotate_hours * 3600)}


def _live_recorder(runtime: Runtime, out: Path, rotate_mb: float | None,
                   rotate_hours: float | None) -> FrameRecorder:
    """The recorder of `headless --record` attached to the runtime (closed by the caller)."""
    from engine.live_recording import LiveRecording
    from feeds.recording import FrameRecorder

    try:
        recorder = FrameRecorder(out, runtime.clock, **_recorder_args(rotate_mb, rotate_hours))
    except OSError as exc:
        raise _fail(EXIT_CONFIG, f"--record {out}: {exc.strerror or exc}") from None
    runtime.record_to(LiveRecording(recorder, runtime.clock))
    return recorder


@app.command()
def record(
    duration: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds to record.")],
    out: Annotated[Path, typer.Option("--out", help="JSON lines file; gzip when it ends in .gz.")],
    config: ConfigOpt = None,
    rotate_mb: RotateMbOpt = None,
    rotate_hours: RotateHoursOpt = None,
) -> None:
    """Record every frame the market-data feeds receive and every MT5 tick the listener
    accepts (the demo's without a config)."""
    loaded = _load(config)
    import asyncio

    from engine.recordings import RecordError
    from engine.recordings import record as run_record

    try:
        result = asyncio.run(run_record(loaded.config, is_demo=loaded.is_demo, duration=duration, out=out,
                                        secrets=loaded.secrets, **_recorder_args(rotate_mb, rotate_hours)))
    except RecordError as exc:
        raise _fail(EXIT_CONFIG, str(exc)) from None
    except OSError as exc:
        raise _fail(EXIT_RUNTIME, f"{out}: {exc.strerror or exc}") from None
    feeds = ", ".join(f"{name} {n:,}" for name, n in sorted(result.by_feed.items())) or "no feed"
    where = (str(result.path) if len(result.paths) == 1 and result.paths[0] == result.path
             else f"{len(result.paths)} part(s) {result.paths[0]} ... {result.paths[-1].name}")
    typer.echo(f"recorded {result.frames:,} frames in {result.seconds:.1f}s ({feeds}) to {where}")


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="Recordings made by `quantarb record`, replayed in order "
                                                 "(a directory: its recordings, by recording and part).")],
    config: ConfigOpt = None,
    ledger: Annotated[Path | None, typer.Option(
        "--ledger", help="Write the replay's ledger here (a new file); without it nothing is written.")] = None,
    latency_ms: Annotated[float, typer.Option(
        "--latency-ms", min=0.0, max=60_000.0, help="Order latency: groups fill on the books this much later.")] = 0.0,
    slippage_bps: Annotated[float | None, typer.Option(
        "--slippage-bps", min=0.0, max=1000.0, help="Adverse slippage, up to this (default: paper.slippage_bps).",
    )] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Paper venues' seed (default: paper.seed).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="KEY=START:STOP:STEP, KEY=A,B,C or KEY=VALUE (e.g. strategy.threshold_bps=4:20:2); "
                        "repeat to sweep every combination, each recording replayed per setting in parallel.",
    )] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Run the sweep on this Dask distributed scheduler (tcp://HOST:PORT) instead of "
                          "local processes; its workers read the recordings at the same paths.")] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, max=256, help="Local sweep: processes (default: one per core).")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report", help="Study the edges per pair and direction: tables and a chart here, report.html and "
        "study.json in this directory.")] = None,
) -> None:
    """Replay recordings through the whole engine (pipeline, risk gate, orchestrator,
    compensation, paper venues filling on the recorded books) on the recorded clock.
    With --sweep, a table of PnL, hit rate, compensations and max drawdown per setting."""
    loaded = _load(config)
    if sweep or cluster is not None:
        if ledger is not None:
            raise _fail(EXIT_CONFIG, "--ledger: a sweep writes one temporary ledger per replay")
        if report_dir is not None:
            raise _fail(EXIT_CONFIG, "--report: a sweep tabulates its settings; study one setting without --sweep")
        from engine.replay import ReplayError, ReplaySettings
        from quantarb_tui.sweep_cmd import main as run_sweep

        try:
            replay_settings = ReplaySettings(latency_ms=latency_ms, slippage_bps=slippage_bps, seed=seed)
        except ReplayError as exc:
            raise _fail(EXIT_CONFIG, str(exc)) from None
        raise typer.Exit(run_sweep(loaded.config, files, sweep or [], replay_settings, cluster=cluster, jobs=jobs,
                                   as_json=json_out))
    import asyncio

    from engine.replay import ReplayError, ReplaySettings, replay_engine
    from feeds.recording import RecordingError

    for file in files:
        if not file.exists():
            raise _fail(EXIT_CONFIG, f"{file}: no such recording")
    try:
        settings = ReplaySettings(latency_ms=latency_ms, slippage_bps=slippage_bps, seed=seed)
        with _ReplayProgress(enabled=not json_out, files=len(files)) as progress:
            report = asyncio.run(replay_engine(loaded.config, files, settings,
                                               ledger_path=str(ledger) if ledger is not None else None,
                                               progress=progress.update if progress.enabled else None,
                                               study=report_dir is not None))
    except (RecordingError, ReplayError) as exc:
        raise _fail(EXIT_CONFIG, str(exc)) from None
    html_path = None
    if report_dir is not None:
        from quantarb_tui.replay_report import write_report

        try:
            html_path = write_report(report_dir, report)
        except OSError as exc:
            raise _fail(EXIT_RUNTIME, f"{report_dir}: {exc.strerror or exc}") from None
    if json_out:
        import json

        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{len(report['files'])} file(s): {report['frames']:,} frames over {report['span_s']:.1f}s")
    typer.echo(f"quotes {report['quotes']:,}  decisions {report['decisions']:,}  intents {report['intents']:,}")
    typer.echo("reasons " + "  ".join(f"{k}={v}" for k, v in report["reasons"].items()))
    states = "  ".join(f"{k}={v}" for k, v in report["groups_by_state"].items()) or "none"
    typer.echo(f"groups {report['groups']:,} ({states})  compensated {report['compensated']}  "
               f"realized PnL {report['realized_pnl']}  trading {report['trading_state']}")
    for name, row in report["pairs"].items():
        typer.echo(f"  {name}: groups {row['groups']}  hit rate {row['hit_rate']:.0%}  PnL {row['pnl']}  "
                   f"trigger rate {row['trigger_rate']:.2%}")
    if report["ledger"]:
        typer.echo(f"ledger {report['ledger']}")
    if html_path is not None:
        from rich.console import Console

        from quantarb_tui.replay_report import render_terminal

        render_terminal(report["study"], Console())
        typer.echo(f"report {html_path}")


class _ReplayProgress:
    """A long replay's progress bar on stderr (stdout stays the report): frames replayed and
    their rate. Off with --json and when stderr is not a terminal (logs, pipes, tests)."""

    def __init__(self, *, enabled: bool, files: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.enabled = enabled and console.is_terminal
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]replaying[/] {task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f} frames"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=console, transient=True, disable=not self.enabled,
        )
        self._task = self._progress.add_task(f"{files} file(s)", total=None, rate="")
        self._started = 0.0

    def __enter__(self) -> _ReplayProgress:
        import time

        self._started = time.perf_counter()
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, frames: int) -> None:
        import time

        elapsed = time.perf_counter() - self._started
        rate = f"{frames / elapsed:,.0f}/s" if elapsed > 0 else ""
        self._progress.update(self._task, completed=frames, rate=rate)


# -- operator control of a running instance (docs/operator.md) -------------------------------

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="The instance's listener (default: listener.host:port from the config)."),
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the ledger; required by rearm).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the engine's JSON answer only (one document).")]
TokenLedgerOpt = Annotated[
    str | None,
    typer.Option("--ledger", help="The engine's ledger, when it was started with --ledger (its admin token "
                 "file sits next to it)."),
]


def _operate(
    command: Action | Literal["status"],
    url: str | None,
    config: str | None,
    ledger: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    from quantarb_tui.operator_cli import main as operate

    code = operate(command, url=url, config=config, ledger=ledger, reason=reason, as_json=as_json)
    raise typer.Exit(code)


@app.command()
def status(
    url: UrlOpt = None, json_out: JsonOpt = False, config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
    page_password: Annotated[
        bool, typer.Option("--page-password", help="Print the status page's password (HTTP Basic, any user "
                           "name; derived from the admin token) instead of the status; nothing is sent.")
    ] = False,
) -> None:
    """Show a running instance's trading state, PnL, groups, breakers and feeds."""
    if page_password:
        from quantarb_tui.operator_cli import print_page_password

        raise typer.Exit(print_page_password(url=url, config=config, ledger=ledger))
    _operate("status", url, config, ledger, None, json_out)


@app.command()
def kill(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Halt trading now: no new groups; unfilled entry legs are cancelled."""
    _operate("kill", url, config, ledger, reason, json_out)


@app.command()
def flatten(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Halt, then close the net exposure on every venue (waits up to 60 s for the result)."""
    _operate("flatten", url, config, ledger, reason, json_out)


@app.command()
def rearm(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Back to active after a halt (needs --reason; refused while a breaker is tripped)."""
    _operate("rearm", url, config, ledger, reason, json_out)


@app.command()
def pause(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """No new groups; nothing in flight is cancelled."""
    _operate("pause", url, config, ledger, reason, json_out)


@app.command()
def resume(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Undo a pause (a halt needs rearm)."""
    _operate("resume", url, config, ledger, reason, json_out)


@app.command("set")
def set_setting(
    key: Annotated[str, typer.Argument(help="A steerable setting, e.g. strategy.threshold_bps, "
                                       "strategy.cooldown_ms, risk.max_leg_notional, pairs.BTC.enabled.")],
    value: Annotated[str, typer.Argument(help="The new value (checked against the setting's range).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required; journaled with the change).")] = None,
    url: UrlOpt = None, json_out: JsonOpt = False, config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Change a runtime setting of the running engine (journaled, in force at the next decision)."""
    from quantarb_tui.settings_cmd import run_set

    raise typer.Exit(run_set(key, value, reason=reason, url=url, config=config, ledger=ledger, as_json=json_out))


@app.command()
def settings(
    url: UrlOpt = None, json_out: JsonOpt = False, config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """List the running engine's steerable settings: value in force, config file's value, allowed range."""
    from quantarb_tui.settings_cmd import run_settings

    raise typer.Exit(run_settings(url=url, config=config, ledger=ledger, as_json=json_out))


@app.command()
def close(
    group: Annotated[str, typer.Argument(help="The group id (as the groups table and `ledger show` show it).")],
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
) -> None:
    """Close one settled hedge group: both legs back at market, filed with the group (needs --reason)."""
    from quantarb_tui.manual_cli import close_group

    raise typer.Exit(close_group(group, url=url, config=config, ledger=ledger, reason=reason, as_json=json_out))


orphans_app = typer.Typer(help="Open orders on the venues that the ledger does not own (quarantined by "
                          "reconciliation).", no_args_is_help=True)
app.add_typer(orphans_app, name="orphans")


@orphans_app.command("cancel")
def orphans_cancel(
    url: UrlOpt = None, reason: ReasonOpt = None, json_out: JsonOpt = False,
    config: ConfigOpt = None, ledger: TokenLedgerOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Cancel the listed orders without asking y/N.")] = False,
) -> None:
    """List the orders reconciliation quarantined as open, ask y/N (unless --yes), then cancel exactly
    those (needs --reason); a result per order."""
    from quantarb_tui.manual_cli import cancel_orphans

    raise typer.Exit(cancel_orphans(url=url, config=config, ledger=ledger, reason=reason, as_json=json_out,
                                    yes=yes))


@app.command()
def doctor(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help='One JSON document: {"checks": [...]}.')] = False,
    ledger: TokenLedgerOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=60.0, help="Seconds each venue request may take.")
    ] = 5.0,
) -> None:
    """Check that this machine can trade the config: each venue (reachable, clock, instruments, key,
    permissions, balance), each MT5 terminal (secret, EA, account mode, AutoTrading), the listener
    and the ledger. Exit 0 when every check passes, 3 when one fails."""
    from quantarb_tui.doctor_cmd import main as run_doctor

    raise typer.Exit(run_doctor(config, ledger, as_json=json_out, timeout_s=timeout))


mt5_app = typer.Typer(help="The MT5 side: a simulated EA terminal for tests and demos.", no_args_is_help=True)
app.add_typer(mt5_app, name="mt5")


@mt5_app.command("sim")
def mt5_sim(
    url: Annotated[str, typer.Option("--url", help="The quantarb listener.")] = "http://127.0.0.1:8787",
    terminal: Annotated[str, typer.Option("--terminal", help="Terminal id the EA signs as.")] = "T1",
    secret_env: Annotated[
        str | None, typer.Option("--secret-env", help="Env var holding the secret (default QUANTARB_MT5_SECRET_<ID>).")
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.0, help="Stop after this many seconds.")] = None,
    state_file: Annotated[Path | None, typer.Option("--state-file", help="Keep the simulated account here.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    epoch_ms: Annotated[
        int | None, typer.Option("--epoch-ms", min=0, help="Price on the market grid shared from this epoch "
                                 "(ms since 1970), as the other processes of a rehearsal world do.")
    ] = None,
) -> None:
    """Run a simulated Expert Advisor against a running quantarb (signed HTTP, like the real EA).

    Prints `started terminal <ID> -> <URL> (<symbols>)` once it runs, keeps posting while the
    listener is down, and on SIGTERM or Ctrl-C stops and prints a JSON summary."""
    import asyncio
    import json
    import os
    import signal

    from engine.settings import mt5_secret_env_var
    from sim.mt5_sim_cli import run_mt5_sim

    name = secret_env or mt5_secret_env_var(terminal)
    secret = os.environ.get(name, "")
    if not secret:
        raise _fail(EXIT_CONFIG, f"the terminal secret is not set: export {name}")

    def started(symbols: list[str]) -> None:
        typer.echo(f"started terminal {terminal} -> {url} ({', '.join(symbols)})")

    async def run() -> dict[str, object]:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await run_mt5_sim(url, terminal, secret, duration_s=duration, state_file=state_file, seed=seed,
                                 epoch_ms=epoch_ms, stop=stop, on_started=started)

    try:
        summary = asyncio.run(run())
    except ValueError as exc:
        raise _fail(EXIT_CONFIG, str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    typer.echo(json.dumps(summary, default=str))


sim_app = typer.Typer(help="Simulated venues on this machine, for rehearsals and tests.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


class SimVenue(enum.StrEnum):
    okx = "okx"
    binance_spot = "binance-spot"
    binance_usdm = "binance-usdm"


@sim_app.command("venue")
def sim_venue(
    venue: Annotated[SimVenue, typer.Argument(help="Which venue to simulate.")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="REST and WebSocket on this port.")],
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="The only key the venue accepts (else QUANTARB_<VENUE>_API_KEY).")
    ] = None,
    secret: Annotated[
        str | None, typer.Option("--secret", help="That key's secret (else QUANTARB_<VENUE>_API_SECRET).")
    ] = None,
    passphrase: Annotated[
        str | None, typer.Option("--passphrase", help="OKX: the key's passphrase (else QUANTARB_OKX_API_PASSPHRASE).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option("--seed")] = 7,
    epoch_ms: Annotated[
        int | None, typer.Option("--epoch-ms", min=0, help="Price on the market grid shared from this epoch "
                                 "(ms since 1970), as the other processes of a rehearsal world do.")
    ] = None,
) -> None:
    """Serve a simulated OKX or Binance venue (public and private REST and WebSocket, signed as
    the venue signs) until SIGTERM; prints `listening on http://HOST:PORT` once it listens.

    The key, secret and passphrase not given as options are read from the engine's own
    variables (QUANTARB_OKX_API_KEY, ..., as in the env file `quantarb sim world` writes), so
    they need not appear on a command line."""
    import os

    prefix = "QUANTARB_OKX_API_" if venue is SimVenue.okx else "QUANTARB_BINANCE_API_"
    api_key = api_key or os.environ.get(prefix + "KEY") or None
    secret = secret or os.environ.get(prefix + "SECRET") or None
    if not api_key or not secret:
        raise _fail(EXIT_CONFIG, f"{venue.value} needs --api-key and --secret (or {prefix}KEY and {prefix}SECRET)")
    # `--name=value`: a key or secret may start with `-`, which argparse would take for an option.
    common = [f"--host={host}", f"--port={port}", f"--api-key={api_key}", f"--secret={secret}", f"--seed={seed}"]
    if epoch_ms is not None:
        common.append(f"--epoch-ms={epoch_ms}")
    if venue is SimVenue.okx:
        passphrase = passphrase or os.environ.get("QUANTARB_OKX_API_PASSPHRASE") or None
        if not passphrase:
            raise _fail(EXIT_CONFIG, "okx needs --passphrase (OKX keys have one) or QUANTARB_OKX_API_PASSPHRASE")
        from sim.okx_sim_cli import main as okx_main

        raise typer.Exit(okx_main([*common, f"--passphrase={passphrase}"]))
    from sim.binance_venue import main as binance_main

    market = "spot" if venue is SimVenue.binance_spot else "usdm"
    raise typer.Exit(binance_main([*common, f"--market={market}"]))


class WorldBinance(enum.StrEnum):
    spot = "spot"
    usdm = "usdm"


@sim_app.command("world")
def sim_world(
    config_out: Annotated[
        Path, typer.Option("--config-out", help="Write the live-mode config here (secrets to <PATH>.env, 0600).")
    ] = Path("world.toml"),
    binance: Annotated[
        WorldBinance, typer.Option("--binance", help="The Binance market the config trades (both are simulated).")
    ] = WorldBinance.usdm,
    ledger: Annotated[
        Path | None, typer.Option("--ledger", help="The config's ledger (default <config stem>.db next to it).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the market every process prices.")] = 7,
    listener_port: Annotated[
        int, typer.Option("--listener-port", min=0, max=65535, help="The engine's listener (0: a free port).")
    ] = 0,
    terminal: Annotated[
        str, typer.Option("--terminal", help="The simulated MT5 terminal's id.")
    ] = "T1",
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", min=1.0, help="Seconds every part has to answer.")
    ] = 30.0,
) -> None:
    """A rehearsal world for live mode: simulated OKX, Binance spot and USD-M venues and an MT5
    terminal, one process each, pricing one market. Writes a live-mode config for them (and its
    secrets to <PATH>.env), prints a line starting `ready`, and serves until SIGTERM or Ctrl-C;
    then `set -a; . PATH.env; set +a; quantarb headless --config PATH` trades against it.
    A part that exits ends the world with code 3, naming it."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_]{1,32}", terminal):
        raise _fail(EXIT_CONFIG, "--terminal: letters, digits and _ only (up to 32)")
    from sim.world_cli import WorldOptions
    from sim.world_cli import main as world_main

    market: Literal["spot", "usdm"] = "spot" if binance is WorldBinance.spot else "usdm"
    opts = WorldOptions(config_out=config_out, binance_market=market, ledger=ledger, seed=seed,
                        listener_port=listener_port, terminal=terminal, startup_timeout_s=startup_timeout)
    raise typer.Exit(world_main(opts))


class BenchTarget(enum.StrEnum):
    pipeline = "pipeline"
    feeds = "feeds"
    ledger = "ledger"
    listener = "listener"
    kill = "kill"
    orders = "orders"
    tui = "tui"
    soak = "soak"
    replay = "replay"
    all = "all"


@app.command()
def bench(
    target: Annotated[BenchTarget, typer.Argument(help="What to measure.")] = BenchTarget.all,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    quotes: Annotated[
        int, typer.Option("--quotes", min=1000, help="Synthetic quotes (pipeline) / frames (feeds, max 200k).")
    ] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    duration: Annotated[
        float | None, typer.Option("--duration", min=1.0, help="soak: seconds to run, warm-up included "
                                   "(default 1800; accelerated 5400, about a day of the demo's groups).")
    ] = None,
    warmup: Annotated[
        float | None, typer.Option("--warmup", min=0.0, help="soak: seconds before the slope is measured, at "
                                   "most two thirds of the run (default 600; accelerated 1200).")
    ] = None,
    accelerate: Annotated[
        bool, typer.Option("--accelerate", help="soak: the demo's activity compressed (faults, "
                           "breakers, reconnects).")
    ] = False,
    with_tui: Annotated[bool, typer.Option("--tui", help="soak: under the TUI (Textual's test driver).")] = False,
    flatten_every: Annotated[
        float | None, typer.Option("--flatten-every", min=0.0, help="soak: an operator flatten, then a rearm, "
                                   "every S seconds; 0 never (default: 0; accelerated 300).")
    ] = None,
    keep_ledger: Annotated[
        str | None, typer.Option("--keep-ledger", help="soak: write the run's ledger to this file and keep it "
                                 "(read a halt with `quantarb ledger ...`).")
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace/--no-trace", help="soak: a traced twin process alongside, for the Python "
                           "heap's growth by line (about twice the CPU); RSS is judged untraced either way.")
    ] = True,
) -> None:
    """Measure the engine's speed and memory on this machine (results for docs/performance.md).

    `all` runs every bench but `soak` (it runs for half an hour by default)."""
    from quantarb_tui.bench import SoakOptions, run_benches

    soak = SoakOptions.of(duration, warmup, accelerate=accelerate, tui=with_tui, flatten_every_s=flatten_every,
                          keep_ledger=keep_ledger, trace=trace)
    code = run_benches(str(target), quotes=quotes, seed=seed, as_json=json_out, soak=soak)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
