"""The command queue between quantarb and the EAs (docs/mt5-protocol.md, Command lifecycle).

The EA cannot be called, so commands wait here until it pulls them (every tick response and
every `GET /mt5/commands` carries them). Lifecycle, per `core.commands`:

    pending --(served to the EA)--> delivered --(ack)--> accepted | rejected | expired
    pending|delivered --(expires_msc passed, no ack)--> expired
    pending --(withdraw, e.g. kill switch)--> withdrawn

- Write-ahead: `enqueue` awaits the store's `save` before the command can be served, and
  every later change is saved before it becomes visible (copy, save, swap: a failed save
  leaves the command as it was, and the EA's retry finds it unchanged).
- A command is served again on every request until it is acknowledged (the EA dedupes by
  id); serving does not touch the store except on the first delivery (pending ->
  delivered), which `flush()` saves before the response leaves.
- Acks are idempotent: an ack on a terminal command changes nothing and is answered ok.
  Two exceptions keep "unknown" from ever becoming a guess. An `unknown` ack (the EA called
  `OrderSend` and does not know the outcome, e.g. after a TIMEOUT) keeps the command open but
  stops serving it (the EA never sends it again) and marks it, so that its expiry reads
  "outcome unknown", not "expired". And a command whose outcome is unknown when it expires
  (delivered and never acknowledged, or acknowledged `unknown`) takes the EA's later final
  ack: the state stays `expired` (final states never change) and the reason records what the
  EA found (`outcome_unknown`, `accepted_late`).
- Fills are idempotent per deal: a repeated deal is answered ok and ignored; fills of one
  command accumulate (partial fills). A fill on a command that has no ack yet is proof that
  the EA executed it, so it moves the command to `accepted` (it must neither be served again
  nor expire). Late fills after `expired` are recorded without changing the state.
- A command with a change in flight is not served (so a withdrawal cannot race a delivery).
- `withdraw` only takes a pending command: once served, the EA may be executing it, so it
  must be acknowledged or expire.
- Memory is bounded by age: a finished command is forgotten `retain_ms` after its last
  change, or `RETAIN_WITH_LOOKUP_MS` when the store can be asked by id (the ledger), from
  which `lookup` brings it back for a late ack, fill or query.

Everything runs on one event loop; state changes are serialized by one lock, reads are
synchronous. Waiters: `wait_change` (one command's next change; the gateway) and
`wait_pending` (the long-poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.clock import Clock
from core.commands import CommandFill, CommandState, CommandStore, Mt5Command, can_transition

__all__ = [
    "ACCEPTED_LATE",
    "ACK_STATES",
    "EXPIRED_BY_US",
    "RETAIN_WITH_LOOKUP_MS",
    "UNKNOWN_OUTCOME",
    "CommandLookup",
    "CommandQueue",
    "FillConflict",
    "InMemoryCommandStore",
    "accepted_late",
    "outcome_unknown",
]


# The reason of a command the queue expired itself: the EA never acknowledged it.
EXPIRED_BY_US = "not acknowledged before expires_msc"
# Reason prefixes (the reason is saved with the command, so these survive a restart):
# the EA acknowledged `unknown`; the EA acknowledged `accepted` after the command had expired.
UNKNOWN_OUTCOME = "outcome unknown: "
ACCEPTED_LATE = "accepted after expiry: "


def outcome_unknown(cmd: Mt5Command) -> bool:
    """Whether the EA may have executed `cmd` without saying so yet: it acknowledged `unknown`
    (and nothing final since), or it was delivered and expired without any acknowledgement."""
    if cmd.reason.startswith(UNKNOWN_OUTCOME):
        return cmd.is_open or cmd.state is CommandState.EXPIRED
    return (cmd.state is CommandState.EXPIRED and cmd.reason == EXPIRED_BY_US and cmd.deliveries > 0
            and cmd.retcode == 0)


def accepted_late(cmd: Mt5Command) -> bool:
    """Whether the EA reported `cmd` executed after it had expired here (see `outcome_unknown`)."""
    return cmd.state is CommandState.EXPIRED and cmd.reason.startswith(ACCEPTED_LATE)


def _ea_reason(reason: str, default: str) -> str:
    """The EA's reason as stored, never mistaken for one of the markers above."""
    text = reason or default
    if text == EXPIRED_BY_US or text.startswith((UNKNOWN_OUTCOME, ACCEPTED_LATE)):
        return "EA: " + text
    return text
