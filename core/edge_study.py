"""EdgeStudy: what a replay's market offered and what the engine made of it, per pair and
direction (pure; `engine.replay` feeds it, `quantarb replay --report` renders it).

Fed in recorded time order with every update of a directed edge (buy on one venue at its
ask, sell on another at its bid, net of both taker fees), the intents the pipeline made, the
reaction times the orchestrator measured and the groups as they closed. It answers, per
direction:

- **opportunities**: episodes of the edge at or above the threshold (an episode starts with
  the first update at or over it and ends with the first update under it, or when a venue's
  quote is withdrawn as an outlier); **triggered**: episodes in which an intent was made;
  **trigger rate** = triggered / opportunities.
- **edge distribution**: p50/p75/p90/p99 of every update of the edge (bps), kept as a count
  per 0.01 bps (bounded by the range of edges, not by the length of the replay; exact to
  0.01 bps), linear interpolation between ranks as `core.pnl.percentile`.
- **edge lifetime**: how long each ended episode lasted (an episode still open at the end is
  counted as `censored`, not as a lifetime), against the **reaction time** (from the quote
  that made the intent to both entry orders sent): `outlived` is the share of ended episodes
  that lasted at least the median reaction time: the ones we could have caught.
- **capacity**: the size at the touch while the edge was over the threshold: min(ask size of
  the buy venue, bid size of the sell venue), in base units, and that size's notional at the
  buy price; p50 over those updates.
- **PnL** after fees (each group's realized PnL: its legs' cash flows less every fee,
  compensation included) and **carry** (per pair, as booked: funding, swap), **compensation**
  count (actions) and cost (`compensation_cost`).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from core.durations import BOUNDS_MS
from core.hedge import HedgeGroup
from core.models import GroupState, OrderPurpose
from core.pnl import percentile

Direction = tuple[str, str, str]  # (pair, buy venue, sell venue)
CENTI = 100  # edge histogram resolution: counts per 0.01 bps
_ZERO = Decimal(0)
_COMPENSATED = frozenset({GroupState.REPAIRED, GroupState.UNWOUND, GroupState.FAILED})


def direction_name(key: Direction) -> str:
    """`XAU okx>binance`: buy on okx, sell on binance."""
    return f"{key[0]} {key[1]}>{key[2]}"


def counts_percentile(counts: Mapping[int, int], q: float) -> float:
    """`core.pnl.percentile` of the multiset {key: count} (keys sorted ascending)."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("percentile of nothing")
    pos = (total - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, total - 1)
    lo_v = hi_v = None
    seen = 0
    for key in sorted(counts):
        seen += counts[key]
        if lo_v is None and seen > lo:
            lo_v = key
        if seen > hi:
            hi_v = key
            break
    assert lo_v is not None and hi_v is not None
    return lo_v + (hi_v - lo_v) * (pos - lo)


@dataclass(slots=True, frozen=True)
class GroupRecord:
    """One closed group as the study needs it (`group_record` makes it from a HedgeGroup)."""

    pair: str
    buy_venue: str
    sell_venue: str
    state: str
    pnl: Decimal  # realized, after every fee, compensation included
    fees: Decimal
    compensations: int
    compensation_cost: Decimal

    @property
    def key(self) -> Direction:
        return (self.pair, self.buy_venue, self.sell_venue)


