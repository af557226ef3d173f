"""A Textual driver that survives the terminal going away (a dropped SSH session).

When the terminal hangs up, the kernel sends SIGHUP, and every later write to the terminal
fails (EIO) and reads fail or see end-of-file. Textual's stock Linux driver then ends badly
before the app can stop the engine: its writer thread dies on the first failed write and the
app blocks for good on the thread's full queue, or its input thread dies on a failed read
and the app panics, skipping the engine's stop. This driver:

- writes through `_Output`: the first failed write points the terminal's streams at
  /dev/null, so the writer thread never dies and nothing later (the exit's own flush
  included) fails or blocks;
- then ends input (an input thread reading end-of-file would spin; one whose read fails on
  the hung-up terminal ends quietly instead of making the app panic) and asks the app to
  stop (`stop_from_outside`, as the SIGHUP handler does; asking twice is harmless).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import termios
from collections.abc import Callable
from typing import IO, Any, Protocol

from textual.drivers.linux_driver import LinuxDriver

__all__ = ["HangupSafeDriver", "terminal_hung_up"]


class _Stoppable(Protocol):
    def stop_from_outside(self) -> None: ...


def terminal_hung_up(fd: int) -> bool:
    """True when `fd` is a terminal that went away: its attributes can no longer be read (EIO).
    False for a live terminal and for anything that never was one."""
    try:
        termios.tcgetattr(fd)
    except termios.error as exc:
        return bool(exc.args) and exc.args[0] == errno.EIO  # ENOTTY: never a terminal at all
    except (OSError, ValueError):
        return False
    return False


def _to_devnull(fd: int) -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


class _Output:
    """The terminal stream for Textual's writer thread, minus the failures of a terminal that
    hung up: after the first failed write it goes to /dev/null and `on_gone` is called once."""

    def __init__(self, stream: IO[str], on_gone: Callable[[], None]) -> None:
        self._stream = stream
        self._on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self.drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.drop()

    def drop(self) -> None:
        """Nothing reaches the terminal from now on: this stream, and the standard streams that
        were the hung-up terminal, go to /dev/null (with whatever is still buffered)."""
        if self.gone:
            return
        self.gone = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            _to_devnull(self._stream.fileno())
        for fd in (0, 1, 2):
            if terminal_hung_up(fd):
                _to_devnull(fd)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
        self._on_gone()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return not self.gone and self._stream.isatty()


class HangupSafeDriver(LinuxDriver):
    """LinuxDriver whose output and input threads outlive a hung-up terminal (see the module)."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        stream = self._file if self._file is not None else sys.__stderr__
        assert stream is not None
        self.output = _Output(stream, self._terminal_gone)
        self._file = self.output  # type: ignore[assignment]  # only write/flush/fileno are used

    def run_input_thread(self) -> None:
        try:
            super().run_input_thread()
        except OSError:
            if not terminal_hung_up(self.fileno):
                raise  # anything else is Textual's to report
            self.output.drop()

    def _terminal_gone(self) -> None:
        """No more input (an input thread reading end-of-file would spin), and the app is asked
        to stop. Called once, from whichever thread noticed."""
        self.exit_event.set()
        app: _Stoppable = self._app  # type: ignore[assignment]
        with contextlib.suppress(RuntimeError):  # the loop is already closed: the app has ended
            self._loop.call_soon_threadsafe(app.stop_from_outside)
