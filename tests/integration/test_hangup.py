"""A dropped SSH session: SIGHUP (and a terminal that goes away) stops the engine like SIGTERM.

`quantarb headless` and `quantarb tui` run as real processes on the demo with a ledger in
tmp. Each waits until the engine listens (its `<ledger>.listener` file appears), then gets a
SIGHUP, or loses its terminal (the pty's master side is closed: the kernel hangs up the
session and every later write to the terminal fails). Either way: exit code 0, the listener
file removed, the ledger closed cleanly (no `-wal` left and `quantarb ledger check` passes).
SIGHUP used to kill both outright, like SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_headless import SUMMARY, _env, _quantarb

UP_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0


def _wait_for(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], output: Callable[[], str],
              timeout: float = UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) before {what}:\n{output()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout:g}s:\n{output()[-3000:]}")
        time.sleep(0.05)


def _wait_exit(proc: subprocess.Popen[bytes], output: Callable[[], str]) -> int:
    try:
        return proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running {EXIT_TIMEOUT_S:g}s after the hangup:\n{output()[-3000:]}") from None


def _assert_closed_cleanly(ledger: Path, tmp_path: Path) -> None:
    assert not Path(f"{ledger}.listener").exists(), "the listener file was left behind"
    assert not Path(f"{ledger}-wal").exists(), "the ledger was not closed (its -wal file is still there)"
    check = subprocess.run(_quantarb("ledger", "check", "--ledger", str(ledger)), cwd=tmp_path, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


# ------------------------------------------------------------------------------------------------
# headless, output to a file


def test_headless_stops_cleanly_on_sighup(tmp_path: Path) -> None:
    ledger = tmp_path / "demo.db"
    out_path = tmp_path / "out.txt"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(_quantarb("headless", "--ledger", str(ledger)), cwd=tmp_path, env=_env(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)

        def output() -> str:
            return out_path.read_text(errors="replace")

        _wait_for(Path(f"{ledger}.listener").exists, "listener file", proc, output)
        _wait_for(lambda: " intent " in output(), "first intent", proc, output)
        proc.send_signal(signal.SIGHUP)
        code = _wait_exit(proc, output)
    text = output()
    assert code == 0, text[-3000:]
    assert "engine stopped" in text
    assert SUMMARY.match(text.strip().splitlines()[-1]), text[-500:]
    assert "Traceback" not in text
    _assert_closed_cleanly(ledger, tmp_path)


# ------------------------------------------------------------------------------------------------
# in a terminal (a pty whose master side the test holds)


class Terminal:
    """A pty the child gets as its controlling terminal; a thread drains what it writes (a
    full pty would block the child) until the test hangs up."""

    def __init__(self, rows: int = 40, cols: int = 140) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def spawn(self, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        def controlling_tty() -> None:  # runs in the child after setsid (start_new_session)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                start_new_session=True, preexec_fn=controlling_tty)  # noqa: PLW1509
        os.close(self.slave)
        self._thread.start()
        return proc

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                if not data:
                    return
                self._chunks.append(data)

    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def hang_up(self) -> None:
        """Close the master side, as sshd does when the connection drops."""
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)

    def close(self) -> None:
        if not self._stop.is_set():
            self.hang_up()


def _tty_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path, TERM="xterm-256color", TEXTUAL_ANIMATIONS="none", COLUMNS="140", LINES="40")


@pytest.mark.parametrize("face", ["headless", "tui"])
@pytest.mark.parametrize("how", ["sighup", "terminal-closed", "sigterm"])
def test_a_hangup_in_a_terminal_stops_the_engine_cleanly(tmp_path: Path, face: str, how: str) -> None:
    ledger = tmp_path / "demo.db"
    terminal = Terminal()
    try:
        proc = terminal.spawn(_quantarb(face, "--ledger", str(ledger)), tmp_path, _tty_env(tmp_path))
        _wait_for(Path(f"{ledger}.listener").exists, "listener file", proc, terminal.output)
        time.sleep(1.0)  # some trading first: groups in flight are what a stop must settle
        if how == "terminal-closed":
            terminal.hang_up()  # the kernel sends SIGHUP; writes to the terminal now fail
        else:
            proc.send_signal(signal.SIGHUP if how == "sighup" else signal.SIGTERM)
        code = _wait_exit(proc, terminal.output)
    finally:
        terminal.close()
    assert code == 0, terminal.output()[-3000:]
    if how != "terminal-closed" and face == "headless":
        assert "engine stopped" in terminal.output()
    _assert_closed_cleanly(ledger, tmp_path)

