"""The simulated MT5 broker and the EA simulator's command handling.

The broker is checked directly (OrderSend retcodes, partial fills, closes by ticket, persistence).
The EA simulator is driven one timer event at a time (`step()`) against an in-process fake
listener (an httpx transport) that checks every signature with its own HMAC computation,
serves commands until they are acknowledged, and records what the EA reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import ManualClock
from core.config import demo_config
from sim.ea_sim import EaSimulator, MarketTickSource, Mt5Tick, TickBoard, sign_request, signing_string
from sim.market import SimTick
from sim.mt5_broker import (
    COMMENT_MAX,
    TRADE_RETCODE_CONNECTION,
    TRADE_RETCODE_DONE,
    TRADE_RETCODE_DONE_PARTIAL,
    TRADE_RETCODE_INVALID,
    TRADE_RETCODE_INVALID_CLOSE_VOLUME,
    TRADE_RETCODE_INVALID_FILL,
    TRADE_RETCODE_INVALID_PRICE,
    TRADE_RETCODE_INVALID_VOLUME,
    TRADE_RETCODE_MARKET_CLOSED,
    TRADE_RETCODE_NO_MONEY,
    TRADE_RETCODE_POSITION_CLOSED,
    TRADE_RETCODE_PRICE_OFF,
    TRADE_RETCODE_REJECT,
    TRADE_RETCODE_REQUOTE,
    BrokerBehaviour,
    SimBroker,
    SymbolSpec,
    TradeRequest,
    mt5_specs,
)

SECRET = b"unit-test-secret"
TERMINAL = "T1"
MAGIC = 7701
XAU = SymbolSpec(contract_size=100.0, point=0.01, volume_min=0.01, volume_step=0.01, volume_max=50.0)
T0 = 1_732_150_000_000


class Quotes:
    """A mutable touch and tick source."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.book: dict[str, tuple[float, float, int]] = {
            "XAUUSD": (2650.11, 2650.31, clock.time_ms()),
            "BTCUSD": (97000.0, 97010.0, clock.time_ms()),
        }

    def set(self, symbol: str, bid: float, ask: float) -> None:
        self.book[symbol] = (bid, ask, self.clock.time_ms())

    def touch(self, symbol: str) -> tuple[float, float] | None:
        q = self.book.get(symbol)
        return None if q is None else (q[0], q[1])

    def __call__(self) -> list[Mt5Tick]:
        return [Mt5Tick(s, b, a, t) for s, (b, a, t) in self.book.items()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_ms=T0)


@pytest.fixture
def quotes(clock: ManualClock) -> Quotes:
    return Quotes(clock)


def make_broker(quotes: Quotes, clock: ManualClock, **kw: Any) -> SimBroker:
    kw.setdefault("specs", {"XAUUSD": XAU})
    kw.setdefault("behaviour", BrokerBehaviour(commission_per_lot=7.0))
    return SimBroker(quotes.touch, clock=clock, seed=1, **kw)


def buy(volume: float = 0.1, **kw: Any) -> TradeRequest:
    return TradeRequest(symbol="XAUUSD", type="buy", volume=volume, magic=MAGIC, **kw)


# ====================================================================== the broker


