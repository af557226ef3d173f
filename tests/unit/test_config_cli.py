"""`quantarb config init | check | show` through a Typer root like the real CLI's."""

from __future__ import annotations

import json
import os
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
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.upper().startswith("QUANTARB_"):
            monkeypatch.delenv(name)


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

    result = runner.invoke(APP, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
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
    first, summary = result.stdout.splitlines()
    assert first.startswith("ok: built-in demo")
    assert summary == "pairs: XAU, BTC, ETH; venues: mt5, okx, binance; execution: paper"


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
            monkeypatch.setenv(f"{name}_FILE", str(write(tmp_path / name.lower(), f"{SECRET}\n")))
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