log = logging.getLogger(__name__)

ACK_STATES: dict[str, CommandState] = {
    "accepted": CommandState.ACCEPTED,
    "rejected": CommandState.REJECTED,
    "expired": CommandState.EXPIRED,
}
_DAY_MS = 86_400_000
_PRUNE_EVERY_MS = 60_000
# Finished commands kept in memory when the store can be asked by id (the ledger): long past
# the last ack, fill or query a command's own flow makes (its group's deadline, seconds), so
# a weeks-long run keeps five minutes of commands (about a hundred at the demo's load).
# Older ones are read back from the ledger by `lookup` when the EA reports on them late.
RETAIN_WITH_LOOKUP_MS = 5 * 60_000


@runtime_checkable
class CommandLookup(Protocol):
    """Optional extra of a store: one command by id, terminal or not.

    With it, a re-place of a command that finished before a restart (so `load_open` did not
    return it) finds the finished command instead of enqueuing it again.
    """

    async def get(self, command_id: str) -> Mt5Command | None: ...


class FillConflict(ValueError):
    """A fill that contradicts what is known (a deal already reported for another command)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _copy(cmd: Mt5Command) -> Mt5Command:
    return dataclasses.replace(cmd, fills=[dataclasses.replace(f) for f in cmd.fills])


class InMemoryCommandStore:
    """The `CommandStore` port in memory, for tests and until the ledger's store is wired.

    It keeps copies, as a durable store would: mutating a saved object changes nothing here.
    """

    def __init__(self) -> None:
        self._commands: dict[str, Mt5Command] = {}
        self.saves = 0

    async def save(self, command: Mt5Command) -> None:
        self._commands[command.command_id] = _copy(command)
        self.saves += 1

    async def load_open(self) -> list[Mt5Command]:
        """Open commands, and accepted ones whose fills do not yet cover their volume."""
        return [
            _copy(c)
            for c in sorted(self._commands.values(), key=lambda c: (c.created_ms, c.command_id))
            if c.is_open or (c.state is CommandState.ACCEPTED and c.filled_volume < c.volume)
        ]

    async def get(self, command_id: str) -> Mt5Command | None:
        found = self._commands.get(command_id)
        return None if found is None else _copy(found)

    def all(self) -> list[Mt5Command]:
        return [_copy(c) for c in self._commands.values()]


@dataclass(slots=True)
class _Slot:
    """A command, its version, and the event its next change sets. The event exists only once
    someone waits for that change: an `asyncio.Event` with its deque of waiters is about 850
    bytes (tracemalloc), and a finished command's slot is kept for minutes
    (`RETAIN_WITH_LOOKUP_MS`): one per slot was among a soak's top growers (issue 19)."""

    cmd: Mt5Command
    version: int = 0
    changed: asyncio.Event | None = None
    waiting: int = 0  # waiters on `changed`; when the last gives up, the event goes too

    def next_change(self) -> asyncio.Event:
        """The event of the next change, for one more waiter (who calls `done_waiting`)."""
        if self.changed is None:
            self.changed = asyncio.Event()
        self.waiting += 1
        return self.changed

    def done_waiting(self, event: asyncio.Event) -> None:
        """A waiter is done with `event`: set by a change (nothing to do), or it gave up (timed
        out, cancelled): the last one to give up drops it. A command whose waiter timed out and
        that never changed again held its event until it was pruned, minutes later."""
        if self.changed is event:
            self.waiting -= 1
            if self.waiting == 0:
                self.changed = None

    def notify(self) -> None:
        event, self.changed = self.changed, None
        self.waiting = 0
        self.version += 1
        if event is not None:
            event.set()


