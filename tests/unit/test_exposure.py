"""ExposureBook: worst-case exposure = positions plus every open order filling in full,
buys and sells counted separately; gross per venue and per asset at the marks."""

from __future__ import annotations

from decimal import Decimal

from core.exposure import ExposureBook
from core.models import Side

D = Decimal


def _book() -> ExposureBook:
    book = ExposureBook()
    book.mark("BTC", D(100))
    book.mark("ETH", D(10))
    return book


def test_empty_book_has_no_exposure() -> None:
    book = ExposureBook()
    assert book.worst_qty("okx", "BTC") == 0
    assert book.venue_gross("okx") == 0
    assert book.asset_gross("BTC") == 0
    assert book.gross_by_venue() == {}
    assert book.gross_by_asset() == {}
    assert book.net("BTC") == 0
    assert book.position("okx", "BTC") == 0


def test_worst_case_counts_buys_and_sells_separately() -> None:
    book = _book()
    book.set_position("okx", "BTC", D(2))
    assert book.worst_qty("okx", "BTC") == 2
    book.reserve("b1", "okx", "BTC", "buy", D(3), D(100))
    assert book.worst_qty("okx", "BTC") == 5  # |2 + 3|
    book.reserve("s1", "okx", "BTC", "sell", D(4), D(100))
    # buys in full: 5; sells in full: |2 - 4| = 2: the worst is 5, not the net 1
    assert book.worst_qty("okx", "BTC") == 5
    book.reserve("s2", "okx", "BTC", "sell", D(6), D(100))
    assert book.worst_qty("okx", "BTC") == 8  # |2 - 10|
    # an extra order that is not in the book yet
    assert book.worst_qty("okx", "BTC", extra_buy=D(4)) == 9
    assert book.worst_qty("okx", "BTC", extra_sell=D(1)) == 9
    # other venues and assets are not mixed in
    assert book.worst_qty("binance", "BTC") == 0
    assert book.worst_qty("okx", "ETH") == 0


def test_short_position_with_pending_orders_both_ways() -> None:
    book = _book()
    book.set_position("mt5", "ETH", D(-5))
    book.reserve("b", "mt5", "ETH", "buy", D(8), D(10))
    book.reserve("s", "mt5", "ETH", "sell", D(1), D(10))
    # buys in full: |-5 + 8| = 3; sells in full: |-5 - 1| = 6
    assert book.worst_qty("mt5", "ETH") == 6
    assert book.venue_gross("mt5") == 60
    assert book.pending("ETH", "buy") == 8
    assert book.pending("ETH", "sell", "mt5") == 1
    assert book.pending("ETH", "buy", "okx") == 0
    assert book.pending("ETH", "buy", exclude="b") == 0


def test_fills_use_up_the_reservation_and_keep_the_worst_case() -> None:
    book = _book()
    book.reserve("b1", "okx", "BTC", "buy", D(3), D(100))
    assert book.venue_gross("okx") == 300
    book.fill("okx", "BTC", "buy", D(1), D(100), key="b1")
    assert book.position("okx", "BTC") == 1
    assert book.reservations["b1"].remaining == 2
    assert book.venue_gross("okx") == 300  # a fill inside its reservation moves nothing worst-case
    book.fill("okx", "BTC", "buy", D(2), D(100), key="b1")
    assert book.reservations["b1"].remaining == 0
    assert book.venue_gross("okx") == 300
    book.release("b1")
    assert "b1" not in book.reservations
    assert book.venue_gross("okx") == 300  # now all of it is position


def test_release_frees_the_unfilled_part_only() -> None:
    book = _book()
    book.reserve("s1", "binance", "BTC", "sell", D(5), D(100))
    book.fill("binance", "BTC", "sell", D(2), D(100), key="s1")
    assert book.venue_gross("binance") == 500
    book.release("s1")
    assert book.position("binance", "BTC") == -2
    assert book.venue_gross("binance") == 200
    book.release("s1")  # twice is harmless
    book.release("never-reserved")
    assert book.venue_gross("binance") == 200