def test_open_buy_fills_at_ask_and_creates_a_position(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    res = broker.execute(buy(0.1, comment="o-1"))
    assert res.retcode == TRADE_RETCODE_DONE and res.done
    assert res.price == 2650.31 and res.volume == 0.1
    assert (res.bid, res.ask) == (2650.11, 2650.31)
    [pos] = broker.positions()
    assert pos.ticket == res.order  # on MT5 the position ticket is the opening order's ticket
    assert (pos.symbol, pos.type, pos.volume, pos.price_open, pos.magic) == ("XAUUSD", "buy", 0.1, 2650.31, MAGIC)
    [deal] = broker.history_deals()
    assert (deal.ticket, deal.order, deal.position) == (res.deal, res.order, pos.ticket)
    assert (deal.side, deal.entry, deal.comment, deal.time_msc) == ("buy", "in", "o-1", T0)
    assert deal.commission == -0.7  # 7 per lot on 0.1 lot
    assert broker.balance == 100_000.0 - 0.7


def test_sell_fills_at_bid_and_slippage_is_adverse_and_bounded(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(slippage_points=5))
    prices = []
    for _ in range(40):
        res = broker.execute(TradeRequest(symbol="XAUUSD", type="sell", volume=0.01))
        assert res.retcode == TRADE_RETCODE_DONE
        prices.append(res.price)
    assert all(2650.06 - 1e-9 <= p <= 2650.11 + 1e-9 for p in prices)
    assert len(set(prices)) > 1


def test_comment_is_truncated_to_what_the_server_keeps(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    long_id = "x" * 40
    broker.execute(buy(comment=long_id))
    assert broker.history_deals()[0].comment == long_id[:COMMENT_MAX]
    assert len(broker.deals_with_comment(long_id)) == 1


def test_close_by_ticket_realises_profit_and_removes_the_position(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    opened = broker.execute(buy(0.2))
    ticket = broker.positions()[0].ticket
    quotes.set("XAUUSD", 2652.31, 2652.51)
    clock.advance(ms=1500)
    res = broker.execute(TradeRequest(symbol="XAUUSD", type="sell", volume=0.2, position=ticket, magic=MAGIC))
    assert res.retcode == TRADE_RETCODE_DONE and res.price == 2652.31
    assert broker.positions() == []
    close = broker.history_deals()[-1]
    assert (close.entry, close.side, close.position) == ("out", "sell", ticket)
    assert close.order != opened.order
    assert close.profit == pytest.approx(2.0 * 0.2 * 100)  # 2.00 per oz, 20 oz
    assert broker.balance == pytest.approx(100_000 - 1.4 + 40.0 - 1.4)


def test_partial_close_keeps_the_rest_open(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    broker.execute(buy(0.3))
    ticket = broker.positions()[0].ticket
    res = broker.execute(TradeRequest(symbol="XAUUSD", type="sell", volume=0.1, position=ticket))
    assert res.retcode == TRADE_RETCODE_DONE
    [pos] = broker.positions()
    assert pos.ticket == ticket and pos.volume == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("request_kw", "retcode"),
    [
        ({"position": 999, "type": "sell"}, TRADE_RETCODE_POSITION_CLOSED),
        ({"position": "own", "type": "buy"}, TRADE_RETCODE_INVALID),  # same direction as the position
        ({"position": "own", "type": "sell", "volume": 0.5}, TRADE_RETCODE_INVALID_CLOSE_VOLUME),
        ({"position": "own", "type": "sell", "symbol": "BTCUSD"}, TRADE_RETCODE_INVALID),
    ],
)
def test_close_errors(quotes: Quotes, clock: ManualClock, request_kw: dict[str, Any], retcode: int) -> None:
    broker = make_broker(quotes, clock)
    broker.execute(buy(0.1))
    ticket = broker.positions()[0].ticket
    kw = {"symbol": "XAUUSD", "volume": 0.1, **request_kw}
    if kw["position"] == "own":
        kw["position"] = ticket
    res = broker.execute(TradeRequest(**kw))
    assert res.retcode == retcode
    assert (res.deal, res.order) == (0, 0)
    assert len(broker.history_deals()) == 1 and broker.positions()[0].volume == 0.1


def test_failure_retcodes_execute_nothing(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock, balance=1_000.0)
    cases: list[tuple[TradeRequest, int]] = []
    broker.closed_markets.add("BTCUSD")
    cases.append((TradeRequest(symbol="BTCUSD", type="buy", volume=0.01), TRADE_RETCODE_MARKET_CLOSED))
    cases.append((buy(1.0), TRADE_RETCODE_NO_MONEY))  # 100 oz at 2650 with 1:100 needs 2650 margin
    cases.append((buy(0.015), TRADE_RETCODE_INVALID_VOLUME))  # not on the 0.01 step
    cases.append((buy(0.0), TRADE_RETCODE_INVALID_VOLUME))
    cases.append((buy(51.0), TRADE_RETCODE_INVALID_VOLUME))  # above volume_max
    cases.append((TradeRequest(symbol="EURUSD", type="buy", volume=0.1), TRADE_RETCODE_PRICE_OFF))
    for request, retcode in cases:
        res = broker.execute(request)
        assert res.retcode == retcode, request
        assert not res.done and res.deal == 0
    broker.specs["XAUUSD"] = SymbolSpec(contract_size=100.0, filling_modes=frozenset({"FOK"}))
    assert broker.execute(buy(0.01, type_filling="IOC")).retcode == TRADE_RETCODE_INVALID_FILL
    assert broker.history_deals() == [] and broker.positions() == []
    assert broker.balance == 1_000.0


@pytest.mark.parametrize(
    ("behaviour", "retcode"),
    [
        (BrokerBehaviour(requote_prob=1.0), TRADE_RETCODE_REQUOTE),
        (BrokerBehaviour(reject_prob=1.0), TRADE_RETCODE_REJECT),
        (BrokerBehaviour(connection_prob=1.0), TRADE_RETCODE_CONNECTION),
    ],
)
def test_random_refusals(quotes: Quotes, clock: ManualClock, behaviour: BrokerBehaviour, retcode: int) -> None:
    broker = make_broker(quotes, clock, behaviour=behaviour)
    res = broker.execute(buy())
    assert res.retcode == retcode and res.deal == 0
    assert broker.history_deals() == []


def test_instant_execution_requotes_beyond_the_deviation(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(execution="instant"))
    # the ask is 2650.31; the request expected 2650.21: 10 points worse
    assert broker.execute(buy(price=2650.21, deviation=5, type_filling="FOK")).retcode == TRADE_RETCODE_REQUOTE
    assert broker.execute(buy(price=2650.21, deviation=10, type_filling="FOK")).retcode == TRADE_RETCODE_DONE
    # Instant execution takes FOK only, and needs the price.
    assert broker.execute(buy(price=2650.31, type_filling="IOC")).retcode == TRADE_RETCODE_INVALID_FILL
    assert broker.execute(buy(type_filling="FOK")).retcode == TRADE_RETCODE_INVALID_PRICE
    assert len(broker.history_deals()) == 1


def test_partial_fills(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(partial_prob=1.0, partial_min_fraction=0.3))
    res = broker.execute(buy(1.0, type_filling="IOC"))
    assert res.retcode == TRADE_RETCODE_DONE_PARTIAL and res.done
    assert 0.3 - 1e-9 <= res.volume < 1.0
    assert abs(res.volume * 100 - round(res.volume * 100)) < 1e-6  # on the lot step
    assert broker.positions()[0].volume == res.volume
    fok = broker.execute(buy(1.0, type_filling="FOK"))
    assert fok.retcode == TRADE_RETCODE_REJECT and fok.deal == 0
    assert len(broker.history_deals()) == 1


def test_same_seed_same_outcomes(quotes: Quotes, clock: ManualClock) -> None:
    def run() -> list[tuple[int, float, float]]:
        behaviour = BrokerBehaviour(slippage_points=4, requote_prob=0.2, partial_prob=0.3)
        broker = make_broker(quotes, clock, behaviour=behaviour)
        return [(r.retcode, r.price, r.volume) for r in (broker.execute(buy(0.5)) for _ in range(30))]

    assert run() == run()


def test_account_equity_and_margin(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour())
    broker.execute(buy(0.1))  # 10 oz at 2650.31
    acct = broker.account()
    assert acct.margin == pytest.approx(10 * 2650.31 / 100, abs=0.01)
    assert acct.equity == pytest.approx(100_000 + (2650.11 - 2650.31) * 10, abs=0.01)
    assert acct.margin_free == pytest.approx(acct.equity - acct.margin, abs=0.01)


def test_state_file_keeps_the_account_across_restarts(quotes: Quotes, clock: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    first = make_broker(quotes, clock, state_file=path)
    first.execute(buy(0.2, comment="o-1"))
    assert path.exists()
    again = make_broker(quotes, clock, state_file=path)
    assert again.positions() == first.positions()
    assert again.history_deals() == first.history_deals()
    assert again.balance == first.balance
    res = again.execute(buy(0.1, comment="o-2"))
    assert res.deal > first.history_deals()[0].ticket and res.order > first.positions()[0].ticket
    assert len(make_broker(quotes, clock, state_file=path).history_deals()) == 2


def test_bad_behaviour_is_refused() -> None:
    with pytest.raises(ValueError, match="requote_prob"):
        BrokerBehaviour(requote_prob=1.5)


# ====================================================================== the EA simulator


@dataclass
class FakeListener:
    """An in-process stand-in for the MT5 listener; it checks every signature independently."""

    clock: ManualClock
    commands: list[dict[str, Any]] = field(default_factory=list)
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    seen_signatures: set[str] = field(default_factory=set)
    bad_signatures: int = 0
    fail: dict[str, int] = field(default_factory=dict)  # path -> how many next requests get 503
    resend_acked: bool = False  # keep serving commands after their ack (a duplicate delivery)

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        body = request.content
        ts = request.headers.get("X-QA-Timestamp", "")
        expected = hmac.new(
            SECRET, f"{ts}\n{request.method}\n{path}\n".encode() + body, hashlib.sha256
        ).hexdigest()
        sig = request.headers.get("X-QA-Signature", "")
        if (request.headers.get("X-QA-Terminal") != TERMINAL or not hmac.compare_digest(sig, expected)
                or sig in self.seen_signatures or abs(int(ts) - self.clock.time_ms()) > 30_000):
            self.bad_signatures += 1
            return httpx.Response(401, json={"error": "unauthorized", "reason": "signature"})
        self.seen_signatures.add(sig)
        self.requests.append((request.method, path))
        route = path.split("?")[0]
        if self.fail.get(route, 0) > 0:
            self.fail[route] -= 1
            return httpx.Response(503, json={"error": "unavailable"})
        data = json.loads(body) if body else None
        if route == "/mt5/tick":
            assert data is not None
            self.ticks.extend(data["ticks"])
            return self._commands()
        if route == "/mt5/commands":
            assert path == "/mt5/commands?wait_ms=0" and body == b""
            return self._commands()
        assert data is not None and request.headers["Content-Type"] == "application/json"
        if route == "/mt5/ack":
            self.acks.append(data)
            self.acked.setdefault(data["command_id"], data)
        elif route == "/mt5/fill":
            self.fills.append(data)
        elif route == "/mt5/account":
            self.accounts.append(data)
        return httpx.Response(200, json={"ok": True})

    def _commands(self) -> httpx.Response:
        pending = [c for c in self.commands if self.resend_acked or c.get("id") not in self.acked]
        return httpx.Response(200, json={"commands": pending})

    def fill_deals(self) -> set[int]:
        return {f["deal"] for f in self.fills}


def command(cid: str = "o-1", clock: ManualClock | None = None, **kw: Any) -> dict[str, Any]:
    now = clock.time_ms() if clock is not None else T0
    cmd = {
        "id": cid, "group_id": "g-1", "kind": "open", "symbol": "XAUUSD", "side": "buy", "volume": 0.1,
        "price": 2650.31, "deviation_points": 20, "filling": "IOC", "magic": MAGIC, "position": 0,
        "expires_msc": now + 2000,
    }
    cmd.update(kw)
    return cmd


def make_ea(listener: FakeListener, broker: SimBroker, quotes: Quotes, clock: ManualClock,
            symbols: Iterable[str] = ("XAUUSD", "BTCUSD"), **kw: Any) -> EaSimulator:
    return EaSimulator(
        "http://127.0.0.1:8787", TERMINAL, SECRET, symbols, broker, quotes, clock,
        transport=httpx.MockTransport(listener.handler), seed=3, magic=MAGIC, **kw,
    )


async def steps(ea: EaSimulator, clock: ManualClock, n: int, ms: float = 50) -> None:
    for _ in range(n):
        await ea.step()
        clock.advance(ms=ms)


def test_signing_matches_the_documented_string() -> None:
    body = b'{"ticks":[]}'
    assert signing_string("1732150000123", "POST", "/mt5/tick", body) == b'1732150000123\nPOST\n/mt5/tick\n{"ticks":[]}'
    assert sign_request(b"k", "1", "GET", "/mt5/commands?wait_ms=0", b"") == hmac.new(
        b"k", b"1\nGET\n/mt5/commands?wait_ms=0\n", hashlib.sha256).hexdigest()


async def test_ticks_are_batched_and_only_changed_ones_are_sent(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock)
    ea = make_ea(listener, make_broker(quotes, clock), quotes, clock)
    await ea.step()
    assert listener.requests[0] == ("POST", "/mt5/tick")
    assert sorted(t["symbol"] for t in listener.ticks) == ["BTCUSD", "XAUUSD"]
    assert listener.ticks[0].keys() == {"symbol", "bid", "ask", "time_msc"}
    clock.advance(ms=50)
    await ea.step()  # nothing changed: poll
    assert listener.requests[-1] == ("GET", "/mt5/commands?wait_ms=0")
    quotes.set("XAUUSD", 2650.21, 2650.41)
    quotes.book["ETHUSD"] = (3400.0, 3400.5, clock.time_ms())  # not one of the EA's symbols
    quotes.book["BTCUSD"] = (97011.0, 97010.0, clock.time_ms())  # crossed: never sent
    clock.advance(ms=50)
    await ea.step()
    assert listener.requests[-1] == ("POST", "/mt5/tick")
    assert listener.ticks[-1] == {"symbol": "XAUUSD", "bid": 2650.21, "ask": 2650.41, "time_msc": clock.time_ms() - 50}
    assert len(listener.ticks) == 3
    assert ea.ticks_sent == 3 and ea.polls == 1 and listener.bad_signatures == 0
    assert listener.accounts  # the first timer event reports the account
    await ea.aclose()


async def test_open_command_is_executed_once_then_acked_and_filled(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)])
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 4)
    [deal] = broker.history_deals()
    assert deal.comment == "o-1" and deal.magic == MAGIC
    assert listener.acks == [{"command_id": "o-1", "status": "accepted", "retcode": TRADE_RETCODE_DONE, "reason": ""}]
    assert listener.fills == [{
        "command_id": "o-1", "deal": deal.ticket, "order": deal.order, "position": deal.position,
        "symbol": "XAUUSD", "side": "buy", "volume": 0.1, "price": 2650.31, "commission": -0.7, "swap": 0.0,
        "time_msc": deal.time_msc,
    }]
    ack_at = listener.requests.index(("POST", "/mt5/ack"))
    assert listener.requests.index(("POST", "/mt5/fill")) > ack_at
    assert (ea.commands_seen, ea.executed, ea.duplicates_skipped) == (1, 1, 0)
    assert listener.bad_signatures == 0
    await ea.aclose()


async def test_redelivered_command_is_never_executed_twice(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)], resend_acked=True)
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 6)
    assert len(broker.history_deals()) == 1 and broker.requests == 1
    assert ea.executed == 1 and ea.commands_seen == 6 and ea.duplicates_skipped == 5
    assert len({json.dumps(a, sort_keys=True) for a in listener.acks}) == 1  # the same ack every time
    assert listener.fill_deals() == {broker.history_deals()[0].ticket}
    await ea.aclose()


