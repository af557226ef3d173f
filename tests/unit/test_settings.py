"""Configuration loading: search order, env overrides, validation messages, secrets."""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from core.config import DEMO_CONFIG, QuantarbConfig, demo_config
from engine.settings import (
    ConfigError,
    LoadedConfig,
    Secrets,
    load_config,
    read_secrets,
    resolve_config_path,
)
from quantarb_tui.config_cmd import example_config_text

# pairs[0] (BTC) uses all three venues; pairs[1] (XAU) uses MT5 and Binance.
BASE_TOML = """\
[engine]
execution = "paper"

[listener]
host = "127.0.0.1"
port = 8787

[venues.mt5]
terminals = ["T1"]

[venues.okx]
ws_url = "wss://ws.okx.com:8443/ws/v5/public"

[venues.binance]
market = "usdm"

[[pairs]]
name = "BTC"
[pairs.instruments.mt5]
symbol = "BTCUSD"
qty_per_lot = 1
[pairs.instruments.okx]
symbol = "BTC-USDT-SWAP"
qty_per_contract = 0.01
[pairs.instruments.binance]
symbol = "BTCUSDT"

[[pairs]]
name = "XAU"
[pairs.instruments.mt5]
symbol = "XAUUSD"
qty_per_lot = 100
[pairs.instruments.binance]
symbol = "PAXGUSDT"

[strategy]
threshold_bps = 8.0

[risk]
max_open_groups = 3
"""

SECRET = "s3cr3t-VALUE-never-shown"


@pytest.fixture(autouse=True)
def _isolated(clean_config_env: None) -> None:
    """No real config, home or QUANTARB_* variable leaks into a test (tests/conftest.py)."""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """A secret file as it should be: this user's, mode 0600 (whatever the umask)."""
    write(path, text)
    path.chmod(mode)
    return path


def edited(old: str, new: str, text: str = BASE_TOML) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def config_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ or {})
    return info.value


# --------------------------------------------------------------------------------------------
# The example and the demo


def test_example_config_validates(tmp_path: Path) -> None:
    path = write(tmp_path / "example.toml", example_config_text())
    loaded = load_config(str(path), {})
    cfg = loaded.config
    assert not loaded.is_demo
    assert loaded.path == path
    assert [p.name for p in cfg.pairs] == ["XAU", "BTC"]
    xau, btc = cfg.pairs
    assert xau.instruments.mt5 is not None and xau.instruments.mt5.qty_per_lot == Decimal(100)
    assert xau.instruments.binance is not None and xau.instruments.binance.symbol == "PAXGUSDT"
    assert xau.instruments.okx is None
    assert btc.instruments.okx is not None
    assert btc.instruments.okx.symbol == "BTC-USDT-SWAP"
    assert btc.instruments.okx.qty_per_contract == Decimal("0.01")
    assert btc.instruments.binance is not None and btc.instruments.binance.symbol == "BTCUSDT"
    assert cfg.venues.enabled() == ("mt5", "okx", "binance")
    assert cfg.engine.execution == "paper"  # the example never trades by accident
    assert len(cfg.build_pairs()) == 2


