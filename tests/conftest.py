"""Shared test setup: keep Textual snapshots under the top-level snapshots/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest_textual_snapshot
from syrupy.location import PyTestLocation

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_DIR = REPO_ROOT / "snapshots"


def _snapshot_dirname(cls: type, *, test_location: PyTestLocation) -> str:
    return str(SNAPSHOT_DIR / test_location.basename)


pytest_textual_snapshot.SVGImageExtension.dirname = classmethod(_snapshot_dirname)  # type: ignore[assignment,method-assign]
