"""SIGHUP and SIGTERM stop the engine and exit the TUI, like a confirmed quit (no question:
the terminal may be gone). The handlers belong to the app's loop while it runs and are given
back when it ends. A pty test of the real process is in tests/integration/test_hangup.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from engine.control import EngineReader, OperatorControl
from engine.runtime import Runtime
from quantarb_tui.app import QuantArbApp
from tests.waiting import until as _until

WAIT_S = 10.0


class RecordingEngine:
    """The demo runtime's view and control; start opens the ledger (optionally waiting for a
    release), stop records that it ran and closes the ledger."""

    def __init__(self, runtime: Runtime, *, hold_start: bool = False) -> None:
        self.runtime = runtime
        self.view: EngineReader = runtime.view
        self.control: OperatorControl = runtime.control
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not hold_start:
            self.release.set()
        self.stops: list[str] = []

    async def start(self) -> None:
        self.started.set()
        await self.release.wait()
        await self.runtime.open_ledger()

    async def stop(self) -> None:
        self.stops.append("ledger open" if self.runtime.ledger is not None else "no ledger")
        await self.runtime.close_ledger()


@pytest.fixture
def stray_signals() -> Iterator[list[int]]:
    """A Python-level handler for SIGHUP and SIGTERM while the test runs: if the app failed to
    install its own, a signal sent here is recorded (and fails the test) instead of killing pytest."""
    seen: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    before = {sig: signal.signal(sig, record) for sig in (signal.SIGHUP, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
async def test_a_stop_signal_stops_the_engine_and_exits_0(
    demo_runtime: Runtime, stray_signals: list[int], sig: signal.Signals
) -> None:
    engine = RecordingEngine(demo_runtime)
    app = QuantArbApp(engine, refresh_hz=None)
    async with app.run_test() as pilot:
        await _until(lambda: demo_runtime.ledger is not None, "started engine")
        await demo_runtime.driver.drive(200)  # some groups: the stop must settle them
        os.kill(os.getpid(), sig)
        await _until(lambda: engine.stops, "engine stop")
        await pilot.pause()
    assert stray_signals == [], "the app had no handler: the signal reached the test's guard"
    assert engine.stops == ["ledger open"]
    assert demo_runtime.ledger is None
    assert app.return_code == 0
    assert signal.getsignal(sig) == signal.SIG_DFL  # given back when the app ended


async def test_a_stop_signal_during_start_up_stops_once_the_start_returns(
    demo_runtime: Runtime, stray_signals: list[int]
) -> None:
    engine = RecordingEngine(demo_runtime, hold_start=True)
    app = QuantArbApp(engine, refresh_hz=None)
    async with app.run_test() as pilot:
        await _until(engine.started.is_set, "start")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: app.stop_requested, "stop request")
        assert engine.stops == []  # not while start() is still running
        engine.release.set()
        await _until(lambda: engine.stops, "engine stop")
        await pilot.pause()
    assert stray_signals == []
    assert engine.stops == ["ledger open"]
    assert app.return_code == 0


async def test_without_stop_signals_the_app_installs_nothing(
    demo_runtime: Runtime, stray_signals: list[int]
) -> None:
    engine = RecordingEngine(demo_runtime)
    app = QuantArbApp(engine, refresh_hz=None, stop_signals=False)
    async with app.run_test() as pilot:
        await _until(lambda: demo_runtime.ledger is not None, "started engine")
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: stray_signals, "the guard's record")
        await pilot.pause()
        assert engine.stops == [] and app.is_running
        await app.action_quit()
    await demo_runtime.close_ledger()
