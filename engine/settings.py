"""Configuration loading at the composition root (docs/configuration.md).

The schema lives in `core.config`; this module finds the file, reads the TOML, applies the
`QUANTARB_<SECTION>__<KEY>` environment overrides through pydantic-settings, validates the
result into a `QuantarbConfig` and reads the secrets, which come from the environment only.

- Search order: `--config`, then `$QUANTARB_CONFIG`, then `./quantarb.toml`, then
  `~/.config/quantarb/quantarb.toml`. With none of them the built-in demo runs (its base
  values are `core.config.DEMO_CONFIG`); environment overrides apply to it too.
- Every failure a user can cause is a `ConfigError` whose message has one line per problem,
  `<file>: <dotted.path[0].key>: <reason>`, or `<ENV_VAR>: <reason>` when the bad value came
  from an environment override. No `.env` file and no secrets directory is ever read.
- Every `QUANTARB_*` variable must be a setting, a secret or `QUANTARB_CONFIG`: a misspelt
  one is an error naming it and the closest valid name, never silently ignored.
- A `_FILE` secret must be owned by this user (or root) and writable by nobody else; one
  others may read is a warning. Warnings travel in `LoadedConfig.warnings`.
- A secret never appears in a repr, a str or an exception message.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.config import DEMO_CONFIG, QuantarbConfig, listener_warning

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_NAME",
    "DEMO_SOURCE",
    "ENV_PREFIX",
    "SECRET_ENV_VARS",
    "ConfigError",
    "LoadedConfig",
    "Secrets",
    "config_search_paths",
    "load_config",
    "mt5_secret_env_var",
    "other_env_vars",
    "read_secrets",
    "resolve_config_path",
    "setting_env_vars",
]

ENV_PREFIX = "QUANTARB_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV_VAR = "QUANTARB_CONFIG"
DEFAULT_CONFIG_NAME = "quantarb.toml"
DEMO_SOURCE = "built-in demo"
FILE_SUFFIX = "_FILE"

# Secret attribute of `Secrets` -> the environment variable that holds it.
SECRET_ENV_VARS: Mapping[str, str] = MappingProxyType(
    {
        "okx_api_key": "QUANTARB_OKX_API_KEY",
        "okx_api_secret": "QUANTARB_OKX_API_SECRET",
        "okx_api_passphrase": "QUANTARB_OKX_API_PASSPHRASE",
        "binance_api_key": "QUANTARB_BINANCE_API_KEY",
        "binance_api_secret": "QUANTARB_BINANCE_API_SECRET",
        "binance_ed25519_key": "QUANTARB_BINANCE_ED25519_KEY",
        "admin_token": "QUANTARB_ADMIN_TOKEN",
    }
)
MT5_SECRET_PREFIX = "QUANTARB_MT5_SECRET_"

_REDACTED = "***"
_UNSET = "(unset)"
_MAX_SHOWN = 40


class ConfigError(Exception):
    """A configuration the user must fix; `str()` is the human message, one line per problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def lines(self) -> list[str]:
        return self.message.split("\n")

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------
# Secrets


@dataclass(frozen=True, repr=False)
class Secrets:
    """Credentials read from the environment only; every value is a `SecretStr` or None.

    `mt5_terminals` maps each configured MT5 terminal id to its shared secret
    (`QUANTARB_MT5_SECRET_<ID>`), None when unset.
    """

    okx_api_key: SecretStr | None = None
    okx_api_secret: SecretStr | None = None
    okx_api_passphrase: SecretStr | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    binance_ed25519_key: SecretStr | None = None  # PEM private key: session.logon (optional)
    admin_token: SecretStr | None = None
    mt5_terminals: Mapping[str, SecretStr | None] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # Canonical variable name -> the variable that supplied it (`NAME`, `NAME_FILE`, or the
    # upper-case MT5 name), for the secrets that are set. Names only, never values.
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=False)

    def mt5_secret(self, terminal: str) -> SecretStr | None:
        return self.mt5_terminals.get(terminal)

    def redacted(self) -> dict[str, str]:
        """Environment variable name -> `***` when set, `(unset)` otherwise."""
        out: dict[str, str] = {}
        for attr, env_name in SECRET_ENV_VARS.items():
            out[env_name] = _REDACTED if getattr(self, attr) is not None else _UNSET
        for terminal, value in self.mt5_terminals.items():
            out[mt5_secret_env_var(terminal)] = _REDACTED if value is not None else _UNSET
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Secrets({inner})"

    __str__ = __repr__


