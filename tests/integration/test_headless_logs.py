"""What `quantarb headless` writes for an unattended run: heartbeat lines, JSON lines that all
carry component, event and group_id, a log file rotated by size, and a feed's failure cause."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUANTARB_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["HOME"] = str(home)
    env["QUANTARB_LISTENER__PORT"] = "0"
    env["QUANTARB_DEMO__DISLOCATION_EVERY_S"] = "0.3"
    env["QUANTARB_ENGINE__HEARTBEAT_S"] = "1"
    env.update(extra)
    return env


def _headless(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "quantarb_tui.cli", "headless", *args], cwd=home, env=_env(home),
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_json_lines_heartbeats_and_a_rotated_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "quantarb.log"
    log.parent.mkdir()
    result = _headless(tmp_path, "--duration", "3.5", "--json", "--ledger", str(tmp_path / "demo.db"),
                       "--log-file", str(log), "--log-max-bytes", "4096", "--log-backups", "3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    events = docs[:-1]
    assert docs[-1]["kind"] == "summary"
    # Every line says where it comes from, what it is and which group (null outside one).
    assert all({"component", "event", "group_id"} <= d.keys() for d in events)
    assert all(d["event"] == d["kind"] for d in events)
    groups = [d for d in events if d["kind"] == "group"]
    assert groups and all(d["component"] == "execution" and d["group_id"] for d in groups)
    assert {d["component"] for d in events if d["kind"] in ("start", "stop")} == {"engine"}

    beats = [d for d in events if d["kind"] == "heartbeat"]
    assert 2 <= len(beats) <= 4, beats  # one a second for 3.5 s
    for beat in beats:
        assert beat["component"] == "engine" and beat["group_id"] is None
        assert beat["state"] in ("active", "paused") and beat["equity_basis"] == "equity"
        assert set(beat["quotes_per_s"]) == {"mt5", "okx", "binance"}
        assert all(isinstance(r, float) for r in beat["quotes_per_s"].values())
        assert isinstance(beat["open_groups"], int) and isinstance(beat["exposure"], dict)
        assert beat["oldest_quote"] and isinstance(beat["oldest_quote_ms"], int)
        assert "heartbeat" in json.dumps(beat)

    # The file: the same lines, rotated at 4096 bytes, three old files at most, all 0600.
    files = [log.with_name(f"quantarb.log.{n}") for n in (3, 2, 1) if log.with_name(f"quantarb.log.{n}").exists()]
    files.append(log)
    assert log.with_name("quantarb.log.1").exists()  # it rotated
    assert not log.with_name("quantarb.log.4").exists()
    for f in files:
        assert f.stat().st_size <= 4096, f
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    kept = "".join(f.read_text(encoding="utf-8") for f in files).splitlines()
    assert kept and kept == lines[-len(kept):]  # oldest file first, nothing lost in between


def test_heartbeat_text_line(tmp_path: Path) -> None:
    result = _headless(tmp_path, "--duration", "2.5", "--ledger", str(tmp_path / "demo.db"))
    assert result.returncode == 0, result.stderr
    beats = [line for line in result.stdout.splitlines() if " heartbeat " in line]
    assert 1 <= len(beats) <= 3, result.stdout
    for line in beats:
        assert " info  heartbeat state=" in line
        for part in (" equity=", " open_groups=", " exposure ", " quotes/s binance=", " oldest_quote ", " feeds "):
            assert part in line, line


def test_log_file_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    result = _headless(tmp_path, "--duration", "1", "--log-file", str(tmp_path / "nowhere" / "q.log"))
    assert result.returncode == 2
    assert result.stderr == f"quantarb: --log-file {tmp_path / 'nowhere' / 'q.log'}: No such file or directory\n"


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused while the test runs."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    yield holder.getsockname()[1]
    holder.close()


def test_a_failing_feed_logs_its_cause(tmp_path: Path, refused_port: int) -> None:
    """What the TUI's feed row showed and the log never said: why the venue is unreachable."""
    cfg = tmp_path / "paper.toml"
    cfg.write_text(
        f'[venues.okx]\nws_url = "ws://127.0.0.1:{refused_port}/ws/v5/public"\n'
        f'rest_url = "http://127.0.0.1:{refused_port}"\nbackoff_initial_s = 0.1\nbackoff_cap_s = 0.2\n'
        f'[venues.binance]\nws_url = "ws://127.0.0.1:{refused_port}"\nrest_url = "http://127.0.0.1:{refused_port}"\n'
        '[[pairs]]\nname = "BTC"\n'
        '[pairs.instruments.okx]\nsymbol = "BTC-USDT-SWAP"\nqty_per_contract = 0.01\n'
        '[pairs.instruments.binance]\nsymbol = "BTCUSDT"\n',
        encoding="utf-8",
    )
    result = _headless(tmp_path, "--config", str(cfg), "--duration", "2", "--ledger", str(tmp_path / "p.db"))
    assert result.returncode == 0, result.stderr
    failing = [line for line in result.stdout.splitlines() if " failing: " in line]
    for feed in ("okx (okx)", "binance-usdm (binance)"):
        mine = [line for line in failing if f" warn  feed    feed {feed} failing: " in line]
        causes = {line.split(" failing: ", 1)[1].split(":")[0] for line in mine}
        assert causes == {"ConnectionRefusedError", "ConnectError"}, failing
        assert len(mine) == 2, failing  # each cause once, however often it recurred
