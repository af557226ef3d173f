"""Fixtures for the TUI tests: a deterministic demo runtime on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import demo_config
from quantarb_tui.runtime import Runtime


@pytest.fixture
def demo_runtime(tmp_path: Path) -> Runtime:
    """The built-in demo on a manual clock with its fixed seed: same data on every run."""
    return Runtime(
        demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "t.db"), mt5_in_process=True
    )
