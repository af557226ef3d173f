"""quantarb_tui.plain: numbers for people (thousands separators, fixed decimals, currency codes)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given
from hypothesis import strategies as st

from quantarb_tui import plain


@given(value=st.decimals(min_value=-10**12, max_value=10**12, allow_nan=False, allow_infinity=False, places=10),
       decimals=st.integers(0, 8))
def test_number_is_the_value_rounded_with_separators(value: Decimal, decimals: int) -> None:
    text = plain.number(value, decimals)
    rounded = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    assert Decimal(text.replace(",", "")) == rounded
    whole = text.lstrip("-").split(".")[0]
    assert all(len(g) == 3 for g in whole.split(",")[1:]) and len(whole.split(",")[0]) <= 3
    assert (len(text.split(".")[1]) if "." in text else 0) == decimals
    assert not text.startswith("-") or rounded < 0  # never "-0.00"


def test_money_and_missing() -> None:
    assert plain.money("1234567.891", "USDT") == "1,234,567.89 USDT"
    assert plain.money("0.000123456789", "BTC") == "0.00012346 BTC"
    assert plain.money("-0.001", "USD", signed=True) == "0.00 USD"
    assert plain.money("12.5", "USD", signed=True) == "+12.50 USD"
    assert plain.money(None, "USD") == "n/a USD" and plain.number("NaN", 2) == "n/a"
    assert plain.money_map({"USDT": "1.5", "BNB": "0.001"}) == "0.00100000 BNB, 1.50 USDT"
    assert plain.money_map({}) == "-" and plain.percent(None) == "n/a" and plain.percent(0.1234) == "12.3%"


def test_table_aligns_columns() -> None:
    lines = plain.table(["a", "amount"], [["x", "1.00"], ["longer", "1,000.00"]], right=[False, True])
    assert lines == ["  a         amount", "  ------  --------", "  x           1.00", "  longer  1,000.00"]