async def test_restarted_ea_finds_the_deal_in_history_and_reports_instead(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)], fail={"/mt5/ack": 10**6})
    broker = make_broker(quotes, clock)
    first = make_ea(listener, broker, quotes, clock)
    await steps(first, clock, 3)
    assert first.executed == 1 and len(broker.history_deals()) == 1
    assert listener.acked == {}  # every ack failed: the command is still served
    await first.aclose()  # the EA dies; the terminal and its account stay

    listener.fail.clear()
    clock.advance(ms=3000)  # the command has expired by now: history wins over expiry
    second = make_ea(listener, broker, quotes, clock)
    await steps(second, clock, 3)
    assert second.executed == 0 and second.duplicates_skipped == 1 and second.expired_refused == 0
    assert broker.requests == 1 and len(broker.history_deals()) == 1
    assert listener.acked["o-1"] == {"command_id": "o-1", "status": "accepted", "retcode": TRADE_RETCODE_DONE,
                                     "reason": ""}
    assert listener.fill_deals() == {broker.history_deals()[0].ticket}
    await second.aclose()


async def test_expired_command_is_refused(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock, expires_msc=clock.time_ms() - 1)])
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2)
    assert broker.requests == 0
    assert listener.acks == [{"command_id": "o-1", "status": "expired", "retcode": 0,
                              "reason": "expired before execution"}]
    assert listener.fills == [] and ea.expired_refused == 1
    await ea.aclose()


