"""PnL and monitor statistics (pure).

Per group: realized PnL from fills, fees per venue, expected vs realized edge (bps), and the
slippage split into latency (the touch moved between the intent's price and the moment the
order was sent: `Order.touch_price`) and impact (fill price vs that touch).

Per pair: groups, hit rate (hedged-or-repaired share), total PnL, mean slippage, and the
monitor statistics: edge p50/p75/p90 over a rolling window of decisions and the trigger rate
(intents / decisions).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from core.hedge import HedgeGroup
from core.models import GroupState, Order, OrderPurpose, Venue

_HITS = frozenset({GroupState.HEDGED, GroupState.REPAIRED})


@dataclass(slots=True, frozen=True)
class GroupPnl:
    group_id: str
    pair: str
    state: str
    realized_pnl: Decimal
    fees: dict[Venue, Decimal]
    expected_edge_bps: float
    realized_edge_bps: float | None
    latency_slippage_bps: float | None
    impact_slippage_bps: float | None

    @property
    def slippage_bps(self) -> float | None:
        if self.latency_slippage_bps is None and self.impact_slippage_bps is None:
            return None
        return (self.latency_slippage_bps or 0.0) + (self.impact_slippage_bps or 0.0)


def _adverse_bps(side: str, reference: Decimal, price: Decimal) -> float:
    """How much worse `price` is than `reference` for `side`, in bps (+ = worse)."""
    if reference <= 0 or price <= 0:
        return 0.0
    diff = price - reference if side == "buy" else reference - price
    return float(diff / reference) * 10_000.0


def group_pnl(group: HedgeGroup) -> GroupPnl:
    fees: dict[Venue, Decimal] = {}
    for order in group.orders:
        fees[order.venue] = fees.get(order.venue, Decimal(0)) + order.fees
    entries = [o for o in group.orders if o.purpose is OrderPurpose.ENTRY]
    realized_edge: float | None = None
    buy_cost = Decimal(0)
    sell_proceeds = Decimal(0)
    entry_fees = Decimal(0)
    for o in entries:
        inst = group.instruments[o.venue]
        notional = o.notional * inst.qty_per_unit * inst.price_scale
        if o.side == "buy":
            buy_cost += notional
        else:
            sell_proceeds += notional
        entry_fees += o.fees
    bought = group.entry_filled("buy")
    sold = group.entry_filled("sell")
    if bought > 0 and sold > 0:
        matched = min(bought, sold)
        buy_px = buy_cost / bought
        sell_px = sell_proceeds / sold
        fee_per_unit = entry_fees / (bought + sold) * 2
        realized_edge = float((sell_px - buy_px - fee_per_unit) / buy_px) * 10_000.0 if matched else None
    latency, impact = _slippage(group, [o for o in entries if o.filled_qty > 0])
    return GroupPnl(
        group_id=group.group_id,
        pair=group.pair,
        state=str(group.state),
        realized_pnl=group.realized_pnl,
        fees=fees,
        expected_edge_bps=group.intent.expected_edge_bps,
        realized_edge_bps=realized_edge,
        latency_slippage_bps=latency,
        impact_slippage_bps=impact,
    )


def _slippage(group: HedgeGroup, orders: list[Order]) -> tuple[float | None, float | None]:
    """Quantity-weighted latency and impact slippage of the filled entry orders, in bps."""
    lat_sum = imp_sum = 0.0
    weight = 0.0
    for o in orders:
        if o.touch_price <= 0:
            continue
        leg = group.intent.buy if o.side == "buy" else group.intent.sell
        w = float(o.filled_qty)
        lat_sum += w * _adverse_bps(o.side, leg.limit_price, o.touch_price)
        imp_sum += w * _adverse_bps(o.side, o.touch_price, o.avg_price)
        weight += w
    if weight == 0:
        return None, None
    return lat_sum / weight, imp_sum / weight


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (0 <= q <= 100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(slots=True)
class PairSummary:
    pair: str
    groups: int = 0
    hits: int = 0
    total_pnl: Decimal = Decimal(0)
    slippage_sum: float = 0.0
    slippage_n: int = 0
    decisions: int = 0
    intents: int = 0
    edges: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def hit_rate(self) -> float:
        return self.hits / self.groups if self.groups else 0.0

    @property
    def mean_slippage_bps(self) -> float | None:
        return self.slippage_sum / self.slippage_n if self.slippage_n else None

    @property
    def trigger_rate(self) -> float:
        return self.intents / self.decisions if self.decisions else 0.0

    def edge_percentiles(self) -> dict[str, float] | None:
        if not self.edges:
            return None
        values = list(self.edges)
        return {f"p{q}": percentile(values, q) for q in (50, 75, 90)}

    def as_dict(self) -> dict[str, object]:
        return {
            "pair": self.pair,
            "groups": self.groups,
            "hit_rate": self.hit_rate,
            "total_pnl": str(self.total_pnl),
            "mean_slippage_bps": self.mean_slippage_bps,
            "decisions": self.decisions,
            "intents": self.intents,
            "trigger_rate": self.trigger_rate,
            "edge_bps": self.edge_percentiles(),
        }


class PairStats:
    """Per-pair aggregates of closed groups and of the decision stream (rolling window)."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._pairs: dict[str, PairSummary] = {}

    def _summary(self, pair: str) -> PairSummary:
        s = self._pairs.get(pair)
        if s is None:
            s = self._pairs[pair] = PairSummary(pair, edges=deque(maxlen=self.window))
        return s

    def record_decision(self, pair: str, edge_bps: float, *, intent: bool) -> None:
        s = self._pairs.get(pair)  # _summary, inline: this runs for every quote's decision
        if s is None:
            s = self._summary(pair)
        s.decisions += 1
        if intent:
            s.intents += 1
        s.edges.append(edge_bps)

    def record_group(self, pnl: GroupPnl) -> None:
        s = self._summary(pnl.pair)
        if pnl.state == GroupState.REJECTED:
            return  # nothing traded: not a group for the hit rate
        s.groups += 1
        if pnl.state in _HITS:
            s.hits += 1
        s.total_pnl += pnl.realized_pnl
        slip = pnl.slippage_bps
        if slip is not None:
            s.slippage_sum += slip
            s.slippage_n += 1

    def add_pnl(self, pair: str, delta: Decimal) -> None:
        """A closed group's PnL changed after it was recorded (closing orders' cost landed on it)."""
        self._summary(pair).total_pnl += delta

    def get(self, pair: str) -> PairSummary | None:
        return self._pairs.get(pair)

    def snapshot(self) -> dict[str, PairSummary]:
        return dict(self._pairs)
