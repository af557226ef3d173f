"""The EA simulator: a client that speaks the MT5 protocol (docs/mt5-protocol.md) as the Expert Advisor does.

It is written from the protocol contract alone; it shares no code with `mt5_bridge` (the
server side), so that a test of the bridge against it is a real check. It behaves like
`mql5/QuantArbBridge.mq5`, one timer event at a time:

1. retry the reports (acks and fills) that could not be delivered yet (no answer, 401, 408,
   429 or 5xx), oldest first, each with the same body and a fresh signature;
2. batch the ticks of its symbols that changed since they were last sent into one signed
   `POST /mt5/tick` and take the commands that come back; with nothing to send, poll
   `GET /mt5/commands?wait_ms=0` (the real EA never long-polls: `WebRequest` blocks);
3. handle each command, in order:
   - already handled in this session: report its ack (and fills) again, never execute;
   - a deal in the broker's history carries the command id in its comment (the EA crashed or
     was restarted after executing): report ack and fills again, never execute;
   - `expires_msc` has passed: ack `expired`;
   - otherwise execute it through the `SimBroker` after the configured latency (`open`: a
     market deal; `close`: the opposite deal with `position=<ticket>`) and ack
     `accepted`/`rejected` with the retcode, then report one fill per deal;
   - a transient failure (10031 CONNECTION, 10024 TOO_MANY_REQUESTS, 10012 TIMEOUT) is not
     acknowledged: the command is delivered again and retried, until it expires;
4. every `account_every_s`, `POST /mt5/account` with the balance, equity, free margin and the
   open positions: all of them, as docs/mt5-protocol.md asks (quantarb keeps its magic's), or
   only those carrying the EA's magic with `report_all_positions=False`.

On start it also re-reports the fills of its recent deals (fills are idempotent server-side),
so that a fill lost between an ack and a crash is delivered after the restart.

The tick source is any callable returning the current ticks: `TickBoard` collects them from
`SimWorld(on_mt5_tick=board.on_tick)` for the demo; `MarketTickSource` owns its own
`SyntheticMarket` for `quantarb mt5 sim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from core.clock import Clock
from core.config import demo_config
from core.instruments import Pair
from sim.epoch_market import ElapsedPacer, EpochMarket, EpochPacer, MarketPacer, world_pairs
from sim.market import SimTick, SyntheticMarket
from sim.mt5_broker import (
    COMMENT_MAX,
    TRADE_RETCODE_CONNECTION,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_DONE_PARTIAL,
    TRADE_RETCODE_INVALID,
    TRADE_RETCODE_TIMEOUT,
    TRADE_RETCODE_TOO_MANY_REQUESTS,
    Deal,
    SimBroker,
    SymbolSpec,
    TradeRequest,
    spec_from_instrument,
)

log = logging.getLogger(__name__)

HEADER_TERMINAL = "X-QA-Terminal"
HEADER_TIMESTAMP = "X-QA-Timestamp"
HEADER_SIGNATURE = "X-QA-Signature"

# Retcodes after which nothing executed and a retry may succeed: not acknowledged, retried on
# redelivery until the command expires. (After TIMEOUT the deal history is checked first.)
TRANSIENT_RETCODES: frozenset[int] = frozenset(
    {TRADE_RETCODE_CONNECTION, TRADE_RETCODE_TOO_MANY_REQUESTS, TRADE_RETCODE_TIMEOUT}
)
# Report answers worth a retry with the same body (freshly signed), besides 5xx and no answer:
# 401 is a clock or replay refusal (the body was never looked at), 408 and 429 are transient.
_RETRY_STATUS: frozenset[int] = frozenset({401, 408, 429})


class Mt5Tick(NamedTuple):
    """One tick as the EA reads it with `SymbolInfoTick` (time in unix ms)."""

    symbol: str
    bid: float
    ask: float
    time_msc: int


TickSource = Callable[[], Iterable[Mt5Tick]]


# ---------------------------------------------- signing (docs/mt5-protocol.md, Authentication)


def signing_string(timestamp: str, method: str, path_with_query: str, body: bytes) -> bytes:
    """`timestamp + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + body`, as UTF-8 bytes."""
    return f"{timestamp}\n{method.upper()}\n{path_with_query}\n".encode() + body


def sign_request(secret: bytes, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the signing string with the terminal's secret."""
    return hmac.new(secret, signing_string(timestamp, method, path_with_query, body), hashlib.sha256).hexdigest()


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- tick sources


