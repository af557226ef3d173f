"""What an OKX key may do and how its account is set up: `GET /api/v5/account/config`.

`quantarb doctor` reads it before trading (the gateway never does): the key's `perm`
("read_only", "trade", "withdraw", comma-separated), the account level (`acctLv`: 1 spot only,
2 single-currency margin, 3 multi-currency margin, 4 portfolio margin) and the position mode
(`posMode`: `net_mode` or `long_short_mode`). The gateway's orders carry no `posSide`, which
OKX requires of swaps and futures in long/short mode, so that mode cannot trade them here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchanges.okx.gateway import OkxRest
from exchanges.okx.parsers import OkxParseError

CONFIG = "/api/v5/account/config"
PERMS = frozenset({"read_only", "trade", "withdraw"})
POS_MODES = frozenset({"net_mode", "long_short_mode"})
ACCOUNT_LEVELS = {"1": "spot", "2": "single-currency margin", "3": "multi-currency margin", "4": "portfolio margin"}


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """The parts of the account configuration that decide whether this key can trade here."""

    perms: frozenset[str]
    account_level: str  # "1".."4" (ACCOUNT_LEVELS)
    position_mode: str  # net_mode | long_short_mode

    @property
    def can_trade(self) -> bool:
        return "trade" in self.perms

    @property
    def can_withdraw(self) -> bool:
        return "withdraw" in self.perms

    @property
    def derivatives(self) -> bool:
        """Swaps and futures need a margin account (acctLv 2, 3 or 4)."""
        return self.account_level != "1"


def parse_account_config(data: Any) -> AccountConfig:
    """The `data` of a successful answer -> AccountConfig; OkxParseError naming what is wrong."""
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise OkxParseError("okx account config: data must hold one object")
    row: dict[str, Any] = data[0]
    perm = row.get("perm")
    if not isinstance(perm, str):
        raise OkxParseError("okx account config: perm is not a string")
    perms = frozenset(p.strip() for p in perm.split(",") if p.strip())
    unknown = sorted(perms - PERMS)
    if unknown or not perms:
        raise OkxParseError(f"okx account config: perm {perm[:60]!r} is not a list of {', '.join(sorted(PERMS))}")
    level = row.get("acctLv")
    if not isinstance(level, str) or level not in ACCOUNT_LEVELS:
        raise OkxParseError(f"okx account config: acctLv {str(level)[:20]!r} is not one of 1, 2, 3, 4")
    mode = row.get("posMode")
    if not isinstance(mode, str) or mode not in POS_MODES:
        raise OkxParseError(f"okx account config: posMode {str(mode)[:30]!r} is not net_mode or long_short_mode")
    return AccountConfig(perms=perms, account_level=level, position_mode=mode)


async def account_config(rest: OkxRest) -> AccountConfig:
    """Ask the venue (signed); VenueError (classed) or OkxParseError on failure."""
    return parse_account_config(await rest.call("GET", CONFIG))


__all__ = ["ACCOUNT_LEVELS", "CONFIG", "AccountConfig", "account_config", "parse_account_config"]
