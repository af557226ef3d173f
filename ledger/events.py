"""The journal's event kinds, their payloads, and the functions that build them from core objects.

An event is (kind, ts_ms, group_id, payload). `ts_ms` is when the ledger recorded it (the
ledger's clock); times inside the payload are the domain's own (when the order was created,
when the fill happened). Payloads are JSON objects of plain values: decimals are strings in
positional notation (`format(d, "f")`: exact, never `1E-8`), times are integer unix ms (null
when not set), enums are their string values. A payload is self-contained: the projections
(`ledger.projections`) and recovery read nothing else.

Kinds and what they carry (docs/ledger.md has the field lists):

- `decision`      one pipeline verdict (sampled, see `DecisionSampler`)
- `group_opened`  a hedge group and its full intent, with the instruments it was sized with
- `group_state`   a group's state, closing time, realized PnL and fees (closed: with its PnL figures)
- `order_created` the write-ahead order row, before the request leaves the process
- `order_state`   an order's state, venue order id, filled quantity
- `fill`          one execution; deduplicated on (venue, venue_trade_id) by the projection
- `compensation`  a compensation action (upserted by action_id as its outcome changes)
- `risk_event`    a kill / flatten / rearm / pause / resume / breaker and the trading state after it,
                  optionally with the full breaker-state map (so breakers survive a restart);
                  kind `setting`: a runtime setting changed (`setting_change`), the state unchanged
- `mt5_command`   the full state of one MT5 command with its fills (upsert)
- `decision_stats` per pair and interval: every decision counted, with an edge histogram (the
                  `decision` log is sampled, so percentiles from it would be biased)
- `dust`          a pair's dust total after a change (the compensation engine's DustBook)
- `funding`       perpetual funding booked at one funding time on the position then held
- `rate`          the rate in force for one currency changed (a book's mid, a typed rate, missing)
- `net`           two settled groups holding one book in opposite ways set against each other at
                  the mark, without fees (`core.attribution.Net`; the ledger's replay books it)
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from core.attribution import Net
from core.commands import CommandFill, CommandState, Mt5Command
from core.currency import RateInForce, RateSourceKind
from core.hedge import CLOSABLE, HedgeGroup
from core.instruments import Instrument
from core.models import (
    VENUES,
    CompensationAction,
    Decision,
    ExecutionIntent,
    ExecutionLeg,
    Fill,
    Order,
    TradingState,
)
from core.pnl import group_pnl
from core.risk import StateChange
from core.runtime_settings import SettingChange

DECISION: Final = "decision"
GROUP_OPENED: Final = "group_opened"
GROUP_STATE: Final = "group_state"
ORDER_CREATED: Final = "order_created"
ORDER_STATE: Final = "order_state"
FILL: Final = "fill"
COMPENSATION: Final = "compensation"
RISK_EVENT: Final = "risk_event"
MT5_COMMAND: Final = "mt5_command"
DECISION_STATS: Final = "decision_stats"
DUST: Final = "dust"
FUNDING: Final = "funding"
RATE: Final = "rate"
NET: Final = "net"

KINDS: frozenset[str] = frozenset(
    {DECISION, GROUP_OPENED, GROUP_STATE, ORDER_CREATED, ORDER_STATE, FILL, COMPENSATION, RISK_EVENT, MT5_COMMAND,
     DECISION_STATS, DUST, FUNDING, RATE, NET}
)

RISK_KINDS: frozenset[str] = frozenset({"kill", "flatten", "rearm", "pause", "resume", "breaker", "setting"})


class LedgerEvent(msgspec.Struct, frozen=True):
    """One journal entry before it has a sequence number (the writer assigns it)."""

    kind: str
    ts_ms: int
    group_id: str | None
    payload: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_payload(payload: dict[str, Any]) -> str:
    """The payload as compact JSON text (what the `events.payload` column holds)."""
    return _encoder.encode(payload).decode()


def encode_raw(payload: dict[str, Any]) -> msgspec.Raw:
    """The payload encoded once, to be embedded as is in a larger JSON document."""
    return msgspec.Raw(_encoder.encode(payload))


def decode_payload(text: str) -> dict[str, Any]:
    return _decoder.decode(text)


def decode_json(text: str) -> Any:
    """Any JSON text stored by the ledger (e.g. the `mt5_commands.fills` array)."""
    return msgspec.json.decode(text)


def dec(value: Decimal) -> str:
    """A decimal as exact positional text: `0.00000001`, never `1E-8`."""
    return format(value, "f")


def _ms(value: int) -> int | None:
    return value or None


# -- builders ----------------------------------------------------------------------------
def decision(d: Decision, ts_ms: int, group_id: str | None = None) -> LedgerEvent:
    return LedgerEvent(
        DECISION,
        ts_ms,
        group_id,
        {
            "ts_ms": d.ts_ms,
            "pair": d.pair,
            "buy_venue": d.buy_venue,
            "sell_venue": d.sell_venue,
            "edge_bps": d.edge_bps,
            "outcome": str(d.outcome),
            "reason": str(d.reason),
        },
    )


def _leg(leg: ExecutionLeg) -> dict[str, Any]:
    return {
        "venue": leg.venue,
        "symbol": leg.symbol,
        "side": leg.side,
        "quantity": dec(leg.quantity),
        "limit_price": dec(leg.limit_price),
        "base_qty": dec(leg.base_qty),
    }


def _intent(intent: ExecutionIntent) -> dict[str, Any]:
    return {
        "pair": intent.pair,
        "buy": _leg(intent.buy),
        "sell": _leg(intent.sell),
        "base_qty": dec(intent.base_qty),
        "expected_edge_bps": intent.expected_edge_bps,
        "buy_price": intent.buy_price,
        "sell_price": intent.sell_price,
        "created_ms": intent.created_ms,
    }


def _instrument(inst: Instrument) -> dict[str, Any]:
    return {
        "venue": inst.venue,
        "symbol": inst.symbol,
        "pair": inst.pair,
        "qty_per_unit": dec(inst.qty_per_unit),
        "tick_size": dec(inst.tick_size),
        "lot_step": dec(inst.lot_step),
        "min_qty": dec(inst.min_qty),
        "taker_fee_bps": inst.taker_fee_bps,
        "price_scale": dec(inst.price_scale),
        "min_notional": dec(inst.min_notional),
    }


def group_opened(group: HedgeGroup, ts_ms: int) -> LedgerEvent:
    intent = group.intent
    return LedgerEvent(
        GROUP_OPENED,
        ts_ms,
        group.group_id,
        {
            "group_id": group.group_id,
            "pair": intent.pair,
            "buy_venue": intent.buy.venue,
            "sell_venue": intent.sell.venue,
            "state": str(group.state),
            "opened_ms": group.opened_ms,
            "target_qty": dec(intent.base_qty),
            "expected_edge_bps": intent.expected_edge_bps,
            "intent": _intent(intent),
            "instruments": {venue: _instrument(inst) for venue, inst in group.instruments.items()},
        },
    )


def group_state(group: HedgeGroup, ts_ms: int) -> LedgerEvent:
    """The group as it is now; a terminal group also carries its `pnl` figures (`group_pnl`)."""
    payload: dict[str, Any] = {
        "group_id": group.group_id,
        "state": str(group.state),
        "closed_ms": _ms(group.closed_ms),
        "realized_pnl": dec(group.realized_pnl),
        "fees": dec(group.fees),
        "residual": dec(group.residual()),
        "note": group.note,
    }
    if group.outcome is not None:  # closed: the state its execution ended in (a hit or not)
        payload["outcome"] = str(group.outcome)
    if group.terminal:
        pnl = group_pnl_payload(group)
        if pnl is not None:
            payload["pnl"] = pnl
    return LedgerEvent(GROUP_STATE, ts_ms, group.group_id, payload)


# The states `HedgeGroup.close` leaves for closed (`core.hedge.CLOSABLE`: an unwound group that
# lot sizes left holding too, 2f5fd11).
_CLOSABLE_OUTCOMES = frozenset(s.value for s in CLOSABLE)


def group_closed(group_id: str, outcome: str, closed_ms: int | None, realized_pnl: Decimal, fees: Decimal,
                 note: str, ts_ms: int) -> LedgerEvent:
    """A terminal group closed by closing orders, for a group the engine no longer holds in
    memory (the same `group_state` event `group_state(group)` writes for one it does): state
    `closed`, its whole PnL and fees, and the state its execution ended in (`outcome`)."""
    if not group_id or outcome not in _CLOSABLE_OUTCOMES:
        raise ValueError(f"group {group_id!r} cannot be closed from {outcome!r}")
    return LedgerEvent(GROUP_STATE, ts_ms, group_id, {
        "group_id": group_id, "state": "closed", "closed_ms": closed_ms, "realized_pnl": dec(realized_pnl),
        "fees": dec(fees), "residual": "0", "note": note[:300], "outcome": outcome})


def group_pnl_payload(group: HedgeGroup) -> dict[str, Any] | None:
    """core.pnl's figures of a closed group, computed from the very object the runtime's
    PairStats sees, so `ledger summary` and the runtime snapshot agree (bps; null = none).

    None if they cannot be computed (e.g. a zero price): statistics never stop the journal.
    """
    try:
        p = group_pnl(group)
    except (ArithmeticError, KeyError):
        return None
    return {
        "expected_edge_bps": p.expected_edge_bps,
        "realized_edge_bps": p.realized_edge_bps,
        "latency_slippage_bps": p.latency_slippage_bps,
        "impact_slippage_bps": p.impact_slippage_bps,
    }


def order_created(order: Order, ts_ms: int) -> LedgerEvent:
    return LedgerEvent(
        ORDER_CREATED,
        ts_ms,
        order.group_id or None,
        {
            "client_order_id": order.client_order_id,
            "group_id": order.group_id or None,
            "venue": order.venue,
            "symbol": order.symbol,
            "side": order.side,
            "qty": dec(order.qty),
            "price": dec(order.price),
            "purpose": str(order.purpose),
            "state": str(order.state),
            "venue_order_id": order.venue_order_id,
            "created_ms": order.created_ms,
            "updated_ms": order.updated_ms or order.created_ms,
            # The touch when it was sent ("0" = unknown): slippage in `ledger summary`.
            "touch_price": dec(order.touch_price),
        },
    )


def order_state(order: Order, ts_ms: int) -> LedgerEvent:
    return LedgerEvent(
        ORDER_STATE,
        ts_ms,
        order.group_id or None,
        {
            "client_order_id": order.client_order_id,
            "state": str(order.state),
            "venue_order_id": order.venue_order_id,
            "updated_ms": order.updated_ms or order.created_ms,
            "filled_qty": dec(order.filled_qty),
            "reject_reason": order.reject_reason,
        },
    )


def fill(f: Fill, ts_ms: int, group_id: str | None = None) -> LedgerEvent:
    return LedgerEvent(
        FILL,
        ts_ms,
        group_id or None,
        {
            "client_order_id": f.client_order_id,
            "venue": f.venue,
            "venue_trade_id": f.venue_trade_id,
            "qty": dec(f.qty),
            "price": dec(f.price),
            "fee": dec(f.fee),
            "fee_ccy": f.fee_ccy,
            "ts_ms": f.ts_ms,
        },
    )


def compensation(action: CompensationAction, ts_ms: int) -> LedgerEvent:
    return LedgerEvent(
        COMPENSATION,
        ts_ms,
        action.group_id,
        {
            "action_id": action.action_id,
            "group_id": action.group_id,
            "kind": str(action.kind),
            "reason": action.reason,
            "created_ms": action.created_ms,
            "outcome": action.outcome,
        },
    )


def risk_event(
    kind: str, change: StateChange, ts_ms: int, breakers: Mapping[str, Mapping[str, Any]] | None = None
) -> LedgerEvent:
    """A risk action and the trading state it left (`kind` is one of RISK_KINDS).

    `breakers`, when given, is the full breaker-state map at that moment (`breakers_payload`);
    recovery restores the map of the latest risk event that carried one.
    """
    if kind not in RISK_KINDS:
        raise ValueError(f"unknown risk event kind {kind!r}; expected one of {sorted(RISK_KINDS)}")
    payload: dict[str, Any] = {
        "kind": kind, "trading_state": str(change.state), "reason": change.reason, "ts_ms": change.ts_ms,
    }
    if breakers is not None:
        payload["breakers"] = breakers_payload(breakers)
    return LedgerEvent(RISK_EVENT, ts_ms, None, payload)


def setting_change(change: SettingChange, state: TradingState, ts_ms: int) -> LedgerEvent:
    """A runtime setting changed (engine.steering): a risk event of kind `setting` whose
    `setting` object holds the audit record (key, old, new, config, reason, source, ts_ms).
    The trading state is the one it left untouched; recovery skips these when it restores the
    trading state, and re-applies them by `core.runtime_settings.restart_plan`."""
    payload: dict[str, Any] = {
        "kind": "setting", "trading_state": str(state), "reason": change.summary()[:1000], "ts_ms": change.ts_ms,
        "setting": change.to_json(),
    }
    return LedgerEvent(RISK_EVENT, ts_ms, None, payload)


BREAKER_FIELDS: tuple[str, ...] = ("state", "since_ms", "until_ms", "detail")
_SCALARS = (str, int, float, bool, type(None))


def _opt_ms(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected integer unix ms or null, got {value!r}")
    return value


def breakers_payload(breakers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The breaker map as plain JSON: name -> {state, since_ms, until_ms, detail, extra scalars}.

    Checked here, before it is queued, so a bad map fails its caller instead of the writer.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, b in breakers.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"breaker name must be a non-empty string, got {name!r}")
        if not isinstance(b, Mapping):
            raise ValueError(f"breaker {name}: expected a mapping, got {type(b).__name__}")
        state, detail = b.get("state"), b.get("detail", "")
        if not isinstance(state, str) or not state:
            raise ValueError(f"breaker {name}: 'state' must be a non-empty string, got {state!r}")
        if not isinstance(detail, str):
            raise ValueError(f"breaker {name}: 'detail' must be a string, got {detail!r}")
        entry: dict[str, Any] = {
            "state": state,
            "since_ms": _opt_ms(b.get("since_ms"), f"breaker {name}.since_ms"),
            "until_ms": _opt_ms(b.get("until_ms"), f"breaker {name}.until_ms"),
            "detail": detail,
        }
        for key, value in b.items():
            if key in entry:
                continue
            if not isinstance(key, str) or not isinstance(value, _SCALARS):
                raise ValueError(f"breaker {name}: extra field {key!r} must be a JSON scalar, got {value!r}")
            entry[key] = value
        out[name] = entry
    return out


def breakers_from_payload(value: Any) -> dict[str, dict[str, Any]]:
    """The breaker map of a journaled risk event (inverse of `breakers_payload`); ValueError if
    it is not one (a hand-edited journal), rather than guessing breaker states."""
    if not isinstance(value, dict):
        raise ValueError(f"breakers: expected a JSON object, got {type(value).__name__}")
    return breakers_payload(value)


# -- decision statistics -------------------------------------------------------------------
EDGE_BUCKET_BPS: Final = 0.25
EDGE_MIN_BPS: Final = -500.0  # edges below land in the first bucket, above EDGE_MAX_BPS in the last
EDGE_MAX_BPS: Final = 500.0
EDGE_BUCKETS: Final = int((EDGE_MAX_BPS - EDGE_MIN_BPS) / EDGE_BUCKET_BPS)
# Histogram slot i covers [EDGE_MIN_BPS + i * width, + width): journaled as bucket index
# k = i + EDGE_BUCKET_OFFSET, i.e. [k * width, (k + 1) * width) bps, independent of the clip range.
EDGE_BUCKET_OFFSET: Final = int(EDGE_MIN_BPS / EDGE_BUCKET_BPS)


def decision_stats(
    pair: str, start_ms: int, interval_ms: int, decisions: int, intents: int, histogram: list[int], ts_ms: int
) -> LedgerEvent:
    """One pair's decision counts for [start_ms, start_ms + interval_ms), with the edge histogram
    as sparse [k, count] pairs (bucket k = [k * edge_bucket_bps, (k + 1) * edge_bucket_bps))."""
    return LedgerEvent(
        DECISION_STATS,
        ts_ms,
        None,
        {
            "pair": pair,
            "start_ms": start_ms,
            "interval_ms": interval_ms,
            "decisions": decisions,
            "intents": intents,
            "edge_bucket_bps": EDGE_BUCKET_BPS,
            "edge_histogram": [[i + EDGE_BUCKET_OFFSET, c] for i, c in enumerate(histogram) if c],
        },
    )


def histogram_from_json(text: str) -> dict[int, int]:
    """A journaled edge histogram (`[[k, count], ...]`) as {k: count}; ValueError if malformed."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"edge histogram is not JSON: {exc}") from None
    if not isinstance(value, list):
        raise ValueError("edge histogram: expected a JSON array of [bucket, count] pairs")
    out: dict[int, int] = {}
    for item in value:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item) or item[1] < 0):
            raise ValueError(f"edge histogram: expected [bucket, count >= 0], got {item!r}")
        out[item[0]] = out.get(item[0], 0) + item[1]
    return out