class TickBoard:
    """The latest MT5 ticks of a `SimWorld`: pass `on_tick` as its `on_mt5_tick` callback.

    Calling the board returns the current tick of every symbol seen (or of `symbols`), which
    is what an EA reads with `SymbolInfoTick`; `touch` prices a `SimBroker`.
    """

    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self._symbols = None if symbols is None else frozenset(symbols)
        self._latest: dict[str, Mt5Tick] = {}

    def on_tick(self, tick: SimTick) -> None:
        if tick.venue != "mt5" or (self._symbols is not None and tick.symbol not in self._symbols):
            return
        self._latest[tick.symbol] = Mt5Tick(tick.symbol, tick.bid, tick.ask, tick.ts_ms)

    def __call__(self) -> list[Mt5Tick]:
        return list(self._latest.values())

    def touch(self, symbol: str) -> tuple[float, float] | None:
        tick = self._latest.get(symbol)
        return None if tick is None else (tick.bid, tick.ask)


class MarketTickSource:
    """MT5 ticks from a `SyntheticMarket` of its own, stepped by the clock on every call.

    For `quantarb mt5 sim`, where no `SimWorld` runs: the pairs default to the demo's, and only
    their MT5 instruments (or `symbols`) are quoted. With `epoch_ms` the market is the one a
    rehearsal world's processes share (`sim.epoch_market`: the demo's pairs on a wall-clock grid),
    so the terminal quotes what the simulated exchanges quote at the same moment.
    """

    def __init__(
        self,
        pairs: Sequence[Pair] | None = None,
        *,
        seed: int,
        clock: Clock,
        symbols: Iterable[str] | None = None,
        tick_ms: float = 50.0,
        dislocation_every_s: float = 3.0,
        epoch_ms: int | None = None,
    ) -> None:
        if epoch_ms is not None and pairs is not None:
            raise ValueError("a shared market (epoch_ms) prices the world's pairs, not given ones")
        if epoch_ms is not None:
            self._pairs = world_pairs()
        else:
            self._pairs = tuple(pairs) if pairs is not None else demo_config().build_pairs()
        mt5 = [i for p in self._pairs for i in p.instruments if i.venue == "mt5"]
        wanted = None if symbols is None else set(symbols)
        self._instruments = {i.symbol: i for i in mt5 if wanted is None or i.symbol in wanted}
        if wanted is not None and (missing := wanted - set(self._instruments)):
            raise ValueError(f"no MT5 instrument for {sorted(missing)}")
        self._clock = clock
        self._pacer: MarketPacer
        if epoch_ms is None:
            self._pacer = ElapsedPacer(SyntheticMarket(
                self._pairs, seed=seed, tick_ms=tick_ms, dislocation_every_s=dislocation_every_s,
                start_ms=clock.time_ms(),
            ), clock)
        else:
            self._pacer = EpochPacer(EpochMarket(
                self._pairs, seed=seed, epoch_ms=epoch_ms, tick_ms=tick_ms, dislocation_every_s=dislocation_every_s,
            ), clock)
        self._latest: dict[str, Mt5Tick] = {}
        self._store(self._pacer.snapshot())

    @property
    def symbols(self) -> list[str]:
        return list(self._instruments)

    def specs(self) -> dict[str, SymbolSpec]:
        """Broker symbol properties from the instruments (contract size = base units per lot)."""
        return {s: spec_from_instrument(i) for s, i in self._instruments.items()}

    def advance(self) -> None:
        self._store(self._pacer.due())

    def __call__(self) -> list[Mt5Tick]:
        self.advance()
        return list(self._latest.values())

    def touch(self, symbol: str) -> tuple[float, float] | None:
        tick = self._latest.get(symbol)
        return None if tick is None else (tick.bid, tick.ask)

    def _store(self, ticks: Iterable[SimTick]) -> None:
        for t in ticks:
            if t.venue == "mt5" and t.symbol in self._instruments:
                self._latest[t.symbol] = Mt5Tick(t.symbol, t.bid, t.ask, t.ts_ms)


# ---------------------------------------------------------------- the EA simulator