def mt5_secret_env_var(terminal: str) -> str:
    """The environment variable that holds the shared secret of one MT5 terminal."""
    return f"{MT5_SECRET_PREFIX}{terminal}"


def read_secrets(
    config: QuantarbConfig, environ: Mapping[str, str] | None = None, warnings: list[str] | None = None
) -> Secrets:
    """Read every secret from the environment (`NAME`, or `NAME_FILE` naming a file).

    Raises ConfigError (naming the variable, never the value) when a `_FILE` cannot be read,
    is writable by others or owned by someone else, or when both forms of one secret are set.
    Appends to `warnings` for a `_FILE` others may read and for an MT5 secret set for a
    terminal the config does not have.
    """
    env = os.environ if environ is None else environ
    notes: list[str] = [] if warnings is None else warnings
    sources: dict[str, str] = {}
    values = {
        attr: _secret_from_env(env_name, env, notes, sources, env_name) for attr, env_name in SECRET_ENV_VARS.items()
    }
    terminals: dict[str, SecretStr | None] = {}
    if config.venues.mt5 is not None:
        for terminal in config.venues.mt5.terminals:
            name = mt5_secret_env_var(terminal)
            secret = _secret_from_env(name, env, notes, sources, name)
            if secret is None and terminal != terminal.upper():
                secret = _secret_from_env(mt5_secret_env_var(terminal.upper()), env, notes, sources, name)
            terminals[terminal] = secret
    known = {mt5_secret_env_var(t).upper() for t in terminals}
    for var in sorted(env):
        upper = var.upper()
        base = upper.removesuffix(FILE_SUFFIX)
        if upper.startswith(MT5_SECRET_PREFIX) and base not in known and env[var]:
            notes.append(f"{_name(var)}: no MT5 terminal {base[len(MT5_SECRET_PREFIX):]} in venues.mt5.terminals "
                         f"({', '.join(terminals) or 'no MT5 venue'}); this secret is not used")
    return Secrets(**values, mt5_terminals=MappingProxyType(terminals), sources=MappingProxyType(sources))


def _secret_from_env(
    name: str, env: Mapping[str, str], warnings: list[str], sources: dict[str, str], canonical: str
) -> SecretStr | None:
    file_var = name + FILE_SUFFIX
    direct = env.get(name) or None
    file_name = env.get(file_var) or None
    if direct is not None and file_name is not None:
        raise ConfigError(f"{name}: both {name} and {file_var} are set; set only one")
    if file_name is None:
        if direct is None:
            return None
        sources[canonical] = name
        return SecretStr(direct)
    if "\x00" in file_name:
        raise ConfigError(f"{file_var}: the file name contains a NUL character")
    path = Path(file_name).expanduser()
    try:
        with path.open("rb") as handle:
            _check_secret_file(file_var, path, os.fstat(handle.fileno()), warnings)
            raw = handle.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{file_var}: cannot read {path}: {reason}") from None
    decoded = _utf8(raw)
    if decoded is None:  # raised outside the except: the decode error holds the secret's bytes
        raise ConfigError(f"{file_var}: {path} is not UTF-8 text")
    text = decoded.strip()
    if not text:
        raise ConfigError(f"{file_var}: {path} is empty")
    sources[canonical] = file_var
    return SecretStr(text)


def _utf8(raw: bytes) -> str | None:
    """The text, or None: the UnicodeDecodeError (and the bytes it holds) stays in here."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
def _check_secret_file(file_var: str, path: Path, st: os.stat_result, warnings: list[str]) -> None:
    """A secret file anyone else could replace is refused: whoever writes it chooses the
    secret. Owned by this user or root, writable by neither group nor others; readable by
    them is a warning (they can read the secret)."""
    getuid = getattr(os, "geteuid", None)
    if getuid is None or not stat.S_ISREG(st.st_mode):  # not POSIX, or a pipe/device: no modes to judge
        return
    uid = getuid()
    if st.st_uid not in (uid, 0):
        raise ConfigError(f"{file_var}: {path} is owned by uid {st.st_uid}, not by this user (uid {uid}) or root; "
                          f"chown it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        who = _who(mode & 0o020, mode & 0o002)
        raise ConfigError(f"{file_var}: {path} is writable by {who} (mode {mode:04o}); run: chmod 600 {path}")
    if mode & 0o044:
        who = _who(mode & 0o040, mode & 0o004)
        warnings.append(f"{file_var}: {path} is readable by {who} (mode {mode:04o}); run: chmod 600 {path}")


def _who(group: int, others: int) -> str:
    return "group and others" if group and others else "group" if group else "others"


def _name(var: str) -> str:
    """An environment variable's name for a message: as is, or escaped if unprintable."""
    return var if var.isprintable() else _quoted(var)


