"""Configuration that cannot be right is refused, and what is risky is said out loud (issue 13):
bounds on the numbers, every QUANTARB_* name checked, secret files' owner and mode, a listener
off loopback without TLS. Errors read `file: field.path: reason` or `VARIABLE: reason`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.config import demo_config, is_loopback_host
from engine.runtime import Runtime
from engine.settings import ConfigError, LoadedConfig, load_config, other_env_vars, setting_env_vars

SECRET = "s3cr3t-VALUE-never-shown"

BASE_TOML = """\
[venues.mt5]
terminals = ["T1"]

[venues.binance]

[[pairs]]
name = "XAU"
[pairs.instruments.mt5]
symbol = "XAUUSD"
qty_per_lot = 100
[pairs.instruments.binance]
symbol = "PAXGUSDT"

[strategy]
threshold_bps = 8.0
"""


@pytest.fixture(autouse=True)
def _isolated(clean_config_env: None) -> None:
    """No real config, home or QUANTARB_* variable leaks into a test (tests/conftest.py)."""


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def config_error(path: Path | None, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(None if path is None else str(path), env)
    assert SECRET not in str(info.value)
    return info.value.lines


# -- numbers that cannot be right -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("threshold_bps = 8.0", "threshold_bps = -5.0", "strategy.threshold_bps: must be >= 0"),
        ("threshold_bps = 8.0", "threshold_bps = 300.0", "strategy.threshold_bps: must be < max_edge_bps (300)"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\nmax_edge_bps = 0", "strategy.max_edge_bps: must be > 0"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\nmax_quote_deviation_bps = -1",
         "strategy.max_quote_deviation_bps: must be > 0"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\norder_timeout_ms = 86400000",
         "strategy.order_timeout_ms: must be <= 3600000"),
        ('terminals = ["T1"]', 'terminals = ["T1"]\ncommand_ttl_ms = 99999999999',
         "venues.mt5.command_ttl_ms: must be <= 3600000"),
        ("[venues.binance]", "[venues.binance]\nmax_lifetime_s = 90000",
         "venues.binance.max_lifetime_s: must be <= 86400"),
        ("[venues.binance]", "[venues.binance]\nsilence_s = 1e9", "venues.binance.silence_s: must be <= 3600"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\n[risk]\nhold_timeout_s = 1e12",
         "risk.hold_timeout_s: must be <= 604800"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\n[risk]\noutlier_block_count = 0",
         "risk.outlier_block_count: must be >= 1"),
        ("threshold_bps = 8.0", "threshold_bps = 8.0\n[paper]\nslippage_bps = 5000",
         "paper.slippage_bps: must be <= 1000"),
    ],
    ids=["negative-threshold", "threshold-over-ceiling", "zero-ceiling", "negative-deviation", "order-timeout",
         "command-ttl", "binance-lifetime", "silence", "hold-timeout", "outlier-count", "paper-slippage"],
)
def test_numbers_out_of_their_sane_range_are_errors_naming_file_and_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML.replace(old, new, 1))
    assert config_error(path, {}) == [f"{path}: {expected}"]


def test_negative_threshold_from_the_environment_names_the_variable() -> None:
    # The engine traded 53 losing groups on QUANTARB_STRATEGY__THRESHOLD_BPS=-20.
    assert config_error(None, {"QUANTARB_STRATEGY__THRESHOLD_BPS": "-20"}) == [
        "QUANTARB_STRATEGY__THRESHOLD_BPS: must be >= 0"]


def test_defaults_of_the_price_guard() -> None:
    cfg = load_config(None, {}).config
    assert (cfg.strategy.max_edge_bps, cfg.strategy.max_quote_deviation_bps, cfg.risk.outlier_block_count) == (
        300.0, 500.0, 5)


# -- every QUANTARB_* name is checked -------------------------------------------------------------

@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QUANTARB_RSIK__MAX_LEG_NOTIONAL": "100"},
         "QUANTARB_RSIK__MAX_LEG_NOTIONAL: not a quantarb setting or secret (settings are "
         "QUANTARB_<SECTION>__<KEY>, see docs/configuration.md); did you mean QUANTARB_RISK__MAX_LEG_NOTIONAL?"),
        ({"QUANTARB_LISTNER__PORT": "9000"},
         "QUANTARB_LISTNER__PORT: not a quantarb setting or secret (settings are QUANTARB_<SECTION>__<KEY>, "
         "see docs/configuration.md); did you mean QUANTARB_LISTENER__PORT?"),
        ({"QUANTARB_RISK__MAX_LEG_NOTIONL": "100"},
         "QUANTARB_RISK__MAX_LEG_NOTIONL: unknown key; did you mean QUANTARB_RISK__MAX_LEG_NOTIONAL?"),
        ({"QUANTARB_VENUES__OKXX__WS_URL": "wss://x"},
         "QUANTARB_VENUES__OKXX__WS_URL: unknown key; did you mean QUANTARB_VENUES__OKX__WS_URL?"),
        ({"QUANTARB_LISTENER__PORT__HIGH": "1"},
         "QUANTARB_LISTENER__PORT__HIGH: listener.port has no keys below it; did you mean QUANTARB_LISTENER__PORT?"),
        ({"QUANTARB_ADMIN_TOKN": SECRET},
         "QUANTARB_ADMIN_TOKN: not a quantarb setting or secret (settings are QUANTARB_<SECTION>__<KEY>, "
         "see docs/configuration.md); did you mean QUANTARB_ADMIN_TOKEN?"),
        ({"QUANTARB_MT5_SECRT_T1": SECRET},
         "QUANTARB_MT5_SECRT_T1: not a quantarb setting or secret (settings are QUANTARB_<SECTION>__<KEY>, "
         "see docs/configuration.md); did you mean QUANTARB_MT5_SECRET_<ID>?"),
        ({"QUANTARB_SOMETHING_ELSE": "1"},
         "QUANTARB_SOMETHING_ELSE: not a quantarb setting or secret (settings are QUANTARB_<SECTION>__<KEY>, "
         "see docs/configuration.md)"),
        ({"quantarb_rsik__max_open_groups": "2"},
         "quantarb_rsik__max_open_groups: not a quantarb setting or secret (settings are "
         "QUANTARB_<SECTION>__<KEY>, see docs/configuration.md); did you mean QUANTARB_RISK__MAX_OPEN_GROUPS?"),
    ],
    ids=["section", "section-listener", "key", "nested-table", "below-a-leaf", "secret", "mt5-secret", "no-guess",
         "lower-case"],
)
def test_unknown_quantarb_variables_are_errors_with_the_closest_name(env: dict[str, str], expected: str) -> None:
    assert config_error(None, env) == [expected]


def test_every_unknown_variable_is_reported_at_once() -> None:
    lines = config_error(None, {"QUANTARB_RSIK__A": "1", "QUANTARB_BOGUS": "2", "QUANTARB_LISTENER__PORT": "9000"})
    assert [line.split(":")[0] for line in lines] == ["QUANTARB_BOGUS", "QUANTARB_RSIK__A"]


def test_the_names_quantarb_defines_outside_the_config_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    token = write(tmp_path / "token", SECRET, 0o600)
    env = {
        "QUANTARB_CONFIG": str(path),
        "QUANTARB_OKX_API_KEY": SECRET, "QUANTARB_OKX_API_SECRET": SECRET, "QUANTARB_OKX_API_PASSPHRASE": SECRET,
        "QUANTARB_BINANCE_API_KEY": SECRET, "QUANTARB_BINANCE_API_SECRET_FILE": str(token),
        "QUANTARB_ADMIN_TOKEN_FILE": str(token),
        "QUANTARB_MT5_SECRET_T1": SECRET,
        "quantarb_listener__port": "9001",  # names match without regard to case
        "QUANTARBX": "not ours", "PATH": "/usr/bin",
    }
    loaded = load_config(None, env)
    assert loaded.path == path and loaded.config.listener.port == 9001
    assert loaded.warnings == ()
    assert set(other_env_vars()) == {"QUANTARB_CONFIG"} | {
        f"QUANTARB_{n}{suffix}"
        for n in ("OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE", "BINANCE_API_KEY", "BINANCE_API_SECRET",
                  "BINANCE_ED25519_KEY", "ADMIN_TOKEN")
        for suffix in ("", "_FILE")}
    assert {"QUANTARB_LISTENER__PORT", "QUANTARB_VENUES__OKX__WS_URL", "QUANTARB_PAIRS",
            "QUANTARB_STRATEGY__MAX_EDGE_BPS", "QUANTARB_RISK__OUTLIER_BLOCK_COUNT"} <= set(setting_env_vars())


def test_an_mt5_secret_for_a_terminal_the_config_does_not_have_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML)
    loaded = load_config(str(path), {"QUANTARB_MT5_SECRET_T1": SECRET, "QUANTARB_MT5_SECRET_T2": SECRET})
    assert loaded.warnings == (
        "QUANTARB_MT5_SECRET_T2: no MT5 terminal T2 in venues.mt5.terminals (T1); this secret is not used",)
    assert SECRET not in repr(loaded)


# -- secret files ----------------------------------------------------------------------------------

def _owned_by_someone_else(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)
    else:  # a file we own, read by a process that is someone else
        monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 4242)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o620, "is writable by group (mode 0620); run: chmod 600"),
        (0o602, "is writable by others (mode 0602); run: chmod 600"),
        (0o666, "is writable by group and others (mode 0666); run: chmod 600"),
    ],
)
def test_a_secret_file_others_can_write_is_an_error_naming_variable_and_file(
    tmp_path: Path, mode: int, expected: str
) -> None:
    target = write(tmp_path / "okx-secret", SECRET, mode)
    assert config_error(None, {"QUANTARB_OKX_API_SECRET_FILE": str(target)}) == [
        f"QUANTARB_OKX_API_SECRET_FILE: {target} {expected} {target}"]


def test_a_secret_file_owned_by_another_user_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write(tmp_path / "token", SECRET, 0o600)
    _owned_by_someone_else(target, monkeypatch)
    [line] = config_error(None, {"QUANTARB_ADMIN_TOKEN_FILE": str(target)})
    assert line.startswith(f"QUANTARB_ADMIN_TOKEN_FILE: {target} is owned by uid ")
    assert line.endswith("or root; chown it")


@pytest.mark.parametrize(("mode", "who"), [(0o640, "group"), (0o604, "others"), (0o644, "group and others")])
def test_a_secret_file_others_can_read_loads_with_a_warning(tmp_path: Path, mode: int, who: str) -> None:
    target = write(tmp_path / "mt5", SECRET, mode)
    path = write(tmp_path / "q.toml", BASE_TOML)
    loaded = load_config(str(path), {"QUANTARB_MT5_SECRET_T1_FILE": str(target)})
    secret = loaded.secrets.mt5_secret("T1")
    assert secret is not None and secret.get_secret_value() == SECRET
    assert loaded.warnings == (
        f"QUANTARB_MT5_SECRET_T1_FILE: {target} is readable by {who} (mode {mode:04o}); run: chmod 600 {target}",)
    assert loaded.secrets.sources == {"QUANTARB_MT5_SECRET_T1": "QUANTARB_MT5_SECRET_T1_FILE"}


def test_a_private_secret_file_loads_without_a_word(tmp_path: Path) -> None:
    target = write(tmp_path / "mt5", SECRET + "\n", 0o400)
    loaded = load_config(None, {"QUANTARB_MT5_SECRET_DEMO_FILE": str(target)})
    assert loaded.warnings == ()
    assert stat.S_IMODE(target.stat().st_mode) == 0o400


# -- a listener other machines can reach -------------------------------------------------------------

@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("LocalHost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False),
     ("", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_listener_off_loopback_without_tls_is_a_loud_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "q.toml", BASE_TOML + '\n[listener]\nhost = "0.0.0.0"\n')
    loaded = load_config(str(path), {"QUANTARB_MT5_SECRET_T1": SECRET})
    [warning] = loaded.warnings
    assert warning.startswith(f"{path}: listener.host: '0.0.0.0' is not a loopback address and "
                              "listener.tls_cert/tls_key are not set")
    from_env = load_config(None, {"QUANTARB_LISTENER__HOST": "10.0.0.5"})
    assert from_env.warnings[0].startswith("QUANTARB_LISTENER__HOST: '10.0.0.5' is not a loopback address")
    with_tls = load_config(None, {"QUANTARB_LISTENER__HOST": "10.0.0.5", "QUANTARB_LISTENER__TLS_CERT": "/c.pem",
                                  "QUANTARB_LISTENER__TLS_KEY": "/k.pem"})
    assert with_tls.warnings == ()


async def test_the_engine_logs_the_config_warnings_at_start(tmp_path: Path) -> None:
    config = demo_config()
    config = config.model_copy(update={"listener": config.listener.model_copy(update={"host": "192.0.2.7"})})
    rt = Runtime(config, is_demo=True, clock=ManualClock(), ledger_path="", mt5_in_process=True)
    passed = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path="", mt5_in_process=True,
                     warnings=["QUANTARB_OKX_API_KEY_FILE: /k is readable by group (mode 0640); run: chmod 600 /k"])
    for runtime in (rt, passed):
        await runtime.start()
        await runtime.stop()
    [event] = [e for e in rt.events.recent(100) if e.kind == "config"]
    assert event.level == "warn"
    assert event.text.startswith("warning: listener.host: '192.0.2.7' is not a loopback address")
    assert [(e.level, e.text) for e in passed.events.recent(100) if e.kind == "config"] == [
        ("warn", "warning: QUANTARB_OKX_API_KEY_FILE: /k is readable by group (mode 0640); run: chmod 600 /k")]


# -- property: whatever the environment holds, a config or a clean error naming the variable ----------

_SETTING_NAMES = sorted(setting_env_vars())
_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="\x00=")
_names = st.one_of(
    st.sampled_from([*_SETTING_NAMES, *other_env_vars(), "QUANTARB_MT5_SECRET_DEMO", "QUANTARB_MT5_SECRET_X_FILE"]),
    st.sampled_from(_SETTING_NAMES).map(lambda n: n.lower()),
    st.builds(lambda n, i, c: n[:i] + c + n[i + 1:], st.sampled_from(_SETTING_NAMES), st.integers(9, 40),
              st.sampled_from(["_", "X", "", "__", "é"])),
    st.text(_NAME_CHARS, max_size=20).map(lambda t: "QUANTARB_" + t),
)
_values = st.one_of(st.text(max_size=30), st.sampled_from(["0", "-1", "1e400", "nan", "[]", "{}", '["T1"]', "",
                                                            "/nonexistent/secret"]))


def _shown(name: str) -> str:
    """A variable's name as a message shows it: as is, or a JSON string with anything
    unprintable escaped as \\uXXXX."""
    if name.isprintable():
        return name
    text = json.dumps(name, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
                   for c in text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(_names, _values, max_size=4))
def test_property_env_names_and_values_load_or_fail_cleanly_naming_the_variable(env: dict[str, str]) -> None:
    try:
        loaded = load_config(None, env)
    except ConfigError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line and "Traceback" not in line
            # Every problem names the variable it came from (escaped when unprintable).
            assert any(_shown(name) in line for name in env), (line, env)
    else:
        assert isinstance(loaded, LoadedConfig)