class _BadCommand(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class _Command:
    id: str
    kind: str
    symbol: str
    side: str
    volume: float
    price: float
    deviation_points: int
    filling: str
    magic: int
    position: int
    expires_msc: int


def _parse_command(raw: dict[str, Any]) -> _Command:
    def text(name: str, default: str | None = None) -> str:
        value = raw.get(name, default)
        if not isinstance(value, str):
            raise _BadCommand(f"{name} must be a string")
        return value

    def number(name: str, default: float | None = None) -> float:
        value = raw.get(name, default)
        if isinstance(value, bool) or value is None:
            raise _BadCommand(f"{name} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _BadCommand(f"{name} must be a number") from None

    def integer(name: str, default: int | None = None) -> int:
        value = number(name, default)
        if value != int(value):
            raise _BadCommand(f"{name} must be an integer")
        return int(value)

    kind = text("kind")
    if kind not in ("open", "close"):
        raise _BadCommand("kind must be open or close")
    side = text("side")
    if side not in ("buy", "sell"):
        raise _BadCommand("side must be buy or sell")
    filling = text("filling", "IOC").upper()
    if filling not in ("FOK", "IOC", "RETURN"):
        raise _BadCommand("filling must be FOK, IOC or RETURN")
    cmd = _Command(
        id=text("id"),
        kind=kind,
        symbol=text("symbol"),
        side=side,
        volume=number("volume"),
        price=number("price", 0.0),
        deviation_points=integer("deviation_points", 0),
        filling=filling,
        magic=integer("magic", 0),
        position=integer("position", 0),
        expires_msc=integer("expires_msc", 0),
    )
    if not cmd.symbol:
        raise _BadCommand("symbol is empty")
    if cmd.kind == "close" and cmd.position <= 0:
        raise _BadCommand("close needs a position ticket")
    if cmd.kind == "open" and cmd.volume <= 0:
        raise _BadCommand("volume must be > 0")
    return cmd


class EaSimulator:
    """A simulated QuantArbBridge EA posting to the MT5 listener over real HTTP.

    `secret` is the terminal's shared secret; `tick_source` returns the current ticks (only
    those of `symbols` are sent); `broker` is the account it trades, which outlives this object
    (restart the EA by building a new simulator on the same broker). `fill_latency_ms` is the
    (min, max) execution latency drawn per command from the seeded RNG. `transport` is for
    tests (an httpx transport instead of the network).
    """

    def __init__(
        self,
        base_url: str,
        terminal: str,
        secret: bytes,
        symbols: Iterable[str],
        broker: SimBroker,
        tick_source: TickSource,
        clock: Clock,
        *,
        timer_ms: float = 50,
        account_every_s: float = 2.0,
        fill_latency_ms: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
        magic: int = 7701,
        http_timeout_s: float = 2.0,
        history_lookback_ms: int = 7 * 86_400_000,
        resync_fills_ms: int = 600_000,
        report_all_positions: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if timer_ms <= 0 or account_every_s <= 0:
            raise ValueError("timer_ms and account_every_s must be > 0")
        lo, hi = fill_latency_ms
        if lo < 0 or hi < lo:
            raise ValueError("fill_latency_ms must be (min, max) with 0 <= min <= max")
        if isinstance(secret, str):
            secret = secret.encode()
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self.terminal = terminal
        self._secret = bytes(secret)
        self.symbols = tuple(dict.fromkeys(symbols))
        self._symbol_set = frozenset(self.symbols)
        self.broker = broker
        self._tick_source = tick_source
        self._clock = clock
        self.timer_s = timer_ms / 1000.0
        self.account_every_s = account_every_s
        self.fill_latency_ms = (float(lo), float(hi))
        self.magic = magic
        self._http_timeout_s = http_timeout_s
        self._lookback_ms = history_lookback_ms
        self._resync_fills_ms = resync_fills_ms
        self.report_all_positions = report_all_positions
        self._transport = transport
        self._rng = random.Random(seed)
        self._client: httpx.AsyncClient | None = None
        self._last_sent: dict[str, Mt5Tick] = {}
        self._last_ts = 0
        # Commands handled in this session: id -> the ack body (reported again on redelivery).
        self._handled: OrderedDict[str, bytes] = OrderedDict()
        self._handled_max = 4096
        # Transient failures: id -> (monotonic ns before which not to retry, last retcode).
        self._transient: dict[str, tuple[int, int]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_max = 10_000
        self._outbox_failures = 0
        self._outbox_retry_ns = 0
        self._next_account_ns = 0
        self._started = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # counters
        self.ticks_sent = 0
        self.tick_posts = 0
        self.polls = 0
        self.commands_seen = 0
        self.executed = 0
        self.duplicates_skipped = 0
        self.expired_refused = 0
        self.rejected = 0
        self.transient_failures = 0
        self.bad_commands = 0
        self.acks_sent = 0
        self.fills_sent = 0
        self.accounts_sent = 0
        self.resent_reports = 0
        self.http_errors = 0

    # ------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, int]:
        return {
            "ticks_sent": self.ticks_sent,
            "tick_posts": self.tick_posts,
            "polls": self.polls,
            "commands_seen": self.commands_seen,
            "executed": self.executed,
            "duplicates_skipped": self.duplicates_skipped,
            "expired_refused": self.expired_refused,
            "rejected": self.rejected,
            "transient_failures": self.transient_failures,
            "bad_commands": self.bad_commands,
            "acks_sent": self.acks_sent,
            "fills_sent": self.fills_sent,
            "accounts_sent": self.accounts_sent,
            "resent_reports": self.resent_reports,
            "pending_reports": len(self._outbox),
            "http_errors": self.http_errors,
        }

    @property
    def pending_reports(self) -> int:
        return len(self._outbox)

    async def run(self) -> None:
        """Fire the timer every `timer_ms` until `stop()` or cancellation."""
        self._task = asyncio.current_task()
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        last_error = ""
        try:
            next_at = loop.time()
            while not self._stopping.is_set():
                try:
                    await self.step()
                    last_error = ""
                except Exception as exc:
                    # Said once per distinct error (a full disk fails every timer event).
                    if repr(exc) != last_error:
                        log.error("EA simulator %s: timer event failed: %r", self.terminal, exc)
                        last_error = repr(exc)
                # One timer event at a time; a late one is not queued twice (as in MQL5).
                next_at = max(next_at + self.timer_s, loop.time())
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            self._task = None
            await self.aclose()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Finish the current timer event and stop `run()` (cancel it after `grace_s`)."""
        self._stopping.set()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._http_timeout_s, transport=self._transport)
        return self._client

    # ------------------------------------------------------------ one timer event

    async def step(self) -> None:
        """One `OnTimer`: reports, ticks or poll, commands, account."""
        if not self._started:
            self._started = True
            self._resync_fills()
        await self._flush_outbox()
        raw_commands: list[Any] = []
        resp: httpx.Response | None = None
        changed = self._changed_ticks()
        if changed:
            body = {"ticks": [{"symbol": t.symbol, "bid": t.bid, "ask": t.ask, "time_msc": t.time_msc}
                              for t in changed]}
            resp = await self._request("POST", "/mt5/tick", _dumps(body))
            self.tick_posts += 1
            if resp is not None and resp.is_success:
                for t in changed:
                    self._last_sent[t.symbol] = t
                self.ticks_sent += len(changed)
                raw_commands = self._commands_of(resp)
        if resp is None or not resp.is_success:
            # nothing to send, or the tick push failed (a 422 would fail every time): poll
            resp = await self._request("GET", "/mt5/commands?wait_ms=0", b"")
            self.polls += 1
            if resp is not None and resp.is_success:
                raw_commands = self._commands_of(resp)
        for raw in raw_commands:
            await self._handle(raw)
        if self._clock.monotonic_ns() >= self._next_account_ns:
            self._next_account_ns = self._clock.monotonic_ns() + int(self.account_every_s * 1e9)
            await self.post_account()

    def _changed_ticks(self) -> list[Mt5Tick]:
        changed: list[Mt5Tick] = []
        seen: set[str] = set()
        for tick in self._tick_source():
            if tick.symbol not in self._symbol_set or tick.symbol in seen:
                continue
            seen.add(tick.symbol)
            if not (0 < tick.bid <= tick.ask):
                continue  # no price yet, or crossed: the server refuses the whole batch
            if self._last_sent.get(tick.symbol) != tick:
                changed.append(tick)
        return changed

    @staticmethod
    def _commands_of(resp: httpx.Response) -> list[Any]:
        try:
            data = resp.json()
        except ValueError:
            log.warning("EA simulator: response is not JSON: %.200r", resp.text)
            return []
        commands = data.get("commands") if isinstance(data, dict) else None
        return commands if isinstance(commands, list) else []

    # ------------------------------------------------------------ commands

    async def _handle(self, raw: Any) -> None:
        self.commands_seen += 1
        cid = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(cid, str) or not cid:
            self.bad_commands += 1
            log.warning("EA simulator: command without an id ignored: %.200r", raw)
            return
        # 1. Handled in this session: report again, never execute again.
        ack = self._handled.get(cid)
        if ack is not None:
            self.duplicates_skipped += 1
            self.resent_reports += 1
            await self._report("/mt5/ack", ack)
            for deal in self._deals_for(cid):
                await self._report_fill(cid, deal)
            return
        # 2. Executed before a restart: the deal history carries the command id.
        deals = self._deals_for(cid)
        if deals:
            self.duplicates_skipped += 1
            self.resent_reports += 1
            volume = _number(raw.get("volume"), 0.0)
            filled = sum(d.volume for d in deals)
            retcode = TRADE_RETCODE_DONE_PARTIAL if filled < volume - 1e-9 else TRADE_RETCODE_DONE
            await self._ack(cid, "accepted", retcode, "")
            for deal in deals:
                await self._report_fill(cid, deal)
            return
        # 3. Expired: refuse.
        expires = _number(raw.get("expires_msc"), 0.0)
        if expires and self._clock.time_ms() > expires:
            self.expired_refused += 1
            last_retcode = self._transient.pop(cid, (0, 0))[1]
            await self._ack(cid, "expired", last_retcode, "expired before execution")
            return
        retry = self._transient.get(cid)
        if retry is not None and self._clock.monotonic_ns() < retry[0]:
            return  # back off a transient failure; the command comes again
        try:
            cmd = _parse_command(raw)
        except _BadCommand as exc:
            self.bad_commands += 1
            self.rejected += 1
            await self._ack(cid, "rejected", TRADE_RETCODE_INVALID, f"bad command: {exc}")
            return
        if cmd.magic and cmd.magic != self.magic:
            self.rejected += 1
            await self._ack(cid, "rejected", TRADE_RETCODE_INVALID, f"magic {cmd.magic} is not the EA's {self.magic}")
            return
        await self._execute(cmd)

    async def _execute(self, cmd: _Command) -> None:
        lo, hi = self.fill_latency_ms
        if hi > 0:
            await asyncio.sleep(self._rng.uniform(lo, hi) / 1000.0)
        volume = cmd.volume
        quote = self.broker.touch(cmd.symbol)  # SymbolInfoTick at send time
        price = 0.0 if quote is None else quote[1] if cmd.side == "buy" else quote[0]
        if cmd.kind == "close":
            pos = self.broker.position(cmd.position)
            if pos is not None and (volume <= 0 or volume > pos.volume):
                volume = pos.volume  # PositionSelectByTicket: never more than is open
        request = TradeRequest(
            symbol=cmd.symbol,
            type="buy" if cmd.side == "buy" else "sell",
            volume=volume,
            price=price,
            deviation=cmd.deviation_points,
            type_filling="FOK" if cmd.filling == "FOK" else "RETURN" if cmd.filling == "RETURN" else "IOC",
            magic=self.magic,
            comment=cmd.id[:COMMENT_MAX],
            position=cmd.position if cmd.kind == "close" else 0,
        )
        result = self.broker.execute(request)
        self.executed += 1
        if result.done:
            self._transient.pop(cmd.id, None)
            await self._ack(cmd.id, "accepted", result.retcode, "")
            for deal in self._deals_for(cmd.id):
                await self._report_fill(cmd.id, deal)
            return
        if result.retcode in TRANSIENT_RETCODES:
            self.transient_failures += 1
            backoff_ns = int(max(self.timer_s * 4, 0.2) * 1e9)
            self._transient[cmd.id] = (self._clock.monotonic_ns() + backoff_ns, result.retcode)
            log.info("EA simulator: command %s hit retcode %d; retried on redelivery", cmd.id, result.retcode)
            return
        self.rejected += 1
        await self._ack(cmd.id, "rejected", result.retcode, result.comment)

    def _deals_for(self, command_id: str) -> list[Deal]:
        """Our deals whose comment carries the command id (HistorySelect + DEAL_COMMENT)."""
        now = self._clock.time_ms()
        stored = command_id[:COMMENT_MAX]
        return [d for d in self.broker.history_deals(now - self._lookback_ms)
                if d.comment == stored and d.magic == self.magic]

    def _resync_fills(self) -> None:
        """Queue the fills of our recent deals again: one lost in a crash after its ack arrives now."""
        if self._resync_fills_ms <= 0:
            return
        since = self._clock.time_ms() - self._resync_fills_ms
        for deal in self.broker.history_deals(since):
            if deal.magic == self.magic and deal.comment:
                self._outbox.append(("/mt5/fill", self._fill_body(deal.comment, deal)))

    # ------------------------------------------------------------ reports

    async def _ack(self, cid: str, status: str, retcode: int, reason: str) -> None:
        body = _dumps({"command_id": cid, "status": status, "retcode": retcode, "reason": reason})
        self._handled[cid] = body
        while len(self._handled) > self._handled_max:
            self._handled.popitem(last=False)
        await self._report("/mt5/ack", body)

    @staticmethod
    def _fill_body(cid: str, deal: Deal) -> bytes:
        return _dumps({
            "command_id": cid,
            "deal": deal.ticket,
            "order": deal.order,
            "position": deal.position,
            "symbol": deal.symbol,
            "side": deal.side,
            "volume": deal.volume,
            "price": deal.price,
            "commission": deal.commission,
            "time_msc": deal.time_msc,
        })

    async def _report_fill(self, cid: str, deal: Deal) -> None:
        await self._report("/mt5/fill", self._fill_body(cid, deal))

    async def _report(self, path: str, body: bytes) -> None:
        """Deliver an ack or fill in order; keep it (same body) for a retry if it fails."""
        if len(self._outbox) >= self._outbox_max:
            dropped = self._outbox.popleft()
            log.error("EA simulator: report outbox full, dropped %s %.200r", *dropped)
        self._outbox.append((path, body))
        await self._flush_outbox(force=True)

    async def _flush_outbox(self, *, force: bool = False) -> None:
        if not self._outbox:
            return
        if not force and self._clock.monotonic_ns() < self._outbox_retry_ns:
            return
        while self._outbox:
            path, body = self._outbox[0]
            resp = await self._request("POST", path, body)
            if resp is None or resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
                self._outbox_failures += 1
                delay_s = min(2.0, self.timer_s * (2 ** min(self._outbox_failures, 10)))
                self._outbox_retry_ns = self._clock.monotonic_ns() + int(delay_s * 1e9)
                return
            self._outbox.popleft()
            self._outbox_failures = 0
            if resp.is_success:
                if path == "/mt5/ack":
                    self.acks_sent += 1
                elif path == "/mt5/fill":
                    self.fills_sent += 1
            else:
                # 404/422: the server refused this body; a retry would not change that. A
                # command that was not acknowledged is delivered again and reported again then.
                log.warning("EA simulator: %s refused with %d: %.200r", path, resp.status_code, resp.text)

    async def post_account(self) -> bool:
        acct = self.broker.account()
        body = _dumps({
            "balance": acct.balance,
            "equity": acct.equity,
            "margin_free": acct.margin_free,
            "positions": [
                {"ticket": p.ticket, "symbol": p.symbol, "type": p.type, "volume": p.volume,
                 "price_open": p.price_open, "magic": p.magic}
                for p in self.broker.positions(None if self.report_all_positions else self.magic)
            ],
        })
        resp = await self._request("POST", "/mt5/account", body)
        ok = resp is not None and resp.is_success
        if ok:
            self.accounts_sent += 1
        return ok

    # ------------------------------------------------------------ HTTP

    def _timestamp(self) -> str:
        # Strictly increasing: two identical requests in one millisecond would share a
        # signature, and the server refuses a signature it has seen.
        ts = max(self._clock.time_ms(), self._last_ts + 1)
        self._last_ts = ts
        return str(ts)

    def signed_headers(self, method: str, path_with_query: str, body: bytes) -> dict[str, str]:
        """The three protocol headers for one request (`path_with_query` as on the wire)."""
        ts = self._timestamp()
        return {
            HEADER_TERMINAL: self.terminal,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_request(self._secret, ts, method, path_with_query, body),
        }

    async def _request(self, method: str, path_with_query: str, body: bytes) -> httpx.Response | None:
        wire_path = self._base_path + path_with_query
        headers = self.signed_headers(method, wire_path, body)
        if method == "POST":
            headers["Content-Type"] = "application/json"
        try:
            resp = await self._http().request(method, self.base_url + path_with_query, content=body or None,
                                              headers=headers)
        except httpx.HTTPError as exc:
            self.http_errors += 1
            log.debug("EA simulator: %s %s failed: %r", method, path_with_query, exc)
            return None
        if not resp.is_success:
            self.http_errors += 1
            log.debug("EA simulator: %s %s -> %d %.200r", method, path_with_query, resp.status_code, resp.text)
        return resp


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


__all__ = [
    "HEADER_SIGNATURE",
    "HEADER_TERMINAL",
    "HEADER_TIMESTAMP",
    "TRANSIENT_RETCODES",
    "EaSimulator",
    "MarketTickSource",
    "Mt5Tick",
    "TickBoard",
    "TickSource",
    "sign_request",
    "signing_string",
]
