"""One definition of the money on every surface (issue 16): a demo run with a flatten in the
middle, then the equity as `/api/status` (`quantarb status`), the headless summary line and
`quantarb ledger summary` state it, against the fills' cash flows summed here from the ledger
file alone. After the flatten every venue is flat, so the equity is the cash: to the cent.
With a rate book whose mid is not 1, the ledger converts with the rate the engine journaled.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import demo_config
from core.currency import quote_currency
from engine.admin_token import token_file_path
from tests.integration.test_operator_e2e import Engine, _built_up, _cli, _rows, _status, _wait

CENT = Decimal("0.01")


def cash_from_fills(ledger: Path) -> Decimal:
    """Sum of every fill's cash flow (sell +, buy -) less its fee, in USD with USDT = USD (the
    demo's rate), computed from the fills and orders tables with the demo's instruments."""
    insts = {(i.venue, i.symbol): i for p in demo_config().build_pairs() for i in p.instruments}
    total = Decimal(0)
    for venue, symbol, side, qty, price, fee in _rows(
        ledger, "SELECT o.venue, o.symbol, o.side, f.qty, f.price, f.fee FROM fills f "
                "JOIN orders o ON o.order_id = f.order_id"):
        inst = insts[(venue, symbol)]
        notional = inst.to_base_qty(Decimal(qty)) * inst.normalized_price(Decimal(price))
        total += (notional if side == "sell" else -notional) - Decimal(fee)
    return total


def cash_by_currency(ledger: Path) -> dict[str, Decimal]:
    """Every fill's cash flow (sell +, buy -) in its instrument's quote currency, less its fee in
    the fee's currency, summed per currency from the fills and orders tables."""
    insts = {(i.venue, i.symbol): i for p in demo_config().build_pairs() for i in p.instruments}
    out: dict[str, Decimal] = {}
    for venue, symbol, side, qty, price, fee, fee_ccy in _rows(
        ledger, "SELECT o.venue, o.symbol, o.side, f.qty, f.price, f.fee, f.fee_ccy FROM fills f "
                "JOIN orders o ON o.order_id = f.order_id"):
        inst = insts[(venue, symbol)]
        notional = inst.to_base_qty(Decimal(qty)) * inst.normalized_price(Decimal(price))
        ccy = quote_currency(venue, symbol)
        assert ccy is not None, symbol
        out[ccy] = out.get(ccy, Decimal(0)) + (notional if side == "sell" else -notional)
        out[fee_ccy] = out.get(fee_ccy, Decimal(0)) - Decimal(fee)
    return out


# The demo reads OKX's USDT-USD book, quoted by the simulated OKX at a mid of 0.999: USDT money
# is worth 0.999 USD on every surface, though the demo's typed rate (and the ledger commands'
# config) still says USDT = 1.
RATE_BOOK_ENV = {"QUANTARB_MONEY__RATE_BOOKS": '["okx:USDT-USD"]', "QUANTARB_MONEY__RATE_POLL_S": "0.5",
                 "QUANTARB_DEMO__CURRENCY_BOOK_MID": "0.999"}


def _book_rate_read(doc: dict[str, Any]) -> bool:
    return _built_up(doc) and (doc["equity"]["rates"].get("USDT") or {}).get("source") == "okx:USDT-USD"


