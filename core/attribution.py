"""Group attribution: which hedge group a fill's money belongs to, closing orders included (pure).

A hedge group's PnL is its own legs' cash flows (entry, retry, unwind, and any order sent
under its group id, such as a close of that one group), plus its share of the orders that
closed positions without belonging to a group: a flatten sends one order per venue and asset
for the net of every group that holds there. Such a closing fill is attributed first in,
first out: to the groups holding that (venue, symbol) against the fill's side, oldest
position first, each up to what it holds; a fee is shared in proportion to quantity, each share cut to 1e-12 (the
last piece takes the remainder, so the shares sum exactly to the fee). What no group holds (dust
folded away, a position from outside quantarb, a flatten that overshot) lands on the
`flatten` line, so nothing is booked nowhere.

Groups also close each other (**netting**, issue 19): once a group is **settled** (its execution
ended and no order of it is pending, `settle`), its position on each book is set against the
opposite positions of settled groups holding that book, first in, first out, without fees, at
the midpoint of the two groups' entry prices on that book: a transfer (`Net`) in which the long
group sells to the short one at one price, so the totals do not move, and the two share what
the round trip on that book made (a figure of their fills alone, not of when they settled). It
is what a flatten's `net_off` does for a book it left flat (at the mark there), done as soon as
two groups offset: so the settled groups holding a book all hold it the same way, and how many
there are is bounded by the net position (the risk limits), not by how many groups ever traded.
The engine journals each `Net` (a `net` ledger event) and the ledger's replay books them as
journaled (`transfer`), so `ledger groups` says what the engine said.

A group becomes **closed** when a closing fill (or a net) brought every one of its positions below one
lot step: its PnL is then its whole cash flow after every fee (`GroupMoney.realized`), and
nothing of it is held any longer.

Money here follows the `hedge_groups.realized_pnl` convention: base quantity x normalized
price summed over the group's legs, each in its own quote currency (docs/ledger.md, Money);
the account-currency figures are the portfolio's (`core.portfolio`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal

from core.instruments import Instrument
from core.models import Side, Venue

Key = tuple[Venue, str]
FLATTEN_LINE = "flatten"
_ZERO = Decimal(0)
_CTX = Context(prec=50)
# A fee's shares are cut to 1e-12 (the last takes the exact remainder): a 50-digit share summed
# into a group's fees in the default 28-digit context rounded, so the shares no longer added up
# to the fee (12.48999... for 12.49, found by hypothesis).
_FEE_QUANTUM = Decimal("1e-12")


@dataclass(slots=True)
class _Side:
    qty: Decimal = _ZERO
    notional: Decimal = _ZERO


def _short(d: Decimal) -> Decimal:
    """`d` without trailing zeros (2656.500000000000 -> 2656.5, 2656.000000000000 -> 2656), so
    the money it makes does not print with a tail of zeros; never in exponent notation."""
    return d.to_integral_value() if d == d.to_integral_value() else d.normalize()


@dataclass(frozen=True, slots=True)
class Net:
    """One netting transfer on one book: `long_group` sold `qty` (base units) to `short_group` at
    `price` (normalized), no fee."""

    venue: Venue
    symbol: str
    long_group: str
    short_group: str
    qty: Decimal
    price: Decimal
    ts_ms: int


@dataclass(slots=True)
class GroupMoney:
    """One group's (or the flatten line's) money: cash before fees, fees, and what it holds."""

    group_id: str
    cash: Decimal = _ZERO  # sells bring qty x price in, buys take it out (base x normalized)
    fees: Decimal = _ZERO  # summed as charged (the hedge_groups convention)
    closing_cash: Decimal = _ZERO  # the part of `cash` from closing fills attributed here
    closing_fees: Decimal = _ZERO
    closing_qty: Decimal = _ZERO  # base units closed by those fills (unsigned)
    positions: dict[Key, Decimal] = field(default_factory=dict)  # base units, + long
    closed_by: list[str] = field(default_factory=list)  # the closing orders' group ids (flatten batches)
    last_ms: int = 0
    # Per asset and side, what was bought/sold: the residual's cost at that side's average price.
    _sides: dict[tuple[str, Side], _Side] = field(default_factory=dict)
    _legs: dict[tuple[Key, Side], _Side] = field(default_factory=dict)  # the same per book: entry prices
    _asset: dict[Key, str] = field(default_factory=dict)

    def residual(self, asset: str | None = None) -> Decimal:
        """Net base quantity held (per asset when given; the flatten line spans assets)."""
        return sum((q for k, q in self.positions.items() if asset is None or self._asset.get(k) == asset), _ZERO)

    def residual_cost(self) -> Decimal:
        """Each asset's open residual at the average price of the side that holds it."""
        total = _ZERO
        for asset in set(self._asset.values()):
            residual = self.residual(asset)
            if residual == 0:
                continue
            side = self._sides.get((asset, "buy" if residual > 0 else "sell"))
            if side is not None and side.qty:
                total += _CTX.divide(_CTX.multiply(residual, side.notional), side.qty)
        return total

    @property
    def realized(self) -> Decimal:
        """Cash after fees, a residual still held excluded at its cost (as `HedgeGroup.realized_pnl`):
        the whole cash flow once nothing is held."""
        return self.cash + self.residual_cost() - self.fees

    def entry(self, key: Key) -> Decimal | None:
        """The average price (normalized) of the side it holds on this book; None when flat."""
        held = self.positions.get(key, _ZERO)
        side = self._legs.get((key, "buy" if held > 0 else "sell")) if held else None
        return _CTX.divide(side.notional, side.qty) if side is not None and side.qty else None

    def flat(self, steps: Mapping[Key, Decimal]) -> bool:
        return all(abs(q) < steps[k] for k, q in self.positions.items())

    def trade(self, key: Key, asset: str, side: Side, qty: Decimal, price: Decimal, fee: Decimal, ts_ms: int) -> None:
        signed = qty if side == "buy" else -qty
        self.positions[key] = self.positions.get(key, _ZERO) + signed
        self._asset[key] = asset
        notional = qty * price
        self.cash += -notional if side == "buy" else notional
        self.fees += fee
        # Each made once (`setdefault` built two at every fill of a replay, then dropped them).
        per_asset = self._sides.get((asset, side))
        if per_asset is None:
            per_asset = self._sides[(asset, side)] = _Side()
        per_book = self._legs.get((key, side))
        if per_book is None:
            per_book = self._legs[(key, side)] = _Side()
        for s in (per_asset, per_book):
            s.qty += qty
            s.notional += notional
        self.last_ms = max(self.last_ms, ts_ms)