def _schema_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    keys: set[str] = set()
    if model in seen:
        return keys
    seen.add(model)
    for name, info in model.model_fields.items():
        annotation = info.annotation
        subs = [
            t
            for t in (annotation, *getattr(annotation, "__args__", ()))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        keys.add(name)
        for sub in subs:
            keys |= _schema_keys(sub, seen)
    return keys


def test_example_config_documents_every_schema_key() -> None:
    text = example_config_text()
    named = set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", text, re.MULTILINE))
    named |= {part for header in re.findall(r"^\[+([a-z_.0-9]+)\]+", text, re.MULTILINE)
              for part in header.split(".")}
    # Instrument keys are documented in one comment block, listed as `#   key  meaning`.
    named |= set(re.findall(r"^#\s{3}([a-z_]+)\s", text, re.MULTILINE))
    missing = _schema_keys(QuantarbConfig, set()) - named
    assert not missing, f"example_config.toml does not mention: {sorted(missing)}"


def test_docs_document_every_schema_key() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    # Keys in backticks, sections in headers such as `[venues.okx]` or `[[pairs]]`.
    missing = {key for key in _schema_keys(QuantarbConfig, set()) if not re.search(rf"[`\[.]{key}[`\].]", docs)}
    assert not missing, f"docs/configuration.md does not mention: {sorted(missing)}"


def test_example_config_has_no_secret_values() -> None:
    text = example_config_text()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert "QUANTARB_" not in line
            assert not re.match(r"\s*(api_key|api_secret|secret|token|passphrase)\s*=", line)


def test_demo_loads_without_any_file() -> None:
    loaded = load_config(None, {})
    assert loaded.is_demo
    assert loaded.path is None
    assert loaded.source == "built-in demo"
    assert loaded.config == demo_config()
    assert loaded.overrides == ()
    # The demo's terminal is DEMO; its secret is optional.
    assert loaded.secrets.mt5_terminals == {"DEMO": None}


def test_demo_base_values_are_not_mutated() -> None:
    before = copy.deepcopy(DEMO_CONFIG)
    load_config(None, {"QUANTARB_LISTENER__PORT": "9000", "QUANTARB_VENUES__OKX__WS_URL": "wss://x"})
    assert before == DEMO_CONFIG


# --------------------------------------------------------------------------------------------
# Search order


def test_search_order(tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", edited("port = 8787", "port = 1001"))
    named = write(tmp_path / "named.toml", edited("port = 8787", "port = 1002"))
    local = write(Path("quantarb.toml"), edited("port = 8787", "port = 1003"))
    home = write(Path.home() / ".config" / "quantarb" / "quantarb.toml", edited("port = 8787", "port = 1004"))
    env = {"QUANTARB_CONFIG": str(named)}

    assert resolve_config_path(str(explicit), env) == explicit
    assert load_config(str(explicit), env).config.listener.port == 1001
    assert resolve_config_path(None, env) == named
    assert load_config(None, env).config.listener.port == 1002
    assert resolve_config_path(None, {}) == Path("quantarb.toml")
    assert load_config(None, {}).config.listener.port == 1003
    local.unlink()
    assert resolve_config_path(None, {}) == home
    assert load_config(None, {}).config.listener.port == 1004
    home.unlink()
    assert resolve_config_path(None, {}) is None
    assert load_config(None, {}).is_demo


def test_search_uses_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = write(tmp_path / "named.toml", BASE_TOML)
    monkeypatch.setenv("QUANTARB_CONFIG", str(named))
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "9100")
    loaded = load_config(None)
    assert loaded.path == named
    assert loaded.config.listener.port == 9100


def test_explicit_missing_file_is_an_error_not_the_demo(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), {})
    assert str(info.value) == f"{missing}: config file not found"
    with pytest.raises(ConfigError):
        resolve_config_path(str(missing), {})


def test_missing_file_named_by_env_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(None, {"QUANTARB_CONFIG": str(missing)})
    assert str(missing) in str(info.value)
    assert "$QUANTARB_CONFIG" in str(info.value)


def test_empty_explicit_path_is_an_error() -> None:
    with pytest.raises(ConfigError):
        load_config("", {})


def test_directory_as_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {})
    assert str(info.value).startswith(f"{tmp_path}: cannot read")


# --------------------------------------------------------------------------------------------
# Environment overrides