def funding(venue: str, symbol: str, funding_ms: int, rate: Decimal, mark_price: Decimal, position: Decimal,
            amount: Decimal, ccy: str, ts_ms: int) -> LedgerEvent:
    """Funding at one funding time (`funding_ms`) of one perpetual: the rate, the mark price (venue
    units), the position held (base units, + long) and the cash booked (+ received) in `ccy`."""
    if not (venue and symbol and ccy) or funding_ms <= 0:
        raise ValueError("funding needs a venue, a symbol, a currency and a funding time")
    if not all(d.is_finite() for d in (rate, mark_price, position, amount)):
        raise ValueError("funding figures must be finite")
    return LedgerEvent(FUNDING, ts_ms, None, {
        "venue": venue, "symbol": symbol, "funding_ms": funding_ms, "rate": dec(rate), "mark_price": dec(mark_price),
        "position": dec(position), "amount": dec(amount), "ccy": ccy})


def rate(r: RateInForce, ts_ms: int) -> LedgerEvent:
    """The rate in force for one currency from `ts_ms` on (when the engine began converting with
    it): `rate` (null when missing), `source` (`book`, `given`, `missing`), the book's name and
    when it was read (a book rate only)."""
    return LedgerEvent(RATE, ts_ms, None, {
        "ccy": r.ccy, "account_ccy": r.account_ccy, "rate": None if r.value is None else dec(r.value),
        "source": r.source, "book": r.book, "read_ms": r.read_ms})


