"""Parameter sweeps: every combination of some settings replayed over the same recordings.

`--sweep strategy.threshold_bps=4:20:2` (start:stop:step, stop included when on the grid),
`--sweep strategy.leg_policy=concurrent,mt5_first` (a list) or `KEY=VALUE`; several sweeps
multiply. Each task replays ONE recording (a file, or the parts of one rotated recording)
with ONE setting through the whole engine (`engine.replay`) into its own temporary ledger,
so a task is independent of where it runs: local processes (`ProcessPoolExecutor`) or the
workers of a Dask distributed scheduler (`--cluster ADDRESS`), with identical results.
Per setting the results of its tasks are added up in recording order: PnL, groups, hits
(hedged or repaired), compensated groups, and the maximum drawdown of the cumulative
realized PnL, group by group in closing order across the recordings.

Because each recording starts a fresh engine, a sweep over several recordings is not the
same as one replay of them all in a row (no position or cooldown carries from one to the
next); replay the rotated parts of one session as one recording for continuity.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from core.config import QuantarbConfig
from engine.replay import ReplaySettings, replay_engine
from feeds.recording import group_recordings, recording_files
from ledger.queries import PNL_STATES

MAX_VALUES = 1000  # per swept key
MAX_COMBINATIONS = 5000  # settings in one sweep
_KEY = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")
Value = Decimal | int | bool | str
_LARGEST, _SMALLEST = Decimal("1e15"), Decimal("1e-12")  # a sweep value is a setting, not an overflow test


class SweepError(ValueError):
    """A --sweep that cannot run as written (says which and why)."""


@dataclass(frozen=True, slots=True)
class SweepAxis:
    key: str
    values: tuple[Value, ...]


Setting = tuple[tuple[str, Value], ...]  # (key, value) per axis, in the order the axes were given


def _field(config: QuantarbConfig, key: str, spec: str) -> tuple[object, str]:
    """The current value at `key` and its kind: number, integer, bool or text."""
    node: object = config
    parts = key.split(".")
    for i, name in enumerate(parts):
        if not isinstance(node, BaseModel) or name not in type(node).model_fields:
            where = ".".join(parts[:i]) or "the config"
            raise SweepError(f"--sweep {key}={spec}: {where} has no setting {name!r}")
        node = getattr(node, name)
        if node is None and i < len(parts) - 1:
            raise SweepError(f"--sweep {key}={spec}: {'.'.join(parts[: i + 1])} is not configured")
    if isinstance(node, bool):
        return node, "bool"
    if isinstance(node, int):
        return node, "integer"
    if isinstance(node, float | Decimal):
        return node, "number"
    if isinstance(node, str):
        return node, "text"
    raise SweepError(f"--sweep {key}={spec}: not a single number, flag or word (it holds {type(node).__name__})")


def _number(text: str, key: str, spec: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise SweepError(f"--sweep {key}={spec}: {text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise SweepError(f"--sweep {key}={spec}: {text.strip()!r} is not a finite number")
    size = value.copy_abs()  # quiet: abs() rounds in the context and overflows on 1E1000000
    if size >= _LARGEST or (size and size < _SMALLEST):
        raise SweepError(f"--sweep {key}={spec}: {text.strip()!r} is out of range (|x| within 1e-12 and 1e15)")
    return value


def _typed(value: Decimal, kind: str, key: str, spec: str) -> Value:
    if kind == "integer":
        if value != value.to_integral_value():
            raise SweepError(f"--sweep {key}={spec}: {key} takes whole numbers, not {value}")
        return int(value)
    # 20, not 2E+1; 4.5, not 4.50: the value as a reader writes it (and the table shows it)
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def parse_sweep(text: str, config: QuantarbConfig) -> SweepAxis:
    """One `--sweep KEY=START:STOP:STEP | KEY=A,B,C | KEY=VALUE`, checked against `config`."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not spec.strip():
        raise SweepError(f"--sweep {text!r}: expected KEY=START:STOP:STEP, KEY=A,B,C or KEY=VALUE "
                         "(e.g. strategy.threshold_bps=4:20:2)")
    if not _KEY.fullmatch(key):
        raise SweepError(f"--sweep {text!r}: {key!r} is not a setting name like strategy.threshold_bps")
    spec = spec.strip()
    _, kind = _field(config, key, spec)
    values: list[Value]
    if ":" in spec:
        if kind not in ("number", "integer"):
            raise SweepError(f"--sweep {key}={spec}: a range needs a numeric setting ({key} is {kind})")
        pieces = spec.split(":")
        if len(pieces) != 3:
            raise SweepError(f"--sweep {key}={spec}: a range is START:STOP:STEP")
        start, stop, step = (_number(p, key, spec) for p in pieces)
        if step <= 0:
            raise SweepError(f"--sweep {key}={spec}: the step must be > 0")
        if stop < start:
            raise SweepError(f"--sweep {key}={spec}: the stop is below the start")
        count = int((stop - start) / step) + 1
        if count > MAX_VALUES:
            raise SweepError(f"--sweep {key}={spec}: {count} values; at most {MAX_VALUES} per setting")
        values = [_typed(start + step * i, kind, key, spec) for i in range(count)]
    else:
        items = [item.strip() for item in spec.split(",")]
        if any(not item for item in items):
            raise SweepError(f"--sweep {key}={spec}: an empty value in the list")
        if len(items) > MAX_VALUES:
            raise SweepError(f"--sweep {key}={spec}: {len(items)} values; at most {MAX_VALUES} per setting")
        if kind in ("number", "integer"):
            values = [_typed(_number(item, key, spec), kind, key, spec) for item in items]
        elif kind == "bool":
            flags = {"true": True, "false": False}
            if any(item.lower() not in flags for item in items):
                raise SweepError(f"--sweep {key}={spec}: {key} is true or false")
            values = [flags[item.lower()] for item in items]
        else:
            values = list(items)
    if len(set(values)) != len(values):
        raise SweepError(f"--sweep {key}={spec}: a value is given twice")
    for value in values:
        with_setting(config, ((key, value),), spec=spec)  # each value alone must be a valid config
    return SweepAxis(key, tuple(values))


