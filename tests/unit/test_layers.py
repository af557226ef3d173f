"""The layer rules of docs/architecture.md (Layers), checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_core_imports_no_io_library_at_runtime() -> None:
    """Importing the whole core must not drag in an I/O or UI library (lazy imports too)."""
    code = (
        "import sys, core.config, core.compare, core.pipeline, core.hedge, core.orders, core.risk;"
        "bad = [m for m in ('textual','httpx','websockets','aiosqlite','uvicorn','starlette') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