def compensation_cost(group: HedgeGroup) -> Decimal:
    """What the compensation orders cost against the plan, in the quote currency (+ = cost):
    each fill's fee plus its price against the reference of the leg it stands in for, times
    its base quantity: a `retry_hedge` against the intent's price of the missing leg, an
    `unwind` against the average fill price of the entry leg it closes."""
    cost = _ZERO
    intent = group.intent
    for order in group.orders:
        if order.purpose not in (OrderPurpose.RETRY_HEDGE, OrderPurpose.UNWIND) or not order.fills:
            continue
        inst = group.instruments[order.venue]
        if order.purpose is OrderPurpose.RETRY_HEDGE:
            leg = intent.buy if order.side == "buy" else intent.sell
            ref_inst = group.instruments[leg.venue]
            reference = ref_inst.normalized_price(leg.limit_price)
        else:
            entry = next((o for o in group.orders if o.purpose is OrderPurpose.ENTRY and o.side != order.side
                          and o.filled_qty > 0), None)
            reference = _ZERO if entry is None else group.instruments[entry.venue].normalized_price(entry.avg_price)
        for fill in order.fills:
            price = inst.normalized_price(fill.price)
            base = inst.to_base_qty(fill.qty)
            if reference > 0:
                adverse = price - reference if order.side == "buy" else reference - price
                cost += adverse * base
            cost += fill.fee
    return cost


def group_record(group: HedgeGroup) -> GroupRecord:
    fees = sum((o.fees for o in group.orders), _ZERO)
    return GroupRecord(
        pair=group.pair, buy_venue=group.intent.buy.venue, sell_venue=group.intent.sell.venue,
        state=str(group.state), pnl=group.realized_pnl if group.state is not GroupState.REJECTED else _ZERO,
        fees=fees, compensations=len(group.actions),
        compensation_cost=compensation_cost(group) if group.state in _COMPENSATED else _ZERO,
    )


class DirectionStudy:
    """One direction's running study (`EdgeStudy.direction`): the replay keeps one per edge
    and feeds it directly, the hot path of `--report`."""

    __slots__ = ("capacity_base", "capacity_notional", "edges", "groups", "intents", "lifetimes_ns",
                 "open_since_ns", "open_triggered", "opportunities", "reactions_ns", "threshold_bps",
                 "triggered", "updates")

    def __init__(self, threshold_bps: float) -> None:
        self.threshold_bps = threshold_bps
        self.edges: Counter[int] = Counter()  # centi-bps -> updates
        self.updates = 0
        self.opportunities = 0
        self.triggered = 0
        self.intents = 0
        self.open_since_ns = 0  # 0: no episode open
        self.open_triggered = False
        self.lifetimes_ns: array[int] = array("q")
        self.reactions_ns: array[int] = array("q")
        self.capacity_base: array[float] = array("d")
        self.capacity_notional: array[float] = array("d")
        self.groups: list[GroupRecord] = []

    def sample(self, edge_bps: float, now_ns: int, capacity_base: float = 0.0, buy_price: float = 0.0) -> None:
        """One update of the edge (net bps) at `now_ns`, with the size at the touch."""
        self.updates += 1
        self.edges[round(edge_bps * CENTI)] += 1
        if edge_bps >= self.threshold_bps:
            if not self.open_since_ns:
                self.open_since_ns = now_ns or 1
                self.open_triggered = False
                self.opportunities += 1
            self.capacity_base.append(capacity_base)
            self.capacity_notional.append(capacity_base * buy_price)
        elif self.open_since_ns:
            self.end(now_ns)

    def end(self, now_ns: int) -> None:
        """The open episode (if any) ends at `now_ns`."""
        if not self.open_since_ns:
            return
        self.lifetimes_ns.append(now_ns - self.open_since_ns)
        if self.open_triggered:
            self.triggered += 1
        self.open_since_ns = 0
        self.open_triggered = False


