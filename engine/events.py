"""Notable engine events: a bounded log for the views and a fan-out for the headless runner."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Level = Literal["info", "warn", "error"]
# Events kept for the views (the log pane shows the tail, the operator API the last ones);
# every event is also handed to the listeners as it happens (headless prints each line), and
# what they record (decisions, orders, fills, groups, risk events) is in the ledger.
EVENTS_KEPT = 500


@dataclass(slots=True, frozen=True)
class EngineEvent:
    """One line worth an operator's attention: an intent, a group state change, an error."""

    ts_ms: int
    kind: str
    text: str
    level: Level = "info"
    data: dict[str, object] = field(default_factory=dict)


Listener = Callable[[EngineEvent], None]


class EventLog:
    """Keeps the last `maxlen` events and passes each to the listeners as it happens."""

    def __init__(self, maxlen: int = EVENTS_KEPT) -> None:
        self._events: deque[EngineEvent] = deque(maxlen=maxlen)
        self._listeners: list[Listener] = []
        self.total = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: EngineEvent) -> None:
        self._events.append(event)
        self.total += 1
        for listener in self._listeners:
            listener(event)

    def recent(self, n: int | None = None) -> tuple[EngineEvent, ...]:
        if n is None or n >= len(self._events):
            return tuple(self._events)
        return tuple(list(self._events)[-n:])
