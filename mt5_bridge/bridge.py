"""The MT5 side of the listener, without HTTP: what each EA request does.

`Mt5Bridge` holds the signature verifier, the command queue, the symbols each terminal may
quote, the quote sink, and per terminal its health (ticks, rate, last contact) and its last
account report. `mt5_bridge.app` maps HTTP onto it; each handler here takes an
authenticated terminal and the raw body and returns `Reply(status, body)`.

Bad input changes nothing: a body is decoded and validated completely (every tick of a
batch) before the first quote reaches the sink or the first state changes. Rejected
requests are only counted (`rejected`), for metrics.

Ticks become `Quote`s with infinite sizes (an MT5 tick carries none, so sizing is capped by
notional), `venue_ts_ms = time_msc` and `recv_ns` from the clock's monotonic reading. The
sink is called synchronously, once per tick, as the feeds do.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from core.clock import Clock
from core.models import Quote, Side
from mt5_bridge import protocol
from mt5_bridge.auth import AuthError, SignatureVerifier
from mt5_bridge.lease import DEFAULT_LEASE_MS, INSTANCE_HEADER, InstanceLeases, valid_instance
from mt5_bridge.protocol import InvalidRequest, to_decimal
from mt5_bridge.queue import CommandQueue, FillConflict
from mt5_bridge.ratelog import RateLimitedLog

__all__ = [
    "AccountState",
    "HealthStatus",
    "Mt5Bridge",
    "Mt5TickReplay",
    "PositionState",
    "QuoteSink",
    "Reply",
    "TerminalHealth",
    "TickTap",
    "tick_quotes",
]

log = logging.getLogger(__name__)

QuoteSink = Callable[[Quote], object]
# (terminal, accepted `POST /mt5/tick` body, recv_ns): what `quantarb record` keeps of MT5.
TickTap = Callable[[str, bytes, int], None]
HealthStatus = Literal["ok", "degraded", "halted"]
_STATUSES: frozenset[str] = frozenset({"ok", "degraded", "halted"})
_RATE_WINDOW_S = 5
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status code and compact JSON body."""

    status: int
    body: bytes


_OK = Reply(200, protocol.encode(protocol.OkBody(ok=True)))
_DUPLICATE = Reply(200, protocol.encode(protocol.OkBody(ok=True, duplicate=True)))
_UNKNOWN_COMMAND = Reply(404, protocol.encode(protocol.ErrorBody(error="unknown command")))
_UNAVAILABLE = Reply(503, protocol.encode(protocol.ErrorBody(error="unavailable")))


def unauthorized(reason: str) -> Reply:
    return Reply(401, protocol.encode(protocol.UnauthorizedBody(error="unauthorized", reason=reason)))


@dataclass(frozen=True, slots=True)
class PositionState:
    """One open position with our magic, from the last account report."""

    ticket: int
    symbol: str
    side: Side
    volume: Decimal
    price_open: Decimal
    magic: int
    swap: Decimal = Decimal(0)  # POSITION_SWAP: accrued so far, signed as charged (0 from older EAs)


@dataclass(frozen=True, slots=True)
class AccountState:
    """The last account report of one terminal (positions filtered to our magic)."""

    balance: float
    equity: float
    margin_free: float
    positions: tuple[PositionState, ...]
    ts_ms: int
    recv_ns: int
    margin_mode: str | None = None  # hedging | netting | exchange; None: the EA did not say
    trade_allowed: bool | None = None  # AutoTrading and the EA's and account's permissions


@dataclass(frozen=True, slots=True)
class TerminalHealth:
    """A snapshot of one terminal's contact; 0 means never."""

    terminal: str
    last_tick_ns: int
    last_seen_ns: int
    ticks: int
    ticks_per_s: float
    account: AccountState | None


