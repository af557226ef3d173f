"""`quantarb alerts test`: one test message to every configured alert channel, each result said.

Imported lazily by the CLI. Channels are tried at once, each in its own thread, so one that
hangs costs its own timeout (`alerts.timeout_s`) and does not delay the others' answers.
Channels are named by their place in `alerts.urls` and `channel_label`, never by their URL.

Exit codes: 0 every channel took the message; 3 at least one failed; 2 the configuration is
invalid, has no channel, or names a URL apprise cannot use.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import typer

__all__ = ["alerts_app", "run_test"]

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_FAILED = 3

alerts_app = typer.Typer(help="Alert channels ([alerts] urls in the config).", no_args_is_help=True)


@alerts_app.command("test")
def test_command(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Config file (else $QUANTARB_CONFIG, ./quantarb.toml, "
                     "~/.config/quantarb/quantarb.toml, else the built-in demo)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Send a test message to every channel in `alerts.urls` and report each result. Exit 0 when
    every channel took it, 3 when one failed, 2 without a channel or with an invalid config."""
    raise typer.Exit(run_test(config, as_json=as_json))


def run_test(config: str | None, *, as_json: bool = False) -> int:
    from engine.alert_channels import ChannelError, Message
    from engine.alerts import build_channels
    from engine.settings import ConfigError, load_config

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        return EXIT_INVALID
    if not loaded.config.alerts.urls:
        typer.echo(f"no alert channel configured in {loaded.source}: set [alerts] urls "
                   "(or QUANTARB_ALERTS__URLS); see docs/operations.md, Alerts", err=True)
        return EXIT_INVALID
    try:
        channels = build_channels(loaded.config.alerts)
    except ChannelError as exc:
        typer.echo(str(exc), err=True)
        return EXIT_INVALID
    message = Message(
        f"quantarb {socket.gethostname()}: test",
        f"A test message from `quantarb alerts test` ({loaded.source}). If you read this, this channel works.",
        "info",
    )
    with ThreadPoolExecutor(max_workers=len(channels)) as pool:
        results = list(pool.map(lambda c: c.send(message), channels))
    failed = sum(1 for ok, _ in results if not ok)
    if as_json:
        typer.echo(json.dumps({
            "ok": failed == 0,
            "channels": [{"channel": c.label, "ok": ok, "error": reason}
                         for c, (ok, reason) in zip(channels, results, strict=True)],
        }, indent=2))
    else:
        for channel, (ok, reason) in zip(channels, results, strict=True):
            typer.echo(f"ok      {channel.label}" if ok else f"FAILED  {channel.label}: {reason}")
        typer.echo(f"{len(channels) - failed} of {len(channels)} channel(s) took the test message")
    return EXIT_OK if failed == 0 else EXIT_FAILED
