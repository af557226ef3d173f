"""The heartbeat: one log line every `engine.heartbeat_s` that says the engine is alive and how.

An unattended engine's log is quiet when nothing trades, and quiet is also what a dead or
hung engine looks like. The heartbeat tells them apart, and answers the first questions of
anyone reading the log afterwards: trading state, equity (realized + unrealized - fees +
carry, the figure every face shows; docs/ledger.md, Money), open groups, gross exposure per venue, quotes per second
per venue since the previous beat, and the oldest quote (a silent instrument shows here
before a breaker trips on it). Built from the same snapshot every face reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from engine.events import EngineEvent
from engine.snapshot import RuntimeSnapshot


@dataclass(slots=True)
class Heartbeat:
    """Remembers the quote counts of the previous beat, for the rates of the next."""

    _counts: dict[str, int] = field(default_factory=dict)
    _at_ns: int | None = None

    def beat(self, snap: RuntimeSnapshot, now_ns: int) -> EngineEvent:
        counts: dict[str, int] = {}
        for row in snap.quotes:
            counts[row.venue] = counts.get(row.venue, 0) + row.count
        elapsed_s = (now_ns - self._at_ns) / 1e9 if self._at_ns is not None else 0.0
        rates = {
            venue: round((n - self._counts.get(venue, 0)) / elapsed_s, 1) if elapsed_s > 0 else None
            for venue, n in sorted(counts.items())
        }
        self._counts, self._at_ns = counts, now_ns

        exposure = {r.scope: r.used for r in snap.limits if r.rule == "max_venue_exposure"}
        aged = [(row.age_ms, row.key) for row in snap.quotes if row.age_ms is not None]
        oldest_ms, oldest = max(aged) if aged else (None, None)
        never = sorted(row.key for row in snap.quotes if row.age_ms is None)
        feeds = {f.name: f.state for f in snap.feeds}

        parts = [f"state={snap.trading_state}"]
        if snap.state_reason and snap.trading_state != "active":  # an active gate keeps its last reason
            parts.append(f"reason={snap.state_reason!r}")
        parts += [
            f"equity={_equity(snap)}",
            f"daily_pnl={snap.daily_pnl}",
            f"open_groups={snap.open_groups}",
            "exposure " + (" ".join(f"{v}={x}" for v, x in sorted(exposure.items())) or "none"),
            "quotes/s " + (" ".join(f"{v}={'-' if r is None else f'{r:.1f}'}" for v, r in rates.items()) or "none"),
            "oldest_quote " + ("none" if oldest is None else f"{oldest} {_age(oldest_ms)}"),
        ]
        if never:
            parts.append("no_quote_yet " + ",".join(never))
        if feeds:
            parts.append("feeds " + " ".join(f"{name}={state}" for name, state in feeds.items()))
        if snap.blocked_venues:
            parts.append("blocked " + ",".join(snap.blocked_venues))
        if snap.ledger_error:
            parts.append(f"ledger=failing ({snap.ledger_unwritten} unwritten)")
        return EngineEvent(
            snap.ts_ms, "heartbeat", " ".join(parts),
            data={
                "component": "engine",
                "event": "heartbeat",
                "state": snap.trading_state,
                "reason": snap.state_reason,
                "equity": snap.equity if snap.equity else snap.realized_pnl,
                "equity_basis": "equity" if snap.equity else "realized",
                "currency": snap.account_ccy,
                "daily_pnl": snap.daily_pnl,
                "open_groups": snap.open_groups,
                "exposure": exposure,
                "gross_exposure": str(sum((Decimal(x) for x in exposure.values()), Decimal(0))),
                "quotes_per_s": rates,
                "oldest_quote": oldest,
                "oldest_quote_ms": None if oldest_ms is None else round(oldest_ms),
                "no_quote_yet": never,
                "feeds": feeds,
                "blocked_venues": list(snap.blocked_venues),
                "ledger_ok": not snap.ledger_error,
            },
        )


def status_line(snap: RuntimeSnapshot) -> str:
    """The one line `systemctl status` shows (sd_notify STATUS=)."""
    reason = snap.state_reason if snap.trading_state != "active" else ""
    state = snap.trading_state + (f" ({reason})" if reason else "")
    return f"{snap.mode} {state}; {snap.open_groups} open groups; equity {_equity(snap)}"


def _equity(snap: RuntimeSnapshot) -> str:
    if snap.equity:  # "n/a" when a rate or mark is missing
        return f"{snap.equity} {snap.account_ccy}".strip()
    return f"{snap.realized_pnl} (realized)"


def _age(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"
