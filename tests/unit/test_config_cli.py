"""`quantarb config init | check | show` through a Typer root like the real CLI's."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.config import demo_config
from engine.settings import load_config
from quantarb_tui.config_cmd import config_app, example_config_text, to_toml

SECRET = "s3cr3t-VALUE-never-shown"
SECRET_VARS = [
    "QUANTARB_OKX_API_KEY",
    "QUANTARB_OKX_API_SECRET",
    "QUANTARB_OKX_API_PASSPHRASE",
    "QUANTARB_BINANCE_API_KEY",
    "QUANTARB_BINANCE_API_SECRET",
    "QUANTARB_BINANCE_ED25519_KEY",
    "QUANTARB_ADMIN_TOKEN",
    "QUANTARB_MT5_SECRET_T1",
    "QUANTARB_MT5_SECRET_DEMO",
]


def _root() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """quantarb (test root)."""

    app.add_typer(config_app, name="config")
    return app


APP = _root()


@pytest.fixture(autouse=True)
def _isolated(clean_config_env: None) -> None:
    """No real config, home or QUANTARB_* variable leaks into a test (tests/conftest.py)."""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def example_with(old: str, new: str) -> str:
    text = example_config_text()
    assert old in text, old
    return text.replace(old, new, 1)


# --------------------------------------------------------------------------------------------
# init


def test_init_writes_the_example_then_check_passes(runner: CliRunner) -> None:
    result = runner.invoke(APP, ["config", "init"])
    assert result.exit_code == 0, result.output
    assert "wrote quantarb.toml" in result.stdout
    assert Path("quantarb.toml").read_text(encoding="utf-8") == example_config_text()

    # The example's MT5 terminal T1 needs its secret: without it the engine cannot start.
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "QUANTARB_MT5_SECRET_T1: missing (HMAC secret of MT5 terminal T1); the engine does not start; "
        "set QUANTARB_MT5_SECRET_T1 or QUANTARB_MT5_SECRET_T1_FILE"
    ]
    result = runner.invoke(APP, ["config", "check"], env={"QUANTARB_MT5_SECRET_T1": SECRET})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "ok: quantarb.toml",
        "pairs: XAU, BTC; venues: mt5, okx, binance; execution: paper",
    ]


def test_init_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    target = write(tmp_path / "mine.toml", "# my precious config\n")
    result = runner.invoke(APP, ["config", "init", str(target)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8") == "# my precious config\n"

    result = runner.invoke(APP, ["config", "init", str(target), "--force"])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == example_config_text()


def test_init_creates_parent_directories(runner: CliRunner) -> None:
    target = Path.home() / ".config" / "quantarb" / "quantarb.toml"
    result = runner.invoke(APP, ["config", "init", str(target)])
    assert result.exit_code == 0, result.output
    assert load_config(None, {}).path == target


def test_init_into_a_directory_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(APP, ["config", "init", str(tmp_path), "--force"])
    assert result.exit_code == 2
    assert "is a directory" in result.stderr


# --------------------------------------------------------------------------------------------
# check


def test_check_without_any_file_checks_the_demo(runner: CliRunner) -> None:
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 0, result.output
    first, summary, *secrets = result.stdout.splitlines()
    assert first.startswith("ok: built-in demo")
    assert summary == "pairs: XAU, BTC, ETH; venues: mt5, okx, binance; execution: paper"
    # The demo's terminal gets a generated secret; nothing is required.
    assert secrets == [
        "secrets:",
        "  QUANTARB_MT5_SECRET_DEMO  optional  missing: the simulated terminal gets one generated for the run",
        "  QUANTARB_ADMIN_TOKEN      optional  missing: one is generated and kept next to the ledger (mode 0600)",
    ]


def test_check_reports_env_overrides(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "9000")
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "environment overrides: QUANTARB_LISTENER__PORT" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # (a) a wrong type
        ("port = 8787", 'port = "abc"', "listener.port: expected integer, got 'abc'"),
        # (b) a missing required field: the first pair's MT5 instrument without `symbol`
        ('symbol = "XAUUSD"\n', "", "pairs[0].instruments.mt5.symbol: required field missing"),
        # (c) an unknown key
        ("max_open_groups = 3", "max_open_groups = 3\nmax_open_group = 4", "risk.max_open_group: unknown key"),
        # (d) a contract size of zero (BTC is the second pair of the example)
        (
            "qty_per_contract = 0.01 ",
            "qty_per_contract = 0 ",
            "pairs[1].instruments.okx.qty_per_contract: must be > 0",
        ),
        ('leg_policy = "concurrent"', 'leg_policy = "both"',
         "strategy.leg_policy: must be one of 'concurrent', 'mt5_first', 'exchange_first', got 'both'"),
    ],
    ids=["wrong-type", "missing-field", "unknown-key", "zero-contract", "literal"],
)
def test_check_invalid_file_exits_2_naming_file_and_field(
    runner: CliRunner, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = write(tmp_path / "bad.toml", example_with(old, new))
    result = runner.invoke(APP, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{path}: {expected}"]


def test_check_zero_contract_in_the_first_pair(runner: CliRunner) -> None:
    write(
        Path("quantarb.toml"),
        """\
