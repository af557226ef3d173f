"""A running engine's recording (`quantarb headless --record PATH`): every frame its feeds
receive and every MT5 tick its listener accepts, as `quantarb record` keeps them, and also
our own side of the trade: each order state change as the ledger gets it (the send
included), each fill as it is booked, and each engine event.

Execution records are stamped with the same monotonic clock as the frames' `recv_ns`, so
the time from the quote that triggered a group to its orders leaving, from an order's send
to its acknowledgement, and to its fills, can be measured on what really happened (a replay
then models that latency). Amounts are decimal strings, as in the ledger. Nothing secret is
recorded: orders, fills and events carry no credentials (events are what the log shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.clock import Clock
from core.models import Fill, Order
from engine.events import EngineEvent, EventLog
from feeds.base import WsFeed
from feeds.recording import MT5_FEED_PREFIX, FrameRecorder
from mt5_bridge.bridge import Mt5Bridge


def order_body(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id, "group_id": order.group_id, "venue": order.venue,
        "symbol": order.symbol, "side": order.side, "purpose": str(order.purpose), "state": str(order.state),
        "qty": str(order.qty), "price": str(order.price), "filled_qty": str(order.filled_qty),
        "venue_order_id": order.venue_order_id, "reject_reason": order.reject_reason,
        "created_ms": order.created_ms, "updated_ms": order.updated_ms, "touch_price": str(order.touch_price),
    }


def fill_body(order: Order, fill: Fill) -> dict[str, Any]:
    return {
        "client_order_id": fill.client_order_id, "group_id": order.group_id, "venue": fill.venue,
        "symbol": order.symbol, "side": order.side, "venue_trade_id": fill.venue_trade_id,
        "qty": str(fill.qty), "price": str(fill.price), "fee": str(fill.fee), "fee_ccy": fill.fee_ccy,
        "ts_ms": fill.ts_ms,
    }


def _plain(value: object) -> object:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def event_body(event: EngineEvent) -> dict[str, Any]:
    return {"ts_ms": event.ts_ms, "kind": event.kind, "text": event.text, "level": event.level,
            "data": {str(k): _plain(v) for k, v in event.data.items()}}


class LiveRecording:
    """Taps a runtime's parts into one FrameRecorder (the runtime calls `attach_*`).

    The taps run inside the feeds' read loops and the orders' flow: a recording that fails (a
    full disk) must not stop either. The first failure ends the recording (`error`, and one
    `recording` event in the log); trading goes on."""

    def __init__(self, recorder: FrameRecorder, clock: Clock) -> None:
        self.recorder = recorder
        self._clock = clock
        self._events: EventLog | None = None
        self.error: str | None = None

    def _failed(self, exc: Exception) -> None:
        if self.error is not None:
            return
        self.error = str(exc) or type(exc).__name__
        if self._events is not None:
            self._events.emit(EngineEvent(self._clock.time_ms(), "recording",
                                          f"recording stopped: {self.error}; trading goes on", "warn"))

    def frame(self, venue: str, feed: str, frame: str | bytes, recv_ns: int) -> None:
        if self.error is None:
            try:
                self.recorder.write(venue, feed, frame, recv_ns)
            except Exception as exc:
                self._failed(exc)

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        if self.error is None:
            try:
                self.recorder.write_record(kind, body, self._clock.monotonic_ns())
            except Exception as exc:
                self._failed(exc)

    def attach_feeds(self, feeds: Sequence[WsFeed]) -> None:
        for feed in feeds:

            def tap(name: str, frame: str | bytes, recv_ns: int, venue: str = feed.venue) -> None:
                self.frame(venue, name, frame, recv_ns)

            feed.tap = tap

    def attach_mt5(self, bridge: Mt5Bridge) -> None:
        def tick_tap(terminal: str, body: bytes, recv_ns: int) -> None:
            # An accepted body is valid UTF-8 JSON (the listener decoded it).
            self.frame("mt5", MT5_FEED_PREFIX + terminal, body.decode(), recv_ns)

        bridge.tap_ticks(tick_tap)

    def attach_events(self, events: EventLog) -> None:
        self._events = events
        events.subscribe(self.on_event)

    def on_order(self, order: Order) -> None:
        self._record("order", order_body(order))

    def on_fill(self, order: Order, fill: Fill) -> None:
        self._record("fill", fill_body(order, fill))

    def on_event(self, event: EngineEvent) -> None:
        self._record("event", event_body(event))