@pytest.mark.timeout(300)
def test_with_a_rate_book_every_surface_and_the_ledger_convert_at_its_mid(tmp_path: Path) -> None:
    ledger = tmp_path / ".local" / "share" / "quantarb" / "demo.db"
    engine = Engine(tmp_path, RATE_BOOK_ENV)
    try:
        url = engine.url
        _wait(tmp_path, url, _book_rate_read, "groups, an open position and the USDT-USD book read")
        flat = _cli(tmp_path, "flatten", "--url", url, "--reason", "money test", "--json", timeout=120)
        assert flat.returncode == 0, flat.stdout + flat.stderr
        assert json.loads(flat.stdout)["detail"]["flat"] is True, flat.stdout
        time.sleep(1.0)  # the journal commits what flatten booked
        status = _status(tmp_path, url)
        token = token_file_path(ledger).read_text().strip()
        scrape = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        running = _cli(tmp_path, "ledger", "summary", "--json")  # while the engine runs
    finally:
        log = engine.stop()
    assert engine.proc.returncode == 0, log
    by_ccy = cash_by_currency(ledger)
    assert set(by_ccy) == {"USD", "USDT"} and by_ccy["USDT"] != 0, by_ccy
    exact = by_ccy["USD"] + by_ccy["USDT"] * Decimal("0.999")
    cash = exact.quantize(CENT)

    api = status["equity"]
    assert api["rates"]["USDT"]["rate"] == "0.999" and api["rates"]["USDT"]["source"] == "okx:USDT-USD", api
    assert api["missing_rates"] == [] and api["missing_marks"] == []
    assert Decimal(api["total"]).quantize(CENT) == cash, (api, by_ccy)
    assert scrape.status_code == 200, scrape.text
    m_metric = re.search(r'^quantarb_equity\{currency="USD"\} (\S+)$', scrape.text, re.MULTILINE)
    assert m_metric and Decimal(m_metric.group(1)).quantize(CENT) == cash, scrape.text
    summary_line = [ln for ln in log.splitlines() if ln.startswith("summary ")][-1]
    m = re.search(r" pnl=(\S+) USD ", summary_line)
    assert m and Decimal(m.group(1)).quantize(CENT) == cash, summary_line

    after = _cli(tmp_path, "ledger", "summary", "--json")  # the engine stopped: its last rates
    for result in (running, after):
        assert result.returncode == 0, result.stderr
        eq = json.loads(result.stdout)["equity"]
        assert eq["rates"]["USDT"]["rate"] == "0.999" and eq["rates"]["USDT"]["source"] == "okx:USDT-USD", eq
        assert eq["rates"]["USDT"]["journaled_ms"] is not None
        assert Decimal(eq["total"]).quantize(CENT) == cash, (eq, by_ccy)
        # Not only to the cent: the same figure to the last digit (a USDT rate of 1 would differ).
        assert Decimal(eq["total"]) == Decimal(api["total"]) == exact, (eq["total"], api["total"], exact)
    rate_events = [json.loads(p) for (p,) in _rows(ledger, "SELECT payload FROM events WHERE kind = 'rate'")]
    # The book's rate journaled once, not once per poll (it was read every 0.5 s), and last; before
    # it, only the typed USDT = 1 can have been in force (if a reading came before the first read).
    assert [(e["ccy"], e["rate"]) for e in rate_events if e["source"] == "book"] == [("USDT", "0.9990")], rate_events
    assert rate_events[-1]["source"] == "book"
    assert {(e["ccy"], e["rate"]) for e in rate_events if e["source"] != "book"} <= {("USDT", "1")}, rate_events
    typed = _cli(tmp_path, "ledger", "summary", "--json", "--rate", "USDT=1")  # --rate still wins
    assert typed.returncode == 0, typed.stderr
    typed_eq = json.loads(typed.stdout)["equity"]
    assert typed_eq["rates"]["USDT"]["source"] == "--rate"
    assert Decimal(typed_eq["total"]).quantize(CENT) == (by_ccy["USD"] + by_ccy["USDT"]).quantize(CENT)