@dataclass(slots=True, frozen=True)
class DirectionReport:
    pair: str
    buy_venue: str
    sell_venue: str
    updates: int
    opportunities: int
    triggered: int
    censored: int
    intents: int
    edge_bps: dict[str, float] | None  # p50 p75 p90 p99
    lifetime_ms: dict[str, float] | None  # p50 p90 max
    reaction_ms: dict[str, float] | None  # p50 p90 max
    outlived: float | None  # share of ended episodes at least the median reaction time long
    capacity_base: float | None  # p50
    capacity_notional: float | None  # p50
    groups: int
    by_state: dict[str, int]
    pnl: Decimal
    fees: Decimal
    compensations: int
    compensation_cost: Decimal

    @property
    def name(self) -> str:
        return direction_name((self.pair, self.buy_venue, self.sell_venue))

    @property
    def trigger_rate(self) -> float | None:
        return self.triggered / self.opportunities if self.opportunities else None

    def as_dict(self) -> dict[str, object]:
        return {
            "pair": self.pair, "buy_venue": self.buy_venue, "sell_venue": self.sell_venue,
            "updates": self.updates, "opportunities": self.opportunities, "triggered": self.triggered,
            "trigger_rate": None if self.trigger_rate is None else round(self.trigger_rate, 6),
            "censored": self.censored, "intents": self.intents,
            "edge_bps": self.edge_bps, "lifetime_ms": self.lifetime_ms, "reaction_ms": self.reaction_ms,
            "outlived": None if self.outlived is None else round(self.outlived, 6),
            "capacity_base": self.capacity_base, "capacity_notional": self.capacity_notional,
            "groups": self.groups, "by_state": self.by_state, "pnl": str(self.pnl), "fees": str(self.fees),
            "compensations": self.compensations, "compensation_cost": str(self.compensation_cost),
        }


@dataclass(slots=True, frozen=True)
class PairReport:
    pair: str
    pnl: Decimal  # after fees, every direction
    carry: Decimal
    groups: int
    compensations: int
    compensation_cost: Decimal

    @property
    def net(self) -> Decimal:
        """PnL after fees and carry."""
        return self.pnl + self.carry

    def as_dict(self) -> dict[str, object]:
        return {"pair": self.pair, "pnl": str(self.pnl), "carry": str(self.carry), "net": str(self.net),
                "groups": self.groups, "compensations": self.compensations,
                "compensation_cost": str(self.compensation_cost)}


@dataclass(slots=True, frozen=True)
class StudyReport:
    threshold_bps: float
    directions: tuple[DirectionReport, ...]
    pairs: tuple[PairReport, ...]
    bounds_ms: tuple[float, ...]  # the histograms' bucket bounds (core.durations)
    lifetime_hist: dict[str, list[int]]  # direction name -> ended episodes per bucket
    reaction_hist: dict[str, list[int]]  # direction name -> reaction times per bucket
    carry_note: str

    @property
    def net(self) -> Decimal:
        return sum((p.net for p in self.pairs), _ZERO)

    def as_dict(self) -> dict[str, object]:
        return {"threshold_bps": self.threshold_bps, "directions": [d.as_dict() for d in self.directions],
                "pairs": [p.as_dict() for p in self.pairs], "net": str(self.net), "carry_note": self.carry_note,
                "bounds_ms": list(self.bounds_ms), "lifetime_hist": self.lifetime_hist,
                "reaction_hist": self.reaction_hist}


def _ms(values: array[int], qs: Iterable[float]) -> dict[str, float] | None:
    if not values:
        return None
    data = [v / 1_000_000 for v in values]
    out = {f"p{q:g}": round(percentile(data, q), 3) for q in qs}
    out["max"] = round(max(data), 3)
    return out


