"""Our client order ids are legal on Binance: the hedge legs' ids (core.hedge.client_order_id)
and flatten's (engine.flatten), against the spot and USD-M ranges the gateway enforces.

Binance documents `^[a-zA-Z0-9-_]{1,36}$` (FIX; spot REST gives none, so the gateway uses it)
and `^[\\.A-Z\\:/a-z0-9_-]{1,36}$` (USD-M); our ids are `[A-Za-z0-9]{1,32}`, inside both.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from core.hedge import client_order_id, new_group_id
from exchanges.binance.endpoints import SPOT_API, USDM_API
from tests.unit.test_flattener import _rig

RANGES = (SPOT_API.client_id_re, USDM_API.client_id_re)


@given(st.integers(0, 32_503_680_000_000), st.integers(0, 10**9), st.integers(0, 9), st.integers(0, 10**6))
def test_hedge_leg_ids_are_legal_on_both_binance_markets(ms: int, seq: int, leg: int, attempt: int) -> None:
    try:
        cid = client_order_id(new_group_id(ms, seq), leg, attempt)
    except ValueError:
        return  # the id refuses itself when it would leave the safe format
    assert all(r.fullmatch(cid) for r in RANGES), cid


def test_realistic_hedge_ids_never_refuse_themselves() -> None:
    year_2100_ms = 4_102_444_800_000
    cid = client_order_id(new_group_id(year_2100_ms, 10**7), 1, 10**4)
    assert len(cid) <= 32 and all(r.fullmatch(cid) for r in RANGES)


async def test_flatten_order_ids_are_legal_on_both_binance_markets() -> None:
    rig = _rig(clock=ManualClock(4_102_444_800_000))
    rig.hold("binance", "-0.03")
    report = await rig.run()
    [line] = [ln for ln in report["lines"] if ln["venue"] == "binance"]
    [cid] = line["orders"]
    assert rig.placed[cid].qty == Decimal("0.030")
    assert all(r.fullmatch(cid) for r in RANGES), cid