@dataclass(slots=True)
class _Terminal:
    symbols: frozenset[str]
    last_tick_ns: int = 0
    first_tick_ns: int = 0
    last_seen_ns: int = 0
    ticks: int = 0
    # [second, ticks received in that second] for the last seconds; the rate is computed on read.
    buckets: deque[list[int]] = field(default_factory=lambda: deque(maxlen=_RATE_WINDOW_S))
    account: AccountState | None = None

    def count(self, n: int, now_ns: int) -> None:
        second = now_ns // 1_000_000_000
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += n
        else:
            self.buckets.append([second, n])
        if not self.ticks:
            self.first_tick_ns = now_ns
        self.ticks += n
        self.last_tick_ns = now_ns

    def rate(self, now_ns: int) -> float:
        """Ticks per second over the last `_RATE_WINDOW_S` seconds (fewer right after the first)."""
        if not self.ticks:
            return 0.0
        first_second = now_ns // 1_000_000_000 - _RATE_WINDOW_S + 1
        total = sum(n for s, n in self.buckets if s >= first_second)
        start_ns = max(first_second * 1_000_000_000, self.first_tick_ns)
        span_s = max((now_ns - start_ns) / 1e9, 1.0)
        return total / span_s


def tick_quotes(batch: protocol.TickBatch, recv_ns: int) -> list[Quote]:
    """The quotes of a validated tick batch (live, and replayed from a recording)."""
    return [Quote("mt5", t.symbol, t.bid, t.ask, _INF, _INF, t.time_msc, recv_ns) for t in batch.ticks]


class Mt5TickReplay:
    """A recorded MT5 terminal's tick bodies as a replay's frame handler: decoded and checked
    as the listener does, then handed to `sink` as the listener would have."""

    def __init__(self, terminal: str, symbols: Iterable[str], sink: QuoteSink) -> None:
        self.terminal = terminal
        self._symbols = frozenset(symbols)
        self._sink = sink
        self.rejected = 0  # bodies the listener would have refused (422)

    def on_frame(self, frame: str | bytes, recv_ns: int) -> None:
        body = frame.encode() if isinstance(frame, str) else frame
        try:
            batch = protocol.decode_ticks(body, self._symbols, self.terminal)
        except InvalidRequest:
            self.rejected += 1
            return
        for quote in tick_quotes(batch, recv_ns):
            self._sink(quote)