async def test_close_command_closes_the_position_by_ticket(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    broker.execute(buy(0.3, comment="o-0"))
    ticket = broker.positions()[0].ticket
    listener = FakeListener(clock, commands=[
        command("c-1", clock, kind="close", side="sell", volume=0.3, price=0, position=ticket),
    ])
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2)
    assert broker.positions() == []
    close = broker.history_deals()[-1]
    assert (close.entry, close.position, close.comment) == ("out", ticket, "c-1")
    assert listener.acked["c-1"]["status"] == "accepted"
    assert [f["position"] for f in listener.fills if f["command_id"] == "c-1"] == [ticket]
    await ea.aclose()


async def test_close_of_an_unknown_position_is_rejected(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command("c-1", clock, kind="close", side="sell", position=424242)])
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2)
    # The EA's own check (PositionSelectByTicket): no OrderSend happened, so retcode 0.
    assert listener.acked["c-1"] == {"command_id": "c-1", "status": "rejected", "retcode": 0,
                                     "reason": "position 424242 not found"}
    assert listener.fills == [] and broker.requests == 0
    await ea.aclose()


async def test_broker_refusal_is_acked_rejected_with_its_retcode(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)])
    broker = make_broker(quotes, clock)
    broker.closed_markets.add("XAUUSD")
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2)
    ack = listener.acked["o-1"]
    assert (ack["status"], ack["retcode"]) == ("rejected", TRADE_RETCODE_MARKET_CLOSED)
    assert ack["reason"] == "Market is closed"
    assert ea.executed == 1 and ea.rejected == 1 and listener.fills == []
    await ea.aclose()


