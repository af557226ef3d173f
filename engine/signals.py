"""Stop signals owned by the application's own event loop (headless, record, the TUI).

SIGHUP is a stop signal like SIGTERM: it is what a process gets when its SSH session or
terminal goes away, and by default it kills at once, like SIGKILL (no groups settled, the
listener file left behind, the ledger not closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator

__all__ = ["STOP_SIGNALS", "on_signals", "stop_on_signals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def on_signals(callback: Callable[[], object], signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Call `callback` in the running loop on each of `signals` while the block runs, then give
    the signals back (a platform without them gets no handler)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set `stop` on SIGINT, SIGTERM or SIGHUP while the block runs, then give the signals back."""
    with on_signals(stop.set):
        yield