@pytest.mark.parametrize("from_file", [True, False], ids=["file", "demo"])
def test_env_overrides_apply(tmp_path: Path, from_file: bool) -> None:
    explicit = str(write(tmp_path / "q.toml", BASE_TOML)) if from_file else None
    env = {
        "QUANTARB_LISTENER__PORT": "9000",  # int
        "QUANTARB_STRATEGY__THRESHOLD_BPS": "5",  # float
        "QUANTARB_ENGINE__LEDGER": "/var/lib/quantarb/x.db",  # str
        "QUANTARB_VENUES__OKX__WS_URL": "wss://wspap.okx.com:8443/ws/v5/public",  # nested
        "QUANTARB_RISK__MAX_LEG_NOTIONAL": "2500.5",  # decimal
    }
    loaded = load_config(explicit, env)
    cfg = loaded.config
    assert loaded.is_demo is (not from_file)
    assert cfg.listener.port == 9000
    assert cfg.strategy.threshold_bps == 5.0
    assert cfg.engine.ledger == "/var/lib/quantarb/x.db"
    assert cfg.venues.okx is not None
    assert cfg.venues.okx.ws_url == "wss://wspap.okx.com:8443/ws/v5/public"
    assert cfg.risk.max_leg_notional == Decimal("2500.5")
    assert loaded.overrides == tuple(sorted(env))
    # Values the environment does not touch keep the file's (or demo's) value.
    assert cfg.venues.okx.rest_url == "https://www.okx.com"
    assert cfg.listener.host == "127.0.0.1"
    assert len(cfg.pairs) == (2 if from_file else 3)


def test_env_override_of_a_list_is_json(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    loaded = load_config(str(path), {"QUANTARB_VENUES__MT5__TERMINALS": '["A", "B"]'})
    assert loaded.config.venues.mt5 is not None
    assert loaded.config.venues.mt5.terminals == ["A", "B"]
    assert set(loaded.secrets.mt5_terminals) == {"A", "B"}


def test_env_override_type_is_returned_as_the_schema_type(tmp_path: Path) -> None:
    loaded = load_config(None, {"QUANTARB_LISTENER__PORT": "9000"})
    assert type(loaded.config) is QuantarbConfig
    assert isinstance(loaded.config.listener.port, int)


def test_env_vars_that_are_not_settings_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    env = {
        "QUANTARB_CONFIG": str(path),
        "QUANTARB_OKX_API_KEY": SECRET,
        "QUANTARB_OKX_API_SECRET_FILE": str(secret_file(tmp_path / "s", SECRET)),
        "QUANTARB_MT5_SECRET_T1": SECRET,
        "QUANTARB_ADMIN_TOKEN": SECRET,
        "PATH": "/usr/bin",
        "QUANTARBX_UNRELATED": "x",
    }
    loaded = load_config(None, env)
    assert loaded.path == path
    assert loaded.overrides == ()
    assert loaded.config == load_config(str(path), {}).config


def test_dotenv_file_is_never_read(tmp_path: Path) -> None:
    write(Path(".env"), "QUANTARB_LISTENER__PORT=1234\nQUANTARB_BOGUS=1\n")
    write(Path.home() / ".env", "QUANTARB_LISTENER__PORT=1235\n")
    assert load_config(None, {}).config.listener.port == 8787
    path = write(tmp_path / "q.toml", BASE_TOML)
    assert load_config(str(path), {}).config.listener.port == 8787


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QUANTARB_LISTENER__PORT": "abc"}, "QUANTARB_LISTENER__PORT: expected integer, got 'abc'"),
        ({"QUANTARB_LISTENER__PORT": "70000"}, "QUANTARB_LISTENER__PORT: must be <= 65535"),
        ({"QUANTARB_LISTENER__PROT": "1"},
         "QUANTARB_LISTENER__PROT: unknown key; did you mean QUANTARB_LISTENER__PORT?"),
        (
            {"QUANTARB_ENGINE__EXECUTION": "yolo"},
            "QUANTARB_ENGINE__EXECUTION: must be one of 'live', 'paper', got 'yolo'",
        ),
        (
            {"QUANTARB_STRATEGY__THRESHOLD_BPS": "lots"},
            "QUANTARB_STRATEGY__THRESHOLD_BPS: expected number, got 'lots'",
        ),
        (
            {"QUANTARB_PAIRS": '[{"name": "A", "instruments": {"okx": {"symbol": "X", "qty_per_contract": 0}}}]'},
            "QUANTARB_PAIRS: pairs[0].instruments.okx.qty_per_contract: must be > 0",
        ),
    ],
)
@pytest.mark.parametrize("from_file", [True, False], ids=["file", "demo"])
def test_invalid_env_override_is_a_config_error(
    tmp_path: Path, env: dict[str, str], expected: str, from_file: bool
) -> None:
    explicit = str(write(tmp_path / "q.toml", BASE_TOML)) if from_file else None
    with pytest.raises(ConfigError) as info:
        load_config(explicit, env)
    assert expected in info.value.lines