async def test_partial_fill_is_accepted_with_done_partial(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock, volume=1.0)])
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(partial_prob=1.0))
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2)
    assert listener.acked["o-1"]["retcode"] == TRADE_RETCODE_DONE_PARTIAL
    [fill] = listener.fills
    assert fill["volume"] == broker.history_deals()[0].volume < 1.0
    await ea.aclose()


async def test_connection_failure_is_retried_on_redelivery_until_it_works(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)])
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(connection_prob=1.0))
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 2, ms=10)
    assert listener.acks == [] and ea.transient_failures == 1  # backing off, not acknowledged
    broker.behaviour.connection_prob = 0.0
    await steps(ea, clock, 3, ms=200)
    assert listener.acked["o-1"]["status"] == "accepted"
    assert len(broker.history_deals()) == 1


async def test_connection_failure_until_expiry_is_acked_expired_with_the_last_retcode(
    quotes: Quotes, clock: ManualClock
) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)])
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(connection_prob=1.0))
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 12, ms=250)
    ack = listener.acked["o-1"]
    assert (ack["status"], ack["retcode"]) == ("expired", TRADE_RETCODE_CONNECTION)
    assert broker.history_deals() == [] and ea.expired_refused == 1
    await ea.aclose()


async def test_a_transient_failure_of_a_command_that_expired_unseen_is_forgotten(
    quotes: Quotes, clock: ManualClock
) -> None:
    # The listener stops serving a command at its expiry, so the EA may never see it again to
    # refuse it: its transient failure is dropped at the next one, not kept for the session.
    listener = FakeListener(clock, commands=[command(clock=clock)])
    broker = make_broker(quotes, clock, behaviour=BrokerBehaviour(connection_prob=1.0))
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 1, ms=10)
    assert ea.transient_failures == 1 and list(ea._transient) == ["o-1"]
    listener.commands = []  # expired at the listener: no longer served
    clock.advance(ms=2500)
    listener.commands = [command("o-2", clock=clock)]
    await steps(ea, clock, 1, ms=10)
    assert ea.transient_failures == 2 and list(ea._transient) == ["o-2"]
    assert listener.acks == [] and ea.expired_refused == 0
    await ea.aclose()


