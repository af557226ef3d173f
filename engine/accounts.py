"""Accounts: free margin per venue, the input of the RiskGate's min-free-balance breaker.

MT5's comes from the EA's account reports. A paper venue keeps a paper account: the
configured `paper.balance`, plus the venue's own equity change from the running portfolio
(realized + unrealized - fees + carry of its books, marked at its books now, in the account
currency: docs/ledger.md, Money), less the margin its positions hold at `paper.leverage`.
The same rule holds across a restart because the portfolio is the ledger's replay. A venue
whose equity is missing (a rate or a mark) is not judged, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.config import PaperConfig
from core.models import Venue
from core.ports import ExecutionGateway
from core.risk import RiskGate
from engine.mt5_side import Mt5Side
from exchanges.paper import PaperGateway


@dataclass(frozen=True, slots=True)
class VenueBalance:
    """One venue's account as the risk screen shows it; None where the source does not say.

    `source`: `paper` (the configured balance with the venue's equity change; margin = gross
    notional / leverage, a spot account's in full), `terminal` (MT5's account report: balance,
    equity, free margin; margin = equity - free)."""

    venue: str
    source: str
    balance: Decimal | None
    equity: Decimal | None
    margin: Decimal | None
    free: Decimal | None


class Accounts:
    def __init__(
        self,
        gateways: Mapping[Venue, ExecutionGateway],
        paper: PaperConfig,
        gate: RiskGate,
        venue_equity: Callable[[], Mapping[Venue, Decimal | None]],
        mt5: Mt5Side | None,
    ) -> None:
        self._gateways = gateways
        self._paper = paper
        self._gate = gate
        self._venue_equity = venue_equity
        self._mt5 = mt5

    def balances(self) -> list[VenueBalance]:
        """Every paper venue's paper account and the MT5 terminal's report, by venue."""
        out: list[VenueBalance] = []
        exposure = self._gate.exposure
        equity = self._venue_equity()
        for venue, gateway in sorted(self._gateways.items()):
            if isinstance(gateway, PaperGateway):
                change = equity.get(venue, Decimal(0))
                leverage = Decimal(1) if gateway.spot else self._paper.leverage
                margin = exposure.venue_gross(venue) / leverage
                total = None if change is None else self._paper.balance + change
                out.append(VenueBalance(venue, "paper spot" if gateway.spot else "paper", self._paper.balance, total,
                                        margin, None if total is None else total - margin))
        if self._mt5 is not None:
            for terminal in self._mt5.terminals[:1]:
                account = self._mt5.bridge.account(terminal)
                if account is not None:
                    eq, free = Decimal(repr(account.equity)), Decimal(repr(account.margin_free))
                    out = [b for b in out if b.venue != "mt5"]
                    out.append(VenueBalance("mt5", f"terminal {terminal}", Decimal(repr(account.balance)), eq,
                                            eq - free, free))
        return sorted(out, key=lambda b: b.venue)

    def free_margin(self) -> dict[str, Decimal]:
        """Free margin per venue that reports one (a venue missing here is not judged)."""
        out: dict[str, Decimal] = {}
        exposure = self._gate.exposure
        equity = self._venue_equity()
        for venue, gateway in self._gateways.items():
            if isinstance(gateway, PaperGateway):
                change = equity.get(venue, Decimal(0))
                if change is None:
                    continue
                # A spot account has no leverage: what it bought is paid in full. Derivatives
                # hold initial margin = position notional / leverage (OKX, Binance USD-M, a CFD).
                leverage = Decimal(1) if gateway.spot else self._paper.leverage
                out[venue] = self._paper.balance + change - exposure.venue_gross(venue) / leverage
        if self._mt5 is not None:
            for terminal in self._mt5.terminals[:1]:
                account = self._mt5.bridge.account(terminal)
                if account is not None:
                    out["mt5"] = Decimal(repr(account.margin_free))
        return out
