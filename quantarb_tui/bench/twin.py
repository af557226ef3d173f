"""A measurement run in a forked twin process, alongside this one (`bench soak`'s traced run).

tracemalloc is what names the lines a heap grows by, but it is not free: every block Python
allocates gets a trace entry from glibc's malloc, in the main heap, between the program's own
blocks, so tracing fragments the very heap whose RSS is being judged. Measured on the demo,
same code and machine, back to back (docs/performance.md, session 8): glibc's main heap grew
+5.35 MB/h traced and +0.07 untraced after the warm-up, RSS 5.41 against 2.75, and tracing
took over twice the CPU. So the soak judges RSS in a process that does not trace, and a twin
forked before either starts runs the same soak traced, for the lines and the heap's growth.

Forked, not spawned: the twin inherits what the parent was given (a leak planted for a test,
the allocator's settings), and needs no import path or pickling. It forks before the parent
starts an event loop, a thread or the engine; its answer is one JSON document on a pipe. Where
there is no fork (not POSIX) there is no twin, and the report says so. Its temporary files
(its ledger, its heap snapshots) go under a directory the parent made and removes once the twin
has ended, however it ended; its stdout is /dev/null (the parent's may be the report, `--json`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any

from sim.world_cli import death_signal

Result = dict[str, Any]
CANCEL_GRACE_S = 5.0  # a twin asked to stop is killed after this long


class TwinFailed(RuntimeError):
    """The twin died, or answered with something that is not its result."""


class Twin:
    """`run()` in a forked process; `result()` waits for its JSON answer, `cancel()` ends it."""

    def __init__(self, pid: int, fd: int, scratch: str) -> None:
        self._pid = pid
        self._fd = fd
        self._scratch = scratch  # the twin's temporary directory, removed once it has ended
        self._done = False

    @property
    def scratch(self) -> str:
        return self._scratch

    @classmethod
    def start(cls, run: Callable[[], Result]) -> Twin | None:
        """Fork and run `run` in the child; None where the platform cannot fork."""
        if not hasattr(os, "fork"):
            return None
        scratch = tempfile.mkdtemp(prefix="quantarb-twin-")
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        die_with_parent = death_signal(signal.SIGKILL)  # however the parent dies (a test's timeout)
        pid = os.fork()
        if pid == 0:  # the twin: answer on the pipe, then leave without the parent's atexit work
            os.close(read_fd)
            if die_with_parent is not None:
                die_with_parent()
            if os.getppid() != parent:  # the parent died before the call above took effect
                os._exit(1)
            tempfile.tempdir = scratch
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.close(devnull)
            code = 0
            try:
                payload = json.dumps({"result": run()}, default=str)
            except BaseException as exc:  # whatever it was (an interrupt too), the parent is told
                payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
            try:
                with os.fdopen(write_fd, "w", encoding="utf-8") as out:
                    out.write(payload)
            finally:
                os._exit(code)
        os.close(write_fd)
        return cls(pid, read_fd, scratch)

    def result(self, timeout_s: float) -> Result:
        """The twin's result; TwinFailed when it raised, died, wrote something else, or has not
        answered within `timeout_s` (then it is ended: a twin that hangs must not hang the bench)."""
        deadline = time.monotonic() + timeout_s
        chunks: list[bytes] = []
        while True:  # until the twin closes its end (or dies)
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if not ready:
                self.cancel()
                raise TwinFailed(f"the traced twin did not answer within {timeout_s:.0f} s: ended")
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._fd)
        _, status = os.waitpid(self._pid, 0)
        self._done = True
        shutil.rmtree(self._scratch, ignore_errors=True)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        try:
            doc = json.loads(text)
        except ValueError:
            raise TwinFailed(f"the traced twin ended ({_status(status)}) without an answer") from None
        if not isinstance(doc, dict):
            raise TwinFailed("the traced twin's answer is not an object")
        if "error" in doc:
            raise TwinFailed(f"the traced twin failed: {doc['error']}")
        result = doc.get("result")
        if not isinstance(result, dict):
            raise TwinFailed("the traced twin's answer has no result")
        return result

    def cancel(self) -> None:
        """End the twin (the parent's own run failed or was interrupted): SIGTERM, then SIGKILL
        after `CANCEL_GRACE_S`, and reaped: no orphan or zombie left."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while os.waitpid(self._pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):  # result() may have closed it before an interrupt
            os.close(self._fd)
        shutil.rmtree(self._scratch, ignore_errors=True)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


__all__ = ["Result", "Twin", "TwinFailed"]