def combinations(axes: Sequence[SweepAxis]) -> list[Setting]:
    """Every combination, the last axis varying fastest."""
    keys = [axis.key for axis in axes]
    if len(set(keys)) != len(keys):
        raise SweepError("--sweep: the same setting is swept twice")
    total = 1
    for axis in axes:
        total *= len(axis.values)
    if total > MAX_COMBINATIONS:
        raise SweepError(f"--sweep: {total} combinations; at most {MAX_COMBINATIONS}")
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*(a.values for a in axes))]


def with_setting(config: QuantarbConfig, setting: Setting, *, spec: str | None = None) -> QuantarbConfig:
    """`config` with the setting applied, validated as a whole (bounds, cross-field rules)."""
    data = config.model_dump()
    for key, value in setting:
        node = data
        *path, name = key.split(".")
        for part in path:
            node = node[part]
        node[name] = float(value) if isinstance(value, Decimal) and isinstance(node[name], float) else value
    try:
        return QuantarbConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        shown = ", ".join(f"{k}={v}" for k, v in setting) if spec is None else f"{setting[0][0]}={spec}"
        raise SweepError(f"--sweep {shown}: {where + ': ' if where else ''}{error.get('msg', 'invalid')}") from None


# -- running --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SweepTask:
    """One recording (its files in order) replayed with one setting."""

    setting_index: int
    recording_index: int
    paths: tuple[str, ...]
    setting: Setting


@dataclass(frozen=True, slots=True)
class TaskResult:
    setting_index: int
    recording_index: int
    groups: int
    hits: int
    compensated: int
    pnl: str
    pnl_by_group: tuple[str, ...]  # realized PnL of each closed group, in closing order


def run_task(config: QuantarbConfig, settings: ReplaySettings, task: SweepTask) -> TaskResult:
    """Replay one recording with one setting into a temporary ledger (a worker's whole job:
    module-level, so processes and Dask workers can run it)."""
    cfg = with_setting(config, task.setting)
    with tempfile.TemporaryDirectory(prefix="quantarb-sweep-") as tmp:
        ledger = os.path.join(tmp, "replay.db")
        report = asyncio.run(replay_engine(cfg, list(task.paths), settings, ledger_path=ledger))
        marks = ",".join("?" * len(PNL_STATES))
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
            rows = db.execute(f"SELECT realized_pnl FROM hedge_groups WHERE state IN ({marks}) "
                              "ORDER BY closed_at_ms, group_id", PNL_STATES).fetchall()
        db.close()
    return TaskResult(
        task.setting_index, task.recording_index,
        groups=sum(p["groups"] for p in report["pairs"].values()),
        hits=sum(p["hits"] for p in report["pairs"].values()),
        compensated=int(report["compensated"]),
        pnl=str(report["realized_pnl"]),
        pnl_by_group=tuple(str(r[0]) for r in rows),
    )


@dataclass(slots=True)
class SweepRow:
    setting: Setting
    groups: int = 0
    hits: int = 0
    compensated: int = 0
    pnl: Decimal = Decimal(0)
    max_drawdown: Decimal = Decimal(0)
    recordings: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.groups if self.groups else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "setting": {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.setting},
            "recordings": self.recordings, "groups": self.groups, "hits": self.hits,
            "hit_rate": round(self.hit_rate, 6), "compensated": self.compensated,
            "pnl": str(self.pnl), "max_drawdown": str(self.max_drawdown),
        }