async def test_failed_reports_are_retried_with_the_same_body(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command(clock=clock)], fail={"/mt5/fill": 2})
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 8, ms=100)
    assert len(listener.fills) == 1 and ea.pending_reports == 0
    fill_posts = [r for r in listener.requests if r == ("POST", "/mt5/fill")]
    assert len(fill_posts) == 3  # two 503s, then delivered
    assert ea.executed == 1
    await ea.aclose()


async def test_unreachable_listener_counts_errors_and_keeps_the_reports(quotes: Quotes, clock: ManualClock) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    broker = make_broker(quotes, clock)
    broker.execute(buy(0.1, comment="o-9"))  # a recent deal of ours: its fill is re-reported at start
    ea = EaSimulator("http://127.0.0.1:1", TERMINAL, SECRET, ["XAUUSD"], broker, quotes, clock,
                     transport=httpx.MockTransport(down))
    await ea.step()
    # One timer event, one blocking attempt: the fill report finds no listener, and the tick
    # push and the poll are not tried in the same event (each would block the real EA for its
    # WebRequest timeout); the account report waits for a timer event that reaches it.
    assert (ea.http_errors, ea.http_skipped) == (1, 2)
    assert (ea.tick_posts, ea.ticks_sent, ea.polls, ea.fills_sent, ea.accounts_sent) == (0, 0, 0, 0, 0)
    assert ea.pending_reports == 1  # the undelivered fill is kept ...
    clock.advance(ms=50)
    await ea.step()  # ... backing off (2 timer periods): nothing is tried
    assert (ea.http_errors, ea.pending_reports, ea.fills_sent) == (1, 1, 0)
    clock.advance(ms=60)
    await ea.step()  # tried again, once
    assert (ea.http_errors, ea.pending_reports, ea.fills_sent) == (2, 1, 0)
    await ea.aclose()