class CommandQueue:
    """Commands for every terminal, with their state, fills and waiters.

    `store` None keeps everything in memory only (nothing survives a restart).
    `retain_ms`: finished commands stay queryable (and accept late fills) this long; with a
    store that can be asked by id, `retain_with_lookup_ms` (they are looked up there after).
    """

    def __init__(self, store: CommandStore | None, clock: Clock, *, retain_ms: int = _DAY_MS,
                 retain_with_lookup_ms: int = RETAIN_WITH_LOOKUP_MS) -> None:
        self._store = store
        self._clock = clock
        self._retain_ms = retain_ms
        self._retain_with_lookup_ms = retain_with_lookup_ms
        self._slots: dict[str, _Slot] = {}
        self._open: dict[str, dict[str, None]] = {}  # terminal -> open command ids, oldest first
        self._deals: dict[str, dict[int, str]] = {}  # terminal -> deal ticket -> command id
        self._arrivals: dict[str, asyncio.Event] = {}  # terminal -> set when one becomes servable
        self._busy: set[str] = set()  # commands with a change being saved: not served meanwhile
        self._dirty: dict[str, None] = {}  # delivered for the first time, not yet saved
        self._lock = asyncio.Lock()
        self._last_prune_ms = 0
        # Called (synchronously, after the commit) with the command whenever a new deal is
        # recorded: lets the engine notice a fill on an order whose group already closed.
        self.fill_listeners: list[Callable[[Mt5Command], None]] = []

    # ---------------------------------------------------------------------------- reads

    def get(self, command_id: str) -> Mt5Command | None:
        """The current command (treat it as read-only; it is replaced on every change)."""
        slot = self._slots.get(command_id)
        return None if slot is None else slot.cmd

    def version(self, command_id: str) -> int:
        """A counter bumped on every change of the command; -1 when unknown."""
        slot = self._slots.get(command_id)
        return -1 if slot is None else slot.version

    def commands(self, terminal: str | None = None) -> list[Mt5Command]:
        return [s.cmd for s in self._slots.values() if terminal is None or s.cmd.terminal == terminal]

    def open_commands(self, terminal: str) -> list[Mt5Command]:
        return [self._slots[cid].cmd for cid in self._open.get(terminal, {})]

    def has_deal(self, terminal: str, deal: int) -> bool:
        return deal in self._deals.get(terminal, {})

    @property
    def knows_every_command(self) -> bool:
        """Whether a command unknown to `lookup` was certainly never saved (so never served):
        true when the store can be asked by id (`CommandLookup`) and says it holds every
        command (a store may delegate, and report `authoritative = False` until it can)."""
        return isinstance(self._store, CommandLookup) and bool(getattr(self._store, "authoritative", True))

    async def lookup(self, command_id: str) -> Mt5Command | None:
        """`get`, falling back to the store (after a restart or pruning) when it can be asked."""
        slot = self._slots.get(command_id)
        if slot is not None:
            return slot.cmd
        if not isinstance(self._store, CommandLookup):
            return None
        async with self._lock:
            slot = self._slots.get(command_id)
            if slot is None:
                stored = await self._store.get(command_id)
                if stored is None:
                    return None
                self._adopt(stored)
                slot = self._slots[command_id]
            return slot.cmd

    @property
    def has_unsaved(self) -> bool:
        """Whether `pending()` delivered something whose new state `flush()` must save."""
        return bool(self._dirty)

    # ---------------------------------------------------------------------------- serving

    def pending(self, terminal: str) -> list[Mt5Command]:
        """Commands to serve to `terminal` now: pending and delivered ones, not expired.

        Marks pending ones delivered and counts every delivery; call `flush()` before the
        answer leaves so the first delivery is saved.
        """
        ids = self._open.get(terminal)
        if not ids:
            return []
        now = self._clock.time_ms()
        out: list[Mt5Command] = []
        for cid in ids:
            if cid in self._busy:
                continue
            slot = self._slots[cid]
            cmd = slot.cmd
            if cmd.expires_msc <= now or cmd.reason.startswith(UNKNOWN_OUTCOME):
                continue  # expired, or the EA has it and reports its outcome (ack `unknown`)
            if cmd.state is CommandState.PENDING:
                cmd.state = CommandState.DELIVERED
                cmd.updated_ms = now
                self._dirty[cid] = None
                slot.notify()
            cmd.deliveries += 1
            out.append(cmd)
        return out

    async def flush(self) -> None:
        """Save the commands that `pending()` delivered for the first time."""
        if not self._dirty:
            return
        async with self._lock:
            while self._dirty:
                cid = next(iter(self._dirty))
                slot = self._slots.get(cid)
                if slot is not None:
                    await self._save(slot.cmd)
                self._dirty.pop(cid, None)

    async def wait_pending(self, terminal: str, wait_ms: int) -> list[Mt5Command]:
        """`pending(terminal)`, waiting up to `wait_ms` for one to arrive when there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_ms, 0) / 1000
        while True:
            event = self._arrival(terminal)
            cmds = self.pending(terminal)
            remaining = deadline - loop.time()
            if cmds or remaining <= 0:
                return cmds
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return self.pending(terminal)

    # ---------------------------------------------------------------------------- changes

    async def enqueue(self, cmd: Mt5Command) -> Mt5Command:
        """Save `cmd`, then make it servable. Idempotent by command id: a second enqueue of
        a known id returns the command already queued (whatever its state) unchanged."""
        if cmd.state is not CommandState.PENDING or cmd.fills:
            raise ValueError(f"command {cmd.command_id}: only a new pending command can be enqueued")
        async with self._lock:
            slot = self._slots.get(cmd.command_id)
            if slot is not None:
                return slot.cmd
            if isinstance(self._store, CommandLookup):
                stored = await self._store.get(cmd.command_id)
                if stored is not None:
                    self._adopt(stored)
                    return self._slots[cmd.command_id].cmd
            fresh = _copy(cmd)
            fresh.updated_ms = fresh.updated_ms or self._clock.time_ms()
            await self._save(fresh)
            self._adopt(fresh)
            return fresh

    async def ack(self, terminal: str, command_id: str, status: str, retcode: int, reason: str) -> bool:
        """Apply the EA's ack. False when `terminal` has no such command; True otherwise,
        also when it changes nothing (a repeated or late ack on a finished command)."""
        if status != "unknown" and status not in ACK_STATES:
            raise ValueError(f"unknown ack status {status!r}")
        async with self._lock:
            slot = self._slots.get(command_id)
            if slot is None or slot.cmd.terminal != terminal:
                return False
            updated = self._acked(slot.cmd, status, retcode, reason)
            if updated is not None:
                updated.updated_ms = self._clock.time_ms()
                await self._commit(slot, updated)
            return True

    @staticmethod
    def _acked(cmd: Mt5Command, status: str, retcode: int, reason: str) -> Mt5Command | None:
        """The command after the ack, or None when the ack changes nothing."""
        updated = _copy(cmd)
        updated.retcode = retcode
        if status == "unknown":
            if not (cmd.is_open or outcome_unknown(cmd)):
                log.warning("mt5 %s: ack unknown (retcode %d) for command %s ignored: it is already %s",
                            cmd.terminal, retcode, cmd.command_id, cmd.state)
                return None
            updated.reason = UNKNOWN_OUTCOME + (reason or f"retcode {retcode}")
        elif cmd.state is CommandState.EXPIRED and outcome_unknown(cmd):
            # We had stopped waiting without knowing; the EA now says how it ended. The state
            # stays expired (final states never change): the reason records the outcome, and
            # the fills, which are recorded whatever the state, what was filled.
            if status == "accepted":
                updated.reason = ACCEPTED_LATE + (reason or f"retcode {retcode}")
            elif status == "rejected":
                updated.reason = _ea_reason(reason, "rejected by the EA")
            else:
                updated.reason = _ea_reason(reason, "refused by the EA as expired")
        else:
            new = ACK_STATES[status]
            if not can_transition(cmd.state, new):
                if cmd.state is not new:
                    log.warning(
                        "mt5 %s: ack %s (retcode %d) for command %s ignored: it is already %s",
                        cmd.terminal, status, retcode, cmd.command_id, cmd.state,
                    )
                return None
            updated.state = new
            updated.reason = _ea_reason(reason, "") if reason else ""
        if (updated.state, updated.retcode, updated.reason) == (cmd.state, cmd.retcode, cmd.reason):
            return None
        return updated

    async def fill(self, terminal: str, command_id: str, fill: CommandFill) -> bool:
        """Record one deal. False when `terminal` has no such command; True when recorded or
        when the deal was already recorded for it. Raises `FillConflict` for a deal already
        reported for another command (nothing changes)."""
        async with self._lock:
            slot = self._slots.get(command_id)
            if slot is None or slot.cmd.terminal != terminal:
                return False
            deals = self._deals.setdefault(terminal, {})
            owner = deals.get(fill.deal)
            if owner == command_id:
                return True
            if owner is not None:
                raise FillConflict("deal", "deal already reported for another command")
            updated = _copy(slot.cmd)
            updated.fills.append(dataclasses.replace(fill))
            updated.updated_ms = self._clock.time_ms()
            if updated.is_open:
                # The EA executed it: never serve it again, never expire it.
                updated.state = CommandState.ACCEPTED
                updated.reason = updated.reason or "accepted (implied by a fill)"
            await self._commit(slot, updated)
            deals[fill.deal] = command_id
            if updated.filled_volume > updated.volume:
                log.warning(
                    "mt5 %s: command %s filled %s of %s lots", terminal, command_id,
                    updated.filled_volume, updated.volume,
                )
        for listener in self.fill_listeners:
            try:
                listener(updated)
            except Exception:  # a listener's bug must not fail the EA's request
                log.exception("mt5 %s: fill listener failed for %s", terminal, command_id)
        return True

    async def expire(self, now_ms: int) -> list[Mt5Command]:
        """Commands not acknowledged and past their `expires_msc` become expired."""
        if not self._any_due(now_ms) and now_ms - self._last_prune_ms < _PRUNE_EVERY_MS:
            return []
        expired: list[Mt5Command] = []
        async with self._lock:
            for ids in list(self._open.values()):
                for cid in list(ids):
                    slot = self._slots[cid]
                    if slot.cmd.expires_msc < now_ms and slot.cmd.is_open:
                        updated = _copy(slot.cmd)
                        updated.state = CommandState.EXPIRED
                        if not updated.reason.startswith(UNKNOWN_OUTCOME):
                            updated.reason = EXPIRED_BY_US
                        updated.updated_ms = now_ms
                        await self._commit(slot, updated)
                        expired.append(updated)
            if now_ms - self._last_prune_ms >= _PRUNE_EVERY_MS:
                self._prune(now_ms)
        return expired

    async def withdraw(self, command_id: str) -> bool:
        """Withdraw a command the EA has not been served yet (kill switch). False otherwise."""
        async with self._lock:
            slot = self._slots.get(command_id)
            if slot is None or slot.cmd.state is not CommandState.PENDING or slot.cmd.fills:
                return False
            updated = _copy(slot.cmd)
            updated.state = CommandState.WITHDRAWN
            updated.reason = "withdrawn"
            updated.updated_ms = self._clock.time_ms()
            await self._commit(slot, updated)
            return True

    async def withdraw_all(self, terminal: str | None = None) -> list[Mt5Command]:
        """Withdraw every command not yet served (of one terminal, or of all)."""
        ids = [
            cid
            for t, open_ids in self._open.items()
            if terminal is None or t == terminal
            for cid in open_ids
        ]
        out: list[Mt5Command] = []
        for cid in ids:
            if await self.withdraw(cid):
                cmd = self.get(cid)
                if cmd is not None:
                    out.append(cmd)
        return out

    async def restore(self) -> int:
        """Load the store's open commands after a restart, so serving resumes. Returns how
        many were loaded (commands already in memory are kept as they are)."""
        if self._store is None:
            return 0
        loaded = await self._store.load_open()
        count = 0
        async with self._lock:
            for cmd in sorted(loaded, key=lambda c: (c.created_ms, c.command_id)):
                if cmd.command_id not in self._slots:
                    self._adopt(_copy(cmd))
                    count += 1
        return count

    async def run_expirer(self, interval_s: float = 0.1) -> None:
        """Expire commands on a timer until cancelled (the runtime runs it as a task)."""
        while True:
            try:
                await self.expire(self._clock.time_ms())
            except Exception:
                log.exception("mt5 command expiry failed; retrying")
            await asyncio.sleep(interval_s)

    async def wait_change(self, command_id: str, seen_version: int, timeout_s: float) -> int:
        """Wait until the command's version differs from `seen_version` (or `timeout_s`);
        returns the current version (-1 when the command is unknown)."""
        slot = self._slots.get(command_id)
        if slot is None:
            return -1
        if slot.version != seen_version:
            return slot.version
        if timeout_s > 0:
            event = slot.next_change()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout_s)
            finally:
                slot.done_waiting(event)
        slot = self._slots.get(command_id)
        return -1 if slot is None else slot.version

    # ---------------------------------------------------------------------------- internals

    def _arrival(self, terminal: str) -> asyncio.Event:
        event = self._arrivals.get(terminal)
        if event is None:
            event = self._arrivals[terminal] = asyncio.Event()
        return event

    def _wake(self, terminal: str) -> None:
        event = self._arrivals.pop(terminal, None)
        if event is not None:
            event.set()

    def _adopt(self, cmd: Mt5Command) -> None:
        self._slots[cmd.command_id] = _Slot(cmd)
        deals = self._deals.setdefault(cmd.terminal, {})
        for f in cmd.fills:
            deals.setdefault(f.deal, cmd.command_id)
        if cmd.is_open:
            self._open.setdefault(cmd.terminal, {})[cmd.command_id] = None
            self._wake(cmd.terminal)

    async def _save(self, cmd: Mt5Command) -> None:
        if self._store is not None:
            await self._store.save(cmd)

    async def _commit(self, slot: _Slot, updated: Mt5Command) -> None:
        """Save `updated`, then make it the command's state (call with the lock held)."""
        cid = updated.command_id
        self._busy.add(cid)
        try:
            await self._save(updated)
        finally:
            self._busy.discard(cid)
        slot.cmd = updated
        self._dirty.pop(cid, None)
        if not updated.is_open:
            self._open.get(updated.terminal, {}).pop(cid, None)
        slot.notify()

    def _any_due(self, now_ms: int) -> bool:
        return any(
            self._slots[cid].cmd.expires_msc < now_ms for ids in self._open.values() for cid in ids
        )

    def _prune(self, now_ms: int) -> None:
        """Forget finished commands older than the retention (and their deals)."""
        self._last_prune_ms = now_ms
        retain = min(self._retain_ms, self._retain_with_lookup_ms) if self.knows_every_command else self._retain_ms
        horizon = now_ms - retain
        gone = [
            cid for cid, s in self._slots.items() if not s.cmd.is_open and s.cmd.updated_ms < horizon
        ]
        for cid in gone:
            slot = self._slots.pop(cid)
            deals = self._deals.get(slot.cmd.terminal, {})
            for f in slot.cmd.fills:
                if deals.get(f.deal) == cid:
                    del deals[f.deal]
            slot.notify()

