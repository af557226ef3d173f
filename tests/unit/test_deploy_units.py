"""deploy/: the systemd units as shipped. `systemd-analyze verify` must pass with no warning
(skipped only where systemd-analyze is not installed); the settings docs/operations.md relies
on are checked one by one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.settings import MT5_SECRET_PREFIX, SECRET_ENV_VARS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("quantarb.service", "quantarb-backup.service", "quantarb-backup.timer")
BINARY = "/opt/quantarb/venv/bin/quantarb"


def settings(name: str) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (DEPLOY / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key)
    assert values is not None and len(values) == 1, f"{key}: {values}"
    return values[0]


def test_the_service_restarts_a_failed_or_hung_engine_and_is_hardened() -> None:
    unit = settings("quantarb.service")
    assert one(unit, "Service.Type") == "notify" and one(unit, "Service.NotifyAccess") == "main"
    assert one(unit, "Service.ExecStart").startswith(f"{BINARY} headless ")
    assert one(unit, "Service.WatchdogSec") == "30s"
    assert one(unit, "Service.Restart") == "on-failure"
    assert one(unit, "Service.RestartPreventExitStatus") == "2"  # a refused config stays stopped
    assert one(unit, "Service.EnvironmentFile") == "/etc/quantarb/quantarb.env"
    assert (one(unit, "Service.User"), one(unit, "Service.Group")) == ("quantarb", "quantarb")
    assert one(unit, "Service.StateDirectory") == "quantarb" and one(unit, "Service.StateDirectoryMode") == "0700"
    assert "QUANTARB_ENGINE__LEDGER=/var/lib/quantarb/ledger.db" in unit["Service.Environment"]
    assert one(unit, "Service.ReadWritePaths") == "/var/lib/quantarb"
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "true", "PrivateTmp": "true", "NoNewPrivileges": "true",
        "PrivateDevices": "true", "CapabilityBoundingSet": "", "UMask": "0077",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallFilter": "@system-service",
    }.items():
        assert one(unit, f"Service.{key}") == value, key


def test_the_env_example_names_every_secret() -> None:
    text = (DEPLOY / "quantarb.env.example").read_text(encoding="utf-8")
    for name in SECRET_ENV_VARS.values():
        assert name in text, name
    assert MT5_SECRET_PREFIX in text
    assert "-m 0600" in text
    assert not re.search(r"^QUANTARB_\w+=\S", text, re.MULTILINE)  # examples only, no value set


def test_the_backup_timer_runs_the_backup_service() -> None:
    service = settings("quantarb-backup.service")
    assert one(service, "Service.Type") == "oneshot" and one(service, "Service.User") == "quantarb"
    assert f"{BINARY} ledger backup --ledger /var/lib/quantarb/ledger.db " in one(service, "Service.ExecStart")
    assert one(service, "Service.ReadWritePaths") == "/var/lib/quantarb /var/backups/quantarb"
    timer = settings("quantarb-backup.timer")
    assert one(timer, "Timer.OnCalendar") == "hourly" and one(timer, "Timer.Persistent") == "true"


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units as an installation would have them: `verify` checks that ExecStart's program
    exists, so the quantarb path points at a stub here; nothing else is changed."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    stub = tmp_path / "bin" / "quantarb"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n", encoding="utf-8")
    stub.chmod(0o755)
    for name in UNITS:
        text = (DEPLOY / name).read_text(encoding="utf-8")
        assert BINARY in text or name.endswith(".timer")
        (tmp_path / name).write_text(text.replace(BINARY, str(stub)), encoding="utf-8")
    return tmp_path


def test_systemd_analyze_verify_passes_without_a_warning(installed: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", *(str(installed / n) for n in UNITS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == "", result.stderr + result.stdout


def test_systemd_analyze_verify_catches_a_typo(installed: Path) -> None:
    """The check above can fail: a misspelt hardening option is a warning it reports."""
    broken = installed / "broken.service"
    broken.write_text((installed / "quantarb.service").read_text(encoding="utf-8")
                      .replace("ProtectSystem=strict", "ProtectSystm=strict"), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "Unknown key 'ProtectSystm'" in result.stderr


def test_exposure_level_stays_low(installed: Path) -> None:
    helptext = subprocess.run(["systemd-analyze", "--help"], capture_output=True, text=True, timeout=60,
                              check=False).stdout
    if "--offline" not in helptext:
        pytest.skip("this systemd-analyze cannot assess a unit file offline")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(installed / "quantarb.service")],
                            capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for quantarb\.service: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, found.group(0)
