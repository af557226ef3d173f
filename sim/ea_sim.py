"""The EA simulator: a client that speaks the MT5 protocol (docs/mt5-protocol.md) as the Expert Advisor does.

It is written from the protocol contract alone; it shares no code with `mt5_bridge` (the
server side), so that a test of the bridge against it is a real check. It implements the
safety logic of `mql5/QuantArbBridge.mq5` (mql5/README.md, "What the EA does with a
command"), one timer event at a time:

0. at start: take the instance lock of its terminal id in the common folder (a second
   instance on the same machine refuses to start, `InstanceLocked`), load the command journal,
   re-report the fills of its recent deals, and follow again the commands whose outcome is not
   complete;
1. retry the reports (acks and fills) not delivered yet, oldest first, each with the same body
   and a fresh signature. A request that gets no answer ends the HTTP of this timer event (at
   most one blocking wait per event), and the next ones back off;
2. batch the ticks that changed into one signed `POST /mt5/tick` and take the commands that
   come back; with nothing to send, poll `GET /mt5/commands?wait_ms=0` (the real EA never
   long-polls: `WebRequest` blocks). Every request carries `X-QA-Instance`; a 409 means another
   instance holds this terminal's lease at the listener: stand by (no commands);
3. handle each command, in order:
   - handled in this session: report its ack (and fills) again, never execute;
   - in the journal (written before every `OrderSend`): never sent again. `done`: ack
     accepted and report its deals; `rejected`: the same rejection; `sent`/`unknown`: look for
     its order and deals on the trade server, ack `unknown` until they appear;
   - not in the journal, but an active or history order or a deal carries the id in its
     comment (the journal was lost): ack accepted and report, never execute;
   - `expires_msc` has passed: ack `expired`;
   - otherwise check it (refusals by the EA itself carry retcode 0: no `OrderSend` happened):
     kind, side, magic, the position of a close, the lot step, a filling the symbol allows
     under its execution mode (FOK only under Request/Instant, RETURN only under Exchange), the
     price (refused when the current price is worse than the command's by more than its
     deviation), no other command on the symbol with an unknown outcome; then journal it and
     send it (the command's price under Request/Instant execution) after the configured latency;
   - after `OrderSend`: DONE/DONE_PARTIAL/PLACED -> ack `accepted`, one fill per deal, and a
     RETURN remainder is removed and followed to the end; TIMEOUT -> ack `unknown`, never sent
     again, followed until its order or deal appears (ack `accepted`) or none did within
     `unknown_settle_ms` (ack `rejected`); CONNECTION/TOO_MANY_REQUESTS -> not acknowledged,
     retried on redelivery until it expires; anything else -> ack `rejected`;
4. follow the commands whose outcome is not complete: report new deals, remove resting
   remainders, resolve unknown outcomes;
5. `POST /mt5/account` every `account_every_s` and right after a trade: all positions, as
   docs/mt5-protocol.md asks (quantarb keeps its magic's), or only those with the EA's magic
   with `report_all_positions=False`; and the margin mode (`hedging`, as `SimBroker` is) and
   whether AutoTrading is on (`set_trade_allowed`; off, every command is refused with retcode
   10027, as the terminal refuses `OrderSend`).

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
import math
import random
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import httpx

from core.bounded import forget_oldest
from core.clock import Clock
from core.config import demo_config
from core.instruments import Pair
from sim.ea_journal import (
    JOURNAL_UNKNOWN_EXPIRY_MS,
    InstanceLock,
    InstanceLocked,
    Journal,
    JournalEntry,
    journal_path,
)
from sim.epoch_market import ElapsedPacer, EpochMarket, EpochPacer, MarketPacer, world_pairs
from sim.market import SimTick, SyntheticMarket
from sim.mt5_broker import (
    COMMENT_MAX,
    TRADE_ACTION_REMOVE,
    TRADE_RETCODE_CONNECTION,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_DONE_PARTIAL,
    TRADE_RETCODE_PLACED,
    TRADE_RETCODE_TIMEOUT,
    TRADE_RETCODE_TOO_MANY_REQUESTS,
    Deal,
    Order,
    SimBroker,
    SymbolSpec,
    TradeRequest,
    spec_from_instrument,
)

log = logging.getLogger(__name__)

HEADER_TERMINAL = "X-QA-Terminal"
HEADER_TIMESTAMP = "X-QA-Timestamp"
HEADER_SIGNATURE = "X-QA-Signature"
HEADER_INSTANCE = "X-QA-Instance"
TRADE_RETCODE_CLIENT_DISABLES_AT = 10027  # AutoTrading disabled by the client terminal

# Retcodes after which nothing executed and a retry may succeed: not acknowledged, retried on
# redelivery until the command expires. TIMEOUT is not one: the order may still execute.
TRANSIENT_RETCODES: frozenset[int] = frozenset({TRADE_RETCODE_CONNECTION, TRADE_RETCODE_TOO_MANY_REQUESTS})
# Report answers worth a retry with the same body (freshly signed), besides 5xx and no answer:
# 401 is a clock or replay refusal (the body was never looked at), 408 and 429 are transient,
# 409 another instance holds the terminal for now.
_RETRY_STATUS: frozenset[int] = frozenset({401, 408, 409, 429})
_EPS = 1e-9
# What this session remembers of the commands it handled (the ack, reported again when one is
# delivered again) and of the deals it reported (not reported twice while following a
# command, a minute): entries older than this go, and at most the counts below. Beyond it, the
# journal still refuses to send a command twice, and a deal reported again is ignored by the
# listener (fills are idempotent per deal). By count alone they took hours of the demo to fill.
SESSION_MEMORY_MS = 10 * 60_000
# How far back a simulated terminal's EA re-sends fills at start when it runs on `SimBroker`
# (the demo, `quantarb sim mt5`): five minutes, inside that broker's eight of history
# (`sim.mt5_broker.HISTORY_KEPT_MS`, short so the demo's memory levels off within `bench
# soak`'s warm-up). The real EA's `InpResyncMinutes` is 10, the default here too.
SIM_RESYNC_FILLS_MS = 5 * 60_000
HANDLED_KEPT = 4096
REPORTED_KEPT = 10_000


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
            result = float(value)
        except (TypeError, ValueError):
            raise _BadCommand(f"{name} must be a number") from None
        if not math.isfinite(result):
            raise _BadCommand(f"{name} must be a finite number")
        return result

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
    if cmd.price < 0 or cmd.deviation_points < 0:
        raise _BadCommand("price and deviation_points must be >= 0")
    return cmd


def choose_filling(spec: SymbolSpec, wanted: str, *, auto: bool) -> tuple[str | None, str]:
    """The filling mode to send, or None and why none fits (as the EA's `QA_ResolveFilling`).

    The symbol's execution mode decides what a market order may use: FOK only under Request and
    Instant execution, FOK/IOC as `SYMBOL_FILLING_MODE` allows under Market execution, and RETURN
    too under Exchange execution. `auto` takes the command's mode when allowed, else FOK, IOC,
    RETURN; otherwise the command's mode must be allowed.
    """
    allowed = spec.allowed_fillings()
    for mode in (wanted, "FOK", "IOC", "RETURN") if auto else (wanted,):
        if mode in allowed:
            return mode, ""
    if auto:
        return None, f"the symbol allows no filling mode under {spec.execution} execution"
    return None, f"the symbol does not allow {wanted} filling under {spec.execution} execution"


@dataclass(slots=True)
class _Follow:
    """A command sent to the trade server whose outcome is not complete yet."""

    until_ns: int  # stop following (monotonic)
    settle_ns: int  # an unknown outcome with no trace by then is a rejection
    cancel_sent: bool = False  # TRADE_ACTION_REMOVE sent for a resting remainder


class _TerminalMemory:
    """What an EA leaves in the common folder, for simulators without a `common_dir`: kept
    per `SimBroker` (the simulated terminal), so an EA restarted on it finds its journal and
    its instance id again. The instance lock is not modelled there. The journal object itself
    is kept (not only its entries): it also holds when each entry's command expires, which its
    bound by count needs (`sim.ea_journal.JOURNAL_KEPT`)."""

    def __init__(self) -> None:
        self.journal = Journal(None, now_ms=0)
        self.instance_id = "ea-" + secrets.token_hex(8)


_TERMINAL_MEMORY: weakref.WeakKeyDictionary[SimBroker, _TerminalMemory] = weakref.WeakKeyDictionary()


class EaSimulator:
    """A simulated QuantArbBridge EA posting to the MT5 listener over real HTTP.

    `secret` is the terminal's shared secret; `tick_source` returns the current ticks (only
    those of `symbols` are sent); `broker` is the account it trades, which outlives this object
    (restart the EA by building a new simulator on the same broker). `common_dir` is the
    machine's MQL5 common folder, where the command journal and the instance lock live
    (`sim.ea_journal`); without one, the journal and the instance id are kept in memory with
    the broker (a restarted EA finds them), and the instance lock is not modelled.
    `fill_latency_ms` is the (min, max) execution latency drawn per command from the seeded RNG.
    `max_deviation_points` caps a command's deviation (`InpMaxDeviation`; None: no cap, a
    command's 0 is zero); `filling_policy`
    `auto` picks from the symbol's allowed filling modes, `command` insists on the command's.
    `follow_ms` is how long a command's deals and remainder are followed; `unknown_settle_ms`
    how long an unknown outcome (TIMEOUT) waits for a trace before it is reported rejected.
    `transport` is for tests (an httpx transport instead of the network).
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
        history_lookback_ms: int = 3_600_000,
        resync_fills_ms: int = 600_000,
        report_all_positions: bool = True,
        margin_mode: Literal["hedging", "netting", "exchange"] = "hedging",
        trade_allowed: bool = True,
        common_dir: str | Path | None = None,
        instance_id: str | None = None,
        max_deviation_points: int | None = None,
        filling_policy: str = "auto",
        follow_ms: int = 60_000,
        unknown_settle_ms: int = 30_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if timer_ms <= 0 or account_every_s <= 0:
            raise ValueError("timer_ms and account_every_s must be > 0")
        lo, hi = fill_latency_ms
        if lo < 0 or hi < lo:
            raise ValueError("fill_latency_ms must be (min, max) with 0 <= min <= max")
        if filling_policy not in ("auto", "command"):
            raise ValueError("filling_policy must be auto or command")
        if (max_deviation_points or 0) < 0 or follow_ms <= 0 or unknown_settle_ms <= 0:
            raise ValueError("max_deviation_points must be >= 0, follow_ms and unknown_settle_ms > 0")
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
        self.margin_mode = margin_mode
        self._trade_allowed = trade_allowed
        self._common_dir = Path(common_dir) if common_dir is not None else None
        self._instance_override = instance_id
        memory = _TERMINAL_MEMORY.get(broker)
        if memory is None:
            memory = _TERMINAL_MEMORY[broker] = _TerminalMemory()
        self._memory = memory
        self.instance_id = instance_id or memory.instance_id
        self.max_deviation_points = max_deviation_points
        self.filling_auto = filling_policy == "auto"
        self._follow_ns = follow_ms * 1_000_000
        self._settle_ns = unknown_settle_ms * 1_000_000
        self._transport = transport
        self._rng = random.Random(seed)
        self._client: httpx.AsyncClient | None = None
        self._lock: InstanceLock | None = None
        self._journal = memory.journal
        self._last_sent: dict[str, Mt5Tick] = {}
        self._last_ts = 0
        # Commands handled in this session: id -> (the ack body, kept until), oldest first.
        self._handled: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        # Deal tickets reported this session -> when, oldest first.
        self._reported: OrderedDict[int, int] = OrderedDict()
        self._following: dict[str, _Follow] = {}
        # Transient failures: id -> (monotonic ns before which not to retry, last retcode, the
        # command's expires_msc). One whose command expired is dropped at the next failure: the
        # listener serves no expired command, so the EA may never see it again to refuse it.
        self._transient: dict[str, tuple[int, int, int]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_max = 10_000
        self._outbox_failures = 0
        self._outbox_retry_ns = 0
        self._http_down_until_ns = 0  # no request before this, after one got no answer
        self._http_down_failures = 0
        self._event_blocked = False  # a request of this timer event got no answer: no more HTTP now
        self._next_account_ns = 0
        self._account_due = False
        self._started = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.standby = False  # the listener said another instance holds this terminal (409)
        # counters
        self.ticks_sent = 0
        self.tick_posts = 0
        self.polls = 0
        self.commands_seen = 0
        self.executed = 0
        self.duplicates_skipped = 0
        self.expired_refused = 0
        self.rejected = 0
        self.refused_by_ea = 0
        self.price_refusals = 0
        self.transient_failures = 0
        self.unknown_outcomes = 0
        self.remainders_removed = 0
        self.bad_commands = 0
        self.acks_sent = 0
        self.fills_sent = 0
        self.accounts_sent = 0
        self.resent_reports = 0
        self.http_errors = 0
        self.http_skipped = 0
        self.lease_refusals = 0

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
            "refused_by_ea": self.refused_by_ea,
            "price_refusals": self.price_refusals,
            "transient_failures": self.transient_failures,
            "unknown_outcomes": self.unknown_outcomes,
            "remainders_removed": self.remainders_removed,
            "bad_commands": self.bad_commands,
            "acks_sent": self.acks_sent,
            "fills_sent": self.fills_sent,
            "accounts_sent": self.accounts_sent,
            "resent_reports": self.resent_reports,
            "pending_reports": len(self._outbox),
            "http_errors": self.http_errors,
            "http_skipped": self.http_skipped,
            "lease_refusals": self.lease_refusals,
        }

    @property
    def pending_reports(self) -> int:
        return len(self._outbox)

    def remembered(self) -> tuple[int, int]:
        """(commands handled, deals reported) this session still remembers (`SESSION_MEMORY_MS`)."""
        return len(self._handled), len(self._reported)

    @property
    def following(self) -> frozenset[str]:
        """Ids of the commands whose outcome is still followed."""
        return frozenset(self._following)

    def journal_entry(self, command_id: str) -> JournalEntry | None:
        return self._journal.get(command_id)

    def start(self) -> None:
        """`OnInit`: take the instance lock (`InstanceLocked` if another instance holds it),
        load the journal, queue the fills of recent deals again, follow unfinished commands."""
        if self._started:
            return
        now_ms = self._clock.time_ms()
        if self._common_dir is not None:
            self._lock = InstanceLock.acquire(self._common_dir, self.terminal)
            self.instance_id = self._instance_override or self._lock.instance_id
            self._journal = Journal(journal_path(self._common_dir, self.terminal), now_ms=now_ms)
        self._started = True
        now_ns = self._clock.monotonic_ns()
        for loaded in self._journal.entries():
            if loaded.send_ms < now_ms - self._follow_ns // 1_000_000:
                continue
            entry = loaded
            if entry.state == "sent":  # the EA stopped inside OrderSend: the outcome is unknown
                entry = entry.but(state="unknown", reason="the EA stopped during OrderSend")
                self._remember(entry)
            if entry.state in ("unknown", "done"):
                self._following[entry.command_id] = _Follow(now_ns + self._follow_ns, now_ns + self._settle_ns)
        self._resync_fills()

    async def run(self) -> None:
        """Fire the timer every `timer_ms` until `stop()` or cancellation."""
        self._task = asyncio.current_task()
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        last_error = ""
        try:
            self.start()
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
        """`OnDeinit`: close the HTTP client and release the instance lock."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._http_timeout_s, transport=self._transport)
        return self._client

    # ------------------------------------------------------------ one timer event

    async def step(self) -> None:
        """One `OnTimer`: reports, ticks or poll, commands, followed commands, account."""
        self.start()
        self._event_blocked = False
        await self._flush_outbox()
        raw_commands: list[Any] = []
        resp: httpx.Response | None = None
        changed = self._changed_ticks()
        if changed:
            body = {"ticks": [{"symbol": t.symbol, "bid": t.bid, "ask": t.ask, "time_msc": t.time_msc}
                              for t in changed]}
            resp = await self._request("POST", "/mt5/tick", _dumps(body))
            if resp is not None:
                self.tick_posts += 1
            if resp is not None and resp.is_success:
                for t in changed:
                    self._last_sent[t.symbol] = t
                self.ticks_sent += len(changed)
                raw_commands = self._commands_of(resp)
        # Nothing to send, or the tick push was refused (a 422 would fail every time): poll.
        # After a 409 a poll would fare no better; after no answer `_request` does not try.
        if resp is None or (not resp.is_success and resp.status_code != 409):
            resp = await self._request("GET", "/mt5/commands?wait_ms=0", b"")
            if resp is not None:
                self.polls += 1
            if resp is not None and resp.is_success:
                raw_commands = self._commands_of(resp)
        for raw in raw_commands:
            await self._handle(raw)
        await self._follow_all()
        now_ns = self._clock.monotonic_ns()
        if (now_ns >= self._next_account_ns or self._account_due) and not self._event_blocked:
            self._next_account_ns = now_ns + int(self.account_every_s * 1e9)
            self._account_due = False
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
        handled = self._handled.get(cid)
        if handled is not None:
            ack = handled[0]
            self.duplicates_skipped += 1
            self.resent_reports += 1
            await self._report("/mt5/ack", ack)
            entry = self._journal.get(cid) or self._trace_entry(cid)
            if entry is not None:
                await self._report_fills(entry, force=True)
            return
        # 2. In the journal: it was sent (or about to be); never send it again.
        entry = self._journal.get(cid)
        if entry is not None and entry.state != "retry":
            self.duplicates_skipped += 1
            self.resent_reports += 1
            await self._report_known(entry, force=True)
            return
        # 3. Not in the journal, but the trade server has an order or deal with its id.
        if entry is None:
            traced = self._trace_entry(cid)
            if traced is not None:
                self.duplicates_skipped += 1
                self.resent_reports += 1
                self._remember(traced, expires_ms=int(_number(raw.get("expires_msc"), 0.0)))
                await self._report_known(traced, force=True)
                return
        # 4. Expired: refuse.
        expires = _number(raw.get("expires_msc"), 0.0)
        if expires and self._clock.time_ms() > expires:
            self.expired_refused += 1
            last_retcode = self._transient.pop(cid, (0, 0, 0))[1] or (entry.retcode if entry is not None else 0)
            await self._ack(cid, "expired", last_retcode, "expired before execution")
            return
        retry = self._transient.get(cid)
        if retry is not None and self._clock.monotonic_ns() < retry[0]:
            return  # back off a transient failure; the command comes again
        try:
            cmd = _parse_command(raw)
        except _BadCommand as exc:
            self.bad_commands += 1
            await self._refuse(cid, f"bad command: {exc}", expires_ms=int(expires))
            return
        if cmd.magic and cmd.magic != self.magic:
            await self._refuse(cid, f"magic {cmd.magic} is not the EA's {self.magic}", expires_ms=cmd.expires_msc)
            return
        if not self._trade_allowed:  # the terminal refuses OrderSend: nothing is journaled or sent
            self.rejected += 1
            await self._ack(cid, "rejected", TRADE_RETCODE_CLIENT_DISABLES_AT, "AutoTrading disabled by client",
                            expires_ms=cmd.expires_msc)
            return
        await self._execute(cmd)

    async def _refuse(self, cid: str, reason: str, *, expires_ms: int) -> None:
        """A refusal by the EA itself: no OrderSend happened, so retcode 0. Not journaled: the
        session remembers it until its command expires (`_ack`)."""
        self.rejected += 1
        self.refused_by_ea += 1
        await self._ack(cid, "rejected", 0, reason, expires_ms=expires_ms)

    async def _execute(self, cmd: _Command) -> None:
        lo, hi = self.fill_latency_ms
        if hi > 0:
            await asyncio.sleep(self._rng.uniform(lo, hi) / 1000.0)
        if cmd.symbol not in self._symbol_set:
            await self._refuse(cmd.id, f"symbol {cmd.symbol} is not one of the EA's symbols",
                               expires_ms=cmd.expires_msc)
            return
        quote = self.broker.touch(cmd.symbol)  # SymbolInfoTick at send time
        if quote is None or not (quote[0] > 0 and quote[1] > 0):
            await self._refuse(cmd.id, f"no quote for {cmd.symbol}", expires_ms=cmd.expires_msc)
            return
        spec = self.broker.spec(cmd.symbol)  # SymbolInfoInteger/Double
        volume = cmd.volume
        if cmd.kind == "close":
            pos = self.broker.position(cmd.position)  # PositionSelectByTicket
            if pos is None:
                await self._refuse(cmd.id, f"position {cmd.position} not found", expires_ms=cmd.expires_msc)
                return
            if pos.symbol != cmd.symbol or pos.type == cmd.side:
                await self._refuse(cmd.id, "close must be the opposite of the position, on its symbol",
                                   expires_ms=cmd.expires_msc)
                return
            if volume <= 0 or volume > pos.volume:
                volume = pos.volume  # never more than is open
        steps = volume / spec.volume_step
        if abs(steps - round(steps)) > 1e-6:
            await self._refuse(cmd.id, "volume is not a multiple of the lot step", expires_ms=cmd.expires_msc)
            return
        filling, why = choose_filling(spec, cmd.filling, auto=self.filling_auto)
        if filling is None:
            await self._refuse(cmd.id, why, expires_ms=cmd.expires_msc)
            return
        cap = self.max_deviation_points
        deviation = cmd.deviation_points if cap is None else min(cmd.deviation_points, cap)
        market = quote[1] if cmd.side == "buy" else quote[0]
        if cmd.price > 0:
            worse = market - cmd.price if cmd.side == "buy" else cmd.price - market
            if worse - deviation * spec.point > spec.point * 1e-6:
                self.price_refusals += 1
                await self._refuse(cmd.id, f"price moved: {'ask' if cmd.side == 'buy' else 'bid'} {market:g} is "
                                           f"{worse / spec.point:.0f} points worse than the command's {cmd.price:g} "
                                           f"(deviation {deviation})", expires_ms=cmd.expires_msc)
                return
        blocking = next((e.command_id for e in map(self._journal.get, self._following)
                         if e is not None and e.state in ("sent", "unknown") and e.symbol == cmd.symbol), None)
        if blocking is not None:
            await self._refuse(cmd.id, f"an order on {cmd.symbol} (command {blocking}) has an unknown outcome",
                               expires_ms=cmd.expires_msc)
            return
        # Under Request/Instant execution the server executes at the request's price (or
        # requotes); under Market/Exchange execution the price is ignored.
        price = cmd.price if spec.execution in ("request", "instant") and cmd.price > 0 else market
        entry = JournalEntry(cmd.id, "sent", self._clock.time_ms(), cmd.symbol, cmd.side, volume)
        try:
            # Before OrderSend: a journaled id is never sent again (and kept until it expires).
            self._journal.write(entry, expires_ms=cmd.expires_msc)
        except OSError as exc:
            await self._refuse(cmd.id, f"cannot write the command journal: {exc}", expires_ms=cmd.expires_msc)
            return
        request = TradeRequest(
            symbol=cmd.symbol,
            type="buy" if cmd.side == "buy" else "sell",
            volume=volume,
            price=price,
            deviation=deviation,
            type_filling="FOK" if filling == "FOK" else "RETURN" if filling == "RETURN" else "IOC",
            magic=self.magic,
            comment=cmd.id[:COMMENT_MAX],
            position=cmd.position if cmd.kind == "close" else 0,
        )
        result = self.broker.execute(request)
        self.executed += 1
        rc = result.retcode
        if result.accepted:
            self._transient.pop(cmd.id, None)
            entry = entry.but(state="done", order=result.order, retcode=rc)
            self._remember(entry)
            await self._conclude(entry, force=False)
            await self._follow_one(cmd.id)  # followed until its order is done and its deals reported
            return
        if rc == TRADE_RETCODE_TIMEOUT:
            # The request may still execute: never send it again; find out what happened.
            self.unknown_outcomes += 1
            self._remember(entry.but(state="unknown", retcode=rc, reason="TIMEOUT"))
            self._follow(cmd.id)
            self._account_due = True
            await self._ack(cmd.id, "unknown", rc, "TIMEOUT; never sent again")
            return
        if rc in TRANSIENT_RETCODES:
            self._remember(entry.but(state="retry", retcode=rc))
            self.transient_failures += 1
            backoff_ns = int(max(self.timer_s * 4, 0.2) * 1e9)
            now_ms = self._clock.time_ms()
            for expired in [k for k, (_, _, exp) in self._transient.items() if 0 < exp < now_ms]:
                del self._transient[expired]
            self._transient[cmd.id] = (self._clock.monotonic_ns() + backoff_ns, rc, cmd.expires_msc)
            log.info("EA simulator: command %s hit retcode %d; retried on redelivery", cmd.id, rc)
            return
        self.rejected += 1
        self._remember(entry.but(state="rejected", retcode=rc, reason=result.comment))
        await self._ack(cmd.id, "rejected", rc, result.comment)

    async def _report_known(self, entry: JournalEntry, *, force: bool) -> None:
        """Report what is known of a journaled command (a redelivery, never a resend)."""
        if entry.state in ("sent", "unknown"):
            if not await self._resolve(entry):  # which acks what it finds
                self._follow(entry.command_id)
                await self._ack(entry.command_id, "unknown", entry.retcode,
                                f"{entry.reason or 'sent'}; never sent again")
            return
        if entry.state == "rejected":
            await self._ack(entry.command_id, "rejected", entry.retcode, entry.reason)
        elif entry.state == "done":
            await self._conclude(entry, force=force)

    async def _conclude(self, entry: JournalEntry, *, force: bool) -> None:
        """Ack a command whose order the server took: its resting remainder is removed first
        (the hedge is sized on what filled); an order that filled nothing is `rejected`
        (nothing executed), any other `accepted`, followed by its deals."""
        cid = entry.command_id
        self._follow(cid)
        self._account_due = True
        if self._remove_rest(cid, entry) and self._filled_by_order(entry) == 0.0 and not self._deals_of(entry):
            reason = f"its order {entry.order} filled nothing and was removed"
            self.rejected += 1
            self._remember(entry.but(state="rejected", reason=reason))
            self._following.pop(cid, None)
            await self._ack(cid, "rejected", entry.retcode, reason)
            return
        await self._ack(cid, "accepted", entry.retcode or TRADE_RETCODE_DONE, "")
        await self._report_fills(entry, force=force)

    # ------------------------------------------------------------ following

    def _follow(self, cid: str) -> None:
        if cid not in self._following:
            now = self._clock.monotonic_ns()
            self._following[cid] = _Follow(now + self._follow_ns, now + self._settle_ns)

    async def _follow_all(self) -> None:
        for cid in list(self._following):
            await self._follow_one(cid)

    async def _follow_one(self, cid: str) -> None:
        """One look at a followed command: resolve an unknown outcome, remove a resting
        remainder, report new deals; stop when its order is finished and all its deals reported."""
        follow = self._following.get(cid)
        entry = self._journal.get(cid)
        if follow is None or entry is None:
            self._following.pop(cid, None)
            return
        now = self._clock.monotonic_ns()
        if entry.state in ("sent", "unknown"):
            if not await self._resolve(entry) and now >= follow.settle_ns:
                # Nothing appeared: it did not execute. (A deal that still comes is reported.)
                reason = (f"{entry.reason or 'outcome unknown'}: no order or deal appeared within "
                          f"{self._settle_ns // 1_000_000} ms")
                self.rejected += 1
                self._remember(entry.but(state="rejected", reason=reason))
                await self._ack(cid, "rejected", entry.retcode, reason)
            entry = self._journal.get(cid) or entry
        if entry.state == "done" and entry.order:
            self._remove_rest(cid, entry)
            active = self._active_order(entry.order)
            if await self._report_fills(entry, force=False):
                self._account_due = True
            if active is None:
                filled = self._filled_by_order(entry)
                reported = sum(d.volume for d in self._deals_of(entry))
                if filled is not None and reported >= filled - _EPS:
                    self._following.pop(cid, None)
                    return
        elif await self._report_fills(entry, force=False):
            self._account_due = True  # a late deal of a command reported rejected
        if now >= follow.until_ns and self._following.pop(cid, None) is not None and entry.state != "rejected":
            log.warning("EA simulator: stopped following command %s (%s)", cid, entry.state)

    def _remove_rest(self, cid: str, entry: JournalEntry) -> bool:
        """Remove the resting remainder of a command's order (RETURN), once: the hedge is sized
        on what filled, so nothing may fill later at a stale price. True when the order is no
        longer active (removed, or finished meanwhile)."""
        follow = self._following.get(cid)
        active = self._active_order(entry.order)
        if active is not None and follow is not None and not follow.cancel_sent:
            follow.cancel_sent = True
            removed = self.broker.execute(TradeRequest(symbol=active.symbol, type=active.type, volume=0.0,
                                                       action=TRADE_ACTION_REMOVE, order=active.ticket,
                                                       magic=self.magic))
            if removed.retcode == TRADE_RETCODE_DONE:
                self.remainders_removed += 1
            active = self._active_order(entry.order)
        return active is None

    def _filled_by_order(self, entry: JournalEntry) -> float | None:
        """How much of a finished order filled (`ORDER_VOLUME_INITIAL - ORDER_VOLUME_CURRENT`
        of the history order), None when the order is not in the history (yet)."""
        finished = self._history_order(entry.order, entry.send_ms)
        return None if finished is None else finished.volume_initial - finished.volume_current

    async def _resolve(self, entry: JournalEntry) -> bool:
        """Look for the order of a command whose outcome is unknown; True once it is known
        (then acked `accepted` with its deals, or `rejected` when its order ended without one)."""
        order = self._find_order(entry)
        if order is None:
            return False
        deals = [d for d in self.broker.deals_of_order(order.ticket) if d.magic == self.magic]
        filled = sum(d.volume for d in deals)
        cid = entry.command_id
        if not deals and order.state == "canceled":
            reason = f"{entry.reason or 'outcome unknown'}: its order {order.ticket} was {order.state} without a deal"
            self.rejected += 1
            self._remember(entry.but(state="rejected", order=order.ticket, reason=reason))
            await self._ack(cid, "rejected", entry.retcode, reason)
            return True
        retcode = (TRADE_RETCODE_PLACED if not deals else TRADE_RETCODE_DONE
                   if filled >= order.volume_initial - _EPS else TRADE_RETCODE_DONE_PARTIAL)
        entry = entry.but(state="done", order=order.ticket, retcode=retcode, reason="")
        self._remember(entry)
        await self._conclude(entry, force=False)
        return True

    def _find_order(self, entry: JournalEntry) -> Order | None:
        """The order of `entry` on the trade server: its known ticket, or by comment, or else the
        one order of our magic, symbol, side and volume set up since it was sent that no other
        command claims (comments may be rewritten; one unknown outcome per symbol keeps this
        unambiguous; an ambiguous match is not taken)."""
        claimed = {e.order for e in self._journal.entries() if e.order and e.command_id != entry.command_id}
        stored = entry.command_id[:COMMENT_MAX]
        orders = [o for o in self.broker.orders() + self.broker.history_orders(entry.send_ms - 2000)
                  if o.magic == self.magic and o.ticket not in claimed]
        known = [o for o in orders if entry.order and o.ticket == entry.order]
        if known:
            return known[0]
        by_comment = [o for o in orders if o.comment == stored]
        if by_comment:
            return by_comment[0]
        alike = [o for o in orders if o.symbol == entry.symbol and o.type == entry.side
                 and abs(o.volume_initial - entry.volume) < _EPS]
        return alike[0] if len(alike) == 1 else None

    def _trace_entry(self, cid: str) -> JournalEntry | None:
        """A command not in the journal that the trade server knows by its comment (an order
        or a deal carrying the id): its entry, as `done` (never to be sent again)."""
        stored = cid[:COMMENT_MAX]
        since = self._clock.time_ms() - self._lookback_ms
        found = [o for o in self.broker.orders() + self.broker.history_orders(since)
                 if o.magic == self.magic and o.comment == stored]
        deals = [d for d in self.broker.history_deals(since) if d.magic == self.magic and d.comment == stored]
        if not found and not deals:
            return None
        order = found[0] if found else None
        ticket = order.ticket if order is not None else deals[0].order
        filled = sum(d.volume for d in deals)
        volume = order.volume_initial if order is not None else filled
        send_ms = order.time_setup_msc if order is not None else deals[0].time_msc
        symbol = order.symbol if order is not None else deals[0].symbol
        side = order.type if order is not None else deals[0].side
        if order is not None and order.state == "canceled" and not deals:
            return JournalEntry(cid, "rejected", send_ms, symbol, side, volume, ticket, 0,
                                f"its order {ticket} was canceled without a deal")
        retcode = (TRADE_RETCODE_PLACED if not deals else TRADE_RETCODE_DONE if filled >= volume - _EPS
                   else TRADE_RETCODE_DONE_PARTIAL)
        return JournalEntry(cid, "done", send_ms, symbol, side, volume, ticket, retcode)

    def _active_order(self, ticket: int) -> Order | None:
        return next((o for o in self.broker.orders() if o.ticket == ticket), None)  # OrderSelect

    def _history_order(self, ticket: int, send_ms: int) -> Order | None:
        return next((o for o in self.broker.history_orders(send_ms - 60_000) if o.ticket == ticket), None)

    def _deals_of(self, entry: JournalEntry) -> list[Deal]:
        """Our deals of a command: those of its order (`DEAL_ORDER`), and any whose comment is
        its id, since shortly before it was sent (a short `HistorySelect`, never days)."""
        stored = entry.command_id[:COMMENT_MAX]
        return [d for d in self.broker.history_deals(entry.send_ms - 60_000)
                if d.magic == self.magic and ((entry.order and d.order == entry.order) or d.comment == stored)]

    def _remember(self, entry: JournalEntry, *, expires_ms: int | None = None) -> None:
        """Journal an outcome; when the disk fails it is kept in memory (the order is sent).
        `expires_ms`: the command's expiry when it was not journaled before (None: unchanged)."""
        try:
            self._journal.write(entry, expires_ms=expires_ms)
        except OSError as exc:
            log.error("EA simulator: cannot journal %s (%s): %r", entry.command_id, entry.state, exc)
            self._journal.remember(entry, expires_ms=expires_ms)

    def _resync_fills(self) -> None:
        """Queue the fills of our recent deals again: one lost in a crash after its ack arrives
        now. The journal names each order's command; other deals go by their comment."""
        if self._resync_fills_ms <= 0:
            return
        since = self._clock.time_ms() - self._resync_fills_ms
        by_order = {e.order: e.command_id for e in self._journal.entries() if e.order}
        for deal in self.broker.history_deals(since):
            if deal.magic != self.magic:
                continue
            cid = by_order.get(deal.order) or deal.comment
            if cid:
                self._mark_reported(deal.ticket)
                self._outbox.append(("/mt5/fill", self._fill_body(cid, deal)))

    # ------------------------------------------------------------ reports

    async def _ack(self, cid: str, status: str, retcode: int, reason: str, *, expires_ms: int | None = None) -> None:
        """Acknowledge `cid` (and remember the ack for a redelivery). `expires_ms`: the command's
        expiry when the journal does not hold it (a refusal by the EA itself; 0 = none given, as
        if an hour): the session remembers it at least until then, else it could be judged
        again, and executed, when delivered again after `SESSION_MEMORY_MS`."""
        body = _dumps({"command_id": cid, "status": status, "retcode": retcode, "reason": reason})
        now = self._clock.time_ms()
        keep_until = now + SESSION_MEMORY_MS
        if expires_ms is not None:
            keep_until = max(keep_until, expires_ms if expires_ms > 0 else now + JOURNAL_UNKNOWN_EXPIRY_MS)
        self._handled[cid] = (body, keep_until)
        self._handled.move_to_end(cid)
        forget_oldest(self._handled, HANDLED_KEPT, now, lambda v: v[1])
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
            "swap": deal.swap,
            "time_msc": deal.time_msc,
        })

    async def _report_fills(self, entry: JournalEntry, *, force: bool) -> int:
        """Report the deals of a command not reported yet in this session (all when `force`)."""
        count = 0
        for deal in self._deals_of(entry):
            if force or deal.ticket not in self._reported:
                self._mark_reported(deal.ticket)
                await self._report("/mt5/fill", self._fill_body(entry.command_id, deal))
                count += 1
        return count

    def _mark_reported(self, deal: int) -> None:
        now = self._clock.time_ms()
        self._reported[deal] = now
        self._reported.move_to_end(deal)
        forget_oldest(self._reported, REPORTED_KEPT, now - SESSION_MEMORY_MS, int)

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

    def set_trade_allowed(self, allowed: bool) -> None:
        """The terminal's AutoTrading button: off, commands are refused (retcode 10027) and the
        account report says so."""
        self._trade_allowed = allowed

    async def post_account(self) -> bool:
        acct = self.broker.account()
        body = _dumps({
            "balance": acct.balance,
            "equity": acct.equity,
            "margin_free": acct.margin_free,
            "positions": [
                {"ticket": p.ticket, "symbol": p.symbol, "type": p.type, "volume": p.volume,
                 "price_open": p.price_open, "magic": p.magic, "swap": p.swap}
                for p in self.broker.positions(None if self.report_all_positions else self.magic)
            ],
            "margin_mode": self.margin_mode,
            "trade_allowed": self._trade_allowed,
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
        """The protocol headers for one request (`path_with_query` as on the wire)."""
        ts = self._timestamp()
        return {
            HEADER_TERMINAL: self.terminal,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_request(self._secret, ts, method, path_with_query, body),
            HEADER_INSTANCE: self.instance_id,
        }

    async def _request(self, method: str, path_with_query: str, body: bytes) -> httpx.Response | None:
        """One signed request; None when it got no answer, or was not tried because one of
        this timer event already got none (or the listener is being backed off)."""
        now = self._clock.monotonic_ns()
        if self._event_blocked or now < self._http_down_until_ns:
            self.http_skipped += 1
            return None
        wire_path = self._base_path + path_with_query
        headers = self.signed_headers(method, wire_path, body)
        if method == "POST":
            headers["Content-Type"] = "application/json"
        try:
            resp = await self._http().request(method, self.base_url + path_with_query, content=body or None,
                                              headers=headers)
        except httpx.HTTPError as exc:
            self.http_errors += 1
            self._event_blocked = True  # WebRequest blocks: one timeout per timer event at most
            self._http_down_failures += 1
            delay_s = min(2.0, self.timer_s * (2 ** min(self._http_down_failures, 10)))
            self._http_down_until_ns = self._clock.monotonic_ns() + int(delay_s * 1e9)
            log.debug("EA simulator: %s %s failed: %r", method, path_with_query, exc)
            return None
        self._http_down_failures = 0
        route = path_with_query.split("?", maxsplit=1)[0]
        if resp.status_code == 409 and route in ("/mt5/tick", "/mt5/commands", "/mt5/account"):
            self.lease_refusals += 1
            if not self.standby:
                log.warning("EA simulator %s: another instance holds this terminal at the listener (%.200s); "
                            "standing by", self.terminal, resp.text)
            self.standby = True
        elif resp.is_success and route in ("/mt5/tick", "/mt5/commands"):
            if self.standby:
                log.warning("EA simulator %s: this instance now holds the terminal", self.terminal)
            self.standby = False
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
    "HEADER_INSTANCE",
    "HEADER_SIGNATURE",
    "HEADER_TERMINAL",
    "HEADER_TIMESTAMP",
    "TRANSIENT_RETCODES",
    "EaSimulator",
    "InstanceLocked",
    "MarketTickSource",
    "Mt5Tick",
    "TickBoard",
    "TickSource",
    "choose_filling",
    "sign_request",
    "signing_string",
]
