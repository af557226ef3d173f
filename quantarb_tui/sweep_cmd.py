"""`quantarb replay FILE... --sweep KEY=SPEC [--cluster ADDRESS]`: the sweep's table (engine.sweep)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.config import QuantarbConfig
from engine.replay import ReplayError, ReplaySettings
from engine.sweep import SweepError, SweepResult, run_cluster, run_local, sweep_settings
from feeds.recording import RecordingError


def sweep_table(result: SweepResult) -> Table:
    table = Table(title=f"sweep over {len(result.recordings)} recording(s), {result.runner}", title_justify="left")
    for key in result.keys:
        table.add_column(key, justify="right", style="bold")
    for name in ("groups", "hit rate", "compensated", "PnL", "max drawdown"):
        table.add_column(name, justify="right")
    for row in result.rows:
        table.add_row(*(str(v) for _, v in row.setting), f"{row.groups:,}", f"{row.hit_rate:.1%}",
                      f"{row.compensated:,}", str(row.pnl), str(row.max_drawdown))
    return table


def main(config: QuantarbConfig, files: Sequence[Path], sweeps: Sequence[str], settings: ReplaySettings, *,
         cluster: str | None, jobs: int | None, as_json: bool) -> int:
    """Run the sweep; print its table (or JSON); the exit code (2: a bad sweep or recording)."""
    def progress(done: int, total: int) -> None:
        if not as_json:
            typer.echo(f"sweep: {done}/{total} replays done", err=True)

    try:
        axes = sweep_settings(sweeps, config)
        if cluster is not None:
            result = run_cluster(config, files, axes, cluster, settings, progress=progress)
        else:
            result = run_local(config, files, axes, settings, jobs=jobs, progress=progress)
    except (SweepError, RecordingError, ReplayError) as exc:
        typer.echo(f"quantarb: {exc}", err=True)
        return 2
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        Console(width=max(100, Console().width)).print(sweep_table(result))
    return 0
