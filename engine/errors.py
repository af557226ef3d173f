"""Why an engine could not start: each maps to one exit code of the CLI."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """The engine cannot run with this configuration (exit code 3)."""


class LedgerRefused(Exception):
    """The ledger file is not a quantarb ledger or is newer than this code (exit code 2)."""
