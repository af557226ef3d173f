"""Why an engine could not start: each maps to one exit code of the CLI."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """The engine cannot run with this configuration (exit code 3)."""


class LedgerRefused(Exception):
    """The ledger file cannot be used: not a quantarb ledger, newer than this code, or damaged
    (exit code 2). The message names the file and what to do."""