def test_env_override_that_is_not_json_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"QUANTARB_VENUES__MT5__TERMINALS": "T1", "QUANTARB_VENUES__OKX__WS_URL": "wss://x"})
    (line,) = info.value.lines
    assert line.startswith("QUANTARB_VENUES__MT5__TERMINALS: not valid JSON")


def test_error_in_a_table_the_env_touched_mentions_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    err = config_error(path, {"QUANTARB_LISTENER__TLS_CERT": "/x.pem"})
    assert err.lines == [f"{path}: listener: tls_cert and tls_key go together (with QUANTARB_LISTENER__TLS_CERT)"]


# --------------------------------------------------------------------------------------------
# Validation messages: `<file>: <path>: <reason>`


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port = 8787", 'port = "abc"', "listener.port: expected integer, got 'abc'"),
        ("port = 8787", "port = 1.5", "listener.port: expected integer, got 1.5"),
        ("port = 8787", "port = 70000", "listener.port: must be <= 65535"),
        ('symbol = "BTCUSD"\n', "", "pairs[0].instruments.mt5.symbol: required field missing"),
        ("max_open_groups = 3", "max_open_groups = 3\nmax_leg_notionl = 5", "risk.max_leg_notionl: unknown key"),
        ("max_open_groups = 3", "max_open_groups = 0", "risk.max_open_groups: must be >= 1"),
        ("[engine]", "[engine]\n\"odd key\" = 1", 'engine."odd key": unknown key'),
        ("qty_per_contract = 0.01", "qty_per_contract = 0", "pairs[0].instruments.okx.qty_per_contract: must be > 0"),
        (
            "qty_per_contract = 0.01",
            'qty_per_contract = "x"',
            "pairs[0].instruments.okx.qty_per_contract: expected decimal number, got 'x'",
        ),
        (
            "qty_per_contract = 0.01",
            "qty_per_contract = nan",
            "pairs[0].instruments.okx.qty_per_contract: must be a finite number, got nan",
        ),
        ('execution = "paper"', 'execution = "yolo"', "engine.execution: must be one of 'live', 'paper', got 'yolo'"),
        ('market = "usdm"', 'market = "coinm"', "venues.binance.market: must be one of 'spot', 'usdm', got 'coinm'"),
        (
            'terminals = ["T1"]',
            'terminals = ["T 1"]',
            "venues.mt5.terminals[0]: must match '^[A-Za-z0-9_]{1,32}$', got 'T 1'",
        ),
        ('terminals = ["T1"]', 'terminals = "T1"', "venues.mt5.terminals: expected array, got 'T1'"),
        ("threshold_bps = 8.0", "threshold_bps = [8]", "strategy.threshold_bps: expected number, got [8]"),
        ('host = "127.0.0.1"', "host = 127", "listener.host: expected string, got 127"),
        ('name = "XAU"', 'name = "BTC"', "pairs: pair names must be unique"),
        ('host = "127.0.0.1"', 'tls_key = "k.pem"', "listener: tls_cert and tls_key go together"),
        ("port = 8787", "port = 8787\nmax_connections = 0", "listener.max_connections: must be >= 1"),
        ("port = 8787", "port = 8787\nrequest_timeout_s = 0", "listener.request_timeout_s: must be > 0"),
        ("port = 8787", "port = 8787\nrequest_timeout_s = inf",
         "listener.request_timeout_s: must be a finite number, got inf"),
        ("port = 8787", "port = 8787\nkeep_alive_s = 0.5", "listener.keep_alive_s: expected integer, got 0.5"),
        ("[venues.okx]\n", "[venues.okxx]\n", "venues.okxx: unknown key"),
    ],
)
def test_file_errors_name_the_file_and_the_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = write(tmp_path / "quantarb.toml", edited(old, new))
    err = config_error(path)
    assert f"{path}: {expected}" in err.lines, err.lines