def rate_from_payload(p: Any) -> RateInForce:
    """A journaled `rate` payload back; ValueError saying what is wrong when it is not one."""
    if not isinstance(p, dict):
        raise ValueError(f"rate: expected an object, got {str(p)[:80]!r}")
    fields = ("ccy", "account_ccy", "rate", "source", "book", "read_ms")
    if set(p) != set(fields):
        raise ValueError(f"rate: expected the fields {', '.join(fields)}, got {', '.join(sorted(map(str, p)))}")
    ccy, account, source, book, read_ms = p["ccy"], p["account_ccy"], p["source"], p["book"], p["read_ms"]
    if not (isinstance(ccy, str) and isinstance(account, str) and isinstance(source, str)):
        raise ValueError("rate: ccy, account_ccy and source must be strings")
    if book is not None and not isinstance(book, str):
        raise ValueError(f"rate: book {str(book)[:40]!r} is not a string")
    if read_ms is not None and (not isinstance(read_ms, int) or isinstance(read_ms, bool) or read_ms < 0):
        raise ValueError(f"rate: read_ms {str(read_ms)[:40]!r} is not a time in ms")
    value = None if p["rate"] is None else decimal_from(p["rate"], f"rate of {ccy[:10]!r}")
    kinds: dict[str, RateSourceKind] = {"book": "book", "given": "given", "missing": "missing"}
    if source not in kinds:
        raise ValueError(f"rate: source {source[:40]!r}: book, given or missing")
    return RateInForce(ccy, account, value, kinds[source], book, read_ms)


