"""Reconciliation: each live venue's orders, fills and positions against the ledger.

The ledger is the engine's memory, the venues are the truth. At start (trading held until the
first pass is done) and every `reconcile_interval_s`, for each venue:

- **open orders**: an order whose client order id is not ours (`qa...` legs, `FL...`
  flatten), or is ours but the ledger does not know it (a power loss between the send and the
  commit, docs/ledger.md), is *quarantined*: reported once, listed in the status, never
  adopted, never cancelled by the engine (the operator decides);
- **fills**: a settled fill of one of our orders that the ledger lacks is journaled (one row per
  venue trade id: never counted twice) and handed to the orchestrator as a late fill, which
  asks the venue and halts trading for an unhedged or untracked one (exposure and equity follow
  its path, run as the orchestrator's task: a pass that runs out of time does not cancel it;
  for an order it no longer remembers, the fill itself, once); a fill of an order the
  ledger does not know quarantines that order. Not while the ledger cannot write (a fill it
  lacks may be held in the journal's backlog, booked already): a later pass;
- **positions** (derivatives and MT5; a spot account holds balances, not positions): a net
  position that differs from the ledger's by more than the instrument's lot step halts
  trading, with both figures and the difference in the reason (more than half a lot step: one
  missing lot is a difference). A venue with orders in flight, a fill booked while its
  positions were read (a group can open, fill and close within that read: its fill would be on
  one side only), or a ledger that cannot write (its positions are stale), is compared on a
  later pass.

A venue that cannot be read (down, keys refused, a timeout) is blocked (`reconcile:<venue>`)
with the reason, and the engine goes on with the others: no retry loop inside a pass and no
refusal to start, just the next pass. MT5 reconciles through the EA's account reports: every
configured terminal's positions with our magic, summed (the ledger's MT5 venue is all of them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from core.clock import Clock
from core.instruments import Instrument
from core.models import Fill, Order, OrderPurpose, Venue
from core.orders import is_terminal
from core.risk import RiskGate
from engine.events import EngineEvent, EventLog
from engine.journal import GuardedJournal
from engine.live_venues import VenueAccount
from engine.orchestrator import HedgeOrchestrator
from engine.risk_journal import RiskJournal
from ledger import queries
from ledger.ledger import Ledger
from mt5_bridge.bridge import AccountState

log = logging.getLogger(__name__)

RECONCILING = "reconciling"
OUR_PREFIXES = ("qa", "FL")
PASS_TIMEOUT_S = 20.0
FILL_SETTLE_MS = 5_000  # a fill younger than this may still be on its way to the ledger
FIRST_LOOKBACK_MS = 24 * 3600 * 1000
MT5_FIRST_REPORT_S = 10.0  # the EA reports its account on its timer: a few seconds at most
RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class Quarantined:
    venue: Venue
    client_order_id: str
    reason: str
    since_ms: int
    open_order: bool = False  # seen open on the venue (an orphan cleanup may cancel it)
    symbol: str = ""  # as the venue's open-order list said ("" when it does not say)
    venue_order_id: str = ""  # the venue's id; the order's key when it has no client order id


def quarantine_key(venue: str, client_order_id: str, venue_order_id: str = "") -> tuple[str, str]:
    """An order's key in the quarantine: its client order id, or, when it has none (a manual
    OKX order's clOrdId is empty), the venue's order id: two manual orders are two entries."""
    return (venue, client_order_id or f"ordId:{venue_order_id}")


@dataclass(slots=True)
class VenueReconcile:
    """The last pass over one venue, for the status screens."""

    venue: Venue
    ok: bool = False
    at_ms: int = 0
    detail: str = "not yet reconciled"
    fills_booked: int = 0
    positions: dict[str, str] = field(default_factory=dict)  # symbol -> "venue / ledger"


class Reconciler:
    def __init__(
        self,
        accounts: Sequence[VenueAccount],
        instruments: Iterable[Instrument],
        gate: RiskGate,
        risk: RiskJournal,
        orchestrator: HedgeOrchestrator,
        events: EventLog,
        clock: Clock,
        *,
        ledger: Callable[[], Ledger | None],
        journal: Callable[[], GuardedJournal | None],
        mt5_accounts: Callable[[], Mapping[str, AccountState | None]] | None = None,
        interval_s: float = 30.0,
    ) -> None:
        self._accounts = list(accounts)
        self._instruments = {i.key: i for i in instruments}
        self._gate = gate
        self._risk = risk
        self._orch = orchestrator
        self._events = events
        self._clock = clock
        self._ledger = ledger
        self._journal = journal
        self._mt5_accounts = mt5_accounts
        self.interval_s = interval_s
        self.quarantined: dict[tuple[str, str], Quarantined] = {}  # by quarantine_key
        self._free: dict[Venue, Decimal] = {}  # each venue's free margin, as of its last good pass
        self.venues: dict[Venue, VenueReconcile] = {}
        self.passes = 0
        self._since_ms: dict[Venue, int] = {}

    # -- passes --------------------------------------------------------------------------
    async def first_pass(self, mt5_wait_s: float = MT5_FIRST_REPORT_S) -> None:
        """Before trading: hold the gate, give the EAs a moment for their first account report
        (bounded), reconcile every venue once, release."""
        self._risk.hold(RECONCILING)
        try:
            if self._mt5_accounts is not None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + mt5_wait_s
                # Polled: the bridge keeps the last report, it has no event to wait on.
                while any(a is None for a in self._mt5_accounts().values()) and loop.time() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await self.run_once()
        finally:
            self._risk.release(RECONCILING, "reconciled with the venues")

    async def run(self) -> None:
        """A pass every `interval_s`; sooner (every RETRY_S) while a venue could not be read,
        so a venue blocked by a passing fault is unblocked quickly. A pass that fails in an
        unexpected way is said, and the next one runs: reconciliation never stops quietly."""
        while True:
            failing = any(not r.ok for r in self.venues.values())
            await asyncio.sleep(min(self.interval_s, RETRY_S) if failing else self.interval_s)
            try:
                await self.run_once()
            except Exception as exc:
                log.exception("reconciliation pass failed")
                self._events.emit(EngineEvent(self._clock.time_ms(), "reconcile",
                                              f"reconciliation pass failed: {_said(exc)}", "error"))

    async def run_once(self) -> None:
        journal = self._journal()
        if journal is not None:
            await journal.flush()
        names = [a.venue for a in self._accounts]
        results = await asyncio.gather(*(self._bounded(a) for a in self._accounts), return_exceptions=True)
        for venue, result in zip(names, results, strict=True):
            problem = None if result is None else _said(result) if isinstance(result, BaseException) else result
            self._verdict(venue, problem)
        if self._mt5_accounts is not None:
            try:
                problem = await self._mt5_pass()
            except Exception as exc:  # the ledger read: said, and the next pass tries again
                problem = _said(exc)
            self._verdict("mt5", problem)
        self.passes += 1

    async def _bounded(self, account: VenueAccount) -> str | None:
        try:
            return await asyncio.wait_for(self._venue_pass(account), PASS_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {PASS_TIMEOUT_S:g} s"

    def _verdict(self, venue: Venue, problem: str | None) -> None:
        now = self._clock.time_ms()
        row = self.venues.setdefault(venue, VenueReconcile(venue))
        row.at_ms, row.ok = now, problem is None
        if problem is not None:
            row.detail = problem
            self._events.emit(EngineEvent(now, "reconcile", f"{venue}: cannot reconcile: {problem}", "warn",
                                          {"venue": venue}))
        changes = self._gate.breakers.on_reconcile(venue, problem, now)
        if changes:
            self._risk.apply_breakers(changes)

    # -- one venue -----------------------------------------------------------------------
    async def _venue_pass(self, account: VenueAccount) -> str | None:
        venue = account.venue
        ledger = self._ledger()
        if ledger is None:
            return "no ledger"
        now = self._clock.time_ms()
        row = self.venues.setdefault(venue, VenueReconcile(venue))
        # Orders on the venue's books.
        opened = await account.open_orders()
        journal = self._journal()
        if journal is not None:
            await journal.flush()  # an order sent while the venue was read has its row committed now
        known = await ledger.read(queries.known_orders, [o.client_order_id for o in opened])
        for o in opened:
            if not o.client_order_id.startswith(OUR_PREFIXES):
                self.quarantine(venue, o.client_order_id, "an open order that is not ours", open_order=o.symbol,
                                 venue_order_id=o.venue_order_id)
            elif o.client_order_id not in known:
                self.quarantine(venue, o.client_order_id, "an open order of ours that the ledger does not know",
                                 open_order=o.symbol, venue_order_id=o.venue_order_id)
        # Fills since the last pass (less a margin), the settled ones only. Not while the ledger
        # cannot write: a fill it lacks may be one the engine booked and holds for it (the
        # journal's backlog), and booking it again would count it twice; a later pass reads
        # from the same point.
        since = self._since_ms.get(venue, now - FIRST_LOOKBACK_MS)
        if journal is not None:  # what the engine booked is committed, or the journal says it cannot be
            await journal.flush()
        fills_deferred = journal is not None and journal.error is not None
        missing: list[Fill] = []
        if not fills_deferred:
            async def in_ledger(trade_ids: list[str]) -> set[str]:
                return await ledger.read(queries.known_trades, venue, trade_ids)

            fills = [f for f in await account.fills_since(since, in_ledger) if f.ts_ms <= now - FILL_SETTLE_MS]
            booked_ids = await in_ledger([f.venue_trade_id for f in fills])
            missing = [f for f in fills if f.venue_trade_id not in booked_ids]
            # The ledger stopped writing during the reads: a fill it lacks may be in the backlog.
            fills_deferred = journal is not None and journal.error is not None
        if not fills_deferred:
            if missing:
                owners = await ledger.read(queries.known_orders, [f.client_order_id for f in missing])
                booked = await self._book(missing, owners)
                row.fills_booked += booked
                if booked and journal is not None:
                    await journal.flush()  # the positions below are read from the ledger
            self._since_ms[venue] = max(since, now - FILL_SETTLE_MS - 60_000)
        self._free[venue] = await account.free_margin()
        # Positions, when nothing is in flight on the venue and no fill was booked while they
        # were read: a group can open, fill and close within that read, its fill then on one
        # side of the comparison only (the venue's figure, or the ledger's after the flush).
        if journal is not None:
            await journal.flush()
        fills_before = await ledger.last_fill_id(venue)
        held = await account.positions()
        busy = self._busy(venue)
        if journal is not None:
            await journal.flush()  # a fill heard before the read (its group closed since) is committed
        moved = await ledger.last_fill_id(venue) != fills_before
        detail = ("open orders agree; fills compared on a later pass while the ledger cannot write"
                  if fills_deferred else "open orders and fills agree")
        if held is None:
            detail += "; positions not compared (spot balances)"
        elif busy:
            detail += "; positions compared on a later pass (orders in flight)"
        elif moved:
            detail += "; positions compared on a later pass (fills booked while they were read)"
        elif journal is not None and journal.error is not None:
            detail += "; positions not compared while the ledger cannot write (its positions are stale)"
        else:
            mismatch = await self._compare_positions(venue, held, row)
            if mismatch is not None:
                self._halt_on(venue, mismatch)  # read fine: not a reconcile block, a halt
                return None
            detail += "; positions agree"
        row.detail = detail
        return None

    async def _book(self, fills: list[Fill], owners: Mapping[str, Mapping[str, object]]) -> int:
        """Fills of our orders the ledger lacks: journaled, and handed to the orchestrator as
        late fills (its own path: the venue is asked, exposure and equity follow, and trading
        halts for an unhedged or untracked one). One whose group's flow is still running is
        left to that flow. The fill goes with its order as the ledger has it: for an order the
        engine no longer remembers, the orchestrator applies it to the running books as it is
        journaled (nothing awaited between the two)."""
        journal = self._journal()
        booked = 0
        for f in fills:
            order = order_of_fill(f, owners.get(f.client_order_id))
            if isinstance(order, str):
                self.quarantine(f.venue, f.client_order_id, order)
                continue
            if journal is None:
                continue
            work = self._orch.late_fill(order.group_id, order.client_order_id, (order, f))
            if work is None:
                continue  # its group's flow is running and applies it
            journal.fill(order, f)
            booked += 1
            self._events.emit(EngineEvent(
                self._clock.time_ms(), "reconcile",
                f"{f.venue}: fill {f.venue_trade_id} of {f.client_order_id} ({f.qty} @ {f.price}) was missing "
                "from the ledger: booked", "warn", {"venue": f.venue, "order": f.client_order_id}))
            # Journaled now, so a later pass will not hand it over again: the work (asking the
            # venue, applying what it says, halting) is the orchestrator's task, not cancelled
            # with this pass when the pass runs out of time.
            await asyncio.shield(self._orch.keep(work, f"late-{order.client_order_id}"))
        return booked

    async def _compare_positions(self, venue: Venue, held: Mapping[str, Decimal],
                                 row: VenueReconcile) -> str | None:
        ledger = self._ledger()
        if ledger is None:
            return None
        ours = await ledger.net_positions()  # summed from the fills booked since the last read
        problems: list[str] = []
        for (v, symbol), inst in sorted(self._instruments.items()):
            if v != venue:
                continue
            on_venue = held.get(symbol, Decimal(0))
            in_ledger = ours.get((venue, symbol), Decimal(0))
            row.positions[symbol] = f"{_fmt(on_venue)} / {_fmt(in_ledger)}"
            if abs(on_venue - in_ledger) > Decimal(inst.lot_step) / 2:  # one missing lot is a difference
                problems.append(f"{venue} {symbol}: the venue holds {_fmt(on_venue)}, the ledger "
                                f"{_fmt(in_ledger)} (difference {_fmt(on_venue - in_ledger)})")
        return "; ".join(problems) or None

    def _halt_on(self, venue: Venue, detail: str) -> None:
        changes = self._gate.breakers.on_position_mismatch(venue, f"position differs: {detail}",
                                                           self._clock.time_ms())
        row = self.venues.setdefault(venue, VenueReconcile(venue))
        row.detail = f"position differs: {detail}"
        if changes:
            self._events.emit(EngineEvent(self._clock.time_ms(), "reconcile", f"halting: position differs: {detail}",
                                          "error", {"venue": venue}))
            self._risk.apply_breakers(changes)

    def _busy(self, venue: Venue) -> bool:
        if any(venue in g.instruments for g in self._orch.open.values()):
            return True
        return any(o.venue == venue and not is_terminal(o.state) for o in self._orch.loose_orders.values())

    def quarantine(self, venue: Venue, cid: str, reason: str, *, open_order: str | None = None,
                   venue_order_id: str = "") -> None:
        """`open_order`: the order is open on the venue (its symbol, "" when not said)."""
        key = quarantine_key(venue, cid, venue_order_id)
        if key in self.quarantined:
            return
        now = self._clock.time_ms()
        self.quarantined[key] = Quarantined(venue, cid, reason, now, open_order is not None, open_order or "",
                                            venue_order_id)
        self._events.emit(EngineEvent(now, "reconcile", f"{venue}: quarantined {key[1]}: {reason} (not adopted, "
                                      "not cancelled: check it on the venue)", "warn",
                                      {"venue": venue, "order": key[1]}))

    # -- MT5 -----------------------------------------------------------------------------
    async def _mt5_pass(self) -> str | None:
        assert self._mt5_accounts is not None
        reports = self._mt5_accounts()
        silent = sorted(t for t, a in reports.items() if a is None)
        if silent:
            return f"terminal(s) {', '.join(silent)} never sent an account report"
        held: dict[str, Decimal] = {}
        for account in reports.values():
            assert account is not None
            for p in account.positions:
                signed = p.volume if p.side == "buy" else -p.volume
                held[p.symbol] = held.get(p.symbol, Decimal(0)) + signed
        row = self.venues.setdefault("mt5", VenueReconcile("mt5"))
        if self._busy("mt5"):
            row.detail = "positions compared on a later pass (orders in flight)"
            return None
        mismatch = await self._compare_positions("mt5", held, row)
        if mismatch is not None:
            self._halt_on("mt5", mismatch)
            return None
        row.detail = f"positions agree ({len(reports)} terminal(s))"
        return None

    # -- orphan cleanup (engine.orphans) --------------------------------------------------
    def account(self, venue: Venue) -> VenueAccount | None:
        return next((a for a in self._accounts if a.venue == venue), None)

    def release(self, venue: Venue, cid: str, venue_order_id: str = "") -> None:
        """An order no longer open on its venue (cancelled by the operator, or gone): no longer
        reported; quarantined again if a later pass finds it open."""
        self.quarantined.pop(quarantine_key(venue, cid, venue_order_id), None)

    def free_margin(self) -> dict[str, Decimal]:
        """Each live venue's free margin as read by its last good pass (the risk gate's
        free-margin breaker; a venue not read yet is not judged)."""
        return {v: m for v, m in self._free.items() if self.venues.get(v) is not None and self.venues[v].ok}

    # -- rows ----------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        return {
            "passes": self.passes,
            "interval_s": self.interval_s,
            "venues": {v: {"ok": r.ok, "at_ms": r.at_ms, "detail": r.detail, "fills_booked": r.fills_booked,
                           "positions": dict(r.positions)} for v, r in sorted(self.venues.items())},
            "quarantined": [{"venue": q.venue, "client_order_id": q.client_order_id, "reason": q.reason,
                             "since_ms": q.since_ms, "open_order": q.open_order, "venue_order_id": q.venue_order_id}
                            for q in self.quarantined.values()],
        }


def order_of_fill(f: Fill, owner: Mapping[str, object] | None) -> Order | str:
    """The order of a fill of ours as its ledger row (`queries.known_orders`) has it, or why
    there is none to book it on (the order is quarantined): the ledger does not know it, or
    knows it on another venue (never booked across venues)."""
    if owner is None:
        return f"a fill ({f.venue_trade_id}, {f.qty} @ {f.price}) of an order the ledger does not know"
    owner_venue = str(owner.get("venue"))
    if owner_venue != f.venue:  # our id, another venue's order
        return f"a fill ({f.venue_trade_id}, {f.qty} @ {f.price}) under the id of our order on {owner_venue[:20]}"
    return Order(client_order_id=f.client_order_id, group_id=str(owner.get("group_id") or ""),
                 venue=f.venue, symbol=str(owner["symbol"]),
                 side="buy" if owner["side"] == "buy" else "sell",
                 qty=Decimal(str(owner["qty"])), price=Decimal(str(owner["price"])),
                 purpose=OrderPurpose(str(owner["purpose"])),
                 created_ms=int(str(owner["created_at_ms"])))


def _fmt(d: Decimal) -> str:
    text = format(d.normalize(), "f") if d else "0"
    return text


def _said(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]
