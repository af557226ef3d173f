"""The MT5 command queue: lifecycle, redelivery, idempotent acks and fills, expiry, withdraw, restore."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.clock import ManualClock
from core.commands import CommandFill, CommandState, Mt5Command
from mt5_bridge.queue import (
    ACCEPTED_LATE,
    UNKNOWN_OUTCOME,
    CommandQueue,
    FillConflict,
    InMemoryCommandStore,
    accepted_late,
    outcome_unknown,
)
from tests.mt5_support import held, make_command

S = CommandState


def _fill(deal: int, volume: str = "0.05", price: str = "2650.35") -> CommandFill:
    return CommandFill(deal=deal, order=456, position=789, volume=Decimal(volume), price=Decimal(price),
                       commission=Decimal("-0.35"), time_msc=1_732_150_000_456)


def _queue() -> tuple[CommandQueue, InMemoryCommandStore, ManualClock]:
    clock = ManualClock()
    store = InMemoryCommandStore()
    return CommandQueue(store, clock), store, clock


def _stored(store: InMemoryCommandStore, command_id: str) -> Mt5Command:
    return next(c for c in store.all() if c.command_id == command_id)


async def test_enqueue_saves_before_the_command_can_be_served() -> None:
    clock = ManualClock()
    seen: list[list[Mt5Command]] = []

    class Watching(InMemoryCommandStore):
        async def save(self, command: Mt5Command) -> None:
            seen.append(queue.pending(command.terminal))
            await asyncio.sleep(0)
            seen.append(queue.pending(command.terminal))
            await super().save(command)

    store = Watching()
    queue = CommandQueue(store, clock)
    await queue.enqueue(make_command("c-1"))
    assert seen[:2] == [[], []]
    assert _stored(store, "c-1").state is S.PENDING
    assert [c.command_id for c in queue.pending("T1")] == ["c-1"]


async def test_enqueue_is_idempotent_by_command_id() -> None:
    queue, store, _ = _queue()
    first = await queue.enqueue(make_command("c-1"))
    again = await queue.enqueue(make_command("c-1", volume="9"))
    assert again is first
    assert again.volume == Decimal("0.10")
    assert store.saves == 1
    with pytest.raises(ValueError, match="only a new pending command"):
        bad = make_command("c-2")
        bad.state = S.ACCEPTED
        await queue.enqueue(bad)


async def test_a_failed_save_leaves_nothing_to_serve() -> None:
    class Broken(InMemoryCommandStore):
        async def save(self, command: Mt5Command) -> None:
            raise OSError("disk full")

    queue = CommandQueue(Broken(), ManualClock())
    with pytest.raises(OSError):
        await queue.enqueue(make_command("c-1"))
    assert queue.get("c-1") is None
    assert queue.pending("T1") == []


async def test_pending_marks_delivered_and_redelivers_until_acked() -> None:
    queue, store, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    await queue.enqueue(make_command("c-2"))
    await queue.enqueue(make_command("c-3", terminal="T2"))
    first = queue.pending("T1")
    assert [c.command_id for c in first] == ["c-1", "c-2"]
    assert all(c.state is S.DELIVERED and c.deliveries == 1 for c in first)
    assert queue.has_unsaved
    await queue.flush()
    assert not queue.has_unsaved
    assert _stored(store, "c-1").state is S.DELIVERED
    saves = store.saves
    again = queue.pending("T1")
    assert [c.command_id for c in again] == ["c-1", "c-2"]
    assert [c.deliveries for c in again] == [2, 2]
    await queue.flush()
    assert store.saves == saves  # redelivery does not write
    assert await queue.ack("T1", "c-1", "accepted", 10009, "")
    assert [c.command_id for c in queue.pending("T1")] == ["c-2"]
    assert [c.command_id for c in queue.pending("T2")] == ["c-3"]
    assert queue.pending("T9") == []


async def test_ack_states_and_idempotence() -> None:
    queue, store, _ = _queue()
    for cid in ("a", "r", "e"):
        await queue.enqueue(make_command(cid))
    queue.pending("T1")
    await queue.flush()
    assert await queue.ack("T1", "a", "accepted", 10009, "")
    assert await queue.ack("T1", "r", "rejected", 10019, "no money")
    assert await queue.ack("T1", "e", "expired", 0, "expired before execution")
    assert [held(queue, cid).state for cid in ("a", "r", "e")] == [S.ACCEPTED, S.REJECTED, S.EXPIRED]
    rejected = queue.get("r")
    assert rejected is not None and (rejected.retcode, rejected.reason) == (10019, "no money")
    assert _stored(store, "r").state is S.REJECTED
    saves, version = store.saves, queue.version("a")
    # A repeated ack, and a late contradicting one, change nothing and are answered ok.
    assert await queue.ack("T1", "a", "accepted", 10009, "")
    assert await queue.ack("T1", "a", "rejected", 10006, "late")
    assert held(queue, "a").state is S.ACCEPTED
    assert (store.saves, queue.version("a")) == (saves, version)
    # Unknown command, or another terminal's command: not ours.
    assert not await queue.ack("T1", "nope", "accepted", 10009, "")
    assert not await queue.ack("T2", "a", "rejected", 1, "")
    with pytest.raises(ValueError):
        await queue.ack("T1", "a", "done", 0, "")


async def test_ack_of_a_pending_command_is_applied() -> None:
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    assert await queue.ack("T1", "c-1", "rejected", 10018, "market closed")
    assert held(queue, "c-1").state is S.REJECTED
    assert queue.pending("T1") == []


async def test_fills_are_idempotent_per_deal_and_accumulate() -> None:
    queue, store, _ = _queue()
    await queue.enqueue(make_command("c-1", volume="0.10"))
    queue.pending("T1")
    assert await queue.ack("T1", "c-1", "accepted", 10010, "")
    assert await queue.fill("T1", "c-1", _fill(1, "0.04"))
    saves = store.saves
    assert await queue.fill("T1", "c-1", _fill(1, "0.04"))  # repeated deal: ok, ignored
    assert store.saves == saves
    assert held(queue, "c-1").filled_volume == Decimal("0.04")
    assert await queue.fill("T1", "c-1", _fill(2, "0.06"))
    cmd = queue.get("c-1")
    assert cmd is not None and cmd.filled_volume == Decimal("0.10") and [f.deal for f in cmd.fills] == [1, 2]
    assert queue.has_deal("T1", 2) and not queue.has_deal("T2", 2)
    assert [f.deal for f in _stored(store, "c-1").fills] == [1, 2]


async def test_fill_for_an_unknown_command_or_terminal_changes_nothing() -> None:
    queue, store, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    saves = store.saves
    assert not await queue.fill("T1", "nope", _fill(1))
    assert not await queue.fill("T2", "c-1", _fill(1))
    assert store.saves == saves
    assert not queue.has_deal("T1", 1)
    assert held(queue, "c-1").fills == []


async def test_deal_reported_for_another_command_is_a_conflict() -> None:
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    await queue.enqueue(make_command("c-2"))
    assert await queue.fill("T1", "c-1", _fill(7))
    with pytest.raises(FillConflict) as info:
        await queue.fill("T1", "c-2", _fill(7))
    assert info.value.field == "deal"
    assert held(queue, "c-2").fills == []


async def test_a_fill_before_the_ack_implies_acceptance() -> None:
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    queue.pending("T1")
    assert await queue.fill("T1", "c-1", _fill(1, "0.10"))
    cmd = queue.get("c-1")
    assert cmd is not None and cmd.state is S.ACCEPTED and "implied" in cmd.reason
    assert queue.pending("T1") == []
    assert await queue.expire(cmd.expires_msc + 1) == []
    # The ack that follows is a no-op.
    assert await queue.ack("T1", "c-1", "accepted", 10009, "")
    assert held(queue, "c-1").state is S.ACCEPTED


async def test_expiry() -> None:
    queue, store, clock = _queue()
    await queue.enqueue(make_command("late", expires_msc=clock.time_ms() + 100))
    await queue.enqueue(make_command("acked", expires_msc=clock.time_ms() + 100))
    await queue.enqueue(make_command("later", expires_msc=clock.time_ms() + 10_000))
    queue.pending("T1")
    await queue.ack("T1", "acked", "accepted", 10009, "")
    clock.advance(ms=100)
    # At expires_msc exactly: not expired yet, but no longer served either.
    assert await queue.expire(clock.time_ms()) == []
    assert [c.command_id for c in queue.pending("T1")] == ["later"]
    clock.advance(ms=1)
    expired = await queue.expire(clock.time_ms())
    assert [c.command_id for c in expired] == ["late"]
    assert held(queue, "late").state is S.EXPIRED
    assert _stored(store, "late").state is S.EXPIRED
    assert held(queue, "acked").state is S.ACCEPTED
    # A late ack does not revive it; a late fill is recorded, the state stays expired.
    assert await queue.ack("T1", "late", "accepted", 10009, "")
    assert await queue.fill("T1", "late", _fill(3, "0.10"))
    late = queue.get("late")
    assert late is not None and late.state is S.EXPIRED and late.filled_volume == Decimal("0.10")


async def test_withdraw_only_takes_pending_commands() -> None:
    queue, store, _ = _queue()
    await queue.enqueue(make_command("p"))
    assert await queue.withdraw("p")
    assert held(queue, "p").state is S.WITHDRAWN
    assert _stored(store, "p").state is S.WITHDRAWN
    assert queue.pending("T1") == []
    assert not await queue.withdraw("p")
    await queue.enqueue(make_command("d"))
    queue.pending("T1")
    assert not await queue.withdraw("d")  # served: the EA may be executing it
    assert held(queue, "d").state is S.DELIVERED
    assert not await queue.withdraw("nope")


async def test_withdraw_all() -> None:
    queue, _, _ = _queue()
    await queue.enqueue(make_command("a"))
    await queue.enqueue(make_command("b", terminal="T2"))
    await queue.enqueue(make_command("c"))
    queue.pending("T2")
    out = await queue.withdraw_all()
    assert sorted(c.command_id for c in out) == ["a", "c"]
    assert held(queue, "b").state is S.DELIVERED


async def test_a_command_being_withdrawn_is_not_served_meanwhile() -> None:
    clock = ManualClock()
    gate = asyncio.Event()
    gated = {"on": False}

    class Slow(InMemoryCommandStore):
        async def save(self, command: Mt5Command) -> None:
            if gated["on"]:
                await gate.wait()
            await super().save(command)

    queue = CommandQueue(Slow(), clock)
    await queue.enqueue(make_command("c-1"))
    gated["on"] = True
    withdrawing = asyncio.create_task(queue.withdraw("c-1"))
    await asyncio.sleep(0.01)
    assert queue.pending("T1") == []  # the withdrawal is being saved: not served
    gate.set()
    assert await withdrawing
    assert queue.pending("T1") == []


async def test_store_failure_on_ack_changes_nothing_and_a_retry_applies() -> None:
    clock = ManualClock()
    fail = {"on": False}

    class Flaky(InMemoryCommandStore):
        async def save(self, command: Mt5Command) -> None:
            if fail["on"]:
                raise OSError("busy")
            await super().save(command)

    store = Flaky()
    queue = CommandQueue(store, clock)
    await queue.enqueue(make_command("c-1"))
    queue.pending("T1")
    await queue.flush()
    fail["on"] = True
    with pytest.raises(OSError):
        await queue.ack("T1", "c-1", "accepted", 10009, "")
    with pytest.raises(OSError):
        await queue.fill("T1", "c-1", _fill(1))
    cmd = queue.get("c-1")
    assert cmd is not None and cmd.state is S.DELIVERED and cmd.fills == []
    assert not queue.has_deal("T1", 1)
    fail["on"] = False
    assert await queue.fill("T1", "c-1", _fill(1))
    assert held(queue, "c-1").fills[0].deal == 1


async def test_restore_after_a_restart_resumes_serving() -> None:
    clock = ManualClock()
    store = InMemoryCommandStore()
    before = CommandQueue(store, clock)
    await before.enqueue(make_command("pending"))
    await before.enqueue(make_command("delivered"))
    await before.enqueue(make_command("partial"))
    await before.enqueue(make_command("done"))
    await before.enqueue(make_command("withdrawn"))
    before.pending("T1")
    await before.flush()
    await before.enqueue(make_command("pending-2"))
    await before.withdraw("withdrawn")  # delivered already: refused
    await before.ack("T1", "partial", "accepted", 10010, "")
    await before.fill("T1", "partial", _fill(11, "0.04"))
    await before.ack("T1", "done", "accepted", 10009, "")
    await before.fill("T1", "done", _fill(12, "0.10"))
    await before.ack("T1", "withdrawn", "rejected", 10006, "")
    await before.ack("T1", "pending", "rejected", 10006, "")

    # Restart: a new queue on the same store.
    after = CommandQueue(store, clock)
    assert after.pending("T1") == []
    assert await after.restore() == 3
    assert await after.restore() == 0
    served = after.pending("T1")
    assert [c.command_id for c in served] == ["delivered", "pending-2"]
    assert [c.state for c in served] == [S.DELIVERED, S.DELIVERED]
    # The partially filled command still knows its deal; new fills accumulate.
    assert await after.fill("T1", "partial", _fill(11, "0.04"))
    assert held(after, "partial").filled_volume == Decimal("0.04")
    assert await after.fill("T1", "partial", _fill(13, "0.06"))
    assert held(after, "partial").filled_volume == Decimal("0.10")
    # Finished commands are not loaded, but can still be looked up (and acks stay idempotent).
    assert after.get("done") is None
    done = await after.lookup("done")
    assert done is not None and done.state is S.ACCEPTED
    assert await after.ack("T1", "done", "rejected", 1, "")
    assert held(after, "done").state is S.ACCEPTED
    # Re-enqueueing a finished command finds it instead of sending it again.
    assert (await after.enqueue(make_command("pending"))).state is S.REJECTED
    assert [c.command_id for c in after.pending("T1")] == ["delivered", "pending-2"]


async def test_restore_without_a_store_is_a_no_op() -> None:
    queue = CommandQueue(None, ManualClock())
    assert await queue.restore() == 0
    await queue.enqueue(make_command("c-1"))
    assert not queue.knows_every_command
    assert await queue.lookup("nope") is None


async def test_wait_change_wakes_on_the_next_change() -> None:
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    v0 = queue.version("c-1")
    waiter = asyncio.create_task(queue.wait_change("c-1", v0, 5.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    await queue.ack("T1", "c-1", "accepted", 10009, "")
    assert await asyncio.wait_for(waiter, 1.0) > v0
    # Already changed since the version seen: returns at once; unknown: -1; timeout: same version.
    assert await queue.wait_change("c-1", v0, 5.0) > v0
    assert await queue.wait_change("nope", 0, 5.0) == -1
    now = queue.version("c-1")
    assert await queue.wait_change("c-1", now, 0.01) == now


async def test_a_command_holds_no_event_until_someone_waits_for_its_change() -> None:
    """Issue 19: an asyncio.Event per retained command was among a soak's top growers; one
    exists only while a change is waited for, and two waiters share it."""
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    slot = queue._slots["c-1"]
    assert slot.changed is None
    v = queue.version("c-1")
    first = asyncio.create_task(queue.wait_change("c-1", v, 5.0))
    second = asyncio.create_task(queue.wait_change("c-1", v, 5.0))
    await asyncio.sleep(0)
    assert slot.changed is not None and not first.done() and not second.done()
    await queue.ack("T1", "c-1", "accepted", 10009, "")
    assert await asyncio.wait_for(asyncio.gather(first, second), 1.0) == [v + 1, v + 1]
    assert slot.changed is None  # set and dropped with the change


async def test_a_waiter_that_gives_up_leaves_no_event_behind_unless_another_still_waits() -> None:
    """A command whose waiter timed out, and that never changed again, kept its event until it
    was pruned (minutes); the last waiter to give up now drops it."""
    queue, _, _ = _queue()
    await queue.enqueue(make_command("c-1"))
    slot = queue._slots["c-1"]
    v = queue.version("c-1")
    patient = asyncio.create_task(queue.wait_change("c-1", v, 5.0))
    await asyncio.sleep(0)
    assert await queue.wait_change("c-1", v, 0.01) == v  # gave up: the patient one still waits
    assert slot.changed is not None and not patient.done()
    patient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await patient
    assert slot.changed is None and slot.waiting == 0  # the last one gone: so is the event
    assert await queue.wait_change("c-1", v, 0.01) == v
    assert slot.changed is None
    waiter = asyncio.create_task(queue.wait_change("c-1", v, 5.0))  # a new wait still wakes
    await asyncio.sleep(0)
    await queue.ack("T1", "c-1", "accepted", 10009, "")
    assert await asyncio.wait_for(waiter, 1.0) == v + 1 and slot.changed is None


async def test_wait_pending_returns_as_soon_as_a_command_arrives() -> None:
    queue, _, _ = _queue()
    assert await queue.wait_pending("T1", 10) == []
    poll = asyncio.create_task(queue.wait_pending("T1", 5000))
    await asyncio.sleep(0.01)
    assert not poll.done()
    await queue.enqueue(make_command("other", terminal="T2"))
    await asyncio.sleep(0.01)
    assert not poll.done()
    await queue.enqueue(make_command("c-1"))
    got = await asyncio.wait_for(poll, 1.0)
    assert [c.command_id for c in got] == ["c-1"]
    assert got[0].state is S.DELIVERED


async def test_finished_commands_are_pruned_after_the_retention() -> None:
    clock = ManualClock()
    queue = CommandQueue(InMemoryCommandStore(), clock, retain_ms=1000)
    await queue.enqueue(make_command("c-1", expires_msc=clock.time_ms() + 60_000_000))
    await queue.fill("T1", "c-1", _fill(1, "0.10"))
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is not None
    clock.advance(ms=61_000)
    await queue.expire(clock.time_ms())
    assert queue.get("c-1") is None
    assert not queue.has_deal("T1", 1)
    # Still in the store: a lookup brings it back, and the deal with it.
    assert (await queue.lookup("c-1")) is not None
    assert queue.has_deal("T1", 1)


async def test_in_memory_store_keeps_copies_and_loads_open_ones() -> None:
    store = InMemoryCommandStore()
    cmd = make_command("c-1")
    await store.save(cmd)
    cmd.state = S.ACCEPTED
    stored = await store.get("c-1")
    assert stored is not None and stored.state is S.PENDING
    accepted = make_command("c-2")
    accepted.state = S.ACCEPTED
    accepted.fills.append(_fill(1, "0.05"))
    await store.save(accepted)
    full = make_command("c-3")
    full.state = S.ACCEPTED
    full.fills.append(_fill(2, "0.10"))
    await store.save(full)
    assert [c.command_id for c in await store.load_open()] == ["c-1", "c-2"]
    assert await store.get("nope") is None


async def test_a_delegating_store_is_authoritative_only_once_it_can_answer_by_id() -> None:
    """Review finding: without a ledger attached, a command the queue no longer holds must be
    unknown, not 'never sent' (the store slot cannot tell)."""
    from core.clock import ManualClock
    from engine.mt5_side import StoreSlot
    from mt5_bridge.queue import CommandQueue, InMemoryCommandStore

    slot = StoreSlot()
    queue = CommandQueue(slot, ManualClock())
    assert not queue.knows_every_command
    slot.target = InMemoryCommandStore()  # has no get_command: still not authoritative
    assert not queue.knows_every_command

    class LedgerLike(InMemoryCommandStore):
        async def get_command(self, command_id: str) -> None:
            return None

    slot.target = LedgerLike()
    assert queue.knows_every_command


async def test_fill_listeners_hear_each_new_deal_once_and_cannot_break_the_request() -> None:
    queue, _store, _ = _queue()
    await queue.enqueue(make_command("c-1", volume="0.10"))
    heard: list[tuple[str, Decimal]] = []
    queue.fill_listeners.append(lambda cmd: heard.append((cmd.command_id, cmd.filled_volume)))

    def broken(cmd: Mt5Command) -> None:
        raise RuntimeError("listener bug")

    queue.fill_listeners.append(broken)
    assert await queue.fill("T1", "c-1", _fill(1, "0.04"))
    assert await queue.fill("T1", "c-1", _fill(1, "0.04"))  # the same deal again: not news
    assert await queue.fill("T1", "c-1", _fill(2, "0.06"))
    assert not await queue.fill("T1", "nope", _fill(3))
    assert heard == [("c-1", Decimal("0.04")), ("c-1", Decimal("0.10"))]


# ---------------------------------------------------------------------------- unknown outcomes


async def test_an_unknown_ack_keeps_the_command_open_unserved_and_its_expiry_unknown() -> None:
    queue, store, clock = _queue()
    await queue.enqueue(make_command("u", expires_msc=clock.time_ms() + 100))
    queue.pending("T1")
    assert await queue.ack("T1", "u", "unknown", 10012, "TIMEOUT")
    cmd = held(queue, "u")
    assert (cmd.state, cmd.retcode, cmd.reason) == (S.DELIVERED, 10012, UNKNOWN_OUTCOME + "TIMEOUT")
    assert outcome_unknown(cmd) and _stored(store, "u").reason == UNKNOWN_OUTCOME + "TIMEOUT"
    assert queue.pending("T1") == []  # the EA has it and never sends it again: not served
    saves = store.saves
    assert await queue.ack("T1", "u", "unknown", 10012, "TIMEOUT")  # a repeat changes nothing
    assert store.saves == saves

    clock.advance(ms=101)
    [expired] = await queue.expire(clock.time_ms())
    assert (expired.state, expired.reason) == (S.EXPIRED, UNKNOWN_OUTCOME + "TIMEOUT")
    assert outcome_unknown(expired) and not accepted_late(expired)

    # The EA's final answer settles it; the state stays expired (final states never change).
    assert await queue.ack("T1", "u", "rejected", 10012, "TIMEOUT: no order or deal appeared")
    settled = held(queue, "u")
    assert (settled.state, settled.reason) == (S.EXPIRED, "TIMEOUT: no order or deal appeared")
    assert not outcome_unknown(settled)
    saves = store.saves
    assert await queue.ack("T1", "u", "accepted", 10009, "")  # nothing reopens it now
    assert await queue.ack("T1", "u", "unknown", 10012, "again")
    assert held(queue, "u") == settled and store.saves == saves


async def test_an_unknown_outcome_accepted_after_expiry_is_recorded() -> None:
    queue, _, clock = _queue()
    await queue.enqueue(make_command("u", expires_msc=clock.time_ms() + 100))
    queue.pending("T1")
    clock.advance(ms=101)
    await queue.expire(clock.time_ms())
    assert outcome_unknown(held(queue, "u"))  # delivered, never acknowledged
    assert await queue.ack("T1", "u", "accepted", 10010, "")
    cmd = held(queue, "u")
    assert (cmd.state, cmd.retcode, cmd.reason) == (S.EXPIRED, 10010, ACCEPTED_LATE + "retcode 10010")
    assert accepted_late(cmd) and not outcome_unknown(cmd)


async def test_an_unknown_ack_on_an_open_command_is_settled_by_a_normal_ack_or_a_fill() -> None:
    queue, _, clock = _queue()
    for cid in ("a", "f"):
        await queue.enqueue(make_command(cid, expires_msc=clock.time_ms() + 1000))
    queue.pending("T1")
    for cid in ("a", "f"):
        await queue.ack("T1", cid, "unknown", 10012, "")
    assert held(queue, "a").reason == UNKNOWN_OUTCOME + "retcode 10012"
    await queue.ack("T1", "a", "accepted", 10009, "")
    await queue.fill("T1", "f", _fill(7, "0.10"))
    assert [(held(queue, c).state, outcome_unknown(held(queue, c))) for c in ("a", "f")] == [
        (S.ACCEPTED, False), (S.ACCEPTED, False)]
    # An unknown ack on a finished command is ignored.
    assert await queue.ack("T1", "a", "unknown", 10012, "late")
    assert held(queue, "a").reason == ""


async def test_an_ea_reason_never_reads_as_a_marker() -> None:
    queue, _, clock = _queue()
    await queue.enqueue(make_command("m", expires_msc=clock.time_ms() + 100))
    queue.pending("T1")
    clock.advance(ms=101)
    await queue.expire(clock.time_ms())
    await queue.ack("T1", "m", "rejected", 0, UNKNOWN_OUTCOME + "spoofed")
    cmd = held(queue, "m")
    assert cmd.reason == "EA: " + UNKNOWN_OUTCOME + "spoofed" and not outcome_unknown(cmd)