def net(n: Net, ts_ms: int) -> LedgerEvent:
    """One netting transfer: on `venue:symbol`, `long_group` sold `qty` (base units) to
    `short_group` at `price` (normalized: quote currency per base unit), no fee, at `net_ms`."""
    if not (n.venue and n.symbol and n.long_group and n.short_group) or n.long_group == n.short_group:
        raise ValueError("net needs a venue, a symbol and two different groups")
    if not (n.qty.is_finite() and n.price.is_finite()) or n.qty <= 0 or n.price <= 0:
        raise ValueError("net quantity and price must be finite and > 0")
    return LedgerEvent(NET, ts_ms, None, {
        "venue": n.venue, "symbol": n.symbol, "long_group": n.long_group, "short_group": n.short_group,
        "qty": dec(n.qty), "price": dec(n.price), "net_ms": n.ts_ms})


_NET_FIELDS = ("venue", "symbol", "long_group", "short_group", "qty", "price", "net_ms")


def net_from_payload(p: Any) -> Net:
    """A journaled `net` payload back; ValueError saying what is wrong when it is not one."""
    if not isinstance(p, dict):
        raise ValueError(f"net: expected an object, got {str(p)[:80]!r}")
    if set(p) != set(_NET_FIELDS):
        raise ValueError(f"net: expected the fields {', '.join(_NET_FIELDS)}, got {', '.join(sorted(map(str, p)))}")
    texts = [p[k] for k in ("venue", "symbol", "long_group", "short_group")]
    if not all(isinstance(t, str) and t for t in texts):
        raise ValueError("net: venue, symbol, long_group and short_group must be non-empty strings")
    net_ms = p["net_ms"]
    if not isinstance(net_ms, int) or isinstance(net_ms, bool) or net_ms < 0:
        raise ValueError(f"net: net_ms {str(net_ms)[:40]!r} is not a time in ms")
    qty, price = decimal_from(p["qty"], "net qty"), decimal_from(p["price"], "net price")
    if qty <= 0 or price <= 0 or p["long_group"] == p["short_group"]:
        raise ValueError("net: qty and price must be > 0, the groups different")
    venue = {v: v for v in VENUES}.get(p["venue"])
    if venue is None:
        raise ValueError(f"net: venue {str(p['venue'])[:20]!r}: one of {', '.join(VENUES)}")
    return Net(venue, p["symbol"], p["long_group"], p["short_group"], qty, price, net_ms)


