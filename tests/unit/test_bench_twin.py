"""`bench soak`'s traced twin (quantarb_tui.bench.twin): a forked process answers with its
result, inherits what its parent was given before the fork, and a twin that raised, died or
was cancelled is reported or reaped, never left running or taken for a result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantarb_tui.bench.twin import Twin, TwinFailed

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the twin needs fork")

PLANTED: list[str] = []


def _start(run: object) -> Twin:
    twin = Twin.start(run)  # type: ignore[arg-type]
    assert twin is not None
    return twin


def _sleep_a_minute() -> dict[str, object]:
    time.sleep(60)
    return {}


def test_the_twin_answers_with_its_result_and_inherits_the_parents_state() -> None:
    PLANTED.append("planted before the fork")
    try:
        twin = _start(lambda: {"pid": os.getpid(), "planted": list(PLANTED), "big": "x" * 200_000})
        result = twin.result(timeout_s=60)
    finally:
        PLANTED.clear()
    assert result["pid"] != os.getpid()  # it ran elsewhere
    assert result["planted"] == ["planted before the fork"]
    assert len(result["big"]) == 200_000  # more than a pipe's buffer: read whole


def test_a_twin_that_raised_is_a_failure_with_its_error() -> None:
    def run() -> dict[str, object]:
        raise RuntimeError("the engine did not start")

    twin = _start(run)
    with pytest.raises(TwinFailed, match="RuntimeError: the engine did not start"):
        twin.result(timeout_s=60)


def test_a_twin_that_died_is_a_failure_not_a_result() -> None:
    def run() -> dict[str, object]:
        os.kill(os.getpid(), signal.SIGKILL)
        return {"never": True}

    twin = _start(run)
    with pytest.raises(TwinFailed, match=f"signal {int(signal.SIGKILL)}"):
        twin.result(timeout_s=60)


def test_a_twin_that_does_not_answer_in_time_is_ended_and_a_failure() -> None:
    twin = _start(_sleep_a_minute)
    pid = twin._pid
    with pytest.raises(TwinFailed, match="did not answer within 1 s"):
        twin.result(timeout_s=1.0)
    with pytest.raises(ChildProcessError):  # ended and reaped
        os.waitpid(pid, os.WNOHANG)


def test_cancel_ends_a_running_twin_and_reaps_it() -> None:
    twin = _start(_sleep_a_minute)
    pid = twin._pid
    twin.cancel()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left to wait for
        os.waitpid(pid, os.WNOHANG)
    twin.cancel()  # twice is harmless


ROOT = Path(__file__).resolve().parents[2]
# A parent that starts a twin and dies without cancelling it (as a test's timeout kills it).
ORPHANING_PARENT = """
import os, sys, time
from quantarb_tui.bench.twin import Twin
twin = Twin.start(lambda: time.sleep(120) or {})
sys.stdout.write(str(twin._pid)); sys.stdout.flush()
os._exit(0)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not reaped by its new parent, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_twin_dies_with_its_parent_however_the_parent_ends() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", ORPHANING_PARENT], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"twin {pid} outlived its parent"
        time.sleep(0.05)


def test_the_twins_temporary_files_are_under_a_directory_removed_once_it_ended() -> None:
    import tempfile

    def run() -> dict[str, object]:
        with open(os.path.join(tempfile.mkdtemp(prefix="ledger-"), "twin.db"), "w") as f:  # left behind
            f.write("x")
        return {"tmp": tempfile.gettempdir()}

    twin = _start(run)
    scratch = twin.scratch
    assert twin.result(timeout_s=60)["tmp"] == scratch
    assert not os.path.exists(scratch)  # with what the twin left in it
    killed = _start(_sleep_a_minute)
    assert os.path.isdir(killed.scratch)
    killed.cancel()
    assert not os.path.exists(killed.scratch)


TALKATIVE_TWIN = """
import sys
from quantarb_tui.bench.twin import Twin
twin = Twin.start(lambda: print("from the twin", flush=True) or {"ok": 1})
sys.stdout.write(repr(twin.result(timeout_s=60)))
"""


def test_the_twin_writes_nothing_to_the_parents_stdout() -> None:
    """The parent's stdout may be the report (`bench soak --json`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", TALKATIVE_TWIN], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "{'ok': 1}"
