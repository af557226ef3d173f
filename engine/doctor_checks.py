"""One `quantarb doctor` finding: what was checked, where, and how it went.

`fail` makes `quantarb doctor` exit 3; `warn` is loud but passes (a key that can withdraw, a
listener off loopback without TLS, a netting account). `--json` shows each as
`{"name", "venue", "ok", "detail"}`: `ok` is false only for a failure, and a warning's detail
starts with `warning: `.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    """`venue`: okx, binance, mt5, or None for this machine's own parts (config, listener, ledger)."""

    name: str
    venue: str | None
    level: Level
    detail: str

    @property
    def ok(self) -> bool:
        return self.level != "fail"

    def to_json(self) -> dict[str, object]:
        detail = f"warning: {self.detail}" if self.level == "warn" else self.detail
        return {"name": self.name, "venue": self.venue, "ok": self.ok, "detail": detail}


def passed(name: str, venue: str | None, detail: str) -> Check:
    return Check(name, venue, "pass", detail)


def warned(name: str, venue: str | None, detail: str) -> Check:
    return Check(name, venue, "warn", detail)


def failed(name: str, venue: str | None, detail: str) -> Check:
    return Check(name, venue, "fail", detail)


__all__ = ["Check", "Level", "failed", "passed", "warned"]
