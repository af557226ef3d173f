"""The MT5 broker's state file, rewritten after every change, is encoded by msgspec.

What the file holds must stay exactly what `to_state()` returns (the loader and older files
depend on it), including the values msgspec would write differently from `json` (non-finite
floats, lone surrogates), and one save must not build a Python object per record again: that
churn, several times a second in the accelerated soak, fragmented the engine's heap (issue 19).
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.clock import ManualClock
from sim.mt5_broker import (
    TRADE_ACTION_REMOVE,
    BrokerBehaviour,
    Deal,
    Order,
    Position,
    SimBroker,
    SymbolSpec,
    TradeRequest,
)
from sim.mt5_swap import SwapTerms

T0 = 1_732_150_000_000  # a Thursday
DAY = 86_400_000
XAU = SymbolSpec(contract_size=100.0, point=0.01, volume_min=0.01, volume_step=0.01, volume_max=50.0,
                 filling_modes=frozenset({"FOK", "IOC"}), execution="exchange",
                 swap=SwapTerms(mode="points", long=-25.0, short=3.5))


class Touch:
    def __init__(self) -> None:
        self.book = {"XAUUSD": (2650.11, 2650.31), "BTCUSD": (97000.0, 97010.5)}

    def __call__(self, symbol: str) -> tuple[float, float] | None:
        return self.book.get(symbol)


def request(side: str, volume: float, **kw: Any) -> TradeRequest:
    kw.setdefault("symbol", "XAUUSD")
    return TradeRequest(type=side, volume=volume, magic=7701, **kw)  # type: ignore[arg-type]


def busy_broker(path: Path) -> SimBroker:
    """Positions (with accrued swap, one partly closed), resting orders, order and deal history."""
    clock = ManualClock(wall_ms=T0)
    touch = Touch()
    b = SimBroker(touch, clock=clock, seed=5, specs={"XAUUSD": XAU}, state_file=path, currency_digits=2,
                  behaviour=BrokerBehaviour(commission_per_lot=7.0, slippage_points=3))
    b.execute(request("buy", 0.37, comment="qa:1:é€ open"))
    b.execute(request("sell", 1.0, comment="qa:2"))
    clock.advance(ms=DAY)  # a rollover: swap accrues on both
    b.execute(request("sell", 0.13, position=b.positions()[0].ticket, comment="qa:1 partial"))
    b.execute(request("buy", 0.01, symbol="BTCUSD", comment="x" * 40))  # truncated comment
    b.behaviour.fill_fraction = 0.5
    b.execute(request("buy", 0.2, type_filling="RETURN", comment="rest-1"))  # rests 0.1
    b.behaviour.fill_fraction = 0.0
    placed = b.execute(request("sell", 0.3, type_filling="RETURN", comment="rest-2"))  # rests, no deal
    b.execute(request("buy", 0.4, type_filling="RETURN", comment="rest-3"))
    b.execute(TradeRequest(symbol="XAUUSD", type="buy", volume=0.3, action=TRADE_ACTION_REMOVE, order=placed.order))
    b.behaviour.fill_fraction = 1.0
    closed = b.execute(request("buy", 1.0, position=b.positions()[1].ticket, comment="qa:2 close"))
    assert closed.deal and closed.volume == 1.0
    return b


def test_the_file_decodes_to_exactly_to_state(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    b = busy_broker(path)
    state = b.to_state()
    assert len(state["positions"]) == 3 and len(state["orders"]) == 2
    assert len(state["history_orders"]) == 4 and len(state["deals"]) == 4  # older ones trimmed at the rollover
    assert {o["state"] for o in state["history_orders"]} == {"filled", "canceled"}
    assert any(p["swap"] for p in state["positions"]) and state["swap_day"] is not None
    raw = path.read_bytes()
    assert json.loads(raw) == state
    assert msgspec.json.decode(raw) == state
    # Same keys in the same order, floats written as `json` writes them: the same bytes, but
    # for non-ASCII text, which `json` escapes and msgspec writes as UTF-8.
    assert raw.decode("utf-8") == json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    again = SimBroker(Touch(), clock=ManualClock(wall_ms=T0 + DAY), specs={"XAUUSD": XAU}, state_file=path)
    assert again.to_state() == state


def test_a_broker_that_never_rolled_over_writes_swap_day_null(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    b = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), specs={"XAUUSD": XAU})
    b.save(path)
    assert json.loads(path.read_bytes()) == b.to_state() and b.to_state()["swap_day"] is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_load_back_as_themselves(tmp_path: Path, value: float) -> None:
    """msgspec writes them as `null`, which would load back as None: such a file is written by `json`."""
    path = tmp_path / "broker.json"
    b = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), specs={"XAUUSD": XAU}, state_file=path)
    b.execute(request("buy", 0.1, price=value))  # market execution ignores the price; the order keeps it
    loaded = json.loads(path.read_text(encoding="utf-8"))["history_orders"][0]["price"]
    assert math.isnan(loaded) if math.isnan(value) else loaded == value
    again = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), state_file=path)
    assert isinstance(again.history_orders()[0].price, float)


@pytest.mark.parametrize("comment", ["\ud800 lone", "null", ":null", 'say "null"'])
def test_comments_msgspec_cannot_write_or_that_look_like_null_round_trip(tmp_path: Path, comment: str) -> None:
    path = tmp_path / "broker.json"
    b = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), specs={"XAUUSD": XAU}, state_file=path)
    b.execute(request("buy", 0.1, comment=comment))
    assert b.positions()[0].comment == comment
    assert json.loads(path.read_text(encoding="utf-8")) == b.to_state()
    again = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), state_file=path)
    assert again.to_state() == b.to_state()


def _soak_sized(path: Path) -> SimBroker:
    """The accelerated soak's account between flattens: 370 positions, 900 history orders and deals."""
    b = SimBroker(Touch(), clock=ManualClock(wall_ms=T0), specs={"XAUUSD": XAU})
    positions = [Position(10_000_001 + i, "XAUUSD", "buy" if i % 2 else "sell", 0.01 * (1 + i % 50),
                          2600.0 + i / 100, 7701, f"qa:{i:08x}", T0 + i, -0.25 * (i % 7)) for i in range(370)]
    orders = [Order(20_000_001 + i, "XAUUSD", "buy", 0.4, 0.2, 0.0, "RETURN", "partial", 7701, "rest", 0, T0)
              for i in range(3)]
    history = [Order(30_000_001 + i, "XAUUSD", "sell", 0.5, 0.0, 0.0, "IOC", "filled", 7701, f"qa:{i:08x}", 0,
                     T0 + i, T0 + i + 3) for i in range(900)]
    deals = [Deal(50_000_001 + i, 30_000_001 + i, 10_000_001 + i % 370, "XAUUSD", "sell", "out", 0.5,
                  2650.0 + i / 100, -3.5, 12.5 - i / 10, T0 + i, 7701, f"qa:{i:08x}", -0.5) for i in range(900)]
    b.load_state(msgspec.json.decode(msgspec.json.encode({
        "version": 2, "balance": 100_000.0, "leverage": 100, "currency": "USD", "currency_digits": 2,
        "next_order": 40_000_000, "next_deal": 60_000_000, "swap_day": T0 // DAY,
        "positions": positions, "orders": orders, "history_orders": history, "deals": deals})))
    b.state_file = path
    return b


def test_a_save_allocates_no_object_per_record(tmp_path: Path) -> None:
    """`to_state()` + `json.dump` allocated about twice the file's size in short-lived dicts and
    strings per save; the encoder's buffer is reused, so what is left is a list of references."""
    path = tmp_path / "broker.json"
    b = _soak_sized(path)
    b.save()  # the buffer grows to the state's size once
    b.save()
    size = path.stat().st_size
    assert size > 400_000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        b.save()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 64 * 1024, f"a save allocated {peak - before} bytes at its peak ({size} bytes file)"
    assert after - before < 4 * 1024
    assert json.loads(path.read_bytes()) == b.to_state()