class EdgeStudy:
    """Collects one replay's edges, intents, reaction times and groups (see the module)."""

    def __init__(self, threshold_bps: float) -> None:
        self.threshold_bps = threshold_bps
        self._dirs: dict[Direction, DirectionStudy] = {}

    def direction(self, key: Direction) -> DirectionStudy:
        """The running study of `key` (made on first use), to feed directly."""
        d = self._dirs.get(key)
        if d is None:
            d = self._dirs[key] = DirectionStudy(self.threshold_bps)
        return d

    def sample(self, key: Direction, edge_bps: float, now_ns: int, capacity_base: float = 0.0,
               buy_price: float = 0.0) -> None:
        """One update of the edge `key` (net bps) at `now_ns`, with the size at the touch."""
        self.direction(key).sample(edge_bps, now_ns, capacity_base, buy_price)

    def withdraw(self, key: Direction, now_ns: int) -> None:
        """The edge has no tradable quote any more (an outlier withdrew one side): an open
        episode ends here."""
        d = self._dirs.get(key)
        if d is not None:
            d.end(now_ns)

    def intent(self, key: Direction) -> None:
        """The pipeline made an intent on `key` (after the update that allowed it)."""
        d = self.direction(key)
        d.intents += 1
        if d.open_since_ns:
            d.open_triggered = True

    def reaction(self, key: Direction, reaction_ns: int) -> None:
        """From the quote that made an intent to both entry orders sent."""
        self.direction(key).reactions_ns.append(max(0, reaction_ns))

    def group(self, record: GroupRecord) -> None:
        self.direction(record.key).groups.append(record)

    def report(self, carry: Mapping[str, Decimal] | None = None, *, carry_note: str = "",
               bounds_ms: Iterable[float] | None = None) -> StudyReport:
        """The study so far (episodes still open count as opportunities and `censored`)."""
        bounds_f = tuple(bounds_ms or BOUNDS_MS)
        bounds = [round(b * 1_000_000) for b in bounds_f]
        carry = carry or {}
        all_reactions = array("q", (r for d in self._dirs.values() for r in d.reactions_ns))
        rows: list[DirectionReport] = []
        hist: dict[str, list[int]] = {}
        rhist: dict[str, list[int]] = {}
        for key in sorted(self._dirs):
            d = self._dirs[key]
            censored = 1 if d.open_since_ns else 0
            triggered = d.triggered + (1 if d.open_since_ns and d.open_triggered else 0)
            reactions = d.reactions_ns or all_reactions
            median_reaction = percentile([float(v) for v in reactions], 50) if reactions else None
            outlived = None
            if d.lifetimes_ns and median_reaction is not None:
                outlived = sum(1 for v in d.lifetimes_ns if v >= median_reaction) / len(d.lifetimes_ns)
            by_state: Counter[str] = Counter(g.state for g in d.groups)
            traded = [g for g in d.groups if g.state != GroupState.REJECTED]
            counts = [0] * (len(bounds) + 1)
            for v in d.lifetimes_ns:
                counts[bisect_right(bounds, v)] += 1
            hist[direction_name(key)] = counts
            counts = [0] * (len(bounds) + 1)
            for v in d.reactions_ns:
                counts[bisect_right(bounds, v)] += 1
            rhist[direction_name(key)] = counts
            rows.append(DirectionReport(
                pair=key[0], buy_venue=key[1], sell_venue=key[2], updates=d.updates,
                opportunities=d.opportunities, triggered=triggered, censored=censored, intents=d.intents,
                edge_bps=({f"p{q}": round(counts_percentile(d.edges, q) / CENTI, 2) for q in (50, 75, 90, 99)}
                          if d.edges else None),
                lifetime_ms=_ms(d.lifetimes_ns, (50, 90)),
                reaction_ms=_ms(d.reactions_ns, (50, 90)),
                outlived=outlived,
                capacity_base=round(percentile(list(d.capacity_base), 50), 8) if d.capacity_base else None,
                capacity_notional=(round(percentile(list(d.capacity_notional), 50), 2)
                                   if d.capacity_notional else None),
                groups=len(traded), by_state=dict(sorted(by_state.items())),
                pnl=sum((g.pnl for g in traded), _ZERO), fees=sum((g.fees for g in d.groups), _ZERO),
                compensations=sum(g.compensations for g in d.groups),
                compensation_cost=sum((g.compensation_cost for g in d.groups), _ZERO),
            ))
        pairs: list[PairReport] = []
        for pair in sorted({r.pair for r in rows} | set(carry)):
            mine = [r for r in rows if r.pair == pair]
            pairs.append(PairReport(
                pair=pair, pnl=sum((r.pnl for r in mine), _ZERO), carry=carry.get(pair, _ZERO),
                groups=sum(r.groups for r in mine), compensations=sum(r.compensations for r in mine),
                compensation_cost=sum((r.compensation_cost for r in mine), _ZERO),
            ))
        return StudyReport(self.threshold_bps, tuple(rows), tuple(pairs), bounds_f, hist, rhist, carry_note)
