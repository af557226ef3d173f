"""Builders of core objects for the ledger tests (no tests here; the name keeps it in scope).

Also imported by the child process of the SIGKILL test in tests/integration.
"""

from __future__ import annotations

from decimal import Decimal

from core.commands import CommandFill, CommandState, Mt5Command
from core.hedge import HedgeGroup, client_order_id
from core.instruments import Instrument
from core.models import (
    CompensationAction,
    CompensationKind,
    Decision,
    ExecutionIntent,
    ExecutionLeg,
    Fill,
    Order,
    OrderPurpose,
    OrderState,
    Outcome,
    Venue,
)

T0 = 1_732_150_000_000

OKX = Instrument(
    venue="okx", symbol="BTC-USDT-SWAP", pair="BTC", qty_per_unit=Decimal("0.01"),
    tick_size=Decimal("0.1"), lot_step=Decimal("1"), min_qty=Decimal("1"), taker_fee_bps=5.0,
)
MT5 = Instrument(
    venue="mt5", symbol="BTCUSD", pair="BTC", qty_per_unit=Decimal("1"),
    tick_size=Decimal("0.01"), lot_step=Decimal("0.01"), min_qty=Decimal("0.01"), taker_fee_bps=2.5,
)


def make_intent(ts_ms: int = T0, pair: str = "BTC") -> ExecutionIntent:
    buy = ExecutionLeg("okx", "BTC-USDT-SWAP", "buy", Decimal("10"), Decimal("65000.1"), Decimal("0.1"))
    sell = ExecutionLeg("mt5", "BTCUSD", "sell", Decimal("0.10"), Decimal("65090.55"), Decimal("0.1"))
    return ExecutionIntent(pair=pair, buy=buy, sell=sell, base_qty=Decimal("0.1"), expected_edge_bps=9.25,
                           buy_price=65000.1, sell_price=65090.55, created_ms=ts_ms)


def make_group(group_id: str, ts_ms: int = T0, pair: str = "BTC") -> HedgeGroup:
    instruments: dict[Venue, Instrument] = {"okx": OKX, "mt5": MT5}
    return HedgeGroup(group_id=group_id, intent=make_intent(ts_ms, pair), instruments=instruments, opened_ms=ts_ms)


def make_order(group: HedgeGroup | None, leg: int, *, attempt: int = 0, purpose: OrderPurpose = OrderPurpose.ENTRY,
               ts_ms: int = T0, coid: str | None = None) -> Order:
    if group is None:
        spec = ExecutionLeg("okx", "BTC-USDT-SWAP", "sell", Decimal("3"), Decimal("64000"), Decimal("0.03"))
        group_id = ""
    else:
        spec = group.intent.legs[leg % 2]
        group_id = group.group_id
    order = Order(
        client_order_id=coid or client_order_id(group_id or "flat", leg, attempt),
        group_id=group_id, venue=spec.venue, symbol=spec.symbol, side=spec.side, qty=spec.quantity,
        price=spec.limit_price, purpose=purpose, created_ms=ts_ms,
    )
    if group is not None:
        group.orders.append(order)
    return order


def make_fill(order: Order, trade_id: str, qty: Decimal | None = None, ts_ms: int = T0,
              fee: Decimal = Decimal("0.0325")) -> Fill:
    return Fill(venue=order.venue, venue_trade_id=trade_id, client_order_id=order.client_order_id,
                qty=order.qty if qty is None else qty, price=order.price, fee=fee,
                fee_ccy="USD" if order.venue == "mt5" else "USDT", ts_ms=ts_ms)


def apply_fill(order: Order, fill: Fill) -> None:
    """What the orchestrator does with a new fill."""
    order.fills.append(fill)
    order.filled_qty += fill.qty
    order.notional += fill.qty * fill.price
    order.fees += fill.fee
    order.state = OrderState.FILLED if order.filled_qty >= order.qty else OrderState.PARTIALLY_FILLED


def make_decision(ts_ms: int, pair: str = "BTC", reason: str = "below_threshold", *,
                  intent: bool = False, buy: Venue | None = "okx", sell: Venue | None = "mt5") -> Decision:
    return Decision(ts_ms=ts_ms, pair=pair, buy_venue=buy, sell_venue=sell, edge_bps=1.5,
                    outcome=Outcome.INTENT if intent else Outcome.BLOCKED, reason="ok" if intent else reason,
                    intent=make_intent(ts_ms, pair) if intent else None)


def make_action(group: HedgeGroup, n: int, ts_ms: int = T0, outcome: str = "pending") -> CompensationAction:
    return CompensationAction(action_id=f"{group.group_id}c{n}", group_id=group.group_id,
                              kind=CompensationKind.UNWIND, reason="residual 0.1 on okx", created_ms=ts_ms,
                              outcome=outcome)


def make_command(command_id: str, *, state: CommandState = CommandState.PENDING, ts_ms: int = T0,
                 fills: int = 0, volume: Decimal = Decimal("0.10")) -> Mt5Command:
    cmd = Mt5Command(
        command_id=command_id, terminal="DEMO", group_id="g1", client_order_id=f"qa{command_id}",
        kind="open", symbol="BTCUSD", side="sell", volume=volume, price=Decimal("65090.55"),
        deviation_points=20, filling="IOC", magic=7701, position=0, expires_msc=ts_ms + 2000, created_ms=ts_ms,
        state=state, updated_ms=ts_ms,
    )
    for i in range(fills):
        cmd.fills.append(CommandFill(deal=1000 + i, order=2000 + i, position=3000, volume=Decimal("0.05"),
                                     price=Decimal("65090.50"), commission=Decimal("-0.35"), time_msc=ts_ms + i))
    return cmd
