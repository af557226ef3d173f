"""The simulated venues' fill queries build only the rows they answer with.

OKX `GET /api/v5/trade/fills` (newest first, 100 at most; `after`/`before` page to fills older/
newer than a billId) and Binance `myTrades`/`userTrades` (oldest first, `limit` at most) used to
build a row for every fill that passed the filters and then keep the first `limit`: ~1,300 rows
(~2 MB of strings) per reconcile pass in the accelerated soak, in the engine's own process
(issue 19). The answers must not change: each query is compared with the former algorithm,
reproduced here, over filters and pagination edges.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest

from core.clock import ManualClock
from sim.binance_exchange import BinanceExchange, SimTrade
from sim.market import SimTick
from sim.okx_accounts import SimFill, SimInstrumentSpec, SimOrder, inst_type_of
from sim.okx_private import OkxPrivateVenue, sign

T0 = 1_732_150_000_000
BTC, ETH, SPOT = "BTC-USDT-SWAP", "ETH-USDT-SWAP", "BTC-USDT"
SPECS = [SimInstrumentSpec(i, Decimal("0.1"), Decimal(1), Decimal(1), ct_val=Decimal("0.01")) for i in (BTC, ETH)]


# ====================================================================== OKX


def _okx(fills: int = 60) -> tuple[OkxPrivateVenue, list[SimFill]]:
    """A venue whose account holds `fills` fills over three instruments and six orders."""
    clock = ManualClock(wall_ms=T0)
    venue = OkxPrivateVenue(clock, lambda _inst: SimTick("okx", BTC, 97000.0, 97000.1, 5.0, 5.0, 0), SPECS)
    venue.rate_limits = {}
    account = venue.add_account("k", "s", "p")
    orders = [SimOrder(str(700 + n), f"cl{n}", (BTC, ETH, SPOT)[n % 3], "buy" if n % 2 else "sell", "limit",
                       "cross", Decimal(97000), Decimal(10), "", T0) for n in range(6)]
    bill_ids = itertools.count(1_000_003, 7)  # gaps: a page boundary falls between bill ids too
    for i in range(fills):
        o = orders[i % 4 if i < 40 else 4 + i % 2]
        account.fills.append(SimFill(f"t{i}", str(next(bill_ids)), o, Decimal("97000.1") + i, Decimal(1),
                                     Decimal("-0.05"), "USDT", T0 + i, "T"))
    return venue, account.fills


def _okx_get(venue: OkxPrivateVenue, query: dict[str, str]) -> list[dict[str, str]]:
    return asyncio.run(_okx_ask(venue, query))


async def _okx_ask(venue: OkxPrivateVenue, query: dict[str, str]) -> list[dict[str, str]]:
    """A signed `GET /api/v5/trade/fills`, as the gateway sends it."""
    target = "/api/v5/trade/fills" + ("?" + urlencode(query) if query else "")
    stamp = datetime.fromtimestamp(venue.clock.time_ms() / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    headers = {"OK-ACCESS-KEY": "k", "OK-ACCESS-PASSPHRASE": "p", "OK-ACCESS-TIMESTAMP": stamp,
               "OK-ACCESS-SIGN": sign("s", f"{stamp}GET{target}")}
    status, body, _ = await venue.rest("GET", target, headers, b"")
    assert status == 200 and isinstance(body, dict) and body["code"] == "0", body
    rows: list[dict[str, str]] = body["data"]
    return rows


def _okx_former(fills: list[SimFill], query: dict[str, str]) -> list[dict[str, str]]:
    """What the simulator answered before: every row built, then the first `limit` kept."""
    inst_type, inst_id = query.get("instType", ""), query.get("instId", "")
    ord_id, after, before = query.get("ordId", ""), query.get("after", ""), query.get("before", "")
    text = query.get("limit", "")
    limit = min(100, int(text)) if text.isdigit() and int(text) > 0 else 100
    rows = []
    for f in reversed(fills):
        if (inst_type and inst_type_of(f.order.inst_id) != inst_type) or (inst_id and inst_id != f.order.inst_id):
            continue
        if ord_id and f.order.ord_id != ord_id:
            continue
        if after and not (after.isdigit() and int(f.bill_id) < int(after)):
            continue
        if before and not (before.isdigit() and int(f.bill_id) > int(before)):
            continue
        rows.append(f.row())
    return rows[:limit]


def _okx_queries(fills: list[SimFill]) -> Iterator[dict[str, str]]:
    bills = [f.bill_id for f in fills]
    edges = ["", bills[0], bills[1], bills[30], str(int(bills[30]) + 1), bills[-2], bills[-1], "0", "9" * 12, "x1"]
    for inst_type, inst_id, ord_id in [("", "", ""), ("SWAP", "", ""), ("SPOT", "", ""), ("", BTC, ""),
                                       ("SWAP", ETH, ""), ("", "", "701"), ("", BTC, "704"), ("SPOT", BTC, "")]:
        for after, before in itertools.product(edges, ["", bills[0], bills[10], bills[45], bills[-1], "x"]):
            for limit in ["", "1", "3", "7", "100", "250", "0", "-5", "x"]:
                query = {"instType": inst_type, "instId": inst_id, "ordId": ord_id, "after": after,
                         "before": before, "limit": limit}
                yield {k: v for k, v in query.items() if v}


def test_okx_fills_answer_as_before_for_every_filter_and_page_edge() -> None:
    venue, fills = _okx()

    async def ask_all() -> int:
        answered = 0
        for query in _okx_queries(fills):
            assert await _okx_ask(venue, query) == _okx_former(fills, query), query
            answered += 1
        return answered

    assert asyncio.run(ask_all()) == 8 * 10 * 6 * 9


def test_okx_pages_back_by_bill_id_through_every_fill_once() -> None:
    venue, fills = _okx(250)
    seen: list[str] = []
    page = _okx_get(venue, {"instType": "SWAP"})
    while page:
        assert len(page) <= 100
        seen += [r["billId"] for r in page]
        page = _okx_get(venue, {"instType": "SWAP", "after": page[-1]["billId"]})
    swap = [f.bill_id for f in reversed(fills) if f.order.inst_id != SPOT]
    assert seen == swap and len(seen) > 100  # more than a page


def _counting(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[int]:
    built = [0]
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any) -> Any:
        built[0] += 1
        return real(*args)

    monkeypatch.setattr(owner, name, counted)
    return built


@pytest.mark.parametrize(("query", "rows"), [
    ({"limit": "5"}, 5),
    ({}, 60),  # fewer than the default 100 pass: each built once
    ({"instType": "SWAP", "limit": "3"}, 3),
    ({"instId": BTC, "limit": "2"}, 2),
    ({"ordId": "703", "limit": "1"}, 1),
    ({"ordId": "nobody"}, 0),
])
def test_okx_builds_no_row_beyond_the_limit(monkeypatch: pytest.MonkeyPatch, query: dict[str, str],
                                            rows: int) -> None:
    venue, _ = _okx()
    built = _counting(monkeypatch, SimFill, "row")
    assert len(_okx_get(venue, query)) == rows
    assert built[0] == rows


def test_okx_builds_at_most_a_page_of_a_long_history(monkeypatch: pytest.MonkeyPatch) -> None:
    venue, _ = _okx(1_300)  # what the accelerated soak keeps
    built = _counting(monkeypatch, SimFill, "row")
    assert len(_okx_get(venue, {"instType": "SWAP"})) == 100
    assert built[0] == 100


# ====================================================================== Binance

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _binance(market: str, trades: int = 80) -> BinanceExchange:
    ex = BinanceExchange(market, ManualClock(wall_ms=T0))  # type: ignore[arg-type]
    for i in range(trades):
        ex.trades.append(SimTrade(5_000 + 3 * i, 900 + i % 5, SYMBOLS[i % 4 == 3], "BUY" if i % 2 else "SELL",
                                  Decimal("97000.2") + i, Decimal("0.001"), Decimal("0.01"), "USDT", T0 + 10 * i,
                                  i % 3 == 0, Decimal(i) / 7))
    return ex


def _binance_former(ex: BinanceExchange, params: dict[str, str]) -> list[dict[str, Any]]:
    """What the simulator answered before: every row built, then the first `limit` kept."""
    symbol = params["symbol"]
    order_id, start, end, from_id = (params.get(k) for k in ("orderId", "startTime", "endTime", "fromId"))
    out = []
    for t in ex.trades:
        if t.symbol != symbol or (order_id and str(t.order_id) != order_id):
            continue
        if start and start.isascii() and start.isdigit() and t.time_ms < int(start):
            continue
        if end and end.isascii() and end.isdigit() and t.time_ms > int(end):
            continue
        if from_id and from_id.isascii() and from_id.isdigit() and t.trade_id < int(from_id):
            continue
        out.append(ex._trade_json(t))
    return out[: int(params.get("limit") or "500")]


def _binance_queries(ex: BinanceExchange) -> Iterator[dict[str, str]]:
    ids = [t.trade_id for t in ex.trades]
    times = [t.time_ms for t in ex.trades]
    for symbol, order_id in [("BTCUSDT", ""), ("ETHUSDT", ""), ("BTCUSDT", "902"), ("BTCUSDT", "0902")]:
        for from_id in ["", str(ids[0]), str(ids[1] - 1), str(ids[40]), str(ids[-1]), str(ids[-1] + 1), "x"]:
            for start, end in [("", ""), (str(times[20]), ""), ("", str(times[50])), (str(times[20]), str(times[21])),
                               (str(times[60]), str(times[10]))]:
                for limit in ["", "1", "2", "7", "1000"]:
                    params = {"symbol": symbol, "orderId": order_id, "fromId": from_id, "startTime": start,
                              "endTime": end, "limit": limit}
                    yield {k: v for k, v in params.items() if v}


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_binance_trades_answer_as_before_for_every_filter_and_page_edge(market: str) -> None:
    ex = _binance(market)
    answered = 0
    for params in _binance_queries(ex):
        assert ex.trade_list(dict(params)) == _binance_former(ex, params), params
        answered += 1
    assert answered == 4 * 7 * 5 * 5


def test_binance_pages_forward_by_from_id_through_every_trade_once() -> None:
    ex = _binance("usdm", 2_500)
    seen: list[int] = []
    page = ex.trade_list({"symbol": "BTCUSDT", "limit": "1000", "fromId": "0"})
    while page:
        assert len(page) <= 1000
        seen += [t["id"] for t in page]
        page = ex.trade_list({"symbol": "BTCUSDT", "limit": "1000", "fromId": str(seen[-1] + 1)})
    assert seen == [t.trade_id for t in ex.trades if t.symbol == "BTCUSDT"] and len(seen) > 1000


@pytest.mark.parametrize(("params", "rows"), [
    ({"symbol": "BTCUSDT", "limit": "5"}, 5),
    ({"symbol": "BTCUSDT"}, 60),  # fewer than the default 500 pass: each built once
    ({"symbol": "ETHUSDT", "limit": "1"}, 1),
    ({"symbol": "BTCUSDT", "orderId": "901", "limit": "3"}, 3),
    ({"symbol": "BTCUSDT", "fromId": "5090", "limit": "4"}, 4),
])
def test_binance_builds_no_row_beyond_the_limit(monkeypatch: pytest.MonkeyPatch, params: dict[str, str],
                                                rows: int) -> None:
    ex = _binance("usdm")
    built = _counting(monkeypatch, BinanceExchange, "_trade_json")
    assert len(ex.trade_list(params)) == rows
    assert built[0] == rows
