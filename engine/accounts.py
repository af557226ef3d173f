"""Accounts: free margin per venue, the input of the RiskGate's min-free-balance breaker.

MT5's comes from the EA's account reports. A paper venue keeps a paper account: the
configured `paper.balance`, plus the cash flows (less fees) of every fill in the ledger, plus
its positions marked at the exposure book's marks, less the margin those positions hold at
`paper.leverage`. The same rule holds across a restart because the cash flows are restored
from the ledger (`engine.recovery`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from core.config import PaperConfig
from core.models import Venue
from core.ports import ExecutionGateway
from core.risk import RiskGate
from engine.mt5_side import Mt5Side
from engine.orchestrator import HedgeOrchestrator
from exchanges.paper import PaperGateway


class Accounts:
    def __init__(
        self,
        gateways: Mapping[Venue, ExecutionGateway],
        paper: PaperConfig,
        gate: RiskGate,
        orchestrator: HedgeOrchestrator,
        mt5: Mt5Side | None,
    ) -> None:
        self._gateways = gateways
        self._paper = paper
        self._gate = gate
        self._orch = orchestrator
        self._mt5 = mt5

    def free_margin(self) -> dict[str, Decimal]:
        """Free margin per venue that reports one (a venue missing here is not judged)."""
        out: dict[str, Decimal] = {}
        exposure = self._gate.exposure
        for venue, gateway in self._gateways.items():
            if isinstance(gateway, PaperGateway):
                held = sum((q * exposure.marks.get(a, Decimal(0))
                            for (v, a), q in exposure.positions.items() if v == venue), Decimal(0))
                equity = self._paper.balance + self._orch.cash(venue) + held
                out[venue] = equity - exposure.venue_gross(venue) / self._paper.leverage
        if self._mt5 is not None:
            for terminal in self._mt5.terminals[:1]:
                account = self._mt5.bridge.account(terminal)
                if account is not None:
                    out["mt5"] = Decimal(repr(account.margin_free))
        return out