def test_late_fill_after_release_still_moves_the_position() -> None:
    book = _book()
    book.reserve("b1", "okx", "BTC", "buy", D(1), D(100))
    book.release("b1")
    book.fill("okx", "BTC", "buy", D(1), D(101), key="b1")
    assert book.position("okx", "BTC") == 1
    assert book.marks["BTC"] == 101
    assert book.reservations == {}


def test_overfill_clips_the_reservation_at_zero() -> None:
    book = _book()
    book.reserve("b1", "okx", "BTC", "buy", D(1), D(100))
    book.fill("okx", "BTC", "buy", D(3), D(100), key="b1")
    assert book.reservations["b1"].remaining == 0
    assert book.position("okx", "BTC") == 3


def test_gross_by_venue_and_by_asset() -> None:
    book = _book()
    book.set_position("okx", "BTC", D(1))  # 100
    book.set_position("okx", "ETH", D(-20))  # 200
    book.set_position("binance", "BTC", D(-3))  # 300
    book.reserve("b", "binance", "ETH", "buy", D(4), D(10))  # 40
    book.reserve("s", "mt5", "BTC", "sell", D(2), D(100))  # 200
    assert book.venue_gross("okx") == 300
    assert book.gross_by_venue() == {"binance": D(340), "mt5": D(200), "okx": D(300)}
    # per asset: the sum over venues of each venue's worst case (not netted across venues)
    assert book.gross_by_asset() == {"BTC": D(600), "ETH": D(240)}
    assert book.net("BTC") == -2
    assert book.net("ETH") == -20
    # what one more order would make it
    assert book.venue_gross("okx", ("BTC", "buy", D(2))) == 500
    assert book.venue_gross("okx", ("BTC", "sell", D(2))) == 300  # 1 - 2 = -1: no worse
    assert book.venue_gross("kraken", ("ETH", "sell", D(1))) == 10
    assert book.asset_gross("BTC", ("okx", "buy", D(2))) == 800
    assert book.asset_gross("BTC", ("binance", "buy", D(2))) == 600  # -3 + 2: no worse
    assert book.asset_gross("BTC", ("kraken", "sell", D(1))) == 700


def test_marks_value_every_position_and_come_from_fills() -> None:
    book = ExposureBook()
    book.set_position("okx", "BTC", D(2))
    assert book.venue_gross("okx") == 0  # no mark: no value known yet
    book.reserve("b", "okx", "BTC", "buy", D(1), D(50))
    assert book.marks["BTC"] == 50  # a reservation marks an unmarked asset
    book.reserve("b2", "okx", "BTC", "buy", D(1), D(70))
    assert book.marks["BTC"] == 50  # ...but never moves an existing mark
    assert book.venue_gross("okx") == 200
    book.fill("okx", "BTC", "buy", D(1), D(60), key="b")
    assert book.marks["BTC"] == 60  # fills do
    assert book.venue_gross("okx") == 240  # 2 + 1 filled + 1 pending, all at 60
    book.mark("BTC", D(0))  # no price: ignored
    book.set_position("okx", "BTC", D(3), D(0))
    assert book.marks["BTC"] == 60
    book.mark("BTC", D(10))
    assert book.venue_gross("okx") == 40
    book.set_position("okx", "BTC", D(1), D(20))
    assert book.marks["BTC"] == 20
    assert book.venue_gross("okx") == 40


def test_worst_case_bounds_every_subset_of_fills() -> None:
    """The worst case is a bound: however the pending orders fill, |position| never exceeds it."""
    book = _book()
    book.set_position("okx", "BTC", D(1))
    orders: list[tuple[str, Side, Decimal]] = [("a", "buy", D(2)), ("b", "sell", D(5)), ("c", "buy", D(1)),
                                                ("d", "sell", D(1))]
    for key, side, qty in orders:
        book.reserve(key, "okx", "BTC", side, qty, D(100))
    worst = book.worst_qty("okx", "BTC")
    assert worst == 5
    for mask in range(1 << len(orders)):
        pos = D(1) + sum(
            ((q if s == "buy" else -q) for i, (_, s, q) in enumerate(orders) if mask >> i & 1), D(0)
        )
        assert abs(pos) <= worst
