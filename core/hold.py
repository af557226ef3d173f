"""How long hedges are held, and legs that drift apart (pure: fed holdings and a time).

A hedge (long on one venue, short on another) is held until something closes it, and holding
costs carry (funding, swap) and ties up margin. Positions net per venue, so a hedge is known by
its asset: the asset is held from the moment a leg became at least a lot step
(`core.holdings.Holding.held_since_ms`) until every leg is back under one.

Per asset and holding episode (a new `held_since_ms` starts a new one):

- after `hold_alert_s`: one `alert`;
- after `hold_close_s`: one `close` verdict with the configured action: `close` (the engine
  closes that asset's legs at market on every venue) or `alert` (it only says so again);
- legs apart by a lot step or more while no group of the asset is in flight: one `drift`
  verdict, and `drift_end` once they are back together.

Each verdict is reported once per episode, so a check once a second raises no storm.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from core.holdings import Holding

HoldAction = Literal["close", "alert"]
VerdictKind = Literal["alert", "close", "drift", "drift_end"]


@dataclass(slots=True, frozen=True)
class HoldLimits:
    alert_s: float
    close_s: float
    action: HoldAction

    def __post_init__(self) -> None:
        if not (0 < self.alert_s <= self.close_s):
            raise ValueError(f"hold: 0 < alert ({self.alert_s} s) <= close ({self.close_s} s) is required")


@dataclass(slots=True, frozen=True)
class HoldVerdict:
    asset: str
    kind: VerdictKind
    detail: str
    action: HoldAction | None = None  # for `close`: what to do


@dataclass(slots=True)
class _Episode:
    since_ms: int
    alerted: bool = False
    closed: bool = False


class HoldWatch:
    def __init__(self, limits: HoldLimits) -> None:
        self.limits = limits
        self._held: dict[str, _Episode] = {}
        self._drifting: set[str] = set()

    def check(self, holdings: Iterable[Holding], in_flight: Collection[str], now_ms: int) -> list[HoldVerdict]:
        """The verdicts due now. `in_flight`: assets with a group open (their legs may be apart
        for a moment: a leg is filled and the other not yet)."""
        out: list[HoldVerdict] = []
        seen: set[str] = set()
        drifting: set[str] = set()
        for h in holdings:
            seen.add(h.asset)
            out += self._hold(h, now_ms)
            if not h.drift:
                continue
            if h.asset in in_flight:
                if h.asset in self._drifting:
                    drifting.add(h.asset)  # still apart: a group in flight does not end a drift
                continue
            drifting.add(h.asset)
            if h.asset not in self._drifting:
                out.append(HoldVerdict(h.asset, "drift",
                                       f"{h.asset} legs apart: net {_qty(h.net)} (lot step {_qty(h.step)}): "
                                       + ", ".join(f"{leg.venue} {_qty(leg.qty)}" for leg in h.legs)))
        for asset in sorted(self._drifting - drifting):
            out.append(HoldVerdict(asset, "drift_end", f"{asset} legs back together"))
        self._drifting = drifting
        for asset in [a for a in self._held if a not in seen]:
            del self._held[asset]
        return out

    def _hold(self, h: Holding, now_ms: int) -> list[HoldVerdict]:
        if not h.held or h.held_since_ms is None:
            self._held.pop(h.asset, None)
            return []
        episode = self._held.get(h.asset)
        if episode is None or episode.since_ms != h.held_since_ms:
            episode = self._held[h.asset] = _Episode(h.held_since_ms)
        held_s = max(0, now_ms - episode.since_ms) / 1000
        lim = self.limits
        out: list[HoldVerdict] = []
        if held_s > lim.alert_s and not episode.alerted:
            episode.alerted = True
            out.append(HoldVerdict(h.asset, "alert", f"{h.asset} held {held_s:.0f}s (> hold_alert_s {lim.alert_s:g})"))
        if held_s > lim.close_s and not episode.closed:
            episode.closed = True
            what = ("closing it at market on every venue" if lim.action == "close"
                    else "hold_action is alert: not closed")
            out.append(HoldVerdict(h.asset, "close", f"{h.asset} held {held_s:.0f}s (> hold_close_s "
                                   f"{lim.close_s:g}): {what}", lim.action))
        return out


def _qty(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "+f")
