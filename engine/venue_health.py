"""VenueHealth: one answer to "is this venue's market data alive?", for the views and the breakers.

Quotes arrive three ways: the exchange feeds (WebSocket or REST), the MT5 terminals through
the listener, and (in deterministic demo runs) straight from the simulated market in process.
Each source keeps its own `FeedHealth`; this module turns them into the rows the screens show
and the links the RiskMonitor judges, so both read the same states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from core.models import Venue
from engine.risk_monitor import VenueLink
from engine.snapshot import FeedRow
from feeds.base import WsFeed
from feeds.health import FeedHealth, FeedState

_LIVE = FeedState.LIVE  # a module constant: `delivered` runs for every quote (a member read costs ~60 ns)


class VenueHealth:
    def __init__(self, *, mt5_rows: Callable[[], list[FeedRow]] | None, mt5_in_process: bool) -> None:
        """`mt5_rows`: the MT5 terminals as the listener sees them (None without an MT5 side);
        `mt5_in_process`: the simulated MT5 venue feeds quotes in process (no listener)."""
        self._mt5_rows = mt5_rows
        self._feeds: Sequence[WsFeed] = ()
        self._in_process: dict[Venue, FeedHealth] = {}
        if mt5_in_process and mt5_rows is None:
            self._in_process["mt5"] = FeedHealth(name="mt5-sim", venue="mt5", transport="in-process")

    def use_feeds(self, feeds: Sequence[WsFeed]) -> None:
        """The exchange feeds of this run (built at start)."""
        self._feeds = feeds

    def delivered(self, venue: Venue, now_ns: int) -> None:
        """An in-process source delivered one quote of `venue` (the demo driver, the in-process MT5)."""
        health = self._in_process.get(venue)
        if health is None:
            health = self._in_process[venue] = FeedHealth(name=f"{venue}-sim", venue=venue, transport="in-process")
        health.state = _LIVE
        health.frames += 1
        health.quotes += 1
        health.last_frame_ns = now_ns

    def links(self) -> list[VenueLink]:
        """Per source: is it connected now (a venue is up when any of its sources is)."""
        links = [VenueLink(f.venue, f.health.state in (FeedState.LIVE, FeedState.REST)) for f in self._feeds]
        if self._mt5_rows is not None:
            links += [VenueLink("mt5", row.state == "live") for row in self._mt5_rows()]
        for venue, health in self._in_process.items():
            if venue == "mt5" or not self._feeds:
                links.append(VenueLink(venue, health.state is FeedState.LIVE))
        return links

    def rows(self, now_ns: int) -> list[FeedRow]:
        """MT5 first, then the exchange feeds (or, without feeds, the in-process sources)."""
        rows = [feed_row(f.health, f.dropped(), now_ns, f.seq_resets()) for f in self._feeds]
        if not self._feeds:
            rows += [feed_row(h, None, now_ns) for v, h in sorted(self._in_process.items()) if v != "mt5"]
        if self._mt5_rows is not None:
            rows[:0] = self._mt5_rows()
        elif "mt5" in self._in_process:
            rows.insert(0, feed_row(self._in_process["mt5"], None, now_ns))
        return rows

    def feed_rows(self, now_ns: int) -> list[FeedRow]:
        """The exchange feeds alone (their totals are logged at stop)."""
        return [feed_row(f.health, f.dropped(), now_ns, f.seq_resets()) for f in self._feeds]


def feed_row(health: FeedHealth, dropped: Mapping[str, int] | None, now_ns: int, seq_resets: int = 0) -> FeedRow:
    drops = dict(dropped) if dropped is not None else {}
    return FeedRow(
        key=health.name,
        name=health.name,
        venue=health.venue,
        transport=health.transport,
        state=str(health.state),
        last_frame_age_ms=health.frame_age_ms(now_ns),
        frames_per_s=health.frames_per_s(now_ns),
        frames=health.frames,
        quotes=health.quotes,
        reconnects=health.reconnects,
        rest_polls=health.rest_polls,
        dropped=sum(drops.values()),
        dropped_by_reason=drops,
        seq_resets=seq_resets,
        last_error=health.last_error,
    )