class Attribution:
    """Fed every fill in time order with its order's group id and purpose; answers per group.

    `keep_flat=False` (the running engine) forgets a group once it holds nothing and was not
    just closed, and keeps no trade ids (the caller feeds each fill once: the running portfolio
    deduplicates first), so memory is bounded by the groups that hold positions, and with
    netting (`settle`) by the net positions; the ledger's replay keeps every group.
    """

    def __init__(self, instruments: Iterable[Instrument], *, keep_flat: bool = True) -> None:
        self._inst: dict[Key, Instrument] = {i.key: i for i in instruments}
        self._steps: dict[Key, Decimal] = {k: i.base_step for k, i in self._inst.items()}  # asked at every fill
        self._keep_flat = keep_flat
        self._groups: dict[str, GroupMoney] = {}
        # Per book, the groups holding a position there, oldest first (dict order).
        self._holders: dict[Key, dict[str, None]] = {}
        self._closed: dict[str, GroupMoney] = {}  # closed by a closing fill, not yet taken
        self._settled: set[str] = set()  # groups done trading: netted against each other
        self._trades: set[tuple[Venue, str]] | None = set() if keep_flat else None
        self.line = GroupMoney(FLATTEN_LINE)

    def has(self, venue: Venue, symbol: str) -> bool:
        return (venue, symbol) in self._inst

    def steps(self) -> dict[Key, Decimal]:
        return dict(self._steps)

    def group(self, group_id: str) -> GroupMoney | None:
        return self._groups.get(group_id)

    def remembered(self) -> int:
        """How many groups this holds (the flatten line aside)."""
        return len(self._groups)

    def groups(self) -> dict[str, GroupMoney]:
        return dict(self._groups)

    def fill(self, *, group_id: str | None, closing: bool, venue: Venue, symbol: str, side: Side, qty: Decimal,
             price: Decimal, fee: Decimal, ts_ms: int, trade_id: str) -> list[tuple[str, Decimal]]:
        """One fill in venue units; returns [(group id or `flatten`, base qty)] it was booked to.

        `closing`: the order closes positions without opening a group (a flatten order). Sent
        under the id of a group that holds something, it is that group's own; otherwise
        attributed first in, first out. Raises ValueError for an unknown instrument or a bad figure, changing
        nothing; a repeated (venue, trade id) is ignored ([]).
        """
        inst = self._inst.get((venue, symbol))
        if inst is None:
            raise ValueError(f"{venue}:{symbol}: not an instrument of this attribution")
        if side not in ("buy", "sell") or not (qty.is_finite() and price.is_finite() and fee.is_finite()):
            raise ValueError(f"{venue}:{symbol} fill {trade_id!r}: bad side or figures")
        if qty <= 0 or price <= 0:
            raise ValueError(f"{venue}:{symbol} fill {trade_id!r}: qty and price must be > 0")
        if self._trades is not None:
            if (venue, trade_id) in self._trades:
                return []
            self._trades.add((venue, trade_id))
        key = inst.key
        base = inst.to_base_qty(qty)
        px = inst.normalized_price(price)
        known = self._groups.get(group_id) if group_id else None
        # A closing order is its group's own while the group holds something: a late fill of a
        # close order after the group went flat goes first in, first out, live (where a flat
        # group is forgotten) and in the ledger's replay (where it is kept) alike.
        if group_id and (not closing or (known is not None and any(q != 0 for q in known.positions.values()))):
            g = known
            if g is None:
                g = self._groups[group_id] = GroupMoney(group_id)
            self._book(g, key, inst.pair, side, base, px, fee, ts_ms, closing, batch=group_id)
            return [(group_id, base)]
        if not closing:  # an order of no group that is not a closing order: the line's
            self._book(self.line, key, inst.pair, side, base, px, fee, ts_ms, True)
            return [(FLATTEN_LINE, base)]
        pieces: list[tuple[GroupMoney, Decimal]] = []
        left = base
        for gid in list(self._holders.get(key, {})):
            if left <= 0:
                break
            held = self._groups[gid].positions.get(key, _ZERO)
            if held == 0 or (held > 0) == (side == "buy"):
                continue
            take = min(abs(held), left)
            pieces.append((self._groups[gid], take))
            left -= take
        if left > 0:
            pieces.append((self.line, left))
        out: list[tuple[str, Decimal]] = []
        fee_left = fee
        for n, (g, take) in enumerate(pieces):
            share = fee_left if n == len(pieces) - 1 else _CTX.quantize(
                _CTX.divide(_CTX.multiply(fee, take), base), _FEE_QUANTUM)
            fee_left = _CTX.subtract(fee_left, share)
            self._book(g, key, inst.pair, side, take, px, share, ts_ms, True, batch=group_id or "")
            out.append((g.group_id, take))
        return out

    def _book(self, g: GroupMoney, key: Key, asset: str, side: Side, qty: Decimal, px: Decimal, fee: Decimal,
              ts_ms: int, closing: bool, batch: str = "") -> None:
        before = g.positions.get(key, _ZERO)
        g.trade(key, asset, side, qty, px, fee, ts_ms)
        if closing:
            g.closing_cash += -qty * px if side == "buy" else qty * px
            g.closing_fees += fee
            g.closing_qty += qty
            if batch and batch not in g.closed_by:
                g.closed_by.append(batch)
        if g is self.line:
            return
        after = g.positions[key]
        holders = self._holders.setdefault(key, {})
        if after != 0:
            holders.setdefault(g.group_id, None)
        else:
            holders.pop(g.group_id, None)
        if closing and before != 0 and g.flat(self._steps):
            self._closed[g.group_id] = g
        if not self._keep_flat and g.group_id not in self._closed and all(q == 0 for q in g.positions.values()):
            self._groups.pop(g.group_id, None)
            self._settled.discard(g.group_id)

    def net_off(self, venue: Venue, symbol: str, price: Decimal, ts_ms: int, batch: str) -> list[str]:
        """After a flatten left this book flat: groups still holding it against each other (one
        group's long offset by a later group's short, so the flatten traded nothing for them)
        are closed against each other first in, first out, at `price` (venue units, the mark),
        without fees. Zero-sum: what one group sells the other buys at the same price, so the
        totals do not move. Returns the groups it touched."""
        inst = self._inst.get((venue, symbol))
        if inst is None:
            raise ValueError(f"{venue}:{symbol}: not an instrument of this attribution")
        px = inst.normalized_price(price)
        touched: list[str] = []
        while True:
            holders = [self._groups[g] for g in self._holders.get(inst.key, {})]
            longs = [g for g in holders if g.positions.get(inst.key, _ZERO) > 0]
            shorts = [g for g in holders if g.positions.get(inst.key, _ZERO) < 0]
            if not longs or not shorts:
                return touched
            long, short = longs[0], shorts[0]
            qty = min(long.positions[inst.key], -short.positions[inst.key])
            self._transfer(inst, long, short, qty, px, ts_ms, batch, batch)
            touched += [g.group_id for g in (long, short) if g.group_id not in touched]

    def settle(self, group_id: str, ts_ms: int) -> list[Net]:
        """The group's execution ended and no order of it is pending: from now on it nets. Each
        book it holds is set against the opposite positions of settled groups holding that book,
        first in, first out, without fees, at the midpoint of the two groups' entry prices there:
        the two share what the round trip on that book made, a figure of their fills alone (not
        of when they settled). Returns the transfers (to journal), in the order made."""
        g = self._groups.get(group_id)
        if g is None:
            return []  # holds nothing (or never traded): nothing to net, nothing to remember
        self._settled.add(group_id)
        out: list[Net] = []
        for key in sorted(k for k, q in g.positions.items() if q != 0):
            inst = self._inst[key]
            for hid in list(self._holders.get(key, {})):
                mine = g.positions.get(key, _ZERO)
                if mine == 0:
                    break
                other = self._groups.get(hid)
                if other is None or hid == group_id or hid not in self._settled:
                    continue
                theirs = other.positions.get(key, _ZERO)
                if theirs == 0 or (theirs > 0) == (mine > 0):
                    continue
                long, short = (g, other) if mine > 0 else (other, g)
                bought, sold = long.entry(key), short.entry(key)
                if bought is None or sold is None:
                    continue
                px = _short(_CTX.quantize(_CTX.divide(bought + sold, 2), _FEE_QUANTUM))
                if px <= 0:
                    continue
                qty = min(abs(mine), abs(theirs))
                self._transfer(inst, long, short, qty, px, ts_ms, short.group_id, long.group_id)
                out.append(Net(key[0], key[1], long.group_id, short.group_id, qty, px, ts_ms))
        return out

    def transfer(self, net: Net) -> None:
        """Book a journaled net (the ledger's replay): as `settle` made it. ValueError for an
        unknown instrument or a bad figure, changing nothing."""
        inst = self._inst.get((net.venue, net.symbol))
        if inst is None:
            raise ValueError(f"{net.venue}:{net.symbol}: not an instrument of this attribution")
        if not (net.qty.is_finite() and net.price.is_finite()) or net.qty <= 0 or net.price <= 0:
            raise ValueError(f"net {net.long_group} -> {net.short_group}: qty and price must be finite and > 0")
        if not net.long_group or not net.short_group or net.long_group == net.short_group:
            raise ValueError(f"net {net.long_group!r} -> {net.short_group!r}: two different groups")
        long = self._groups.get(net.long_group) or self._groups.setdefault(net.long_group, GroupMoney(net.long_group))
        short = self._groups.get(net.short_group) or self._groups.setdefault(net.short_group,
                                                                                GroupMoney(net.short_group))
        self._transfer(inst, long, short, net.qty, net.price, net.ts_ms, net.short_group, net.long_group)

    def mark_settled(self, group_ids: Iterable[str]) -> None:
        """Groups (restored from the ledger) that are done trading: they net from now on."""
        self._settled.update(g for g in group_ids if g in self._groups)

    def unsettle(self, group_id: str) -> None:
        """The group trades again (a close of it by hand): it nets no more until `settle`d again."""
        self._settled.discard(group_id)

    def settled(self) -> list[str]:
        """The settled groups remembered (holding something, or closed and not yet taken), oldest
        first."""
        return [g for g in self._groups if g in self._settled]

    def _transfer(self, inst: Instrument, long: GroupMoney, short: GroupMoney, qty: Decimal, px: Decimal,
                  ts_ms: int, long_by: str, short_by: str) -> None:
        """`long` sells `qty` to `short` at `px` (normalized), no fee: zero-sum."""
        self._book(long, inst.key, inst.pair, "sell", qty, px, _ZERO, ts_ms, True, batch=long_by)
        self._book(short, inst.key, inst.pair, "buy", qty, px, _ZERO, ts_ms, True, batch=short_by)

    def take_closed(self) -> list[GroupMoney]:
        """The groups a closing fill left flat since the last call (each once), oldest first.
        The running engine forgets them once taken if they hold nothing at all."""
        out = sorted(self._closed.values(), key=lambda g: (g.last_ms, g.group_id))
        self._closed.clear()
        if not self._keep_flat:
            for g in out:
                if all(q == 0 for q in g.positions.values()):
                    self._groups.pop(g.group_id, None)
                    self._settled.discard(g.group_id)
                    for holders in self._holders.values():
                        holders.pop(g.group_id, None)
        return out

    def closed_groups(self) -> list[GroupMoney]:
        """Every group a closing fill touched and that now holds less than a lot step everywhere."""
        steps = self.steps()
        return [g for g in self._groups.values() if g.closing_qty and g.flat(steps)]