# --------------------------------------------------------------------------------------------
# Finding and loading the file


@dataclass(frozen=True)
class LoadedConfig:
    """The validated configuration, where it came from, and the secrets.

    `path` is None for the built-in demo; `overrides` lists the environment variables that
    overrode settings, in sorted order.
    """

    config: QuantarbConfig
    path: Path | None
    is_demo: bool
    secrets: Secrets
    overrides: tuple[str, ...] = ()
    # What is allowed but risky (a listener off loopback without TLS, a secret file others
    # can read, an MT5 secret no terminal uses): shown by `config check` and at engine start.
    warnings: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """The file name as given, or `built-in demo`."""
        return DEMO_SOURCE if self.path is None else str(self.path)


def config_search_paths() -> tuple[Path, ...]:
    """The implicit locations, in order: `./quantarb.toml`, `~/.config/quantarb/quantarb.toml`."""
    paths = [Path(DEFAULT_CONFIG_NAME)]
    with contextlib.suppress(RuntimeError, KeyError):  # no home directory to be found
        paths.append(Path.home() / ".config" / "quantarb" / DEFAULT_CONFIG_NAME)
    return tuple(paths)


def resolve_config_path(
    explicit: str | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to use, or None for the built-in demo.

    An explicit path (`--config`) or `$QUANTARB_CONFIG` that does not exist is a ConfigError;
    the implicit locations are used only when they exist.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        return _must_exist(explicit, "")
    named = env.get(CONFIG_ENV_VAR)
    if named:
        return _must_exist(named, f" (named by ${CONFIG_ENV_VAR})")
    for candidate in config_search_paths():
        if candidate.exists():
            return candidate
    return None


def _must_exist(raw: str, origin: str) -> Path:
    if not raw.strip():
        raise ConfigError(f"config path is empty{origin}")
    path = Path(raw).expanduser()
    if not path.exists():
        raise ConfigError(f"{path}: config file not found{origin}")
    return path


def load_config(explicit: str | None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Find, read, override from the environment and validate the configuration.

    `environ` defaults to `os.environ`; tests pass their own mapping.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    _check_env_names(env)
    path = resolve_config_path(explicit, env)
    if path is None:
        data: dict[str, Any] = copy.deepcopy(DEMO_CONFIG)
        source = DEMO_SOURCE
    else:
        data = _read_toml(path)
        source = str(path)
    config, overrides = _validate(data, env, source)
    warnings: list[str] = []
    listener = listener_warning(config.listener)
    if listener is not None:
        var = next((n for n in overrides if n.upper() in ("QUANTARB_LISTENER__HOST", "QUANTARB_LISTENER")), None)
        warnings.append(f"{var}: {listener}" if var else f"{source}: listener.host: {listener}")
    secrets = read_secrets(config, env, warnings)
    return LoadedConfig(
        config=config, path=path, is_demo=path is None, secrets=secrets, overrides=overrides,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------------
# Which QUANTARB_* variables exist


def setting_env_vars() -> tuple[str, ...]:
    """Every `QUANTARB_<SECTION>[__<KEY>...]` name the schema accepts (upper case): each table
    and each key, down to the leaves (arrays, such as `pairs`, only as a whole)."""
    names: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for key, info in model.model_fields.items():
            name = f"{prefix}{ENV_NESTED_DELIMITER if prefix != ENV_PREFIX else ''}{key.upper()}"
            names.append(name)
            sub = _model_of(info.annotation)
            if sub is not None:
                walk(sub, name)

    walk(QuantarbConfig, ENV_PREFIX)
    return tuple(names)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (`Model` or `Model | None`); None for scalars and arrays."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def other_env_vars() -> tuple[str, ...]:
    """The QUANTARB_* names that are not settings: the config path and the secrets (with
    their `_FILE` forms). `QUANTARB_MT5_SECRET_<ID>[_FILE]` is accepted for any id."""
    secrets = tuple(SECRET_ENV_VARS.values())
    return (CONFIG_ENV_VAR, *secrets, *(n + FILE_SUFFIX for n in secrets))


def _check_env_names(env: Mapping[str, str]) -> None:
    """Every QUANTARB_* variable must be something quantarb reads: a misspelt section or key
    would otherwise be ignored (or, inside a known section, reported without a hint)."""
    settings = setting_env_vars()
    valid = set(settings) | set(other_env_vars())
    lines: list[str] = []
    for var in sorted(env):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or upper in valid:
            continue
        if upper.startswith(MT5_SECRET_PREFIX) and len(upper.removesuffix(FILE_SUFFIX)) > len(MT5_SECRET_PREFIX):
            continue
        # Compared after the prefix, which every candidate shares.
        tails = {name[len(ENV_PREFIX):]: name for name in (*valid, f"{MT5_SECRET_PREFIX}<ID>")}
        near = difflib.get_close_matches(upper[len(ENV_PREFIX):], list(tails), n=1, cutoff=0.7)
        hint = f"; did you mean {tails[near[0]]}?" if near else ""
        lines.append(f"{_name(var)}: {_unknown_reason(upper)}{hint}")
    if lines:
        raise ConfigError("\n".join(lines))


def _unknown_reason(upper: str) -> str:
    """Why a QUANTARB_* name is not a setting: where along its path it leaves the schema."""
    parts = [p.lower() for p in upper[len(ENV_PREFIX):].split(ENV_NESTED_DELIMITER)]
    model: type[BaseModel] | None = QuantarbConfig
    for depth, part in enumerate(parts):
        if model is None:
            return f"{'.'.join(parts[:depth])} has no keys below it"
        if part not in model.model_fields:
            if depth == 0:
                return ("not a quantarb setting or secret (settings are QUANTARB_<SECTION>__<KEY>, "
                        "see docs/configuration.md)")
            return "unknown key"
        model = _model_of(model.model_fields[part].annotation)
    return "not a quantarb setting or secret"


def _read_toml(path: Path) -> dict[str, Any]:
    if "\x00" in str(path):
        raise ConfigError("the config path contains a NUL character")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text (byte offset {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None


# --------------------------------------------------------------------------------------------
# pydantic-settings: environment over file (or demo) values


@dataclass(frozen=True)
class _Inputs:
    data: dict[str, Any]
    environ: Mapping[str, str]


# The inputs of the `_validate` call in progress: `settings_customise_sources` is a classmethod
# without arguments of its own, so the per-call file data and environment travel this way.
_INPUTS: ContextVar[_Inputs] = ContextVar("quantarb_settings_inputs")


class _MappingEnvSource(EnvSettingsSource):
    """The standard environment source, reading a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {key.lower(): value for key, value in self._environ.items()}


class _DataSource(PydanticBaseSettingsSource):
    """The parsed TOML file (or the demo values) as the lowest-priority source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class _QuantarbSettings(BaseSettings, QuantarbConfig):
    """`QuantarbConfig` as pydantic settings: env (`QUANTARB_<SECTION>__<KEY>`) > file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
        env_file=None,
        secrets_dir=None,
        extra="forbid",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only these two, highest priority first: never a .env file, secrets dir or argv.
        inputs = _INPUTS.get()
        return (_MappingEnvSource(settings_cls, inputs.environ), _DataSource(settings_cls, inputs.data))


def _env_overrides(env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Settings paths (lower-case keys) that environment variables override -> variable name."""
    sections = set(QuantarbConfig.model_fields)
    found: dict[tuple[str, ...], str] = {}
    for name in env:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER))
        if parts[0] in sections:
            found[parts] = name
    return found


def _validate(
    data: dict[str, Any], env: Mapping[str, str], source: str
) -> tuple[QuantarbConfig, tuple[str, ...]]:
    overrides = _env_overrides(env)
    token = _INPUTS.set(_Inputs(data=data, environ=env))
    try:
        settings = _QuantarbSettings()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, overrides)) from None
    except SettingsError as exc:
        raise ConfigError(_format_settings_error(exc, overrides, env)) from None
    finally:
        _INPUTS.reset(token)
    fields = {name: getattr(settings, name) for name in QuantarbConfig.model_fields}
    return QuantarbConfig.model_validate(fields), tuple(sorted(overrides.values()))


# --------------------------------------------------------------------------------------------
# Error formatting

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PATH_IN_MESSAGE = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.+)$", re.DOTALL)
_PATH_TOKEN = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")
_SETTINGS_FIELD = re.compile(r'field "([^"]+)"')