async def test_bad_and_foreign_commands_are_rejected(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[
        command("bad-1", clock, side="long"),
        command("bad-2", clock, magic=1234),
        {"group_id": "no id"},
    ])
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    await steps(ea, clock, 1)
    # Refused by the EA itself: retcode 0 (no OrderSend), the reason says why.
    assert listener.acked["bad-1"] == {"command_id": "bad-1", "status": "rejected", "retcode": 0,
                                       "reason": "bad command: side must be buy or sell"}
    assert listener.acked["bad-2"] == {"command_id": "bad-2", "status": "rejected", "retcode": 0,
                                       "reason": f"magic 1234 is not the EA's {MAGIC}"}
    assert broker.requests == 0 and ea.bad_commands == 2
    await ea.aclose()


async def test_autotrading_off_refuses_every_command_and_says_so(quotes: Quotes, clock: ManualClock) -> None:
    listener = FakeListener(clock, commands=[command("o-1", clock)])
    broker = make_broker(quotes, clock)
    ea = make_ea(listener, broker, quotes, clock)
    ea.set_trade_allowed(False)
    await steps(ea, clock, 1)
    assert listener.acked["o-1"]["status"] == "rejected" and listener.acked["o-1"]["retcode"] == 10027
    assert broker.requests == 0
    assert await ea.post_account()
    assert listener.accounts[-1]["trade_allowed"] is False
    await ea.aclose()


