"""Automatic circuit breakers: the engine stops itself when the world looks wrong.

Each breaker watches one input and, when it trips, has one effect on the RiskGate:

| breaker | input | effect |
|---|---|---|
| `daily_loss` | the day's equity change (UTC; unrealized and carry in it) | halt (to the day's roll, then rearm) |
| `consecutive_failures` | N failed or compensated groups in a row | pause for `failure_pause_s` |
| `stale:<venue>` | no quote for `venue_block_s` | no new intents on that venue |
| `stale_halt:<venue>` | no quote for `feed_stale_halt_s` | halt |
| `down:<venue>` | disconnected for `venue_down_halt_s` | halt |
| `balance:<venue>` | free balance/margin below `min_free_balance` | no new intents on that venue |
| `outlier:<venue>` | `outlier_block_count` quotes in a row refused as price outliers | no new intents on that venue |

(`outlier:<venue>` releases once the venue's quotes agree with another venue again.)
| `hold_timeout` | a group open longer than `hold_timeout_s` | alert; the group is unwound |
| `hold:<asset>` | a hedge held past `hold_alert_s`, then `hold_close_s` | alert (then `hold_action`) |
| `drift:<asset>` | the asset's legs apart by a lot step or more, no group in flight | alert |
| `compensation_failed` | a group ended `failed` | halt |

Breakers are pure: they report trips and releases as `BreakerChange`s; the gate applies the
effect and the runtime journals each change as a `risk_events` row. Their state serialises
to JSON so that it survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

Effect = Literal["halt", "pause", "block_venue", "alert"]
DAY_MS = 86_400_000  # the daily loss window is the UTC day: now_ms // DAY_MS
CENT = Decimal("0.01")


@dataclass(slots=True)
class Breaker:
    name: str
    effect: Effect
    tripped: bool = False
    since_ms: int | None = None
    until_ms: int | None = None
    detail: str = ""
    venue: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": "tripped" if self.tripped else "ok", "effect": self.effect, "since_ms": self.since_ms,
                "until_ms": self.until_ms, "detail": self.detail, "venue": self.venue}


@dataclass(slots=True, frozen=True)
class BreakerChange:
    """A breaker tripped (`tripped=True`) or released."""

    name: str
    effect: Effect
    tripped: bool
    detail: str
    venue: str | None = None

    @property
    def reason(self) -> str:
        return f"{'trip' if self.tripped else 'release'} {self.name}: {self.detail}"


@dataclass(slots=True, frozen=True)
class BreakerLimits:
    daily_loss_limit: Decimal
    max_consecutive_failures: int
    failure_pause_s: float
    venue_block_s: float
    feed_stale_halt_s: float
    venue_down_halt_s: float
    min_free_balance: Decimal
    hold_timeout_s: float
    outlier_block_count: int = 5


class Breakers:
    def __init__(self, limits: BreakerLimits) -> None:
        self.limits = limits
        self.all: dict[str, Breaker] = {}
        self.day = -1
        self.daily_pnl = Decimal(0)
        self.consecutive_failures = 0
        self.disconnected: set[str] = set()  # venues whose last health report said disconnected
        self._add("daily_loss", "halt")
        self._add("consecutive_failures", "pause")
        self._add("compensation_failed", "halt")
        self._add("hold_timeout", "alert")

    def _add(self, name: str, effect: Effect, venue: str | None = None) -> Breaker:
        b = self.all.get(name)
        if b is None:
            b = self.all[name] = Breaker(name, effect, venue=venue)
        return b

    def watch_venue(self, venue: str) -> None:
        """Create the per-venue breakers (so they show as `ok` before anything happens)."""
        self._add(f"stale:{venue}", "block_venue", venue)
        self._add(f"stale_halt:{venue}", "halt", venue)
        self._add(f"down:{venue}", "halt", venue)
        self._add(f"balance:{venue}", "block_venue", venue)

    def _set(
        self, b: Breaker, tripped: bool, now_ms: int, detail: str, until_ms: int | None = None
    ) -> list[BreakerChange]:
        if b.tripped == tripped:
            if tripped:
                b.detail = detail
            return []
        b.tripped = tripped
        b.since_ms = now_ms
        b.until_ms = until_ms if tripped else None
        b.detail = detail
        return [BreakerChange(b.name, b.effect, tripped, detail, b.venue)]

    # -- inputs ----------------------------------------------------------------------------
    def _roll_day(self, now_ms: int) -> list[BreakerChange]:
        day = now_ms // DAY_MS
        if day == self.day:
            return []
        self.day = day
        self.daily_pnl = Decimal(0)
        b = self.all["daily_loss"]
        return self._set(b, False, now_ms, "new trading day") if b.tripped else []

    def on_group_closed(self, *, failed: bool, compensated: bool, now_ms: int) -> list[BreakerChange]:
        """A group reached a terminal state (rejected groups count as neither success nor failure).
        Its money is in the day's equity (`on_day_equity`), with everything else that moved it."""
        changes = self._roll_day(now_ms)
        lim = self.limits
        if failed:
            changes += self._set(self.all["compensation_failed"], True, now_ms, "a group ended failed")
        if failed or compensated:
            self.consecutive_failures += 1
            if self.consecutive_failures >= lim.max_consecutive_failures:
                until = now_ms + int(lim.failure_pause_s * 1000)
                changes += self._set(self.all["consecutive_failures"], True, now_ms,
                                     f"{self.consecutive_failures} failed or compensated groups in a row", until)
        else:
            self.consecutive_failures = 0
        return changes

    def on_day_equity(self, change: Decimal | None, now_ms: int) -> list[BreakerChange]:
        """The day's equity change (realized + unrealized - fees + carry now, less the same at
        the UTC day's start). None: not known now (a rate or a mark is missing): the last
        figure stands and nothing trips or releases on a guess."""
        changes = self._roll_day(now_ms)
        if change is None:
            return changes
        self.daily_pnl = change
        return changes + self.check_daily_loss(now_ms)

    def check_daily_loss(self, now_ms: int) -> list[BreakerChange]:
        """Trip the daily loss breaker if the day's equity change is past the limit (also after
        a restart restored it from the ledger)."""
        lim = self.limits
        if self.daily_pnl <= -lim.daily_loss_limit:
            today = self.daily_pnl.quantize(CENT, ROUND_HALF_EVEN)
            return self._set(self.all["daily_loss"], True, now_ms, f"equity today {today} <= -{lim.daily_loss_limit}")
        return []

    def on_venue_health(
        self, venue: str, *, connected: bool, quote_age_s: float | None, down_for_s: float, now_ms: int
    ) -> list[BreakerChange]:
        """`quote_age_s` None: never quoted (counted from `down_for_s`, the time since start)."""
        self.watch_venue(venue)
        if connected:
            self.disconnected.discard(venue)
        else:
            self.disconnected.add(venue)
        lim = self.limits
        age = down_for_s if quote_age_s is None else quote_age_s
        changes = self._set(self.all[f"stale:{venue}"], age > lim.venue_block_s, now_ms,
                            f"no quote for {age:.1f}s (> {lim.venue_block_s}s)" if age > lim.venue_block_s
                            else "quotes flowing")
        # The halting breakers latch: they release only through an operator's rearm.
        if age > lim.feed_stale_halt_s:
            changes += self._set(self.all[f"stale_halt:{venue}"], True, now_ms,
                                 f"no quote for {age:.1f}s (> {lim.feed_stale_halt_s}s)")
        if not connected and down_for_s > lim.venue_down_halt_s:
            changes += self._set(self.all[f"down:{venue}"], True, now_ms,
                                 f"disconnected for {down_for_s:.1f}s (> {lim.venue_down_halt_s}s)")
        return changes

    def on_price_check(self, venue: str, *, outlier_run: int, agreed: bool, now_ms: int) -> list[BreakerChange]:
        """The price guard's verdicts on the venue's quotes: `outlier_run` is the longest run of
        outliers in a row over its instruments, `agreed` whether one of its quotes agreed
        with another venue since the engine started. Trips at `outlier_block_count`; releases
        once no instrument is in a run (its latest judged quote agreed) and one has agreed.
        The breaker is created by the venue's first outlier, so quiet venues show none."""
        name = f"outlier:{venue}"
        b = self.all.get(name)
        if b is None:
            if outlier_run == 0:
                return []
            b = self._add(name, "block_venue", venue)
        limit = self.limits.outlier_block_count
        if outlier_run >= limit:
            return self._set(b, True, now_ms, f"{outlier_run} quotes in a row refused as price outliers (>= {limit})")
        if b.tripped and outlier_run == 0 and agreed:
            return self._set(b, False, now_ms, "quotes agree with the other venues again")
        return []

    def on_balance(self, venue: str, free: Decimal, now_ms: int) -> list[BreakerChange]:
        self.watch_venue(venue)
        floor = self.limits.min_free_balance
        low = floor > 0 and free < floor
        return self._set(self.all[f"balance:{venue}"], low, now_ms,
                         f"free {free} < floor {floor}" if low else f"free {free}")

    def on_reconcile(self, venue: str, problem: str | None, now_ms: int) -> list[BreakerChange]:
        """Reconciliation's verdict on a venue: `problem` (it could not be read) blocks new
        intents on it until a later pass reads it again."""
        b = self._add(f"reconcile:{venue}", "block_venue", venue)
        if problem is not None:
            return self._set(b, True, now_ms, f"cannot reconcile: {problem}")
        return self._set(b, False, now_ms, "reconciled") if b.tripped else []

    def on_position_mismatch(self, venue: str, detail: str, now_ms: int) -> list[BreakerChange]:
        """The venue holds a position the ledger does not: halt (latched; a rearm releases it,
        and the next pass trips it again while the difference is still there)."""
        return self._set(self._add(f"position:{venue}", "halt", venue), True, now_ms, detail)

    def on_hold_timeout(self, group_id: str, age_s: float, now_ms: int) -> list[BreakerChange]:
        """An alert, not a state: it trips and releases in one go (the group is unwound)."""
        b = self.all["hold_timeout"]
        detail = f"group {group_id} open {age_s:.0f}s (> {self.limits.hold_timeout_s}s): unwinding"
        return self._set(b, True, now_ms, detail) + self._set(b, False, now_ms, detail)

    def alert(self, name: str, detail: str, now_ms: int) -> list[BreakerChange]:
        """An alert of its own name (`hold:XAU`, `drift:XAU`): it trips and releases in one go,
        so it is journaled and shown, never a state that blocks anything."""
        b = self._add(name, "alert")
        return self._set(b, True, now_ms, detail) + self._set(b, False, now_ms, detail)

    def tick(self, now_ms: int) -> list[BreakerChange]:
        """Time-based releases: the failure pause ends; the loss window rolls at UTC midnight."""
        changes = self._roll_day(now_ms)
        b = self.all["consecutive_failures"]
        if b.tripped and b.until_ms is not None and now_ms >= b.until_ms:
            self.consecutive_failures = 0
            changes += self._set(b, False, now_ms, "pause elapsed")
        return changes

    def clear_latched(self, now_ms: int) -> list[BreakerChange]:
        """On rearm: the halting breakers whose cause is gone are released.

        `daily_loss` stays until the day rolls; a venue's halt stays while its feed is still
        stale, and `down:<venue>` while the venue is still disconnected.
        """
        changes: list[BreakerChange] = []
        for b in self.all.values():
            if b.tripped and b.effect == "halt" and b.name != "daily_loss":
                if b.venue is not None:
                    stale = self.all.get(f"stale:{b.venue}")
                    if stale is not None and stale.tripped:
                        continue
                    if b.name == f"down:{b.venue}" and b.venue in self.disconnected:
                        continue
                changes += self._set(b, False, now_ms, "released by rearm")
        return changes

    # -- reads -----------------------------------------------------------------------------
    def tripped(self) -> list[Breaker]:
        return [b for b in self.all.values() if b.tripped]

    def blocking_rearm(self) -> list[Breaker]:
        """Breakers that keep the engine from going active (venue blocks do not: they only
        stop intents on their venue)."""
        return [b for b in self.tripped() if b.effect in ("halt", "pause")]

    def blocked_venues(self) -> set[str]:
        return {b.venue for b in self.all.values() if b.tripped and b.effect == "block_venue" and b.venue}

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {name: b.to_json() for name, b in sorted(self.all.items())}

    def restore(self, state: dict[str, dict[str, Any]], *, daily_pnl: Decimal | None = None, now_ms: int) -> None:
        """Restore tripped breakers after a restart.

        An expired pause is not restored (one without an end gets a full `failure_pause_s`),
        nor a daily loss halt from an earlier UTC day (the day has rolled since). Alerts are
        not states: never restored.
        """
        today = now_ms // DAY_MS
        for name, s in state.items():
            if s.get("state") != "tripped":
                continue
            effect = s.get("effect")
            if effect not in ("halt", "pause", "block_venue", "alert") or effect == "alert":
                continue
            until = s.get("until_ms")
            if effect == "pause" and isinstance(until, int) and until <= now_ms:
                continue
            since = s.get("since_ms")
            if name == "daily_loss" and isinstance(since, int) and since // DAY_MS < today:
                continue
            if effect == "pause" and not isinstance(until, int):
                until = now_ms + int(self.limits.failure_pause_s * 1000)
            venue = s.get("venue")
            b = self._add(name, effect, venue if isinstance(venue, str) else None)
            b.tripped = True
            b.since_ms = since if isinstance(since, int) else now_ms
            b.until_ms = until if isinstance(until, int) else None
            b.detail = str(s.get("detail", ""))
            if name == "daily_loss":
                self.day = today  # released when this day rolls, not by the first tick
        if daily_pnl is not None:
            self.day = today
            self.daily_pnl = daily_pnl
