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
    """Taps a runtime's parts into one FrameRecorder (the runtime calls `attach_*`)."""

    def __init__(self, recorder: FrameRecorder, clock: Clock) -> None:
        self.recorder = recorder
        self._clock = clock

    def attach_feeds(self, feeds: Sequence[WsFeed]) -> None:
        recorder = self.recorder
        for feed in feeds:

            def tap(name: str, frame: str | bytes, recv_ns: int, venue: str = feed.venue) -> None:
                recorder.write(venue, name, frame, recv_ns)

            feed.tap = tap

    def attach_mt5(self, bridge: Mt5Bridge) -> None:
        recorder = self.recorder

        def tick_tap(terminal: str, body: bytes, recv_ns: int) -> None:
            # An accepted body is valid UTF-8 JSON (the listener decoded it).
            recorder.write("mt5", MT5_FEED_PREFIX + terminal, body.decode(), recv_ns)

        bridge.tap_ticks(tick_tap)

    def attach_events(self, events: EventLog) -> None:
        events.subscribe(self.on_event)

    def on_order(self, order: Order) -> None:
        self.recorder.write_record("order", order_body(order), self._clock.monotonic_ns())

    def on_fill(self, order: Order, fill: Fill) -> None:
        self.recorder.write_record("fill", fill_body(order, fill), self._clock.monotonic_ns())

    def on_event(self, event: EngineEvent) -> None:
        self.recorder.write_record("event", event_body(event), self._clock.monotonic_ns())
