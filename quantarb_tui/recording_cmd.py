"""`quantarb recording ...`: recordings for analysis outside quantarb (docs/research.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

recording_app = typer.Typer(help="Recordings made by `quantarb record` or `headless --record`: export them.",
                            no_args_is_help=True)


@recording_app.command("export")
def export_cmd(
    files: Annotated[list[Path], typer.Argument(help="Recordings (files or directories of parts), in order.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for quotes/frames/execution.parquet.")],
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Config whose instruments turn frames into quotes (default as for replay).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet (the only one).")] = "parquet",
    force: Annotated[bool, typer.Option("--force", help="Replace files that exist.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Write the recordings' quotes (through the live normalizers), raw frames and execution
    records as Parquet files, for DuckDB, Polars or pandas."""
    if fmt != "parquet":
        typer.echo("quantarb: --format must be parquet", err=True)
        raise typer.Exit(2)
    from engine.recording_export import ExportError, export_recordings
    from engine.settings import ConfigError, load_config
    from feeds.recording import RecordingError

    try:
        loaded = load_config(config)
        counts = export_recordings(loaded.config, files, out, force=force)
    except (ConfigError, ExportError, RecordingError) as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps({"out": str(out), "tables": counts}, indent=2))
        return
    for name, rows in counts.items():
        typer.echo(f"{out / (name + '.parquet')}: {rows:,} rows")


@recording_app.command("latency")
def latency_cmd(
    files: Annotated[list[Path], typer.Argument(help="Recordings of `headless --record` (files or directories).")],
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Real latencies from our recorded orders and fills, per venue: intent to send (reaction),
    send to the venue's answer, send to the first fill; and per pair, intent to both legs sent."""
    from engine.recorded_latency import execution_latencies
    from feeds.recording import RecordingError

    try:
        doc = execution_latencies(files)
    except RecordingError as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    if not doc["orders"]:
        typer.echo(f"no orders recorded ({doc['records']} execution records): record a trading run with "
                   "`quantarb headless --record FILE`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{doc['orders']} orders of {doc['groups']} groups (ms)", title_justify="left")
    for name in ("venue", "what", "count", "p50", "p90", "p99", "max"):
        table.add_column(name, justify="left" if name in ("venue", "what") else "right")
    labels = {"reaction": "intent -> sent", "answer": "sent -> answer", "fill": "sent -> first fill"}
    rows = [(venue, labels[kind], s) for venue, kinds in doc["venues"].items() for kind, s in kinds.items()]
    rows += [(pair, "intent -> both sent", s) for pair, s in doc["both_sent"].items()]
    for who, what, s in rows:
        table.add_row(who, what, str(s["count"]), *(f"{s[k]:.2f}" if k in s else "-" for k in ("p50", "p90", "p99",
                                                                                               "max")))
    Console().print(table)
