"""Alerts: the engine's events that an absent operator must hear of, sent to `[alerts] urls`.

A subscriber of the EventLog: each event is classified (`classify`), judged by the policy
(`core.alert_policy`: deduplication, a rate limit that urgent alerts pass) and handed to every
channel (`engine.alert_channels`: a thread and a bounded queue each). What is alerted on:

- the process starting and stopping;
- a halt with its reason (a kill, an engine fault, a ledger that cannot write, a halting
  breaker, a halt restored at restart), and a rearm;
- breaker trips and releases: a venue down or blocked (stale quotes, disconnected, low
  balance, price outliers), the MT5 EA silent, the failure pause, a group held too long;
- a failed compensation (a group ended `failed`) and the orchestrator's other alerts;
- reconciliation differences: cannot reconcile, an order quarantined, a missing fill booked,
  a position that differs (halt);
- a flatten's result, an error the engine logged as an error;
- today's realized PnL reaching a configured level (`pnl_levels`).

Everything on the event loop is cheap and never raises into the emitter: an alert that cannot
be judged or queued is counted (`errors`, the channels' `dropped`), and trading goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from core.alert_policy import AlertPolicy, PnlLevels, Verdict
from core.clock import Clock
from core.config import AlertsConfig
from engine.alert_channels import Channel, ChannelError, Message, Severity
from engine.errors import RuntimeFailure
from engine.events import EngineEvent, EventLog

__all__ = ["Alert", "Alerts", "build_channels", "classify", "format_message", "url_problems"]

EVENT_KIND = "alerts"  # the kind of this module's own events (a channel failing, recovering)
PNL_POLL_S = 1.0
MAX_TEXT_CHARS = 1000


@dataclass(slots=True, frozen=True)
class Alert:
    """One thing to tell the operator. `key` names what it is about (deduplication);
    `urgent` alerts pass the rate limit."""

    key: str
    severity: Severity
    title: str
    text: str
    ts_ms: int
    urgent: bool = False


# -- which events are alerts -------------------------------------------------------------------
# Breaker families: (name prefix, what it means for the operator).
_BREAKER_TITLES: tuple[tuple[str, str], ...] = (
    ("stale_halt:mt5", "MT5 EA silent"),
    ("down:mt5", "MT5 EA silent"),
    ("stale:mt5", "MT5 EA silent"),
    ("stale_halt:", "venue {venue} has no quotes"),
    ("down:", "venue {venue} down"),
    ("stale:", "venue {venue} blocked: no quotes"),
    ("balance:", "venue {venue} blocked: low free balance"),
    ("outlier:", "venue {venue} blocked: price outliers"),
    ("reconcile:", "venue {venue} reconciled again"),
    ("daily_loss", "daily loss limit"),
    ("consecutive_failures", "failed groups in a row"),
    ("compensation_failed", "compensation failed"),
    ("hold_timeout", "group held open too long"),
)


def _breaker_title(name: str) -> str:
    venue = name.partition(":")[2]
    for prefix, title in _BREAKER_TITLES:
        if name.startswith(prefix):
            return title.format(venue=venue)
    return f"breaker {name}"


def _classify_breaker(event: EngineEvent) -> Alert | None:
    name = event.data.get("breaker")
    tripped = event.data.get("tripped")
    if not isinstance(name, str) or not isinstance(tripped, bool):  # "still tripped (restored)"
        return Alert(f"breaker:restored:{event.text}", "warning", "breaker still tripped after restart",
                     event.text, event.ts_ms)
    if tripped and name.startswith(("reconcile:", "position:")):
        return None  # the reconcile event, with the venue's own words, says it
    if not tripped:
        if name == "hold_timeout":
            return None  # trips and releases in one go: the trip said it
        return Alert(f"breaker:{name}:release", "info", f"released: {_breaker_title(name)}", event.text,
                     event.ts_ms)
    halts = event.level == "error"  # a halting breaker's trip (engine.risk_journal)
    title = _breaker_title(name)
    return Alert(f"breaker:{name}:trip", "critical" if halts else "warning",
                 f"HALTED: {title}" if halts else title, event.text, event.ts_ms, urgent=halts)


def _classify_state(event: EngineEvent) -> Alert | None:
    text = event.text
    if text.startswith("HALTED"):  # `HALTED: reason`, `HALTED (restored): reason`
        reason = text.partition(": ")[2] or text
        return Alert(f"halt:{reason}", "critical", "HALTED", text, event.ts_ms, urgent=True)
    if text.startswith("ACTIVE (rearmed)"):
        return Alert(f"rearm:{text}", "info", "rearmed: trading again", text, event.ts_ms)
    return None  # an operator's pause or resume: the operator knows


def _classify_reconcile(event: EngineEvent) -> Alert | None:
    if event.level == "info":
        return None  # a pass that found nothing
    venue = str(event.data.get("venue", ""))
    text = event.text
    if "position differs" in text:
        return Alert(f"reconcile:position:{venue}", "critical", f"HALTED: position differs on {venue}", text,
                     event.ts_ms, urgent=True)
    if "cannot reconcile" in text:
        return Alert(f"reconcile:cannot:{venue}", "warning", f"cannot reconcile {venue}", text, event.ts_ms)
    order = str(event.data.get("order", ""))
    if "quarantined" in text:
        return Alert(f"reconcile:quarantine:{venue}:{order}", "warning", f"order quarantined on {venue}", text,
                     event.ts_ms)
    return Alert(f"reconcile:{venue}:{order}:{text[:120]}", "warning", f"reconciliation difference on {venue}",
                 text, event.ts_ms)


def classify(event: EngineEvent) -> Alert | None:
    """The alert an engine event is, or None. Pure and cheap: it runs inside `emit`."""
    kind = event.kind
    if kind == "breaker":
        return _classify_breaker(event)
    if kind == "state":
        return _classify_state(event)
    if kind == "reconcile":
        return _classify_reconcile(event)
    if kind == "start":
        return Alert("process:start", "info", "started", event.text, event.ts_ms, urgent=True)
    if kind == "stop":
        return Alert("process:stop", "warning", "stopped", event.text, event.ts_ms, urgent=True)
    if kind == "alert":  # the orchestrator's: a group failed (a compensation that could not finish), ...
        failed = event.level == "error" and "FAILED" in event.text
        return Alert(f"alert:{event.text[:160]}", "critical" if failed else "warning",
                     "compensation failed" if failed else "alert", event.text, event.ts_ms, urgent=failed)
    if kind == "flatten":
        residual = event.level == "error"
        return Alert("flatten", "critical" if residual else "info",
                     "flatten left a residual" if residual else "flatten done", event.text, event.ts_ms,
                     urgent=residual)
    if kind == "operator" and event.level == "error" and "group_id" in event.data:
        # A group's close left a residual: one leg may be an open position (trading paused).
        return Alert(f"close:{event.data['group_id']}", "critical", "group close left a residual", event.text,
                     event.ts_ms, urgent=True)
    if kind == "error" and event.level == "error":
        if event.text.startswith("halting:") or "trading halted" in event.text:
            return None  # the halt that follows says it, with the same reason
        return Alert(f"error:{event.text[:160]}", "warning", "error", event.text, event.ts_ms)
    if kind == "ledger" and event.level != "info":
        return Alert(f"ledger:{event.text[:160]}", "warning", "ledger", event.text, event.ts_ms)
    return None


def format_message(alert: Alert, verdict: Verdict, *, host: str, mode: str) -> Message:
    """Title `quantarb <host>: <what>`; the body says why, when (UTC) and in which mode, and
    what deduplication and the rate limit left out before it."""
    when = datetime.fromtimestamp(alert.ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = alert.text if len(alert.text) <= MAX_TEXT_CHARS else alert.text[: MAX_TEXT_CHARS - 3] + "..."
    lines = [text, f"{when} · mode {mode}"]
    if verdict.repeats:
        lines.append(f"(and {verdict.repeats} more like it since the last message about it)")
    if verdict.held_back:
        lines.append(f"({verdict.held_back} other alert(s) held back by the rate limit)")
    return Message(f"quantarb {host}: {alert.title}", "\n".join(lines), alert.severity)


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"))) if value.is_finite() else str(value)


def url_problems(config: AlertsConfig) -> list[str]:
    """One line per URL apprise cannot use (`config check`); empty when every one is fine."""
    problems = []
    for i, url in enumerate(config.urls):
        try:
            Channel(i, url.get_secret_value(), timeout_s=config.timeout_s, queue_size=1)
        except ChannelError as exc:
            problems.append(str(exc))
    return problems


def build_channels(config: AlertsConfig, on_result: Callable[[Channel, bool, str], None] | None = None
                   ) -> tuple[Channel, ...]:
    """One channel per URL; raises ChannelError naming the first URL apprise cannot use."""
    return tuple(
        Channel(i, url.get_secret_value(), timeout_s=config.timeout_s, queue_size=config.queue_size,
                on_result=on_result)
        for i, url in enumerate(config.urls)
    )


class Alerts:
    """The engine's alerter: subscribed to the EventLog when at least one URL is configured."""

    def __init__(
        self,
        config: AlertsConfig,
        events: EventLog,
        clock: Clock,
        *,
        mode: str,
        daily_pnl: Callable[[], tuple[int, Decimal]] | None = None,
        host: str | None = None,
    ) -> None:
        """`daily_pnl`: (UTC day number, realized PnL today), polled once a second against
        `pnl_levels`. Raises RuntimeFailure for a URL apprise cannot use (the engine must not
        run believing it would be told)."""
        self._events = events
        self._clock = clock
        self._mode = mode
        self._host = host if host is not None else socket.gethostname()
        self._daily_pnl = daily_pnl
        self._policy = AlertPolicy(dedup_ms=round(config.dedup_s * 1000), max_per_minute=config.max_per_minute)
        self._levels = PnlLevels(config.pnl_levels)
        self._grace_s = config.timeout_s + 1.0
        try:
            self.channels = build_channels(config, self._result)
        except ChannelError as exc:
            raise RuntimeFailure(str(exc)) from None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_ok: dict[int, bool] = {}
        self.raised = 0  # alerts the policy let through (each offered to every channel)
        self.errors = 0  # events that could not be judged (a bug here, never the emitter's problem)
        self._closed = False
        if self.channels:
            events.subscribe(self.on_event)

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    # -- on the event loop -------------------------------------------------------------------
    def on_event(self, event: EngineEvent) -> None:
        """The EventLog listener: never raises (it runs inside every `emit`)."""
        try:
            alert = classify(event)
            if alert is not None:
                self.raise_alert(alert)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1:  # a bug here: said once, and trading goes on
                self._events.emit(EngineEvent(self._clock.time_ms(), EVENT_KIND,
                                              f"alerts: an event could not be judged: {exc!r}", "error"))

    def raise_alert(self, alert: Alert) -> bool:
        """Judge `alert` and offer it to every channel; True when it was let through."""
        if self._closed or not self.channels:
            return False
        if self._loop is None:
            with contextlib.suppress(RuntimeError):  # no loop (a synchronous caller): no result events
                self._loop = asyncio.get_running_loop()
        verdict = self._policy.decide(alert.key, urgent=alert.urgent, now_ms=self._clock.time_ms())
        if not verdict.send:
            return False
        self.raised += 1
        message = format_message(alert, verdict, host=self._host, mode=self._mode)
        for channel in self.channels:
            channel.offer(message)
        return True

    def poll_pnl(self) -> None:
        """Today's realized PnL against `pnl_levels` (the loop's body; tests call it)."""
        if self._daily_pnl is None or not self._levels.levels:
            return
        day, pnl = self._daily_pnl()
        for level in self._levels.observe(day, pnl):
            below = level < 0
            self.raise_alert(Alert(
                f"pnl:{day}:{level}", "warning" if below else "info",
                f"daily PnL {'at or below' if below else 'at or above'} {level}",
                f"realized PnL today (UTC) is {_money(pnl)}, past the alert level {level}", self._clock.time_ms(),
                urgent=below,
            ))

    async def run(self, interval_s: float = PNL_POLL_S) -> None:
        """Poll the daily PnL until cancelled (a runtime task); returns at once without levels."""
        if not self.channels or not self._levels.levels or self._daily_pnl is None:
            return
        while True:
            try:
                self.poll_pnl()
            except Exception:
                self.errors += 1
            await asyncio.sleep(interval_s)

    async def close(self, grace_s: float | None = None) -> int:
        """After the last event (the engine's `stop`): let the channels send what is queued,
        for at most `grace_s` (default: one timeout plus a second), without blocking the loop.
        Returns how many messages were left unsent, said in the log when not 0."""
        if self._closed or not self.channels:
            self._closed = True
            return 0
        self._closed = True
        for channel in self.channels:
            channel.close()
        grace = self._grace_s if grace_s is None else grace_s
        await asyncio.to_thread(self._join_all, grace)
        left = sum(c.pending for c in self.channels)
        if left:
            self._events.emit(EngineEvent(self._clock.time_ms(), EVENT_KIND,
                                          f"alerts: {left} message(s) not sent at stop", "warn"))
        return left

    def _join_all(self, grace_s: float) -> None:
        """Blocking (a worker thread): every channel's thread gets the same deadline."""
        deadline = time.monotonic() + grace_s
        for channel in self.channels:
            channel.join(max(0.0, deadline - time.monotonic()))

    # -- on a channel's thread ---------------------------------------------------------------
    def _result(self, channel: Channel, ok: bool, reason: str) -> None:
        """A channel changing between working and failing is said in the engine's log (from
        its thread: handed to the loop). Its label only, never its URL."""
        before = self._last_ok.get(channel.index)
        self._last_ok[channel.index] = ok
        if before == ok or (before is None and ok):
            return
        text = (f"alerts: channel {channel.label} failing: {reason}" if not ok
                else f"alerts: channel {channel.label} works again")
        event = EngineEvent(self._clock.time_ms(), EVENT_KIND, text, "warn" if not ok else "info",
                            {"channel": channel.label})
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                loop.call_soon_threadsafe(self._events.emit, event)

    def stats(self) -> dict[str, Any]:
        """Counters for the status page and tests: per channel, and the policy's."""
        return {
            "raised": self.raised,
            "duplicates": self._policy.duplicates,
            "rate_limited": self._policy.rate_limited,
            "errors": self.errors,
            "channels": [{"channel": c.label, "sent": c.sent, "failed": c.failed, "dropped": c.dropped,
                          "pending": c.pending, "last_error": c.last_error} for c in self.channels],
        }
