"""Shared test setup: Textual snapshots under the top-level snapshots/ folder; an isolated
configuration environment for the config and settings tests."""

from __future__ import annotations

import decimal
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings
from syrupy.location import PyTestLocation

# pytest-textual-snapshot ships no type information (no py.typed): imported as a module object.
_plugin: ModuleType = importlib.import_module("pytest_textual_snapshot")

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_DIR = REPO_ROOT / "snapshots"


def _snapshot_dirname(cls: type, *, test_location: PyTestLocation) -> str:
    return str(SNAPSHOT_DIR / test_location.basename)


_plugin.SVGImageExtension.dirname = classmethod(_snapshot_dirname)

# No per-example deadline: the suite runs on two workers (pyproject addopts), and an example's
# wall time then says how busy the machine is, not whether the code is right. A test's own
# @settings still sets the rest (max_examples, health checks).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.fixture(autouse=True)
def _decimal_context() -> Iterator[None]:
    """Every test starts and ends with the default decimal context: ccxt (the third-party client
    the simulator tests use) sets the thread's context to ROUND_HALF_UP with an Underflow trap,
    which made later snapshot figures round differently (found: 4.51 against 4.50)."""
    decimal.setcontext(decimal.Context())
    yield
    decimal.setcontext(decimal.Context())


@pytest.fixture
def clean_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real config, home or QUANTARB_* variable leaks into a test: it runs in an empty
    working directory (`tmp_path/work`) with an empty home (`tmp_path/home`)."""
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.upper().startswith("QUANTARB_"):
            monkeypatch.delenv(name)
