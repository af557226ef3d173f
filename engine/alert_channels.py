"""Alert channels: one apprise URL each, sent from its own thread through a bounded queue.

apprise's `notify` blocks (HTTP, SMTP) for up to its connect and read timeouts, and its
`async_notify` only moves that into a shared, unbounded thread pool. A channel that is down or
hangs must never hold up the event loop, the quote path or another channel, so each channel
has a daemon thread and a bounded queue: `offer` never blocks (a full queue drops the message
and counts it), a message that fails is counted with its reason, and nothing is ever raised
to the caller. Nothing is retried: the next alert is the retry.

The URL is a secret (apprise URLs carry bot tokens, webhook keys, SMTP passwords): it is
shown only as `core.alert_policy.channel_label` gives it, apprise's own log lines are kept
out of the process's logs, and a failure reason is scrubbed of every piece of the URL before
anyone sees it.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from core.alert_policy import channel_label

__all__ = ["Channel", "ChannelError", "Message", "Severity"]

Severity = Literal["critical", "warning", "info"]
MAX_REASON_CHARS = 200
_MIN_SECRET_CHARS = 3  # URL pieces shorter than this are not scrubbed (they would eat words)


@dataclass(slots=True, frozen=True)
class Message:
    title: str
    body: str
    severity: Severity


class ChannelError(ValueError):
    """A URL apprise cannot use; the message names it by its label only."""


ResultListener = Callable[["Channel", bool, str], None]


class Channel:
    """One apprise URL, its thread and its queue. `index` is the URL's place in `alerts.urls`."""

    def __init__(self, index: int, url: str, *, timeout_s: float, queue_size: int,
                 on_result: ResultListener | None = None) -> None:
        self.index = index
        self.label = f"urls[{index}] {channel_label(url)}"
        self._secrets = _secret_pieces(url)
        self._plugin = _instantiate(url, timeout_s)
        if self._plugin is None:
            raise ChannelError(f"alerts.urls[{index}]: {channel_label(url)}: not a URL apprise can send to "
                               "(unknown scheme, or a required part missing); the value is not shown")
        self._queue_size = queue_size
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._on_result = on_result
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error = ""
        self.ok: bool | None = None  # the last attempt's outcome (None: none yet)
        self._waiting = 0
        self._sending = 0

    # -- from the event loop: never blocks -----------------------------------------------
    def offer(self, message: Message) -> bool:
        """Queue `message` for the thread; False (and counted) when the queue is full."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"alerts-{self.index}", daemon=True)
                self._thread.start()
        with self._lock:
            if self._waiting >= self._queue_size:
                self.dropped += 1
                return False
            self._waiting += 1
        self._queue.put_nowait(message)
        return True

    @property
    def pending(self) -> int:
        """Messages not sent yet: waiting, and the one being sent."""
        return self._waiting + self._sending

    def close(self) -> None:
        """The thread ends once what is queued has been tried."""
        if self._thread is not None:
            self._queue.put_nowait(None)

    def join(self, timeout_s: float) -> bool:
        """Wait (blocking: call it from a worker thread) for the thread to end; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- the channel's thread (and `quantarb alerts test`) -----------------------------------
    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            with self._lock:
                self._waiting -= 1
                self._sending = 1
            try:
                ok, reason = self.send(message)
            finally:
                self._sending = 0
            if self._on_result is not None:
                try:
                    self._on_result(self, ok, reason)
                except Exception:  # a listener's fault must not end the channel
                    logging.getLogger(__name__).exception("alert result listener failed")

    def send(self, message: Message) -> tuple[bool, str]:
        """Send now, blocking for up to the timeouts; (ok, why not). Never raises."""
        plugin = self._plugin
        assert plugin is not None
        with _CAPTURE.capturing() as lines:
            try:
                ok = bool(plugin.notify(body=message.body, title=message.title,
                                        notify_type=_NOTIFY_TYPES[message.severity]))
                error = ""
            except Exception as exc:  # a plugin bug: the engine goes on
                ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.sent += 1
            self.ok, self.last_error = True, ""
            return True, ""
        reason = self.scrub(error or (lines[-1] if lines else "") or "the service did not accept the message")
        self.failed += 1
        self.ok, self.last_error = False, reason
        return False, reason

    def scrub(self, text: str) -> str:
        """`text` with every piece of this channel's URL (user, password, host of a token
        scheme, path segments, query values) replaced by `***`, on one line, shortened."""
        for piece in self._secrets:
            text = text.replace(piece, "***")
        text = " ".join(text.split())
        return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


