"""Alert receivers for tests: a real HTTP webhook on 127.0.0.1 that records what apprise's
`json://` sends, one that hangs until released, and a port where nothing listens."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Webhook:
    """Records every POST body (decoded JSON). `hang=True`: each request is held, unanswered,
    until `release()`; `started` counts requests that arrived (answered or not)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.started = 0
        self._cond = threading.Condition()
        self._released = threading.Event()
        if not hang:
            self._released.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with hook._cond:
                    hook.started += 1
                    hook._cond.notify_all()
                hook._released.wait(60)
                with hook._cond:
                    hook.messages.append(json.loads(body))
                    hook.paths.append(self.path)
                    hook._cond.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def release(self) -> None:
        self._released.set()

    def wait(self, n: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The first `n` messages; fails (never returns short) when fewer arrive in time."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} alert(s), got {len(self.messages)}: "
                                         f"{[m.get('title') for m in self.messages]}")
                self._cond.wait(left)
            return list(self.messages[:n])

    def wait_started(self, n: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.started < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} request(s) to arrive, got {self.started}")
                self._cond.wait(left)

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def webhook(*, hang: bool = False) -> Iterator[Webhook]:
    hook = Webhook(hang=hang)
    try:
        yield hook
    finally:
        hook.close()


@contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def wait_until(predicate: Any, what: str, timeout_s: float = 15.0) -> None:
    """Poll `predicate()` until true; fails naming `what` when it never is."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