def test_model_validator_error_names_the_path_it_can(tmp_path: Path) -> None:
    text = edited('[venues.okx]\nws_url = "wss://ws.okx.com:8443/ws/v5/public"\n', "")
    path = write(tmp_path / "q.toml", text)
    assert config_error(path).lines == [f"{path}: pairs[0].instruments.okx: venue okx has no [venues.okx] section"]


def test_pair_with_one_venue(tmp_path: Path) -> None:
    text = edited('[pairs.instruments.binance]\nsymbol = "PAXGUSDT"\n', "")
    path = write(tmp_path / "q.toml", text)
    assert config_error(path).lines == [f"{path}: pairs[1]: a pair needs instruments on at least two venues"]


def test_no_pairs_at_all(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", "[engine]\nexecution = \"paper\"\n")
    assert config_error(path).lines == [f"{path}: pairs: required field missing"]


def test_several_errors_one_line_each(tmp_path: Path) -> None:
    text = edited("port = 8787", 'port = "abc"', edited("qty_per_contract = 0.01", "qty_per_contract = 0"))
    path = write(tmp_path / "q.toml", text)
    assert config_error(path).lines == [
        f"{path}: listener.port: expected integer, got 'abc'",
        f"{path}: pairs[0].instruments.okx.qty_per_contract: must be > 0",
    ]