async def test_account_report_and_resync_of_recent_fills(quotes: Quotes, clock: ManualClock) -> None:
    broker = make_broker(quotes, clock)
    broker.execute(buy(0.1, comment="o-9"))
    broker.execute(TradeRequest(symbol="XAUUSD", type="buy", volume=0.2, magic=42))  # another EA's
    listener = FakeListener(clock)
    ea = make_ea(listener, broker, quotes, clock, report_all_positions=False)
    await ea.step()
    # the fill of our recent deal is reported again at start (a crash may have lost it)
    assert [f["command_id"] for f in listener.fills] == ["o-9"]
    [acct] = listener.accounts
    assert acct.keys() == {"balance", "equity", "margin_free", "positions", "margin_mode", "trade_allowed"}
    assert (acct["margin_mode"], acct["trade_allowed"]) == ("hedging", True)
    assert [p["magic"] for p in acct["positions"]] == [MAGIC]
    assert acct["positions"][0].keys() == {"ticket", "symbol", "type", "volume", "price_open", "magic", "swap"}
    everything = make_ea(listener, broker, quotes, clock)
    assert await everything.post_account()
    assert sorted(p["magic"] for p in listener.accounts[-1]["positions"]) == [42, MAGIC]
    await ea.aclose()
    await everything.aclose()


async def test_base_url_path_prefix_is_signed(quotes: Quotes, clock: ManualClock) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        seen.append(path)
        ts = request.headers["X-QA-Timestamp"]
        want = hmac.new(SECRET, f"{ts}\n{request.method}\n{path}\n".encode() + request.content,
                        hashlib.sha256).hexdigest()
        assert request.headers["X-QA-Signature"] == want
        return httpx.Response(200, json={"commands": []})

    ea = EaSimulator("http://127.0.0.1:8787/qa/", TERMINAL, SECRET, ["XAUUSD"], make_broker(quotes, clock), quotes,
                     clock, transport=httpx.MockTransport(handler))
    await ea.step()
    assert seen[0] == "/qa/mt5/tick"
    await ea.aclose()


def test_market_tick_source_quotes_the_demo_mt5_symbols(clock: ManualClock) -> None:
    source = MarketTickSource(seed=5, clock=clock)
    assert sorted(source.symbols) == ["BTCUSD", "ETHUSD", "XAUUSD"]
    first = {t.symbol: t for t in source()}
    assert set(first) == {"BTCUSD", "ETHUSD", "XAUUSD"}
    assert all(0 < t.bid < t.ask for t in first.values())
    clock.advance(ms=2000)
    later = {t.symbol: t for t in source()}
    assert any(later[s] != first[s] for s in first)
    assert source.touch("XAUUSD") == (later["XAUUSD"].bid, later["XAUUSD"].ask)
    assert source.specs()["XAUUSD"].contract_size == 100.0
    with pytest.raises(ValueError, match="no MT5 instrument"):
        MarketTickSource(seed=5, clock=clock, symbols=["NOPE"])


def test_tick_board_keeps_the_latest_mt5_tick_per_symbol() -> None:
    board = TickBoard(["XAUUSD"])
    board.on_tick(SimTick("mt5", "XAUUSD", 2650.1, 2650.3, 1.0, 1.0, T0))
    board.on_tick(SimTick("mt5", "XAUUSD", 2650.2, 2650.4, 1.0, 1.0, T0 + 5))
    board.on_tick(SimTick("mt5", "BTCUSD", 97000.0, 97001.0, 1.0, 1.0, T0))  # not one of its symbols
    board.on_tick(SimTick("okx", "XAUUSD", 1.0, 2.0, 1.0, 1.0, T0))  # another venue
    assert board() == [Mt5Tick("XAUUSD", 2650.2, 2650.4, T0 + 5)]
    assert board.touch("XAUUSD") == (2650.2, 2650.4) and board.touch("BTCUSD") is None


def test_mt5_specs_of_the_demo_pairs() -> None:
    specs = mt5_specs(demo_config().build_pairs())
    assert set(specs) == {"XAUUSD", "BTCUSD", "ETHUSD"}
    assert specs["XAUUSD"].contract_size == 100.0 and specs["XAUUSD"].volume_step == 0.01
