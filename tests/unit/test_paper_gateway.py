"""The paper gateway's realism: latency, slippage, partial fills, rejects, timeouts, lost acks.

Whatever it simulates, the gateway never lies: `query` by client order id tells what the
venue did, a client order id never executes twice, and no fill is beyond the order's limit
or quantity.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.clock import ManualClock
from core.config import PaperConfig, demo_config
from core.instruments import Instrument
from core.models import Order, OrderPurpose, OrderState, Side, Venue
from core.ports import OrderUpdate
from engine.settings import load_config
from exchanges.paper import REJECT_REASONS, PaperBehaviour, PaperGateway

SYMBOL = "BTC-USDT-SWAP"
INST = Instrument(
    venue="okx",
    symbol=SYMBOL,
    pair="BTC",
    qty_per_unit=Decimal("0.01"),
    tick_size=Decimal("0.1"),
    lot_step=Decimal(1),
    min_qty=Decimal(1),
    taker_fee_bps=5.0,
)


class Book:
    """A touch that tests can move."""

    def __init__(self, bid: float = 100.0, ask: float = 100.2) -> None:
        self.touch: tuple[float, float] | None = (bid, ask)

    def __call__(self, venue: Venue, symbol: str) -> tuple[float, float] | None:
        return self.touch if symbol == SYMBOL else None


def gateway(behaviour: PaperBehaviour | None = None, book: Book | None = None, venue: Venue = "okx") -> PaperGateway:
    return PaperGateway(venue, {SYMBOL: INST}, book or Book(), ManualClock(), behaviour=behaviour)


_ids = iter(range(1, 10**9))


def order(side: Side = "buy", qty: str = "10", price: str | None = None, cid: str | None = None) -> Order:
    limit = Decimal(price) if price is not None else Decimal("101") if side == "buy" else Decimal("99")
    return Order(
        client_order_id=cid or f"c{next(_ids)}",
        group_id="g1",
        venue="okx",
        symbol=SYMBOL,
        side=side,
        qty=Decimal(qty),
        price=limit,
        purpose=OrderPurpose.ENTRY,
        created_ms=0,
    )


def filled(update: OrderUpdate) -> Decimal:
    return sum((f.qty for f in update.fills), Decimal(0))


# -- default: today's behaviour -----------------------------------------------------------


async def test_default_fills_marketable_ioc_at_the_touch() -> None:
    gw = gateway()
    buy = await gw.place(order("buy"))
    sell = await gw.place(order("sell"))
    assert buy.state is OrderState.FILLED and sell.state is OrderState.FILLED
    assert buy.fills[0].price == Decimal("100.2") and sell.fills[0].price == Decimal("100.0")
    assert filled(buy) == Decimal(10)
    # fee: 10 contracts * 0.01 * 100.2 * 5 bps
    assert buy.fills[0].fee == Decimal("0.00501000")


async def test_default_expires_unmarketable_and_rejects_unknown() -> None:
    book = Book()
    gw = gateway(book=book)
    assert (await gw.place(order("buy", price="100.1"))).state is OrderState.EXPIRED
    unknown = order()
    unknown.symbol = "NOPE"
    assert (await gw.place(unknown)).reason == "unknown symbol"
    book.touch = None
    assert (await gw.place(order())).reason == "no market"


async def test_query_of_an_order_never_seen_is_rejected_not_found() -> None:
    update = await gateway().query(order())
    assert update.state is OrderState.REJECTED and update.reason == "order not found"


async def test_a_resent_client_order_id_never_executes_twice() -> None:
    gw = gateway()
    first = order(cid="same")
    assert (await gw.place(first)).state is OrderState.FILLED
    again = await gw.place(order(cid="same"))
    assert again.state is OrderState.FILLED and again.fills == [] and again.reason == "duplicate"
    assert filled(await gw.query(first)) == Decimal(10)


def test_behaviour_default_is_perfect() -> None:
    b = PaperBehaviour()
    assert b.latency_ms == (0.0, 0.0) and b.slippage_bps == 0.0 and not b.faulty
    assert b.partial_prob == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_ms": (5.0, 1.0)},
        {"latency_ms": (-1.0, 1.0)},
        {"slippage_bps": -1.0},
        {"reject_prob": 1.5},
        {"timeout_prob": -0.1},
        {"partial_min_fraction": 2.0},
        {"timeout_ms": -1.0},
    ],
)
def test_behaviour_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PaperBehaviour(**kwargs)


# -- latency --------------------------------------------------------------------------------


async def test_latency_delays_the_answer_and_the_book_may_move_meanwhile() -> None:
    book = Book()
    gw = gateway(PaperBehaviour(latency_ms=(40.0, 50.0)), book)
    started = time.monotonic()
    task = asyncio.create_task(gw.place(order("buy", price="101")))
    await asyncio.sleep(0.01)
    book.touch = (100.4, 100.6)  # the market moved while the order was on its way
    update = await task
    assert time.monotonic() - started >= 0.039
    assert update.fills[0].price == Decimal("100.6")


async def test_concurrent_resend_during_latency_executes_once() -> None:
    gw = gateway(PaperBehaviour(latency_ms=(20.0, 20.0)))
    a, b = await asyncio.gather(gw.place(order(cid="dup")), gw.place(order(cid="dup")))
    assert filled(a) + filled(b) == Decimal(10)
    assert {a.reason, b.reason} == {"", "duplicate"}


# -- slippage -------------------------------------------------------------------------------


async def test_slippage_is_adverse_bounded_and_on_the_tick() -> None:
    gw = gateway(PaperBehaviour(slippage_bps=50.0, seed=3))
    buys = [await gw.place(order("buy", price="110")) for _ in range(50)]
    sells = [await gw.place(order("sell", price="90")) for _ in range(50)]
    buy_prices = [u.fills[0].price for u in buys]
    sell_prices = [u.fills[0].price for u in sells]
    assert all(Decimal("100.2") <= p <= Decimal("100.8") for p in buy_prices)  # 100.2 * 1.005 = 100.70
    assert all(Decimal("99.4") <= p <= Decimal("100.0") for p in sell_prices)
    assert all(p % INST.tick_size == 0 for p in buy_prices + sell_prices)
    assert len(set(buy_prices)) > 1 and max(buy_prices) > Decimal("100.2")  # it does slip


async def test_slippage_never_fills_beyond_the_limit() -> None:
    gw = gateway(PaperBehaviour(slippage_bps=500.0, seed=4))
    for _ in range(30):
        buy = await gw.place(order("buy", price="100.3"))
        sell = await gw.place(order("sell", price="99.9"))
        assert buy.fills[0].price <= Decimal("100.3")
        assert sell.fills[0].price >= Decimal("99.9")


# -- partial fills --------------------------------------------------------------------------


async def test_partial_fill_takes_part_and_the_rest_expires() -> None:
    gw = gateway(PaperBehaviour(partial_prob=1.0, partial_min_fraction=0.3, seed=5))
    parts: set[Decimal] = set()
    for _ in range(20):
        o = order("buy", qty="10")
        update = await gw.place(o)
        qty = filled(update)
        # A fraction in [0.3, 1) of 10 lots, down to the lot step: 3 to 9 lots, never all 10.
        assert Decimal(3) <= qty <= Decimal(9)
        assert qty == qty.to_integral_value()
        assert update.state is OrderState.EXPIRED
        assert update.reason == "partially filled, rest expired"
        assert len(update.fills) == 1
        queried = await gw.query(o)
        assert queried.state is OrderState.EXPIRED and filled(queried) == qty
        parts.add(qty)
    assert len(parts) > 1  # the fraction is drawn per order


async def test_partial_fill_of_one_lot_fills_it_whole() -> None:
    gw = gateway(PaperBehaviour(partial_prob=1.0))
    update = await gw.place(order("buy", qty="1"))
    assert update.state is OrderState.FILLED and filled(update) == Decimal(1)


# -- rejects --------------------------------------------------------------------------------


async def test_reject_has_a_venue_reason_and_query_agrees() -> None:
    gw = gateway(PaperBehaviour(reject_prob=1.0))
    o = order()
    update = await gw.place(o)
    assert update.state is OrderState.REJECTED and update.reason in REJECT_REASONS
    assert update.fills == []
    queried = await gw.query(o)
    assert queried.state is OrderState.REJECTED and queried.reason == update.reason
    resent = await gw.place(order(cid=o.client_order_id))
    assert resent.state is OrderState.REJECTED and resent.fills == []


# -- timeouts -------------------------------------------------------------------------------


async def test_timeout_raises_and_query_tells_whether_it_executed() -> None:
    gw = gateway(PaperBehaviour(timeout_prob=1.0, timeout_ms=5.0, seed=6))
    outcomes: list[str] = []
    for _ in range(30):
        o = order()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await gw.place(o)
        assert time.monotonic() - started >= 0.004
        truth = await gw.query(o)
        if truth.state is OrderState.FILLED:
            outcomes.append("executed")
            assert filled(truth) == Decimal(10)
        else:
            outcomes.append("lost")
            assert truth.state is OrderState.REJECTED and truth.reason == "order not found"
    assert {"executed", "lost"} <= set(outcomes)


async def test_resend_after_timeout_executes_only_if_it_had_not() -> None:
    faulty = PaperBehaviour(timeout_prob=1.0, timeout_ms=1.0, seed=8)
    gw = gateway(faulty)
    executed = 0
    for _ in range(20):
        o = order()
        with pytest.raises(TimeoutError):
            await gw.place(o)
        before = filled(await gw.query(o))
        # The venue recovers: the same client order id is sent again.
        gw.behaviour = PaperBehaviour()
        again = await gw.place(order(cid=o.client_order_id))
        gw.behaviour = faulty
        after = filled(await gw.query(o))
        assert after == Decimal(10)  # exactly once either way
        if before:
            executed += 1
            assert again.reason == "duplicate" and again.fills == []
        else:
            assert filled(again) == Decimal(10)
    assert 0 < executed < 20


# -- lost acknowledgements ------------------------------------------------------------------


async def test_lost_ack_raises_connection_error_and_query_reports_the_fill() -> None:
    gw = gateway(PaperBehaviour(lost_ack_prob=1.0))
    o = order()
    with pytest.raises(ConnectionError):
        await gw.place(o)
    truth = await gw.query(o)
    assert truth.state is OrderState.FILLED and filled(truth) == Decimal(10)
    assert truth.fills[0].client_order_id == o.client_order_id


# -- seeding --------------------------------------------------------------------------------


async def _outcomes(gw: PaperGateway, n: int) -> list[tuple[str, str, Decimal, Decimal]]:
    out: list[tuple[str, str, Decimal, Decimal]] = []
    for i in range(n):
        o = order(cid=f"s{i}")
        try:
            update = await gw.place(o)
            tag = "ok"
        except (TimeoutError, ConnectionError) as exc:
            tag = type(exc).__name__
            update = await gw.query(o)
        price = update.fills[0].price if update.fills else Decimal(0)
        out.append((tag, str(update.state), filled(update), price))
    return out


async def test_same_seed_replays_and_venues_draw_independently() -> None:
    b = PaperBehaviour(slippage_bps=20, partial_prob=0.3, reject_prob=0.2, timeout_prob=0.1,
                       timeout_ms=0.0, lost_ack_prob=0.1, seed=42)
    first = await _outcomes(gateway(b), 60)
    second = await _outcomes(gateway(b), 60)
    other_venue = await _outcomes(gateway(b, venue="binance"), 60)
    assert first == second
    assert first != other_venue
    assert {t for t, *_ in first} == {"ok", "TimeoutError", "ConnectionError"}


# -- properties -----------------------------------------------------------------------------

behaviours = st.builds(
    PaperBehaviour,
    latency_ms=st.just((0.0, 0.0)),
    slippage_bps=st.floats(0, 1000),
    partial_prob=st.floats(0, 1),
    partial_min_fraction=st.floats(0, 1),
    reject_prob=st.floats(0, 1),
    timeout_prob=st.floats(0, 1),
    timeout_ms=st.just(0.0),
    lost_ack_prob=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
SIDES: tuple[Side, ...] = ("buy", "sell")
orders = st.lists(
    st.tuples(
        st.sampled_from(SIDES),
        st.integers(0, 50),  # quantity in lots
        st.integers(-20, 20),  # limit in ticks from the touch on the order's side
        st.integers(0, 3),  # which earlier client order id to reuse (re-send), 0 = new
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(behaviour=behaviours, specs=orders)
def test_random_behaviours_never_lie(behaviour: PaperBehaviour, specs: list[tuple[Side, int, int, int]]) -> None:
    asyncio.run(_never_lie(behaviour, specs))


async def _never_lie(behaviour: PaperBehaviour, specs: list[tuple[Side, int, int, int]]) -> None:
    book = Book(100.0, 100.2)
    gw = gateway(behaviour, book)
    placed: list[Order] = []
    executed: dict[str, Decimal] = {}
    for side, lots, ticks, reuse in specs:
        touch = Decimal("100.2") if side == "buy" else Decimal("100.0")
        limit = touch + INST.tick_size * ticks
        o = order(side, qty=str(lots), price=str(limit))
        if reuse and len(placed) >= reuse:
            o = placed[-reuse]
        else:
            placed.append(o)
        try:
            update: OrderUpdate | None = await gw.place(o)
        except (TimeoutError, ConnectionError):
            update = None
        truth = await gw.query(o)
        got = filled(truth)
        if update is not None and update.reason != "duplicate":
            # The answer, when there is one, is what the venue did.
            assert update.state is truth.state and filled(update) == got
        if update is not None and update.reason == "duplicate":
            assert update.fills == []
        # Never beyond the quantity, never beyond the limit, never executed twice.
        assert got <= o.qty
        assert len(truth.fills) <= 1
        for f in truth.fills:
            assert (f.price <= o.price) if o.side == "buy" else (f.price >= o.price)
            assert f.qty > 0
        if truth.state is OrderState.FILLED:
            assert got == o.qty
        if o.client_order_id in executed:
            assert got == executed[o.client_order_id]
        if truth.reason != "order not found":
            executed[o.client_order_id] = got
        # Consistent state: a fill means filled or (partial) expired.
        if got:
            assert truth.state in (OrderState.FILLED, OrderState.EXPIRED)


# -- config and wiring ----------------------------------------------------------------------


def test_paper_config_defaults_are_no_faults() -> None:
    cfg = PaperConfig()
    assert cfg.reject_rate == cfg.timeout_rate == cfg.lost_ack_rate == cfg.partial_rate == 0.0
    assert cfg.latency_ms_min == cfg.latency_ms_max == cfg.slippage_bps == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"reject_rate": 1.2}, {"timeout_rate": -0.1}, {"latency_ms_min": 5, "latency_ms_max": 1}, {"jitter": 1}],
)
def test_paper_config_refuses_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PaperConfig(**kwargs)


def test_paper_config_from_the_environment() -> None:
    loaded = load_config(None, {"QUANTARB_PAPER__REJECT_RATE": "0.2", "QUANTARB_PAPER__LATENCY_MS_MAX": "5"})
    assert loaded.config.paper.reject_rate == 0.2
    assert loaded.config.paper.latency_ms_max == 5.0


def test_runtime_wires_paper_behaviour_per_venue(tmp_path: Path) -> None:
    from engine.runtime import Runtime

    config = demo_config().model_copy(
        update={"paper": PaperConfig(reject_rate=0.2, timeout_rate=0.1, latency_ms_min=1, latency_ms_max=3, seed=9)}
    )
    runtime = Runtime(config, is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "t.db"),
                      mt5_in_process=True)
    paper = [gw for gw in runtime.gateways.values() if isinstance(gw, PaperGateway)]
    assert {gw.venue for gw in paper} == {"mt5", "okx", "binance"}
    for gw in paper:
        assert gw.behaviour.reject_prob == 0.2 and gw.behaviour.timeout_prob == 0.1
        assert gw.behaviour.latency_ms == (1.0, 3.0) and gw.behaviour.seed == 9


# -- a spot account sells only what it holds (issue 16, Deliver 6) --------------------------------
async def test_a_spot_account_cannot_sell_what_it_does_not_hold() -> None:
    gw = PaperGateway("okx", {SYMBOL: INST}, Book(), ManualClock(), spot_inventory={"BTC": Decimal("0.05")})
    assert gw.spot and gw.held("BTC") == Decimal("0.05")
    short = await gw.place(order("sell", qty="10"))  # 10 units = 0.1 BTC: more than held
    assert short.state is OrderState.REJECTED and "insufficient balance" in short.reason and not short.fills
    assert gw.held("BTC") == Decimal("0.05")  # a refused order changes nothing
    sold = await gw.place(order("sell", qty="5"))
    assert sold.state is OrderState.FILLED and gw.held("BTC") == 0
    assert (await gw.place(order("sell", qty="1"))).state is OrderState.REJECTED
    bought = await gw.place(order("buy", qty="3"))
    assert bought.state is OrderState.FILLED and gw.held("BTC") == Decimal("0.03")
    assert (await gw.place(order("sell", qty="3"))).state is OrderState.FILLED


async def test_a_derivatives_account_may_go_short() -> None:
    gw = gateway()
    assert not gw.spot and gw.held("BTC") is None
    assert (await gw.place(order("sell", qty="10"))).state is OrderState.FILLED


def test_spot_inventory_is_checked() -> None:
    with pytest.raises(ValueError, match="spot inventory"):
        PaperGateway("okx", {SYMBOL: INST}, Book(), ManualClock(), spot_inventory={"BTC": Decimal(-1)})
    with pytest.raises(ValidationError):
        PaperConfig.model_validate({"spot_inventory": {"BTC": "-1"}})
    assert PaperConfig.model_validate({"spot_inventory": {"BTC": "1.5"}}).spot_inventory == {"BTC": Decimal("1.5")}
