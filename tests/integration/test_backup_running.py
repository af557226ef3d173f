"""`quantarb ledger backup` from another process while `quantarb headless` trades on the
ledger: each backup passes `quantarb ledger check`, and the engine never notices."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUANTARB_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["HOME"] = str(home)
    env["QUANTARB_LISTENER__PORT"] = "0"
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.2"  # groups, and so journal rows, all the time
    return env


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantarb_tui.cli", *args], cwd=home, env=_env(home),
                          capture_output=True, text=True, timeout=90, check=False)


def test_backup_of_a_running_engine_passes_ledger_check(tmp_path: Path) -> None:
    ledger = tmp_path / "demo.db"
    log = tmp_path / "engine.log"
    with log.open("w", encoding="utf-8") as out:
        engine = subprocess.Popen([sys.executable, "-m", "quantarb_tui.cli", "headless", "--ledger", str(ledger)],
                                  cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # It has journaled groups: hedged or repaired (three repaired first pause the demo for
        # five minutes with none hedged: a .ci/run under load waited for `-> hedged` and failed).
        while not any(f" -> {s}" in log.read_text(encoding="utf-8") for s in ("hedged", "repaired")):
            assert engine.poll() is None and time.monotonic() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.1)
        seqs = []
        for n in range(2):
            made = _cli(tmp_path, "ledger", "backup", str(tmp_path / f"b{n}.db"), "--ledger", str(ledger), "--json")
            assert made.returncode == 0, made.stdout + made.stderr
            doc = json.loads(made.stdout)
            assert doc["check"] is True
            seqs.append(doc["last_seq"])
            time.sleep(1.0)
        assert engine.poll() is None  # still trading
    finally:
        engine.send_signal(signal.SIGTERM)
        _out, err = engine.communicate(timeout=60)
    assert engine.returncode == 0, err
    assert 0 < seqs[0] < seqs[1]
    for n in range(2):
        copy = tmp_path / f"b{n}.db"
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        checked = _cli(tmp_path, "ledger", "check", "--ledger", str(copy))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.splitlines()[-1] == "ledger check passed"
