""".ci/run's control flow: any failing step fails the run, and nothing after it runs.

The script runs for real (bash), on a copy of itself in tmp_path, with a stub `python3` first
on PATH. The stub's `-m venv` makes a fake virtual environment whose `python`, `pip`, `pytest`,
`ruff` and `mypy` only note their arguments in a log and exit with the status the test
chose; nothing is installed, nothing reaches a network, and the real suite never runs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "run"
README_COMMAND = "pip install -e '.[test]' && pytest"

# One stub for every tool of the fake venv: it logs "<tool> <args>" and exits with the
# status named by CI_FAIL ("<tool> <args>" prefix -> that step fails with 1).
TOOL = """#!/usr/bin/env bash
tool="$(basename "$0")"
if [ "$tool" = python ] && [ "$1" = "-m" ] && [ "$2" = pip ]; then
    shift 2
    exec "$(dirname "$0")/pip" "$@"
fi
line="$tool${*:+ $*}"
echo "$line" >> "$CI_LOG"
if [ -n "${CI_FAIL:-}" ] && [ "${line#"$CI_FAIL"}" != "$line" ]; then
    echo "$tool: failing as told" >&2
    exit 1
fi
if [ "$tool" = pytest ]; then
    echo "1 passed in 0.01s"
fi
exit 0
"""

# `python3 -m venv DIR`: the fake venv (its bin first on PATH once activated).
PYTHON3 = """#!/usr/bin/env bash
echo "python3 $*" >> "$CI_LOG"
if [ "$1 $2" != "-m venv" ]; then
    exit 2
fi
if [ "${CI_FAIL:-}" = "python3 -m venv" ]; then
    echo "python3: no venv module" >&2
    exit 1
fi
mkdir -p "$3/bin"
printf 'export PATH="%s/bin:$PATH"\\n' "$3" > "$3/bin/activate"
for tool in python pip pytest ruff mypy; do
    cp "$CI_TOOL" "$3/bin/$tool"
    chmod +x "$3/bin/$tool"
done
"""

EVERY_STEP = [
    "python3 -m venv",
    "pip install --quiet --upgrade pip",
    "pip install -e .[test]",
    "pytest",
    "pip install --quiet -e .[dev]",
    "ruff check .",
    "mypy",
]


def _executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _run_ci(tmp_path: Path, fail: str = "") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run a copy of .ci/run with the stubs; return the result and the steps, in order."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / ".ci" / "run")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _executable(stubs / "python3", PYTHON3)
    log = tmp_path / "ci.log"
    log.touch()
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "CI_LOG": str(log),
        "CI_TOOL": str(_executable(tmp_path / "tool", TOOL)),
        "CI_FAIL": fail,
    }
    result = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=20, check=False)
    steps = [" ".join(line.split()[:-1]) if line.startswith("python3 -m venv") else line
             for line in log.read_text(encoding="utf-8").splitlines()]
    return result, steps


def test_every_step_runs_in_order_and_the_run_passes(tmp_path: Path) -> None:
    result, steps = _run_ci(tmp_path)
    assert result.returncode == 0, result.stderr
    assert steps == EVERY_STEP
    assert "1 passed" in result.stdout


def test_a_broken_install_fails_the_run_before_pytest(tmp_path: Path) -> None:
    """The issue: `pip install -e '.[test]' && pytest` under `set -e` went on after a failed
    install (bash does not stop for the left side of `&&`), so pytest never ran and CI passed."""
    result, steps = _run_ci(tmp_path, fail="pip install -e .[test]")
    assert result.returncode != 0
    assert steps == EVERY_STEP[:3]  # no pytest, no lint, no types
    assert "passed" not in result.stdout
    assert "the README's test command failed" in result.stderr


@pytest.mark.parametrize("failing", [step for step in EVERY_STEP if step != "pip install -e .[test]"])
def test_any_failing_step_fails_the_run_and_stops_it(tmp_path: Path, failing: str) -> None:
    result, steps = _run_ci(tmp_path, fail=failing)
    assert result.returncode != 0, (failing, steps)
    assert steps == EVERY_STEP[: EVERY_STEP.index(failing) + 1]


def test_the_script_runs_the_readmes_test_command() -> None:
    """The README's chained command runs in the script as its two halves, each a line of its
    own and in order, so that `set -e` stops on either (see the script's header)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{README_COMMAND}\n```" in readme
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    install, test = README_COMMAND.split(" && ")
    assert install in lines and test in lines
    assert lines.index(install) < lines.index(test)
