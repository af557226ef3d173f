"""Shared test setup: keep Textual snapshots under the top-level snapshots/ folder."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from syrupy.location import PyTestLocation

# pytest-textual-snapshot ships no type information (no py.typed): imported as a module object.
_plugin: ModuleType = importlib.import_module("pytest_textual_snapshot")

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_DIR = REPO_ROOT / "snapshots"


def _snapshot_dirname(cls: type, *, test_location: PyTestLocation) -> str:
    return str(SNAPSHOT_DIR / test_location.basename)


_plugin.SVGImageExtension.dirname = classmethod(_snapshot_dirname)
