"""The running equity's MT5 swap (issue 16, Deliver 1): `DEAL_SWAP` booked from the EA's deal
reports as they arrive (once per deal), `POSITION_SWAP` accrued from the terminal's account
report while the position is open. MT5 computes swap itself (points, percent or money per
lot, tripled on one weekday, all broker settings: MQL5 `SYMBOL_SWAP_MODE`), so quantarb takes
the terminal's figures as reported (docs/mt5-protocol.md, fill `swap` and position `swap`)."""

from __future__ import annotations

from decimal import Decimal

from core.config import MoneyConfig
from core.models import Fill
from engine.equity import RunningEquity
from tests.unit.test_ledger_support import MT5, OKX, T0, make_group, make_order

D = Decimal


def test_deal_swap_once_and_position_swap_while_open() -> None:
    report: dict[str, D] = {}
    equity = RunningEquity([MT5, OKX], MoneyConfig(rates={"USDT": D(1)}), lambda v, s: None,
                           lambda: (dict(report), "USD", T0 + 10))
    sell = make_order(make_group("g1", T0), 1, ts_ms=T0)  # sells 0.10 lot BTCUSD on MT5
    equity.on_fill(sell, Fill("mt5", "101", sell.client_order_id, D("0.10"), D(65000), D(0), "USD", T0 + 1))
    assert D(equity.equity(T0 + 20)["carry"]) == 0
    report["BTCUSD"] = D("-1.25")  # POSITION_SWAP after one rollover
    assert D(equity.equity(T0 + 21)["carry"]) == D("-1.25")
    report["BTCUSD"] = D("-3.75")  # a triple day: the report replaces, never adds
    assert D(equity.equity(T0 + 22)["carry"]) == D("-3.75")
    assert equity.book_swap("BTCUSD", "555", D("-0.50"), "USD")
    assert not equity.book_swap("BTCUSD", "555", D("-0.50"), "USD")  # one deal once
    assert D(equity.equity(T0 + 23)["carry"]) == D("-4.25")
    assert not equity.book_swap("XAUUSD", "556", D("-1"), "USD")  # not an instrument traded