@dataclass(slots=True)
class SweepResult:
    keys: tuple[str, ...]
    recordings: list[list[str]]
    rows: list[SweepRow] = field(default_factory=list)
    runner: str = "local"

    def as_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "recordings": self.recordings, "runner": self.runner,
                "rows": [row.as_json() for row in self.rows]}


def max_drawdown(pnl_by_group: Iterable[Decimal]) -> Decimal:
    """The largest fall of the cumulative PnL from its running peak (the start counts as 0)."""
    total = peak = worst = Decimal(0)
    for pnl in pnl_by_group:
        total += pnl
        peak = max(peak, total)
        worst = max(worst, peak - total)
    return worst


def plan(config: QuantarbConfig, paths: Sequence[str | Path], axes: Sequence[SweepAxis]) -> tuple[
        list[Setting], list[list[str]], list[SweepTask]]:
    settings = combinations(axes)
    for setting in settings:
        with_setting(config, setting)  # a combination can break a cross-field rule
    recordings = [[str(p) for p in group] for group in group_recordings(recording_files(paths))]
    tasks = [SweepTask(s, r, tuple(files), setting)
             for s, setting in enumerate(settings) for r, files in enumerate(recordings)]
    return settings, recordings, tasks


def tabulate(keys: Sequence[str], settings: Sequence[Setting], recordings: list[list[str]],
             results: Iterable[TaskResult], runner: str) -> SweepResult:
    """Per setting, its tasks' results added up in recording order (whatever order they finished in)."""
    by_setting: dict[int, list[TaskResult]] = {}
    for result in results:
        by_setting.setdefault(result.setting_index, []).append(result)
    out = SweepResult(tuple(keys), recordings, runner=runner)
    for index, setting in enumerate(settings):
        done = sorted(by_setting.get(index, []), key=lambda r: r.recording_index)
        if [r.recording_index for r in done] != list(range(len(recordings))):
            raise SweepError(f"setting {index} is missing results ({len(done)} of {len(recordings)})")
        row = SweepRow(setting, recordings=len(done))
        for r in done:
            row.groups += r.groups
            row.hits += r.hits
            row.compensated += r.compensated
            row.pnl += Decimal(r.pnl)
        row.max_drawdown = max_drawdown(Decimal(p) for r in done for p in r.pnl_by_group)
        out.rows.append(row)
    return out


Progress = Callable[[int, int], None]  # (tasks done, tasks in all)


def run_local(config: QuantarbConfig, paths: Sequence[str | Path], axes: Sequence[SweepAxis],
              settings: ReplaySettings | None = None, *, jobs: int | None = None,
              progress: Progress | None = None) -> SweepResult:
    """The sweep in local processes (spawned: a clean interpreter each, nothing inherited)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    combos, recordings, tasks = plan(config, paths, axes)
    run = partial(run_task, config, settings or ReplaySettings())
    results: list[TaskResult] = []
    workers = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                if progress is not None:
                    progress(len(results), len(tasks))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one failed: the rest would only be thrown away
            raise
    return tabulate([a.key for a in axes], combos, recordings, results, f"local ({workers} processes)")


def run_cluster(config: QuantarbConfig, paths: Sequence[str | Path], axes: Sequence[SweepAxis],
                address: str, settings: ReplaySettings | None = None, *, timeout_s: float = 30.0,
                progress: Progress | None = None) -> SweepResult:
    """The same sweep on a Dask distributed scheduler at `address` (its workers need quantarb
    installed and the recordings at the same paths)."""
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--cluster needs Dask distributed: pip install 'quantarb[cluster]'") from None
    combos, recordings, tasks = plan(config, paths, axes)
    run = partial(run_task, config, settings or ReplaySettings())
    results: list[TaskResult] = []
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)  # type: ignore[no-untyped-call]
    except ValueError as exc:  # dask's word on the address: no port, an unknown scheme
        raise SweepError(f"--cluster {address}: not a scheduler address: {exc}") from None
    except OSError as exc:  # TimeoutError included
        raise SweepError(f"--cluster {address}: cannot reach the scheduler: {exc}") from None
    try:
        futures = client.map(run, tasks, pure=False)
        for future in futures:  # in task order: progress counts the longest wait, not the first done
            results.append(future.result())
            if progress is not None:
                progress(len(results), len(tasks))
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return tabulate([a.key for a in axes], combos, recordings, results, f"cluster {address}")


def sweep_settings(texts: Sequence[str], config: QuantarbConfig) -> list[SweepAxis]:
    axes = [parse_sweep(text, config) for text in texts]
    combinations(axes)  # the count and duplicates, before anything runs
    return axes

