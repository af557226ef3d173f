"""What an OKX order looks like on the wire, and whose client order ids OKX accepts.

OKX `clOrdId` is 1-32 case-sensitive letters or digits; our ids (core.hedge.client_order_id for
entries, retries and unwinds; engine.flatten's batch ids) must satisfy it for every input.
"""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from core.hedge import base36, client_order_id, new_group_id
from core.models import OrderState
from exchanges.okx import endpoints as ep
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.parsers import parse_orders
from exchanges.okx.stream import OkxPrivateStream, OrderStates
from exchanges.venue import ClockOffset

OKX_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


@given(st.integers(0, 2**45), st.integers(0, 10**6), st.integers(0, 1), st.integers(0, 36**3))
def test_our_client_order_ids_are_valid_okx_cl_ord_ids(opened_ms: int, seq: int, leg: int, attempt: int) -> None:
    cid = client_order_id(new_group_id(opened_ms, seq), leg, attempt)
    assert OKX_ID.match(cid)
    assert ep.check_cl_ord_id(cid) == cid


@given(st.integers(0, 2**45), st.integers(1, 10**6), st.integers(1, 10**4))
def test_flatten_ids_are_valid_okx_cl_ord_ids(started_ms: int, seq: int, n: int) -> None:
    batch = f"FL{base36(started_ms)}{seq}"  # engine/flatten.py: f"{batch}{n}"[:32]
    assert OKX_ID.match(f"{batch}{n}"[:32])


@pytest.mark.parametrize("bad", ["", "a-b", "a_b", "x" * 33, "é1", "a b", None])
def test_check_cl_ord_id_refuses_what_okx_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="okx clOrdId"):
        ep.check_cl_ord_id(bad)


def test_order_body_is_a_marketable_ioc_limit_with_our_id() -> None:
    args = ep.order_args("BTC-USDT-SWAP", "qag1l0a0", "buy", Decimal("2"), Decimal("97000.10"), "cross")
    assert ep.dumps(args) == ('{"instId":"BTC-USDT-SWAP","tdMode":"cross","clOrdId":"qag1l0a0","side":"buy",'
                              '"ordType":"ioc","px":"97000.1","sz":"2"}')
    assert json.loads(ep.dumps(ep.order_args("BTC-USDT", "a", "sell", Decimal("1E-8"), Decimal(3), "cash",
                                             tag="t1")))["sz"] == "0.00000001"


def test_query_strings_and_instrument_types() -> None:
    assert ep.with_query("/api/v5/trade/order", {"instId": "BTC-USDT", "clOrdId": "b15"}) == (
        "/api/v5/trade/order?instId=BTC-USDT&clOrdId=b15")
    assert ep.with_query("/api/v5/account/balance", {"ccy": ""}) == "/api/v5/account/balance"
    assert [ep.inst_type_of(i) for i in ("BTC-USDT-SWAP", "BTC-USD-250328", "BTC-USDT")] == ["SWAP", "FUTURES", "SPOT"]


def _detail(state: str, trade: str = "", fill_sz: str = "0", acc: str = "0") -> dict[str, str]:
    return {"instId": "BTC-USDT-SWAP", "ordId": "1", "clOrdId": "c1", "state": state, "ordType": "ioc",
            "accFillSz": acc, "tradeId": trade, "fillSz": fill_sz, "fillPx": "100" if trade else "",
            "fillFee": "-0.1" if trade else "", "uTime": "5"}


async def test_order_states_count_each_fill_once_and_never_go_back() -> None:
    states = OrderStates()
    heard: list[tuple[OrderState, list[str]]] = []
    states.on_update = lambda u: heard.append((u.state, [f.venue_trade_id for f in u.fills]))
    for entry in (_detail("partially_filled", "t1", "1", "1"), _detail("partially_filled", "t1", "1", "1"),
                  _detail("filled", "t2", "1", "2"), _detail("filled", "t2", "1", "2"),
                  _detail("live")):
        states.ingest(parse_orders([entry])[0])
    assert heard == [(OrderState.PARTIALLY_FILLED, ["t1"]), (OrderState.FILLED, ["t2"])]
    latest = states.latest("c1")
    assert latest is not None and latest.state is OrderState.FILLED  # a stale `live` does not undo `filled`
    assert [f.venue_trade_id for f in states.fills.fills("c1")] == ["t1", "t2"]
    assert states.open_ids() == []


async def test_wait_terminal_wakes_on_the_final_state() -> None:
    states = OrderStates()
    waiter = asyncio.create_task(states.wait_terminal("c1", 2.0))
    await asyncio.sleep(0)
    states.ingest(parse_orders([_detail("canceled")])[0])
    done = await waiter
    assert done is not None and done.state is OrderState.EXPIRED and done.reason == "ioc not filled"
    assert await states.wait_terminal("other", 0.05) is None


@settings(max_examples=300)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_the_stream_never_raises_on_a_frame(frame: str | bytes) -> None:
    stream = OkxPrivateStream(OkxCredentials("k", "s", "p"), "ws://127.0.0.1:1", ManualClock(), ClockOffset(),
                              OrderStates())
    stream.on_frame(frame)
    assert stream.stats.pushes + stream.stats.bad_frames <= 1


def test_a_bad_push_is_counted_and_changes_nothing() -> None:
    states = OrderStates()
    stream = OkxPrivateStream(OkxCredentials("k", "s", "p"), "ws://127.0.0.1:1", ManualClock(), ClockOffset(), states)
    bad = _detail("filled", "t1", "nan", "1")
    stream.on_frame(json.dumps({"arg": {"channel": "orders", "instType": "ANY"}, "data": [bad]}))
    assert stream.stats.bad_frames == 1 and "fillSz" in stream.stats.last_error
    assert states.latest("c1") is None and states.fills.count() == 0