# --------------------------------------------------------------------------------------------
# apprise, imported only when a channel is made (it loads ~100 plugins)

_NOTIFY_TYPES: dict[Severity, Any] = {}


def _instantiate(url: str, timeout_s: float) -> Any:
    import apprise

    if not _NOTIFY_TYPES:
        _NOTIFY_TYPES["critical"] = apprise.NotifyType.FAILURE
        _NOTIFY_TYPES["warning"] = apprise.NotifyType.WARNING
        _NOTIFY_TYPES["info"] = apprise.NotifyType.INFO
    _CAPTURE.install(apprise.LOGGER_NAME)
    asset = apprise.AppriseAsset(storage_mode="memory")  # no cache files anywhere
    plugin = apprise.Apprise.instantiate(url, asset=asset)
    if plugin is None:
        return None
    # One message must not hold its thread longer than this (HTTP and SMTP plugins read these).
    plugin.socket_connect_timeout = timeout_s
    plugin.socket_read_timeout = timeout_s
    return plugin


def _secret_pieces(url: str) -> tuple[str, ...]:
    """The parts of an apprise URL that may be (or contain) a secret, longest first."""
    pieces: set[str] = set()
    try:
        parts = urlsplit(url)
        candidates = [parts.username, parts.password, parts.netloc, parts.hostname,
                      *parts.path.split("/"), *re.split(r"[&=]", parts.query), parts.fragment]
    except ValueError:  # an unparsable port, say: scrub the whole remainder
        candidates = [url.split("://", 1)[-1]]
    if channel_label(url).endswith("/***"):  # a webhook: its host may be shown
        host = urlsplit(url).hostname or ""
        candidates = [c for c in candidates if c not in (host, None)]
    for piece in candidates:
        if piece and len(piece) >= _MIN_SECRET_CHARS:
            pieces.add(piece)
            pieces.add(unquote(piece))
    return tuple(sorted(pieces, key=len, reverse=True))


class _ThreadCapture(logging.Handler):
    """apprise's log lines, kept per thread while that thread sends (a failure's reason), and
    never passed on: they can quote the URL, token included."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._lines: dict[int, list[str]] = {}
        self._installed = False
        self._install_lock = threading.Lock()

    def install(self, logger_name: str) -> None:
        with self._install_lock:
            if self._installed:
                return
            logger = logging.getLogger(logger_name)
            logger.addHandler(self)
            logger.setLevel(logging.WARNING)
            logger.propagate = False  # nothing of it reaches the root logger (or stderr)
            self._installed = True

    def emit(self, record: logging.LogRecord) -> None:
        lines = self._lines.get(threading.get_ident())
        if lines is not None:
            try:
                lines.append(record.getMessage())
            except Exception:  # a malformed record: no reason rather than no alert
                lines.append("(unreadable log record)")

    def capturing(self) -> _Capturing:
        return _Capturing(self._lines)


class _Capturing:
    def __init__(self, lines: dict[int, list[str]]) -> None:
        self._lines = lines

    def __enter__(self) -> list[str]:
        captured: list[str] = []
        self._lines[threading.get_ident()] = captured
        return captured

    def __exit__(self, *exc: object) -> None:
        self._lines.pop(threading.get_ident(), None)


_CAPTURE = _ThreadCapture()
