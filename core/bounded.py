"""The one rule of a memory bounded by count and age (issue 19): an insertion-ordered map that
drops its oldest entries beyond `kept`, then those from before a horizon.

Every collection that must level off in a process running for weeks (the paper venue's
orders, the Binance stream's fill ids and final states, the EA simulator's session memory)
keeps its entries oldest first and calls this after each insertion. The age check looks at the
oldest entry only: an older entry behind a younger one waits for its turn (kept a little
longer, never dropped early).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def forget_oldest(memory: OrderedDict[K, V], kept: int, horizon: int, when: Callable[[V], int]) -> None:
    """Drop the oldest entries of `memory` beyond `kept`, then while the oldest is from before
    `horizon` (`when(value)` says when an entry is from)."""
    while len(memory) > kept:
        memory.popitem(last=False)
    while memory and when(next(iter(memory.values()))) < horizon:
        memory.popitem(last=False)


__all__ = ["forget_oldest"]