[venues.okx]
[venues.binance]

[[pairs]]
name = "BTC"
[pairs.instruments.okx]
symbol = "BTC-USDT-SWAP"
qty_per_contract = 0
[pairs.instruments.binance]
symbol = "BTCUSDT"
""",
    )
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["quantarb.toml: pairs[0].instruments.okx.qty_per_contract: must be > 0"]


def test_check_invalid_toml(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", example_with("[risk]", "[risk"))
    result = runner.invoke(APP, ["config", "check", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{path}: invalid TOML: ")


def test_check_explicit_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(APP, ["config", "check", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{missing}: config file not found"]


def test_check_missing_file_named_by_env(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTARB_CONFIG", "/definitely/not/here.toml")
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 2
    assert "/definitely/not/here.toml: config file not found" in result.stderr


def test_check_invalid_env_override(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "abc")
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["QUANTARB_LISTENER__PORT: expected integer, got 'abc'"]


def test_check_unreadable_secret_file(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTARB_ADMIN_TOKEN_FILE", str(tmp_path / "no-token"))
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 2
    assert result.stderr.startswith("QUANTARB_ADMIN_TOKEN_FILE: cannot read")


# --------------------------------------------------------------------------------------------
# show


def test_show_demo_as_toml_round_trips(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(APP, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# effective configuration: built-in demo\n")
    assert "# [secrets]" in result.stdout
    assert "# QUANTARB_OKX_API_KEY = (unset)" in result.stdout
    # The output is TOML that loads back to the same configuration.
    assert tomllib.loads(result.stdout)["pairs"][0]["name"] == "XAU"
    path = write(tmp_path / "shown.toml", result.stdout)
    assert load_config(str(path), {}).config == demo_config()


def test_show_file_with_env_overrides(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    write(Path("quantarb.toml"), example_config_text())
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "9000")
    monkeypatch.setenv("QUANTARB_VENUES__OKX__WS_URL", "wss://wspap.okx.com:8443/ws/v5/public")
    result = runner.invoke(APP, ["config", "show"])
    assert result.exit_code == 0, result.output
    doc = tomllib.loads(result.stdout)
    assert doc["listener"]["port"] == 9000
    assert doc["venues"]["okx"]["ws_url"] == "wss://wspap.okx.com:8443/ws/v5/public"
    assert "# effective configuration: quantarb.toml" in result.stdout
    assert "QUANTARB_LISTENER__PORT, QUANTARB_VENUES__OKX__WS_URL" in result.stdout


def test_show_json_is_one_document(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTARB_STRATEGY__THRESHOLD_BPS", "5")
    monkeypatch.setenv("QUANTARB_OKX_API_KEY", SECRET)
    result = runner.invoke(APP, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["is_demo"] is True
    assert doc["path"] is None
    assert doc["overrides"] == ["QUANTARB_STRATEGY__THRESHOLD_BPS"]
    assert doc["config"]["strategy"]["threshold_bps"] == 5.0
    assert doc["config"]["pairs"][1]["instruments"]["okx"]["qty_per_contract"] == "0.01"
    assert doc["secrets"]["QUANTARB_OKX_API_KEY"] == "***"
    assert doc["secrets"]["QUANTARB_OKX_API_SECRET"] == "(unset)"
    assert doc["secrets"]["QUANTARB_MT5_SECRET_DEMO"] == "(unset)"


def test_show_invalid_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", example_with("port = 8787", "port = -1"))
    for extra in ([], ["--json"]):
        result = runner.invoke(APP, ["config", "show", str(path), *extra])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [f"{path}: listener.port: must be >= 0"]


@pytest.mark.parametrize("use_file", [False, True], ids=["env", "file"])
def test_secrets_never_printed(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, use_file: bool
) -> None:
    write(Path("quantarb.toml"), example_config_text())
    for name in SECRET_VARS:
        if use_file:
            secret_path = write(tmp_path / name.lower(), f"{SECRET}\n")
            secret_path.chmod(0o600)
            monkeypatch.setenv(f"{name}_FILE", str(secret_path))
        else:
            monkeypatch.setenv(name, SECRET)
    for args in (["show"], ["show", "--json"], ["check"]):
        result = runner.invoke(APP, ["config", *args])
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
        assert SECRET not in result.stderr
    doc = json.loads(runner.invoke(APP, ["config", "show", "--json"]).stdout)
    assert doc["secrets"]["QUANTARB_OKX_API_KEY"] == "***"
    assert doc["secrets"]["QUANTARB_MT5_SECRET_T1"] == "***"
    assert "QUANTARB_MT5_SECRET_DEMO" not in doc["secrets"]  # not a terminal of this file

    # ... nor when the configuration is invalid.
    monkeypatch.setenv("QUANTARB_LISTENER__PORT", "abc")
    result = runner.invoke(APP, ["config", "show"])
    assert result.exit_code == 2
    assert SECRET not in result.output
    assert SECRET not in result.stderr


# --------------------------------------------------------------------------------------------
# The module and the TOML writer


def test_no_args_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(APP, ["config"])
    assert "init" in result.output and "check" in result.output and "show" in result.output


def test_importing_config_cmd_is_light() -> None:
    code = (
        "import sys, quantarb_tui.config_cmd as m; "
        "assert hasattr(m, 'config_app'); "
        "print(','.join(x for x in ('textual', 'pydantic', 'engine.settings') if x in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == ""


def test_to_toml_escapes_keys_and_strings() -> None:
    from decimal import Decimal

    data = {
        "a": {"odd key": "x\ny\x7f\"", "n": Decimal("0.1"), "big": Decimal("1.00000000000000000001")},
        "list": [{"x": 1}, {"x": 2.5, "inf": float("inf")}],
        "empty": {},
        "flag": True,
    }
    parsed = tomllib.loads(to_toml(data))
    assert parsed["a"]["odd key"] == "x\ny\x7f\""
    assert parsed["a"]["n"] == 0.1
    assert parsed["a"]["big"] == "1.00000000000000000001"
    assert parsed["list"] == [{"x": 1}, {"x": 2.5, "inf": float("inf")}]
    assert parsed["empty"] == {}
    assert parsed["flag"] is True


# --------------------------------------------------------------------------------------------
# check: can this config start? (every secret it needs, present or missing)

MT5_TOML = """\
[venues.mt5]
terminals = ["T1", "b2"]

