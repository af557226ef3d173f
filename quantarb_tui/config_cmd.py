"""`quantarb config init | check | show` (docs/configuration.md, Commands and Exit codes).

Imported lazily by the CLI, and kept light itself: pydantic and the settings loader are
imported inside the commands, never at module import.

Exit codes: 0 success; 2 invalid configuration, a configuration that cannot start (`check`: a
required secret is missing, ...) or refused `init` (the message names the file, the field or the
variable, and why); 3 the example could not be written. Warnings (a listener off loopback
without TLS, a secret file others can read) go to stderr as `warning: ...` and do not fail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from engine.settings import LoadedConfig

__all__ = ["EXAMPLE_CONFIG_RESOURCE", "config_app", "example_config_text", "to_toml"]

EXIT_INVALID = 2
EXIT_RUNTIME = 3
EXAMPLE_CONFIG_RESOURCE = "example_config.toml"

config_app = typer.Typer(
    help="Create, validate and inspect the configuration (TOML file + QUANTARB_* environment).",
    no_args_is_help=True,
)


def example_config_text() -> str:
    """The fully commented example configuration shipped with the package."""
    from importlib.resources import files

    return files("quantarb_tui").joinpath(EXAMPLE_CONFIG_RESOURCE).read_text(encoding="utf-8")


def _fail(lines: list[str] | str, code: int = EXIT_INVALID) -> typer.Exit:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _load(path: Path | None) -> LoadedConfig:
    from engine.settings import ConfigError, load_config

    try:
        return load_config(None if path is None else str(path))
    except ConfigError as exc:
        raise _fail(exc.lines) from None


@config_app.command("init")
def init_command(
    path: Annotated[
        Path, typer.Argument(help="Where to write the example config.", show_default=True)
    ] = Path("quantarb.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a fully commented example config (refuses to overwrite without --force)."""
    target = path.expanduser()
    if target.is_dir():
        raise _fail(f"error: {target} is a directory; give a file name")
    text = example_config_text()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w" if force else "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise _fail(f"error: {target} already exists; not overwriting it (use --force)") from None
    except OSError as exc:
        raise _fail(f"error: cannot write {target}: {exc.strerror or exc}", EXIT_RUNTIME) from None
    typer.echo(f"wrote {target}")
    typer.echo(f"edit it, then run: quantarb config check {target}")


@config_app.command("check")
def check_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Config file to check (default: the one quantarb would use).", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Validate the config (file + environment overrides) and say whether it can start: every
    secret it needs, present or missing (never the value). Exit 2 if it is invalid or cannot start."""
    from engine.readiness import secret_needs, start_problems

    loaded = _load(path)
    needs = secret_needs(loaded)
    problems = start_problems(loaded)
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for problem in problems:
        typer.echo(problem, err=True)
    if as_json:
        cfg = loaded.config
        typer.echo(json.dumps({
            "ok": not problems,
            "source": loaded.source,
            "path": None if loaded.path is None else str(loaded.path),
            "is_demo": loaded.is_demo,
            "pairs": [p.name for p in cfg.pairs],
            "venues": list(cfg.venues.enabled()),
            "execution": cfg.engine.execution,
            "overrides": list(loaded.overrides),
            "secrets": [n.to_json() for n in needs],
            "errors": problems,
            "warnings": list(loaded.warnings),
        }, indent=2))
    else:
        if problems:
            typer.echo(f"cannot start: {loaded.source}")
        elif loaded.is_demo:
            typer.echo(
                "ok: built-in demo (no config file found: --config, $QUANTARB_CONFIG, "
                "./quantarb.toml, ~/.config/quantarb/quantarb.toml)"
            )
        else:
            typer.echo(f"ok: {loaded.path}")
        typer.echo(_summary(loaded))
        typer.echo("secrets:")
        width = max(len(n.variable) for n in needs)
        for n in needs:
            state = f"present ({n.source})" if n.present else f"missing: {n.when_missing}"
            typer.echo(f"  {n.variable:<{width}}  {'required' if n.required else 'optional'}  {state}")
    if problems:
        raise typer.Exit(EXIT_INVALID)


@config_app.command("show")
def show_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Config file to show (default: the one quantarb would use).", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Print the effective config (file + environment overrides, or the demo); secrets, and
    credentials inside URLs, redacted."""
    from engine.redact import redact_config

    loaded = _load(path)
    if as_json:
        document = {
            "source": loaded.source,
            "path": None if loaded.path is None else str(loaded.path),
            "is_demo": loaded.is_demo,
            "overrides": list(loaded.overrides),
            "config": redact_config(loaded.config.model_dump(mode="json")),
            "secrets": loaded.secrets.redacted(),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(_render_toml(loaded), nl=False)


def _summary(loaded: LoadedConfig) -> str:
    cfg = loaded.config
    parts = [
        f"pairs: {', '.join(p.name for p in cfg.pairs)}",
        f"venues: {', '.join(cfg.venues.enabled()) or '(none)'}",
        f"execution: {cfg.engine.execution}",
    ]
    if loaded.overrides:
        parts.append(f"environment overrides: {', '.join(loaded.overrides)}")
    return "; ".join(parts)


def _render_toml(loaded: LoadedConfig) -> str:
    header = [f"# effective configuration: {loaded.source}"]
    if loaded.overrides:
        header.append(f"# overridden from the environment: {', '.join(loaded.overrides)}")
    from engine.redact import redact_config

    # Credentials written into a URL (user:password@, ?key=...) are never echoed.
    body = to_toml(redact_config(loaded.config.model_dump(mode="python", exclude_none=True)))
    secrets = ["# [secrets] (environment only; never stored in the file; redacted)"]
    secrets += [f"# {name} = {value}" for name, value in loaded.secrets.redacted().items()]
    return "\n".join(header) + "\n\n" + body + "\n" + "\n".join(secrets) + "\n"


# --------------------------------------------------------------------------------------------
# A small TOML writer for plain data (what `model_dump` gives): tables as [headers], lists of
# tables as [[headers]], everything else inline.

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def to_toml(data: Mapping[str, Any]) -> str:
    """Serialize a mapping of TOML-able values (str, int, float, bool, Decimal, list, dict)."""
    return "\n".join(_table_lines(data, ())).lstrip("\n") + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if key and set(key) <= _BARE_KEY_CHARS else _string(key)


def _string(text: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; DEL must be escaped in TOML too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, Decimal):
        # Bare when the number survives TOML's float parsing exactly, otherwise a string.
        if value.is_finite() and Decimal(repr(float(value))) == value:
            return str(value)
        return _string(str(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(str(value))


def _table_lines(data: Mapping[str, Any], prefix: tuple[str, ...]) -> list[str]:
    lines = [
        f"{_key(str(k))} = {_value(v)}"
        for k, v in data.items()
        if not _is_table(v) and not _is_table_array(v)
    ]
    for k, v in data.items():
        path = (*prefix, str(k))
        name = ".".join(_key(p) for p in path)
        if _is_table(v):
            sub = _table_lines(v, path)
            has_scalars = any(not _is_table(x) and not _is_table_array(x) for x in v.values())
            if has_scalars or not v:
                sub = ["", f"[{name}]", *sub]
            lines.extend(sub)
        elif _is_table_array(v):
            for item in v:
                lines.extend(["", f"[[{name}]]", *_table_lines(item, path)])
    return lines
