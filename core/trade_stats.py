"""Trade statistics that mean something (pure): how often a hedge made money after every cost,
how much the winners made against what the losers lost, and what holding costs.

- **hit rate**: the share of groups whose realized PnL after every cost (both legs' fees,
  compensation and the flatten cost that landed on them) is above zero: the edge that was
  realized, not the state a group ended in (a `hedged` group can lose money).
- **profit factor**: what the winning groups made over what the losing groups lost (None
  without a losing group: it has no finite value).
- **expectancy**: the mean realized PnL per group.
- **mean slippage**: the groups' mean slippage in bps (latency + impact, `core.pnl`), over the
  groups that have a figure.
- **carry per held hour**: carry (funding and swap, + received) over the hours hedges were held
  (an asset counts from when one of its legs became at least a lot step until every leg is
  back under one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

_ZERO = Decimal(0)
HOUR_MS = 3_600_000


@dataclass(slots=True, frozen=True)
class GroupOutcome:
    """One closed group (not rejected): its realized PnL after costs and its slippage."""

    pair: str
    pnl: Decimal
    slippage_bps: float | None


@dataclass(slots=True, frozen=True)
class TradeStats:
    groups: int
    wins: int
    losses: int
    gross_profit: Decimal
    gross_loss: Decimal  # positive: what the losers lost
    total_pnl: Decimal
    mean_slippage_bps: float | None
    carry: Decimal | None
    held_ms: int

    @property
    def hit_rate(self) -> float | None:
        return self.wins / self.groups if self.groups else None

    @property
    def profit_factor(self) -> Decimal | None:
        return self.gross_profit / self.gross_loss if self.gross_loss else None

    @property
    def expectancy(self) -> Decimal | None:
        return self.total_pnl / self.groups if self.groups else None

    @property
    def held_hours(self) -> Decimal:
        return Decimal(self.held_ms) / HOUR_MS

    @property
    def carry_per_held_hour(self) -> Decimal | None:
        if self.carry is None or self.held_ms <= 0:
            return None
        return self.carry / self.held_hours

    def as_dict(self) -> dict[str, object]:
        """JSON-able: decimals as strings rounded for reading (money to 1e-4, ratios to 1e-4)."""
        def q(value: Decimal | None) -> str | None:
            return None if value is None else str(value.quantize(Decimal("0.0001"), ROUND_HALF_EVEN))

        return {
            "groups": self.groups, "wins": self.wins, "losses": self.losses,
            "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
            "profit_factor": q(self.profit_factor), "expectancy": q(self.expectancy),
            "gross_profit": q(self.gross_profit), "gross_loss": q(self.gross_loss), "total_pnl": q(self.total_pnl),
            "mean_slippage_bps": None if self.mean_slippage_bps is None else round(self.mean_slippage_bps, 2),
            "carry": q(self.carry), "held_ms": self.held_ms, "held_hours": q(self.held_hours),
            "carry_per_held_hour": q(self.carry_per_held_hour),
        }


def trade_stats(outcomes: Iterable[GroupOutcome], *, carry: Decimal | None = _ZERO, held_ms: int = 0) -> TradeStats:
    groups = wins = losses = 0
    profit = loss = total = _ZERO
    slip_sum = 0.0
    slip_n = 0
    for o in outcomes:
        groups += 1
        total += o.pnl
        if o.pnl > 0:
            wins += 1
            profit += o.pnl
        elif o.pnl < 0:
            losses += 1
            loss -= o.pnl
        if o.slippage_bps is not None:
            slip_sum += o.slippage_bps
            slip_n += 1
    return TradeStats(groups=groups, wins=wins, losses=losses, gross_profit=profit, gross_loss=loss, total_pnl=total,
                      mean_slippage_bps=slip_sum / slip_n if slip_n else None, carry=carry, held_ms=held_ms)


class HeldClock:
    """How long each asset has been held, fed in time order with whether it is held after each
    change (an asset that is never reported as released is held until `total(now_ms)`)."""

    def __init__(self) -> None:
        self._since: dict[str, int] = {}
        self._done: dict[str, int] = {}

    def update(self, asset: str, held: bool, ts_ms: int) -> None:
        since = self._since.get(asset)
        if held and since is None:
            self._since[asset] = ts_ms
        elif not held and since is not None:
            self._done[asset] = self._done.get(asset, 0) + max(0, ts_ms - since)
            del self._since[asset]

    def held_ms(self, now_ms: int) -> dict[str, int]:
        out = dict(self._done)
        for asset, since in self._since.items():
            out[asset] = out.get(asset, 0) + max(0, now_ms - since)
        return out
