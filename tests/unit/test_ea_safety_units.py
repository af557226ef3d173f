"""The simulated broker's switches and the EA simulator's journal, one piece at a time.

The broker behaviours that make the EA's safety logic matter (sim/mt5_broker.py): execution
modes and their filling modes, RETURN remainders that rest, TIMEOUTs whose request executes
later or never, comments rewritten or dropped, account currency digits. And the EA's journal
(sim/ea_journal.py): its line format, and an EA that died inside OrderSend never sending again.
The whole protocol under these switches is in tests/integration/test_ea_safety.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from sim.ea_journal import (
    JOURNAL_KEEP_MS,
    JOURNAL_KEPT,
    JOURNAL_MIN_KEEP_MS,
    JOURNAL_UNKNOWN_EXPIRY_MS,
    InstanceLock,
    InstanceLocked,
    Journal,
    JournalEntry,
    journal_path,
)
from sim.ea_sim import EaSimulator, choose_filling
from sim.mt5_broker import (
    TRADE_ACTION_REMOVE,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_DONE_PARTIAL,
    TRADE_RETCODE_INVALID,
    TRADE_RETCODE_INVALID_FILL,
    TRADE_RETCODE_PLACED,
    TRADE_RETCODE_REJECT,
    TRADE_RETCODE_TIMEOUT,
    BrokerBehaviour,
    SimBroker,
    SymbolSpec,
    TradeRequest,
)
from tests.unit.test_ea_sim import MAGIC, SECRET, TERMINAL, FakeListener, Quotes, command, steps

T0 = 1_732_150_000_000
XAU = SymbolSpec(contract_size=100.0)
EXCHANGE = SymbolSpec(contract_size=100.0, execution="exchange")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_ms=T0)


@pytest.fixture
def quotes(clock: ManualClock) -> Quotes:
    return Quotes(clock)


def broker(quotes: Quotes, clock: ManualClock, spec: SymbolSpec = XAU, **behaviour: Any) -> SimBroker:
    return SimBroker(quotes.touch, clock=clock, seed=1, specs={"XAUUSD": spec}, behaviour=BrokerBehaviour(**behaviour))


def buy(volume: float = 0.1, **kw: Any) -> TradeRequest:
    return TradeRequest(symbol="XAUUSD", type="buy", volume=volume, magic=MAGIC, **kw)


# ====================================================================== the broker's switches


@pytest.mark.parametrize(
    ("execution", "allowed"),
    [("request", {"FOK"}), ("instant", {"FOK"}), ("market", {"FOK", "IOC"}), ("exchange", {"FOK", "IOC", "RETURN"})],
)
def test_filling_modes_by_execution_mode(quotes: Quotes, clock: ManualClock, execution: str,
                                         allowed: set[str]) -> None:
    spec = SymbolSpec(contract_size=100.0, execution=execution)  # type: ignore[arg-type]
    assert spec.allowed_fillings() == allowed
    b = broker(quotes, clock, spec)
    for mode in ("FOK", "IOC", "RETURN"):
        res = b.execute(buy(0.01, type_filling=mode, price=2650.31))
        assert (res.retcode == TRADE_RETCODE_DONE) is (mode in allowed), (execution, mode, res)
        assert (res.retcode == TRADE_RETCODE_INVALID_FILL) is (mode not in allowed)
    # SYMBOL_FILLING_MODE narrows FOK/IOC; under Instant/Request FOK is always the one
    assert SymbolSpec(filling_modes=frozenset({"FOK"})).allowed_fillings() == {"FOK"}
    assert SymbolSpec(filling_modes=frozenset({"IOC"}), execution="instant").allowed_fillings() == {"FOK"}


def test_choose_filling_prefers_the_command_then_fok_ioc_return() -> None:
    assert choose_filling(XAU, "IOC", auto=True) == ("IOC", "")
    assert choose_filling(SymbolSpec(execution="instant"), "IOC", auto=True) == ("FOK", "")
    assert choose_filling(XAU, "RETURN", auto=True) == ("FOK", "")
    assert choose_filling(EXCHANGE, "RETURN", auto=True) == ("RETURN", "")
    assert choose_filling(SymbolSpec(filling_modes=frozenset()), "IOC", auto=True) == (
        None, "the symbol allows no filling mode under market execution")
    assert choose_filling(XAU, "RETURN", auto=False) == (
        None, "the symbol does not allow RETURN filling under market execution")


def test_a_return_remainder_rests_until_removed(quotes: Quotes, clock: ManualClock) -> None:
    b = broker(quotes, clock, EXCHANGE, fill_fraction=0.6)
    res = b.execute(buy(0.1, type_filling="RETURN", comment="r-1"))
    assert (res.retcode, res.volume) == (TRADE_RETCODE_DONE_PARTIAL, 0.06)
    [order] = b.orders()
    assert (order.ticket, order.state, order.volume_initial, order.volume_current) == (res.order, "partial", 0.1, 0.04)
    assert b.positions()[0].volume == 0.06
    removed = b.execute(TradeRequest("XAUUSD", "buy", 0.0, action=TRADE_ACTION_REMOVE, order=order.ticket))
    assert (removed.retcode, removed.order) == (TRADE_RETCODE_DONE, order.ticket)
    assert b.orders() == [] and [o.state for o in b.history_orders()] == ["canceled"]
    again = b.execute(TradeRequest("XAUUSD", "buy", 0.0, action=TRADE_ACTION_REMOVE, order=order.ticket))
    assert again.retcode == TRADE_RETCODE_INVALID
    # IOC cancels the rest; FOK refuses; nothing available: RETURN is placed, IOC refused
    assert b.execute(buy(0.1, type_filling="IOC")).retcode == TRADE_RETCODE_DONE_PARTIAL
    assert b.execute(buy(0.1, type_filling="FOK")).retcode == TRADE_RETCODE_REJECT
    b.behaviour.fill_fraction = 0.0
    placed = b.execute(buy(0.1, type_filling="RETURN"))
    assert (placed.retcode, placed.deal, placed.volume) == (TRADE_RETCODE_PLACED, 0, 0.0)
    assert b.execute(buy(0.1, type_filling="IOC")).retcode == TRADE_RETCODE_REJECT
    assert [o.state for o in b.orders()] == ["placed"]


def test_a_resting_remainder_fills_later_when_told_to(quotes: Quotes, clock: ManualClock) -> None:
    b = broker(quotes, clock, EXCHANGE, fill_fraction=0.6, resting_fill_after_ms=100)
    res = b.execute(buy(0.1, type_filling="RETURN"))
    clock.advance(ms=99)
    assert len(b.orders()) == 1
    clock.advance(ms=1)
    assert b.orders() == []
    assert [(d.order, d.volume, d.time_msc) for d in b.history_deals()] == [(res.order, 0.06, T0), (res.order, 0.04,
                                                                                                      T0 + 100)]
    assert [(p.ticket, p.volume) for p in b.positions()] == [(res.order, 0.1)]
    assert b.history_orders()[0].state == "filled"


def test_a_timeout_executes_later_or_is_lost(quotes: Quotes, clock: ManualClock) -> None:
    b = broker(quotes, clock, timeouts=1, timeout_delay_ms=300)
    res = b.execute(buy(comment="t-1"))
    assert (res.retcode, res.order, res.deal) == (TRADE_RETCODE_TIMEOUT, 0, 0)
    clock.advance(ms=299)
    assert b.history_deals() == [] and b.orders() == [] and b.history_orders() == []
    clock.advance(ms=1)
    [deal] = b.history_deals()
    assert (deal.comment, deal.time_msc) == ("t-1", T0 + 300)
    assert b.execute(buy(comment="t-2")).retcode == TRADE_RETCODE_DONE  # only the next N time out
    b.behaviour.timeouts, b.behaviour.timeout_outcome = 1, "lost"
    assert b.execute(buy(comment="t-3")).retcode == TRADE_RETCODE_TIMEOUT
    clock.advance(ms=10_000)
    assert [d.comment for d in b.history_deals()] == ["t-1", "t-2"] and b.requests == 3


@pytest.mark.parametrize(("policy", "expected"), [("keep", "c-1"), ("rewrite", "[{order}]"), ("drop", "")])
def test_comments_kept_rewritten_or_dropped(quotes: Quotes, clock: ManualClock, policy: str, expected: str) -> None:
    b = broker(quotes, clock, comments=policy)
    res = b.execute(buy(comment="c-1"))
    want = expected.format(order=res.order)
    assert (b.history_deals()[0].comment, b.history_orders()[0].comment, b.positions()[0].comment) == (want,) * 3


def test_account_amounts_round_to_the_currency_digits(quotes: Quotes, clock: ManualClock) -> None:
    b = SimBroker(quotes.touch, clock=clock, specs={"XAUUSD": XAU}, currency="BTC", currency_digits=8,
                  balance=1.234567891, leverage=1_000_000,
                  behaviour=BrokerBehaviour(commission_per_lot=0.00012345))
    assert b.account().balance == 1.23456789
    b.execute(buy(0.01))
    assert b.history_deals()[0].commission == -0.00000123 and b.balance == 1.23456666
    with pytest.raises(ValueError, match="currency_digits"):
        SimBroker(quotes.touch, currency_digits=13)


def test_orders_survive_in_the_state_file_and_version_1_files_still_load(
    quotes: Quotes, clock: ManualClock, tmp_path: Path,
) -> None:
    path = tmp_path / "broker.json"
    first = SimBroker(quotes.touch, clock=clock, specs={"XAUUSD": EXCHANGE}, state_file=path,
                      behaviour=BrokerBehaviour(fill_fraction=0.5))
    first.execute(buy(0.1, type_filling="RETURN", comment="s-1"))
    again = SimBroker(quotes.touch, clock=clock, specs={"XAUUSD": EXCHANGE}, state_file=path)
    assert again.orders() == first.orders() and again.history_deals() == first.history_deals()
    old = json.loads(path.read_text())
    for key in ("orders", "history_orders", "currency_digits"):
        del old[key]
    old["version"] = 1
    path.write_text(json.dumps(old))
    legacy = SimBroker(quotes.touch, clock=clock, state_file=path)
    assert legacy.orders() == [] and legacy.history_deals() == first.history_deals()


# ====================================================================== the journal and the lock


@given(st.text(max_size=200))
def test_a_journal_line_never_breaks_the_parser(line: str) -> None:
    entry = JournalEntry.parse(line)
    assert entry is None or entry.line() == JournalEntry.parse(entry.line() + "\n").line()  # type: ignore[union-attr]


@given(st.from_regex(r"[A-Za-z0-9_-]{1,31}", fullmatch=True), st.sampled_from(["sent", "done", "unknown", "retry",
                                                                               "rejected"]),
       st.floats(min_value=0.01, max_value=100, allow_nan=False), st.integers(0, 2**63), st.text(max_size=50))
def test_journal_entries_round_trip(cid: str, state: str, volume: float, order: int, reason: str) -> None:
    entry = JournalEntry(cid, state, T0, "XAUUSD", "buy", volume, order, 10009, reason)  # type: ignore[arg-type]
    back = JournalEntry.parse(entry.line())
    assert back == entry.but(reason=" ".join(reason.split()))


def _sent(cid: str, send_ms: int) -> JournalEntry:
    return JournalEntry(cid, "sent", send_ms, "XAUUSD", "buy", 0.01)


def test_the_journal_keeps_at_most_journal_kept_entries_in_memory(tmp_path: Path) -> None:
    # One command every 10 s, each expiring 2 s after it was sent (the listener's default TTL), so
    # the run spans more than JOURNAL_MIN_KEEP_MS: past JOURNAL_KEPT entries the oldest go,
    # exactly that many stay; the file keeps every line.
    path = tmp_path / "T1.journal"
    journal = Journal(path, now_ms=T0)
    extra = 5
    assert (JOURNAL_KEPT - 1) * 10_000 > JOURNAL_MIN_KEEP_MS  # the oldest are old enough to go
    for i in range(JOURNAL_KEPT + extra):
        send_ms = T0 + i * 10_000
        journal.write(_sent(f"c-{i}", send_ms), expires_ms=send_ms + 2000)
        journal.write(_sent(f"c-{i}", send_ms).but(state="done", order=i + 1))  # the outcome keeps its expiry
    assert len(journal) == JOURNAL_KEPT
    kept = [e.command_id for e in journal.entries()]
    assert kept[0] == f"c-{extra}" and kept[-1] == f"c-{JOURNAL_KEPT + extra - 1}"
    assert all(journal.get(f"c-{i}") is None for i in range(extra))
    assert len(path.read_text().splitlines()) == 2 * (JOURNAL_KEPT + extra)


def test_the_journal_bound_waits_for_commands_that_can_still_be_delivered() -> None:
    journal = Journal(None, now_ms=T0, max_entries=2)
    # Expired at once, but younger than JOURNAL_MIN_KEEP_MS: its fills may still be re-sent.
    journal.write(_sent("young", T0), expires_ms=T0 + 1)
    # Expires in an hour: until then the listener serves it and the EA would execute it.
    journal.write(_sent("long", T0 + 1), expires_ms=T0 + 3_600_000)
    journal.write(_sent("never", T0 + 2), expires_ms=0)  # no expiry: by age only
    journal.write(_sent("b", T0 + 3), expires_ms=T0 + 2003)
    assert len(journal) == 4
    journal.write(_sent("c", T0 + JOURNAL_MIN_KEEP_MS + 1), expires_ms=T0 + JOURNAL_MIN_KEEP_MS + 2001)
    assert journal.get("young") is None  # now old enough: the count takes it, and waits at "long"
    assert [e.command_id for e in journal.entries()] == ["long", "never", "b", "c"]
    journal.write(_sent("d", T0 + 3_600_002), expires_ms=T0 + 3_602_002)
    assert journal.get("long") is None and journal.get("never") is not None  # "never" holds the rest
    assert [e.command_id for e in journal.entries()] == ["never", "b", "c", "d"]
    journal.write(_sent("e", T0 + 2 + JOURNAL_KEEP_MS + 1), expires_ms=T0 + 2 + JOURNAL_KEEP_MS + 2001)
    assert [e.command_id for e in journal.entries()] == ["d", "e"]  # "never" by age, then b, c, d by count


def test_journal_entries_read_from_the_file_are_held_an_hour(tmp_path: Path) -> None:
    # Their commands' expiry is not in the file: held as if they expired an hour after they were sent.
    path = tmp_path / "T1.journal"
    Journal(path, now_ms=T0).write(_sent("old", T0))
    journal = Journal(path, now_ms=T0, max_entries=1)
    journal.write(_sent("a", T0 + JOURNAL_UNKNOWN_EXPIRY_MS), expires_ms=T0 + JOURNAL_UNKNOWN_EXPIRY_MS + 2000)
    assert journal.get("old") is not None
    journal.write(_sent("b", T0 + JOURNAL_UNKNOWN_EXPIRY_MS + 1), expires_ms=T0 + JOURNAL_UNKNOWN_EXPIRY_MS + 2001)
    assert [e.command_id for e in journal.entries()] == ["a", "b"]  # "old" went; "a" is held (min keep)


def test_a_restarted_simulated_ea_keeps_the_journal_with_its_expiries(quotes: Quotes, clock: ManualClock) -> None:
    b = broker(quotes, clock)
    first = EaSimulator("http://127.0.0.1:8787", TERMINAL, SECRET, ["XAUUSD"], b, quotes, clock, magic=MAGIC)
    second = EaSimulator("http://127.0.0.1:8787", TERMINAL, SECRET, ["XAUUSD"], b, quotes, clock, magic=MAGIC)
    # The same object, not a new one over the same entries: a new one would know no command's
    # expiry and hold every entry an hour, so the count bound would not hold across restarts.
    assert first._journal is second._journal


def test_the_lock_is_exclusive_and_keeps_the_instance_id(tmp_path: Path) -> None:
    lock = InstanceLock.acquire(tmp_path, "T1")
    with pytest.raises(InstanceLocked):
        InstanceLock.acquire(tmp_path, "T1")
    other = InstanceLock.acquire(tmp_path, "T2")  # per terminal id
    lock.release()
    again = InstanceLock.acquire(tmp_path, "T1")
    assert again.instance_id == lock.instance_id and again.instance_id != other.instance_id
    again.release()
    other.release()


def _ea(listener: FakeListener, b: SimBroker, quotes: Quotes, clock: ManualClock, common: Path,
        **kw: Any) -> EaSimulator:
    return EaSimulator("http://127.0.0.1:8787", TERMINAL, SECRET, ["XAUUSD"], b, quotes, clock,
                       transport=httpx.MockTransport(listener.handler), magic=MAGIC, common_dir=common, **kw)


async def test_an_ea_that_died_inside_ordersend_never_sends_again(quotes: Quotes, clock: ManualClock,
                                                                 tmp_path: Path) -> None:
    # The journal says "sent" and nothing more: the EA died before OrderSend returned.
    path = journal_path(tmp_path, TERMINAL)
    Journal(path, now_ms=T0).write(JournalEntry("o-1", "sent", T0, "XAUUSD", "buy", 0.1))
    listener = FakeListener(clock, commands=[command(clock=clock, expires_msc=T0 + 60_000)])
    b = broker(quotes, clock)
    ea = _ea(listener, b, quotes, clock, tmp_path, unknown_settle_ms=500)
    await steps(ea, clock, 3)
    assert b.requests == 0 and ea.executed == 0
    assert listener.acks[0] == {"command_id": "o-1", "status": "unknown", "retcode": 0,
                                "reason": "the EA stopped during OrderSend; never sent again"}
    await steps(ea, clock, 10)  # nothing appears on the trade server within the settle time
    assert b.requests == 0
    assert listener.acked["o-1"]["status"] == "unknown"
    assert listener.acks[-1] == {"command_id": "o-1", "status": "rejected", "retcode": 0, "reason":
                                 "the EA stopped during OrderSend: no order or deal appeared within 500 ms"}
    await ea.aclose()


async def test_a_journal_that_cannot_be_written_refuses_the_command(quotes: Quotes, clock: ManualClock,
                                                                   tmp_path: Path) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)])
    b = broker(quotes, clock)
    ea = _ea(listener, b, quotes, clock, tmp_path)
    ea.start()
    journal_path(tmp_path, TERMINAL).mkdir(parents=True)  # the file cannot be written any more
    await steps(ea, clock, 2)
    ack = listener.acked["o-1"]
    assert (ack["status"], ack["retcode"]) == ("rejected", 0)
    assert ack["reason"].startswith("cannot write the command journal: ")
    assert b.requests == 0
    await ea.aclose()