def test_long_inputs_are_truncated(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", edited("port = 8787", f'port = "{"9" * 500}x"'))
    (line,) = config_error(path).lines
    assert line.startswith(f"{path}: listener.port: expected integer, got '999")
    assert line.endswith("...")
    assert len(line) < len(str(path)) + 100


def test_relative_path_is_shown_as_given() -> None:
    write(Path("quantarb.toml"), edited("qty_per_contract = 0.01", "qty_per_contract = 0"))
    with pytest.raises(ConfigError) as info:
        load_config(None, {})
    assert info.value.lines == ["quantarb.toml: pairs[0].instruments.okx.qty_per_contract: must be > 0"]


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", "[engine\nexecution = paper\n")
    (line,) = config_error(path).lines
    assert line.startswith(f"{path}: invalid TOML: ")
    assert "line 1" in line


def test_not_utf8_is_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_bytes(b"[engine]\nexecution = \"\xff\xfe\"\n")
    (line,) = config_error(path).lines
    assert line.startswith(f"{path}: invalid TOML: not UTF-8")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE_TOML.encode())
    assert load_config(str(path), {}).config.listener.port == 8787


# --------------------------------------------------------------------------------------------
# Secrets


ALL_SECRET_VARS = [
    "QUANTARB_OKX_API_KEY",
    "QUANTARB_OKX_API_SECRET",
    "QUANTARB_OKX_API_PASSPHRASE",
    "QUANTARB_BINANCE_API_KEY",
    "QUANTARB_BINANCE_API_SECRET",
    "QUANTARB_BINANCE_ED25519_KEY",
    "QUANTARB_ADMIN_TOKEN",
]


def test_secrets_unset_by_default() -> None:
    secrets = load_config(None, {}).secrets
    assert secrets == Secrets(mt5_terminals={"DEMO": None})
    assert secrets.redacted() == {**dict.fromkeys(ALL_SECRET_VARS, "(unset)"), "QUANTARB_MT5_SECRET_DEMO": "(unset)"}


def test_secrets_from_env(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    env = {name: f"{SECRET}-{i}" for i, name in enumerate(ALL_SECRET_VARS)}
    env["QUANTARB_MT5_SECRET_T1"] = f"{SECRET}-mt5"
    secrets = load_config(str(path), env).secrets
    assert secrets.okx_api_key is not None and secrets.okx_api_key.get_secret_value() == f"{SECRET}-0"
    assert secrets.okx_api_passphrase is not None
    assert secrets.okx_api_passphrase.get_secret_value() == f"{SECRET}-2"
    assert secrets.admin_token is not None and secrets.admin_token.get_secret_value() == f"{SECRET}-6"
    t1 = secrets.mt5_secret("T1")
    assert t1 is not None and t1.get_secret_value() == f"{SECRET}-mt5"
    assert secrets.mt5_secret("T2") is None
    assert set(secrets.redacted().values()) == {"***"}


def test_secrets_from_file(tmp_path: Path) -> None:
    key_file = secret_file(tmp_path / "okx_key", f"  {SECRET}-file\n")
    token_file = secret_file(tmp_path / "token", f"{SECRET}-token\n")
    env = {"QUANTARB_OKX_API_KEY_FILE": str(key_file), "QUANTARB_ADMIN_TOKEN_FILE": str(token_file),
           "QUANTARB_MT5_SECRET_DEMO_FILE": str(token_file)}
    secrets = load_config(None, env).secrets
    assert secrets.okx_api_key is not None and secrets.okx_api_key.get_secret_value() == f"{SECRET}-file"
    assert secrets.admin_token is not None and secrets.admin_token.get_secret_value() == f"{SECRET}-token"
    demo = secrets.mt5_secret("DEMO")
    assert demo is not None and demo.get_secret_value() == f"{SECRET}-token"
    assert secrets.redacted()["QUANTARB_OKX_API_KEY"] == "***"
    assert secrets.redacted()["QUANTARB_OKX_API_SECRET"] == "(unset)"


def _chained(exc: BaseException) -> list[BaseException]:
    """Every exception reachable from `exc` through __cause__ and __context__ (suppressed or not)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc.__cause__, exc.__context__]
    while todo:
        e = todo.pop()
        if e is not None and all(e is not seen for seen in out):
            out.append(e)
            todo += [e.__cause__, e.__context__]
    return out


@pytest.mark.parametrize("problem", [
    "missing", "directory", "empty",
    "binary",
    "both",
])
def test_bad_secret_file_is_a_config_error_naming_the_variable(tmp_path: Path, problem: str) -> None:
    target = tmp_path / "secret"
    env = {"QUANTARB_BINANCE_API_SECRET_FILE": str(target)}
    if problem == "directory":
        target.mkdir()
    elif problem == "empty":
        secret_file(target, "  \n")
    elif problem == "binary":
        target.write_bytes(SECRET.encode() + b"\xff\xfe")
        target.chmod(0o600)
    elif problem == "both":
        secret_file(target, SECRET)
        env["QUANTARB_BINANCE_API_SECRET"] = SECRET
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    message = str(info.value)
    assert message.startswith("QUANTARB_BINANCE_API_SECRET")
    assert SECRET not in message
    assert SECRET not in repr(info.value)
    # No chained exception carries anything further (a decode error would hold the bytes):
    # `from None` only hides a context from tracebacks, it is still reachable.
    assert info.value.__cause__ is None
    for chained in _chained(info.value):
        assert SECRET not in repr(chained) and SECRET not in str(getattr(chained, "object", "")), repr(chained)


def test_secrets_never_in_repr_or_str(tmp_path: Path) -> None:
    env = {name: SECRET for name in ALL_SECRET_VARS} | {"QUANTARB_MT5_SECRET_DEMO": SECRET}
    loaded = load_config(None, env)
    for text in (repr(loaded), str(loaded), repr(loaded.secrets), str(loaded.secrets),
                 json.dumps(loaded.secrets.redacted()), repr(loaded.secrets.okx_api_key)):
        assert SECRET not in text


def test_secrets_never_in_validation_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", edited("port = 8787", 'port = "abc"'))
    env = {name: SECRET for name in ALL_SECRET_VARS} | {"QUANTARB_LISTENER__HOST": "h"}
    err = config_error(path, env)
    assert SECRET not in str(err)
    assert SECRET not in repr(err)


def test_read_secrets_follows_the_configured_terminals(tmp_path: Path) -> None:
    cfg = load_config(None, {"QUANTARB_VENUES__MT5__TERMINALS": '["A1", "b2"]'}).config
    secrets = read_secrets(cfg, {"QUANTARB_MT5_SECRET_A1": SECRET, "QUANTARB_MT5_SECRET_B2": SECRET})
    assert list(secrets.mt5_terminals) == ["A1", "b2"]
    assert secrets.mt5_secret("A1") is not None
    assert secrets.mt5_secret("b2") is not None  # falls back to the upper-case name
    assert list(secrets.redacted())[-2:] == ["QUANTARB_MT5_SECRET_A1", "QUANTARB_MT5_SECRET_b2"]


def test_loaded_config_is_frozen() -> None:
    loaded = load_config(None, {})
    assert isinstance(loaded, LoadedConfig)
    # Deliberate writes to frozen dataclasses: they must raise.
    with pytest.raises(AttributeError):
        loaded.is_demo = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        loaded.secrets.admin_token = None  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Properties: whatever the file holds, the loader returns a valid config or a ConfigError.

_KEYS = sorted(_schema_keys(QuantarbConfig, set()))
_key = st.sampled_from(_KEYS) | st.text(max_size=8)
_scalar = (
    st.text(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
_value = st.recursive(
    _scalar,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_key, children, max_size=5),
    max_leaves=25,
)
_document = st.dictionaries(_key, _value, max_size=8)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml(document: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in document.items())


def _load_or_config_error(path: Path) -> None:
    try:
        loaded = load_config(str(path), {})
    except ConfigError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line.startswith(f"{path}: "), line
    else:
        assert isinstance(loaded.config, QuantarbConfig)


_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(document=_document)
def test_property_any_toml_document(tmp_path: Path, document: dict[str, Any]) -> None:
    text = _toml(document)
    assert tomllib.loads(text) == document  # the strategy really writes that TOML
    path = write(tmp_path / "any.toml", text)
    _load_or_config_error(path)


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*prefix, k))] or [prefix]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*prefix, i))] or [prefix]
    return [prefix]


@_PROPERTY
@given(data=st.data())
def test_property_valid_config_with_one_value_replaced(tmp_path: Path, data: st.DataObject) -> None:
    document = tomllib.loads(BASE_TOML)
    path_to = data.draw(st.sampled_from(_leaf_paths(document)))
    target: Any = document
    for part in path_to[:-1]:
        target = target[part]
    target[path_to[-1]] = data.draw(_value)
    path = write(tmp_path / "one.toml", _toml(document))
    _load_or_config_error(path)


@_PROPERTY
@given(raw=st.binary(max_size=400))
def test_property_any_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "bytes.toml"
    path.write_bytes(raw)
    _load_or_config_error(path)


@_PROPERTY
@given(data=st.data())
def test_property_example_with_a_slice_replaced(tmp_path: Path, data: st.DataObject) -> None:
    raw = example_config_text().encode()
    start = data.draw(st.integers(0, len(raw)))
    end = data.draw(st.integers(start, min(len(raw), start + 40)))
    path = tmp_path / "mutated.toml"
    path.write_bytes(raw[:start] + data.draw(st.binary(max_size=20)) + raw[end:])
    _load_or_config_error(path)


_ENV_NAMES = [
    "QUANTARB_LISTENER__PORT",
    "QUANTARB_LISTENER",
    "QUANTARB_STRATEGY__THRESHOLD_BPS",
    "QUANTARB_VENUES__OKX__WS_URL",
    "QUANTARB_VENUES__OKX",
    "QUANTARB_VENUES__MT5__TERMINALS",
    "QUANTARB_PAIRS",
    "QUANTARB_RISK__MAX_LEG_NOTIONAL",
    "QUANTARB_ENGINE__EXECUTION",
    "QUANTARB_DEMO__SEED",
    "QUANTARB_NOT__A__SETTING",
]


@_PROPERTY
@given(env=st.dictionaries(st.sampled_from(_ENV_NAMES), st.text(max_size=30), max_size=4))
def test_property_any_env_overrides(env: dict[str, str]) -> None:
    try:
        loaded = load_config(None, env)
    except ConfigError as exc:
        assert exc.lines
    else:
        assert isinstance(loaded.config, QuantarbConfig)