def dust(pair: str, qty: Decimal, ts_ms: int) -> LedgerEvent:
    """A pair's dust total (base units, + long / - short) after a change; 0 when none is left."""
    if not pair:
        raise ValueError("dust needs a pair")
    if not qty.is_finite():
        raise ValueError(f"dust quantity must be finite, got {qty}")
    return LedgerEvent(DUST, ts_ms, None, {"pair": pair, "qty": dec(qty), "ts_ms": ts_ms})


def decimal_from(text: Any, where: str) -> Decimal:
    """A journaled decimal string back to Decimal; ValueError (naming `where`) if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"{where}: expected a decimal string, got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{where}: not a decimal: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"{where}: not a finite decimal: {text!r}")
    return value


def _command_fill(f: CommandFill) -> dict[str, Any]:
    return {
        "deal": f.deal,
        "order": f.order,
        "position": f.position,
        "volume": dec(f.volume),
        "price": dec(f.price),
        "commission": dec(f.commission),
        "time_msc": f.time_msc,
        "swap": dec(f.swap),
    }


def mt5_command(cmd: Mt5Command, ts_ms: int) -> LedgerEvent:
    """The whole command as it is now (an upsert): the projection keeps one row per command."""
    return LedgerEvent(
        MT5_COMMAND,
        ts_ms,
        cmd.group_id or None,
        {
            "command_id": cmd.command_id,
            "terminal": cmd.terminal,
            "group_id": cmd.group_id or None,
            "client_order_id": cmd.client_order_id,
            "kind": cmd.kind,
            "symbol": cmd.symbol,
            "side": cmd.side,
            "volume": dec(cmd.volume),
            "price": dec(cmd.price),
            "deviation_points": cmd.deviation_points,
            "filling": cmd.filling,
            "magic": cmd.magic,
            "position": cmd.position,
            "expires_msc": cmd.expires_msc,
            "created_ms": cmd.created_ms,
            "state": str(cmd.state),
            "retcode": cmd.retcode,
            "reason": cmd.reason,
            "updated_ms": cmd.updated_ms or cmd.created_ms,
            "deliveries": cmd.deliveries,
            "fills": [_command_fill(f) for f in cmd.fills],
            "filled_volume": dec(cmd.filled_volume),
        },
    )


# -- decoders (recovery) -----------------------------------------------------------------
def leg_from_payload(p: dict[str, Any]) -> ExecutionLeg:
    return ExecutionLeg(
        venue=p["venue"],
        symbol=p["symbol"],
        side=p["side"],
        quantity=Decimal(p["quantity"]),
        limit_price=Decimal(p["limit_price"]),
        base_qty=Decimal(p["base_qty"]),
    )


def intent_from_payload(p: dict[str, Any]) -> ExecutionIntent:
    return ExecutionIntent(
        pair=p["pair"],
        buy=leg_from_payload(p["buy"]),
        sell=leg_from_payload(p["sell"]),
        base_qty=Decimal(p["base_qty"]),
        expected_edge_bps=float(p["expected_edge_bps"]),
        buy_price=float(p["buy_price"]),
        sell_price=float(p["sell_price"]),
        created_ms=int(p["created_ms"]),
    )


def instrument_from_payload(p: dict[str, Any]) -> Instrument:
    return Instrument(
        venue=p["venue"],
        symbol=p["symbol"],
        pair=p["pair"],
        qty_per_unit=Decimal(p["qty_per_unit"]),
        tick_size=Decimal(p["tick_size"]),
        lot_step=Decimal(p["lot_step"]),
        min_qty=Decimal(p["min_qty"]),
        taker_fee_bps=float(p["taker_fee_bps"]),
        price_scale=Decimal(p["price_scale"]),
        min_notional=Decimal(p["min_notional"]),
    )


def command_fill_from_payload(p: dict[str, Any]) -> CommandFill:
    return CommandFill(
        deal=int(p["deal"]),
        order=int(p["order"]),
        position=int(p["position"]),
        volume=Decimal(p["volume"]),
        price=Decimal(p["price"]),
        commission=Decimal(p["commission"]),
        time_msc=int(p["time_msc"]),
        swap=Decimal(p.get("swap", "0")),  # journaled before swap was reported: none
    )


def command_from_payload(p: dict[str, Any]) -> Mt5Command:
    return Mt5Command(
        command_id=p["command_id"],
        terminal=p["terminal"],
        group_id=p["group_id"] or "",
        client_order_id=p["client_order_id"],
        kind=p["kind"],
        symbol=p["symbol"],
        side=p["side"],
        volume=Decimal(p["volume"]),
        price=Decimal(p["price"]),
        deviation_points=int(p["deviation_points"]),
        filling=p["filling"],
        magic=int(p["magic"]),
        position=int(p["position"]),
        expires_msc=int(p["expires_msc"]),
        created_ms=int(p["created_ms"]),
        state=CommandState(p["state"]),
        retcode=int(p["retcode"]),
        reason=p["reason"],
        updated_ms=int(p["updated_ms"]),
        deliveries=int(p["deliveries"]),
        fills=[command_fill_from_payload(f) for f in p["fills"]],
    )


def trading_state_from(value: str | None) -> TradingState:
    return TradingState(value) if value else TradingState.ACTIVE