@pytest.mark.timeout(300)
def test_after_a_flatten_every_surface_says_the_fills_cash_to_the_cent(tmp_path: Path) -> None:
    ledger = tmp_path / ".local" / "share" / "quantarb" / "demo.db"
    engine = Engine(tmp_path)
    try:
        url = engine.url
        _wait(tmp_path, url, _built_up, "four groups and an open position")
        flat = _cli(tmp_path, "flatten", "--url", url, "--reason", "money test", "--json", timeout=120)
        assert flat.returncode == 0, flat.stdout + flat.stderr
        assert json.loads(flat.stdout)["detail"]["flat"] is True, flat.stdout
        time.sleep(1.0)  # the journal commits what flatten booked
        status = _status(tmp_path, url)
        token = token_file_path(ledger).read_text().strip()
        scrape = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    finally:
        log = engine.stop()
    assert engine.proc.returncode == 0, log
    cash = cash_from_fills(ledger)
    assert cash != 0  # groups and a flatten traded: a zero would prove nothing

    api = status["equity"]
    assert api["currency"] == "USD" and api["missing_rates"] == [] and api["missing_marks"] == []
    assert Decimal(api["total"]).quantize(CENT) == cash.quantize(CENT), (api, cash)

    assert scrape.status_code == 200, scrape.text
    m_metric = re.search(r'^quantarb_equity\{currency="USD"\} (\S+)$', scrape.text, re.MULTILINE)
    assert m_metric, scrape.text
    assert Decimal(m_metric.group(1)).quantize(CENT) == cash.quantize(CENT), (m_metric.group(1), cash)

    summary_line = [ln for ln in log.splitlines() if ln.startswith("summary ")][-1]
    m = re.search(r" pnl=(\S+) USD ", summary_line)
    assert m, summary_line
    assert Decimal(m.group(1)).quantize(CENT) == cash.quantize(CENT), (summary_line, cash)

    done = _cli(tmp_path, "ledger", "summary", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    ledger_eq = summary["equity"]
    assert Decimal(ledger_eq["total"]).quantize(CENT) == cash.quantize(CENT), (ledger_eq, cash)

    # The flatten's cost landed on the groups it closed (or the flatten line): no group that
    # held a position reads `hedged` any more, and the groups' PnL with the line is the cash.
    states = dict(_rows(ledger, "SELECT state, count(*) FROM hedge_groups GROUP BY state"))
    assert states.get("closed", 0) > 0 and "hedged" not in states, states
    groups_pnl = sum((Decimal(r[0]) for r in _rows(
        ledger, "SELECT realized_pnl FROM hedge_groups WHERE state <> 'rejected'")), Decimal(0))
    line = Decimal(summary["flatten"]["realized"])
    assert (groups_pnl + line).quantize(CENT) == cash.quantize(CENT), (groups_pnl, line, cash)


@pytest.mark.timeout(300)
def test_after_a_restart_a_flatten_closes_the_groups_of_the_run_before(tmp_path: Path) -> None:
    """Groups a restart left held (not in the new run's memory) are closed from their ledger rows
    by the flatten that takes their positions flat, with its cost in their PnL."""
    ledger = tmp_path / ".local" / "share" / "quantarb" / "demo.db"
    first = Engine(tmp_path)
    try:
        _wait(tmp_path, first.url, lambda d: _built_up(d) and d["groups_by_state"].get("hedged", 0) >= 2,
              "hedges held and an open position")
    finally:
        log = first.stop()
    assert first.proc.returncode == 0, log
    held = {gid for (gid,) in _rows(ledger, "SELECT group_id FROM hedge_groups WHERE state IN "
                                    "('hedged', 'repaired', 'failed')")}
    assert held, _rows(ledger, "SELECT state, note FROM hedge_groups")

    second = Engine(tmp_path)
    try:
        flat = _cli(tmp_path, "flatten", "--url", second.url, "--reason", "money test", "--json", timeout=120)
        assert flat.returncode == 0, flat.stdout + flat.stderr
        assert json.loads(flat.stdout)["detail"]["flat"] is True, flat.stdout
        time.sleep(1.0)  # the journal commits what flatten booked
    finally:
        log = second.stop()
    assert second.proc.returncode == 0, log
    states = dict(_rows(ledger, "SELECT group_id, state FROM hedge_groups"))
    assert {states[g] for g in held} == {"closed"}, {g: states[g] for g in held}
    assert "hedged" not in states.values(), states
    done = _cli(tmp_path, "ledger", "summary", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    cash = cash_from_fills(ledger)
    groups_pnl = sum((Decimal(r[0]) for r in _rows(
        ledger, "SELECT realized_pnl FROM hedge_groups WHERE state <> 'rejected'")), Decimal(0))
    line = Decimal(summary["flatten"]["realized"])
    assert (groups_pnl + line).quantize(CENT) == cash.quantize(CENT), (groups_pnl, line, cash)
    assert Decimal(summary["equity"]["total"]).quantize(CENT) == cash.quantize(CENT)


def _book_read_by_this_run(doc: dict[str, Any]) -> bool:
    books = doc["equity"].get("rate_books") or []
    return bool(books) and books[0]["mid"] is not None and books[0]["stale"] is False


@pytest.mark.timeout(300)
def test_a_quick_restart_journals_no_rate_only_to_undo_it(tmp_path: Path) -> None:
    """Review of issue 16: a restart's first reading (the breakers' restored day figure, before
    the rate books are even started) converted at the demo's typed USDT = 1 and journaled it,
    then the first read journaled the book's 0.999 again: two rows per currency per restart.
    The book's journaled rate is a read within rate_max_age_s: it stays in force meanwhile."""
    ledger = tmp_path / ".local" / "share" / "quantarb" / "demo.db"
    first = Engine(tmp_path, RATE_BOOK_ENV)
    try:
        _wait(tmp_path, first.url, _book_rate_read, "groups, an open position and the USDT-USD book read")
    finally:
        log = first.stop()
    assert first.proc.returncode == 0, log
    query = "SELECT payload FROM events WHERE kind = 'rate' ORDER BY seq"
    before = [json.loads(p) for (p,) in _rows(ledger, query)]
    assert before and before[-1]["source"] == "book" and before[-1]["rate"] == "0.9990", before

    second = Engine(tmp_path, RATE_BOOK_ENV)
    try:
        doc = _wait(tmp_path, second.url, _book_read_by_this_run, "the USDT-USD book read by the new run")
        assert doc["equity"]["rates"]["USDT"]["source"] == "okx:USDT-USD", doc["equity"]
    finally:
        log = second.stop()
    assert second.proc.returncode == 0, log
    assert [json.loads(p) for (p,) in _rows(ledger, query)] == before  # nothing written, nothing undone
