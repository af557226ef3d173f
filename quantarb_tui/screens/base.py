"""What the app's refresh timer needs from a screen: apply one snapshot."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.snapshot import RuntimeSnapshot


@runtime_checkable
class SnapshotView(Protocol):
    """A screen that shows engine state; the app hands it each snapshot it pulls."""

    def update_from(self, snap: RuntimeSnapshot) -> None: ...