_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "decimal": "decimal number",
    "bool": "boolean",
    "string": "string",
    "list": "array",
    "dict": "table",
    "model": "table",
}
_TYPE_ERRORS = {
    "int_type": "int",
    "int_parsing": "int",
    "int_parsing_size": "int",
    "int_from_float": "int",
    "float_type": "float",
    "float_parsing": "float",
    "decimal_type": "decimal",
    "decimal_parsing": "decimal",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "string",
    "list_type": "list",
    "dict_type": "dict",
    "model_type": "model",
    "model_attributes_type": "model",
}
_COMPARISONS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}

Loc = tuple[int | str, ...]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f") if value == value.to_integral_value() else str(value)
    return str(value)


def _quoted(key: str) -> str:
    """A key as a TOML basic string, with anything unprintable escaped (one line, unambiguous)."""
    text = json.dumps(key, ensure_ascii=False)
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else _quoted(part)
            out += f".{key}" if out else key
    return out


def _parse_dotted(path: str) -> Loc:
    return tuple(int(idx) if idx else name for name, idx in _PATH_TOKEN.findall(path))


def _reason(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    got = _shown(err.get("input"))
    if kind in _COMPARISONS:
        key, op = _COMPARISONS[kind]
        return f"must be {op} {_number(ctx.get(key))}"
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"must be one of {expected}, got {got}"
    if kind in _TYPE_ERRORS:
        return f"expected {_TYPE_NAMES[_TYPE_ERRORS[kind]]}, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')!r}, got {got}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return err["msg"]


def _format_validation_error(
    exc: ValidationError, source: str, overrides: Mapping[tuple[str, ...], str]
) -> str:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        reason = _reason(err)
        if err["type"] == "value_error" and (found := _PATH_IN_MESSAGE.match(reason)):
            # A model validator names the field in its message (its own loc is the model's).
            inner = _parse_dotted(found[1])
            # From the root (a QuantarbConfig validator) or relative to the model that raised.
            loc, reason = (inner if inner[: len(loc)] == loc else (*loc, *inner)), found[2]
        lines.append(_error_line(loc, reason, source, overrides))
    return "\n".join(dict.fromkeys(lines))


def _error_line(loc: Loc, reason: str, source: str, overrides: Mapping[tuple[str, ...], str]) -> str:
    path = _dotted(loc)
    reason = " ".join(reason.splitlines())
    keys = tuple(str(p).lower() for p in loc)
    # The value (or a table around it) came from an environment variable.
    best: tuple[str, ...] | None = None
    for env_path in overrides:
        if keys[: len(env_path)] == env_path and (best is None or len(env_path) > len(best)):
            best = env_path
    if best is not None:
        name = overrides[best]
        return f"{name}: {reason}" if len(best) == len(keys) else f"{name}: {path}: {reason}"
    # An error on a table that environment variables changed part of.
    involved = sorted(name for env_path, name in overrides.items() if env_path[: len(keys)] == keys)
    suffix = f" (with {', '.join(involved)})" if involved and keys else ""
    prefix = f"{source}: {path}: " if path else f"{source}: "
    return f"{prefix}{reason}{suffix}"


def _is_complex(path: tuple[str, ...]) -> bool:
    """Whether the settings field at `path` is a table or an array (so its env value is JSON)."""
    model: type[BaseModel] | None = QuantarbConfig
    annotation: Any = None
    for key in path:
        if model is None or key not in model.model_fields:
            return False
        annotation = model.model_fields[key].annotation
        model = None
        for candidate in (annotation, *get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
    return model is not None or get_origin(annotation) in (list, dict)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _format_settings_error(
    exc: SettingsError, overrides: Mapping[tuple[str, ...], str], environ: Mapping[str, str]
) -> str:
    found = _SETTINGS_FIELD.search(str(exc))
    section = found[1].lower() if found else None
    names = sorted(name for path, name in overrides.items() if section is None or path[0] == section)
    # Only a value for an array or a table is parsed as JSON.
    suspects = [
        name
        for path, name in overrides.items()
        if name in names and _is_complex(path) and not _is_json(environ.get(name, ""))
    ]
    names = suspects or names
    hint = "not valid JSON (arrays and tables from the environment are JSON, e.g. '[\"T1\"]')"
    if not names:
        return f"environment override: {hint}"
    return "\n".join(f"{name}: {hint}" for name in names)