class Mt5Bridge:
    """The EA-facing state and request handlers of every configured terminal.

    `symbols`: terminal id -> the symbols that terminal may send (ticks and fills on other
    symbols are refused). `magic`: account positions with another magic are not kept (None
    keeps all). `status`: the runtime's health for `/healthz` (`ok`, `degraded`, `halted`).
    `instance_lease_ms`: how long an EA instance that named itself (`X-QA-Instance`) keeps its
    terminal after its last tick, poll or account report (`mt5_bridge.lease`).
    """

    def __init__(
        self,
        *,
        verifier: SignatureVerifier,
        queue: CommandQueue,
        clock: Clock,
        symbols: Mapping[str, Iterable[str]],
        quote_sink: QuoteSink,
        magic: int | None = None,
        status: Callable[[], str] | None = None,
        instance_lease_ms: int = DEFAULT_LEASE_MS,
    ) -> None:
        self.verifier = verifier
        self.leases = InstanceLeases(clock, instance_lease_ms)
        self._lease_log = RateLimitedLog(log)
        self.queue = queue
        self._clock = clock
        self._sink = quote_sink
        self.magic = magic
        self._status = status
        self._terminals = {t: _Terminal(frozenset(symbols.get(t, ()))) for t in verifier.terminals}
        self.rejected: Counter[str] = Counter()
        self._tick_tap: TickTap | None = None

    def tap_ticks(self, tap: TickTap | None) -> None:
        """Hand every accepted tick body to `tap` as it arrives (recording); None stops it."""
        self._tick_tap = tap

    # ---------------------------------------------------------------------------- reads

    @property
    def terminals(self) -> tuple[str, ...]:
        return tuple(sorted(self._terminals))

    def symbols(self, terminal: str) -> frozenset[str]:
        t = self._terminals.get(terminal)
        return frozenset() if t is None else t.symbols

    def health(self, terminal: str) -> TerminalHealth:
        t = self._terminals[terminal]
        now = self._clock.monotonic_ns()
        return TerminalHealth(terminal, t.last_tick_ns, t.last_seen_ns, t.ticks, t.rate(now), t.account)

    def account(self, terminal: str) -> AccountState | None:
        t = self._terminals.get(terminal)
        return None if t is None else t.account

    def health_status(self) -> HealthStatus:
        """The runtime's status for `/healthz`; anything unexpected reads as `degraded`."""
        if self._status is None:
            return "ok"
        try:
            value = self._status()
        except Exception:
            log.exception("health status callable failed")
            return "degraded"
        if value == "ok":
            return "ok"
        if value == "halted":
            return "halted"
        return "degraded"

    # ---------------------------------------------------------------------------- requests

    def authenticate(
        self,
        *,
        terminal: str | None,
        timestamp: str | None,
        signature: str | None,
        method: str,
        target: bytes,
        body: bytes,
    ) -> str:
        """The authenticated terminal id, or `AuthError` (counted under `auth_<reason>`)."""
        try:
            found = self.verifier.verify(
                terminal=terminal, timestamp=timestamp, signature=signature, method=method,
                target=target, body=body,
            )
        except AuthError as exc:
            self.rejected[f"auth_{exc.reason}"] += 1
            raise
        state = self._terminals.get(found)
        if state is not None:
            state.last_seen_ns = self._clock.monotonic_ns()
        return found

    def claim(self, terminal: str, instance: str | None) -> Reply | None:
        """Take or renew the terminal's lease for an EA instance (tick, poll, account).

        None to go on; 409 when another instance holds the terminal (logged, counted), 422 for
        a malformed instance id. A request without the header is outside the lease."""
        if instance is None:
            return None
        if not valid_instance(instance):
            return self._invalid(InvalidRequest([protocol.FieldError(
                f"header {INSTANCE_HEADER}", "must be 1 to 64 characters of [A-Za-z0-9_-]")]))
        refusal, previous = self.leases.claim(terminal, instance)
        if refusal is not None:
            self.rejected["instance_conflict"] += 1
            self._lease_log.warning(
                f"conflict:{terminal}",
                "mt5 %s: refused EA instance %s: instance %s holds the terminal (for %d ms more unless it "
                "speaks); two EAs with one terminal id would both execute every command",
                terminal, instance, refusal.holder, refusal.remaining_ms)
            reason = (f"terminal {terminal} is held by EA instance {refusal.holder} for up to "
                      f"{refusal.remaining_ms} ms more")
            return Reply(409, protocol.encode(protocol.ConflictBody(error="instance conflict", reason=reason)))
        if previous:
            log.warning("mt5 %s: EA instance %s now holds the terminal (instance %s was silent for %d ms)",
                        terminal, instance, previous, self.leases.lease_ms)
        elif previous == "":
            log.info("mt5 %s: EA instance %s holds the terminal", terminal, instance)
        return None

    async def tick(self, terminal: str, body: bytes) -> Reply:
        """`POST /mt5/tick`: quotes to the sink, pending commands back."""
        state = self._terminals[terminal]
        try:
            batch = protocol.decode_ticks(body, state.symbols, terminal)
        except InvalidRequest as exc:
            return self._invalid(exc)
        if batch.ticks:
            recv_ns = self._clock.monotonic_ns()
            if self._tick_tap is not None:
                self._tick_tap(terminal, body, recv_ns)
            sink = self._sink
            for quote in tick_quotes(batch, recv_ns):
                try:
                    sink(quote)
                except Exception:
                    log.exception("mt5 %s: quote sink failed on %s", terminal, quote.symbol)
            state.count(len(batch.ticks), recv_ns)
        return await self._serve(terminal, 0)

    async def commands(self, terminal: str, wait_ms_raw: str | None) -> Reply:
        """`GET /mt5/commands?wait_ms=N`: pending commands, waiting up to N ms (<= 1000) for one."""
        try:
            wait_ms = protocol.parse_wait_ms(wait_ms_raw)
        except InvalidRequest as exc:
            return self._invalid(exc)
        return await self._serve(terminal, wait_ms)

    async def ack(self, terminal: str, body: bytes) -> Reply:
        """`POST /mt5/ack`: 200 (also for a repeated or late ack), 404 for an unknown command."""
        try:
            ack = protocol.decode_ack(body)
        except InvalidRequest as exc:
            return self._invalid(exc)
        try:
            # From the store when the queue has forgotten it (finished long ago, or before a
            # restart): a late ack on a finished command is found, not "unknown".
            before = await self.queue.lookup(ack.command_id)
        except Exception:
            log.exception("mt5 %s: lookup of %s failed", terminal, ack.command_id)
            return _UNAVAILABLE
        version = self.queue.version(ack.command_id)
        try:
            known = await self.queue.ack(terminal, ack.command_id, ack.status, ack.retcode, ack.reason)
        except Exception:
            log.exception("mt5 %s: ack of %s failed", terminal, ack.command_id)
            return _UNAVAILABLE
        if not known:
            self.rejected["unknown_command"] += 1
            return _UNKNOWN_COMMAND
        # A duplicate: an ack on a finished command that changed nothing (one that resolves an
        # expired command's unknown outcome does change it).
        changed = self.queue.version(ack.command_id) != version
        return _DUPLICATE if before is not None and not before.is_open and not changed else _OK

    async def fill(self, terminal: str, body: bytes) -> Reply:
        """`POST /mt5/fill`: 200 (a repeated deal too, marked duplicate), 404 for an unknown
        command, 422 for a fill that contradicts its command (symbol, side, deal)."""
        state = self._terminals[terminal]
        try:
            report = protocol.decode_fill(body, state.symbols, terminal)
        except InvalidRequest as exc:
            return self._invalid(exc)
        try:
            cmd = await self.queue.lookup(report.command_id)
        except Exception:
            log.exception("mt5 %s: lookup of %s failed", terminal, report.command_id)
            return _UNAVAILABLE
        if cmd is None or cmd.terminal != terminal:
            self.rejected["unknown_command"] += 1
            return _UNKNOWN_COMMAND
        errors: list[protocol.FieldError] = []
        if report.symbol != cmd.symbol:
            errors.append(protocol.FieldError("symbol", f"command {cmd.command_id} is for {cmd.symbol}"))
        if report.side != cmd.side:
            errors.append(protocol.FieldError("side", f"command {cmd.command_id} is a {cmd.side}"))
        if errors:
            return self._invalid(InvalidRequest(errors))
        duplicate = self.queue.has_deal(terminal, report.deal)
        try:
            known = await self.queue.fill(terminal, report.command_id, report.to_command_fill())
        except FillConflict as exc:
            return self._invalid(InvalidRequest([protocol.FieldError(exc.field, exc.reason)]))
        except Exception:
            log.exception("mt5 %s: fill %d of %s failed", terminal, report.deal, report.command_id)
            return _UNAVAILABLE
        if not known:
            self.rejected["unknown_command"] += 1
            return _UNKNOWN_COMMAND
        return _DUPLICATE if duplicate else _OK

    async def account_report(self, terminal: str, body: bytes) -> Reply:
        """`POST /mt5/account`: replaces the terminal's account state."""
        try:
            report = protocol.decode_account(body)
        except InvalidRequest as exc:
            return self._invalid(exc)
        positions = tuple(
            PositionState(p.ticket, p.symbol, p.type, to_decimal(p.volume), to_decimal(p.price_open), p.magic,
                          to_decimal(p.swap))
            for p in report.positions
            if self.magic is None or p.magic == self.magic
        )
        self._terminals[terminal].account = AccountState(
            balance=report.balance,
            equity=report.equity,
            margin_free=report.margin_free,
            positions=positions,
            ts_ms=self._clock.time_ms(),
            recv_ns=self._clock.monotonic_ns(),
            margin_mode=report.margin_mode,
            trade_allowed=report.trade_allowed,
        )
        return _OK

    # ---------------------------------------------------------------------------- internals

    async def _serve(self, terminal: str, wait_ms: int) -> Reply:
        queue = self.queue
        try:
            await queue.expire(self._clock.time_ms())
            cmds = await queue.wait_pending(terminal, wait_ms) if wait_ms else queue.pending(terminal)
            if queue.has_unsaved:
                await queue.flush()
        except Exception:
            log.exception("mt5 %s: serving commands failed", terminal)
            return _UNAVAILABLE
        return Reply(200, protocol.encode_commands(cmds))

    def _invalid(self, exc: InvalidRequest) -> Reply:
        self.rejected["invalid"] += 1
        return Reply(422, exc.body())