[venues.binance]

[[pairs]]
name = "XAU"
[pairs.instruments.mt5]
symbol = "XAUUSD"
qty_per_lot = 100
[pairs.instruments.binance]
symbol = "PAXGUSDT"
"""


def test_check_fails_naming_each_missing_mt5_secret(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), MT5_TOML)
    result = runner.invoke(APP, ["config", "check"], env={"QUANTARB_MT5_SECRET_T1": SECRET})
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "QUANTARB_MT5_SECRET_b2: missing (HMAC secret of MT5 terminal b2); the engine does not start; "
        "set QUANTARB_MT5_SECRET_b2 or QUANTARB_MT5_SECRET_b2_FILE"]
    assert result.stdout.splitlines() == [
        "cannot start: quantarb.toml",
        "pairs: XAU; venues: mt5, binance; execution: paper",
        "secrets:",
        "  QUANTARB_MT5_SECRET_T1  required  present (QUANTARB_MT5_SECRET_T1)",
        "  QUANTARB_MT5_SECRET_b2  required  missing: the engine does not start; set QUANTARB_MT5_SECRET_b2 or "
        "QUANTARB_MT5_SECRET_b2_FILE",
        "  QUANTARB_ADMIN_TOKEN    optional  missing: one is generated and kept next to the ledger (mode 0600)",
    ]
    assert SECRET not in result.output


def test_check_json_lists_the_secrets_and_fails_without_them(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), MT5_TOML)
    result = runner.invoke(APP, ["config", "check", "--json"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert [(s["variable"], s["required"], s["present"]) for s in doc["secrets"]] == [
        ("QUANTARB_MT5_SECRET_T1", True, False), ("QUANTARB_MT5_SECRET_b2", True, False),
        ("QUANTARB_ADMIN_TOKEN", False, False)]
    assert [e.split(":")[0] for e in doc["errors"]] == ["QUANTARB_MT5_SECRET_T1", "QUANTARB_MT5_SECRET_b2"]
    assert doc["errors"] == result.stderr.splitlines()


@pytest.mark.parametrize("how", ["env", "file", "upper-case"])
def test_check_passes_once_every_required_secret_is_set(runner: CliRunner, tmp_path: Path, how: str) -> None:
    write(Path("quantarb.toml"), MT5_TOML)
    secret_file = write(tmp_path / "b2.secret", SECRET)
    secret_file.chmod(0o600)
    env = {"QUANTARB_MT5_SECRET_T1": SECRET}
    b2 = {"env": ("QUANTARB_MT5_SECRET_b2", SECRET), "file": ("QUANTARB_MT5_SECRET_b2_FILE", str(secret_file)),
          "upper-case": ("QUANTARB_MT5_SECRET_B2", SECRET)}[how]
    env[b2[0]] = b2[1]
    result = runner.invoke(APP, ["config", "check", "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["errors"] == [] and doc["warnings"] == []
    [t1, second, admin] = doc["secrets"]
    assert (t1["present"], t1["source"]) == (True, "QUANTARB_MT5_SECRET_T1")
    assert (second["variable"], second["present"], second["source"]) == ("QUANTARB_MT5_SECRET_b2", True, b2[0])
    assert (admin["required"], admin["present"]) == (False, False)
    human = runner.invoke(APP, ["config", "check"], env=env)
    assert human.exit_code == 0 and human.stdout.startswith("ok: quantarb.toml\n")
    assert f"  QUANTARB_MT5_SECRET_b2  required  present ({b2[0]})" in human.stdout
    assert SECRET not in human.output + result.output


def test_check_with_the_demo_world_enabled_needs_no_mt5_secret(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), MT5_TOML + "\n[demo]\nenabled = true\n")
    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "  QUANTARB_MT5_SECRET_T1  optional  missing: the simulated terminal gets one generated for the run" in (
        result.stdout)


def test_check_names_the_exchange_keys_live_execution_needs(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), MT5_TOML)
    env = {"QUANTARB_MT5_SECRET_T1": SECRET, "QUANTARB_MT5_SECRET_B2": SECRET, "QUANTARB_ENGINE__EXECUTION": "live",
           "QUANTARB_BINANCE_API_KEY": SECRET}
    result = runner.invoke(APP, ["config", "check", "--json"], env=env)
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    # Live needs the Binance keys: listed, the missing one named, and nothing else refused.
    assert [(s["variable"], s["present"]) for s in doc["secrets"] if "BINANCE" in s["variable"]] == [
        ("QUANTARB_BINANCE_API_KEY", True), ("QUANTARB_BINANCE_API_SECRET", False)]
    assert doc["errors"] == [
        "QUANTARB_BINANCE_API_SECRET: missing (binance trading credentials); live orders cannot be signed",
    ]
    assert SECRET not in result.output


def test_check_passes_live_execution_with_every_key_set(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), MT5_TOML)
    env = {"QUANTARB_MT5_SECRET_T1": SECRET, "QUANTARB_MT5_SECRET_B2": SECRET, "QUANTARB_ENGINE__EXECUTION": "live",
           "QUANTARB_BINANCE_API_KEY": SECRET, "QUANTARB_BINANCE_API_SECRET": SECRET}
    result = runner.invoke(APP, ["config", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: quantarb.toml\n")
    assert "execution: live" in result.stdout
    assert "  QUANTARB_BINANCE_API_SECRET  required  present (QUANTARB_BINANCE_API_SECRET)" in result.stdout
    assert SECRET not in result.output


def test_check_warns_on_stderr_and_still_passes(runner: CliRunner, tmp_path: Path) -> None:
    readable = write(tmp_path / "token", SECRET)
    readable.chmod(0o644)
    result = runner.invoke(APP, ["config", "check"], env={
        "QUANTARB_LISTENER__HOST": "0.0.0.0", "QUANTARB_ADMIN_TOKEN_FILE": str(readable)})
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: QUANTARB_LISTENER__HOST: '0.0.0.0' is not a loopback address and listener.tls_cert/tls_key are "
        "not set: the admin token and the EA's traffic cross the network unencrypted; set tls_cert and tls_key, "
        "or bind 127.0.0.1 and tunnel (ssh -L)",
        f"warning: QUANTARB_ADMIN_TOKEN_FILE: {readable} is readable by group and others (mode 0644); "
        f"run: chmod 600 {readable}",
    ]
    assert "  QUANTARB_ADMIN_TOKEN      optional  present (QUANTARB_ADMIN_TOKEN_FILE)" in result.stdout


def test_check_refuses_a_secret_file_others_can_write(runner: CliRunner, tmp_path: Path) -> None:
    writable = write(tmp_path / "token", SECRET)
    writable.chmod(0o666)
    result = runner.invoke(APP, ["config", "check"], env={"QUANTARB_ADMIN_TOKEN_FILE": str(writable)})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"QUANTARB_ADMIN_TOKEN_FILE: {writable} is writable by group and others (mode 0666); run: chmod 600 {writable}"]
    assert result.stdout == ""


def test_check_refuses_a_misspelt_section(runner: CliRunner) -> None:
    result = runner.invoke(APP, ["config", "check"], env={"QUANTARB_RSIK__MAX_LEG_NOTIONAL": "100"})
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("did you mean QUANTARB_RISK__MAX_LEG_NOTIONAL?")


# --------------------------------------------------------------------------------------------
# show: credentials in URLs


def test_show_redacts_credentials_embedded_in_urls(runner: CliRunner) -> None:
    write(Path("quantarb.toml"), example_config_text())
    env = {
        "QUANTARB_MT5_SECRET_T1": SECRET,
        "QUANTARB_VENUES__OKX__WS_URL": f"wss://trader:{SECRET}@ws.okx.example:8443/ws/v5/public?token={SECRET}&x=1",
        "QUANTARB_VENUES__OKX__REST_URL": f"https://www.okx.example/?apiKey={SECRET}&signature={SECRET}"
                                          f"&passphrase={SECRET}&secret={SECRET}&key={SECRET}&lang=en",
    }
    toml_out = runner.invoke(APP, ["config", "show"], env=env)
    json_out = runner.invoke(APP, ["config", "show", "--json"], env=env)
    for result in (toml_out, json_out):
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output and "trader" not in result.output
    okx = json.loads(json_out.stdout)["config"]["venues"]["okx"]
    assert okx["ws_url"] == "wss://***@ws.okx.example:8443/ws/v5/public?token=***&x=1"
    assert okx["rest_url"] == ("https://www.okx.example/?apiKey=***&signature=***&passphrase=***&secret=***"
                               "&key=***&lang=en")
    assert tomllib.loads(toml_out.stdout)["venues"]["okx"]["ws_url"] == okx["ws_url"]
