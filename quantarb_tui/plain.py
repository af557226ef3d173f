"""Numbers and tables for people, in plain text (the CLI's human output).

Amounts arrive as exact decimal strings (the ledger's and the JSON's form) and leave with
thousands separators, a fixed number of decimals and their currency code: `12,345.60 USDT`,
never `12345.6000000001` or a Python repr. A missing figure prints as `n/a`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# Currencies shown in cents; any other (BTC, BNB, ...) in 8 decimals.
CENT_CURRENCIES = frozenset({"USD", "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "EUR", "GBP", "CHF", "JPY"})
MISSING = "n/a"


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def number(value: object, decimals: int, *, signed: bool = False) -> str:
    """`value` rounded half-even to `decimals`, with thousands separators; `n/a` when missing."""
    d = _decimal(value)
    if d is None:
        return MISSING
    q = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN) if decimals >= 0 else d
    if q == 0:
        q = abs(q)  # no "-0.00"
    text = f"{q:,.{max(decimals, 0)}f}"
    return f"+{text}" if signed and q > 0 else text


def money_decimals(ccy: str) -> int:
    return 2 if ccy.upper() in CENT_CURRENCIES else 8


def money(value: object, ccy: str, *, signed: bool = False) -> str:
    """`1,234.50 USD`; `n/a USD` when missing."""
    return f"{number(value, money_decimals(ccy), signed=signed)} {ccy}"


def money_map(amounts: dict[str, str] | None) -> str:
    """{"USDT": "1.5", "BNB": "0.001"} -> `1.50 USDT, 0.00100000 BNB`; `-` when empty."""
    if not amounts:
        return "-"
    return ", ".join(money(v, ccy) for ccy, v in sorted(amounts.items()))


def percent(value: float | None, decimals: int = 1) -> str:
    return MISSING if value is None else f"{value * 100:,.{decimals}f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None,
          indent: str = "  ") -> list[str]:
    """Columns sized to their widest cell; `right[i]` right-aligns column i (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = list(right) if right is not None else [False] * len(headers)

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if align[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
