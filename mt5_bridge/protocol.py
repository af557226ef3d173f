"""The MT5 wire protocol (docs/mt5-protocol.md, Endpoints): every request and response body, and their validation.

Bodies are flat JSON because MQL5 has no JSON parser. The field names here are the contract
(docs/mt5-protocol.md, the EA source and the EA simulator use exactly these names); change
one only together with them.

Decoding is two steps, and both report field errors in the same shape:

1. a typed msgspec decode: JSON syntax, types, required fields and enum values. msgspec stops
   at the first such error, so a body with a type error gets exactly one field error;
2. semantic checks on the decoded values, all reported at once: finite and positive prices
   and volumes, crossed ticks (bid > ask), symbols configured for the sending terminal,
   integer ranges (MQL5 `ulong`/`long`) and string lengths.

Either step raises `InvalidRequest` (so does anything else the decoder raises, such as the
RecursionError of JSON nested about a thousand levels deep), whose `body()` is the 422 answer
`{"error":"invalid request","fields":[{"field":"ticks[0].bid","reason":"..."}]}`.
Unknown fields are ignored (a newer EA may send more than this server knows).

Numbers arrive as JSON numbers and are decoded as floats (the EA's values are doubles);
amounts that go to the ledger are converted with `Decimal(repr(x))`, the shortest decimal
that reads back as the same double, so `2650.35` stays `Decimal("2650.35")`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Set
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TypeVar

import msgspec

from core.commands import CommandFill, Mt5Command

__all__ = [
    "MAX_WAIT_MS",
    "AccountReport",
    "AckReport",
    "AckStatus",
    "CommandBatch",
    "CommandMessage",
    "ConflictBody",
    "ErrorBody",
    "FieldError",
    "FillReport",
    "HealthBody",
    "InvalidRequest",
    "MarginMode",
    "OkBody",
    "PositionReport",
    "Tick",
    "TickBatch",
    "UnauthorizedBody",
    "check_ticks",
    "command_message",
    "decode_account",
    "decode_ack",
    "decode_command_batch",
    "decode_fill",
    "decode_ticks",
    "encode",
    "encode_commands",
    "parse_wait_ms",
    "to_decimal",
]

_T = TypeVar("_T")

# `unknown`: the EA called OrderSend and does not know the outcome (TIMEOUT); it never sends the
# command again and reports its deals and a final ack when it finds out.
AckStatus = Literal["accepted", "rejected", "expired", "unknown"]
WireSide = Literal["buy", "sell"]

# `GET /mt5/commands?wait_ms=N`: longer waits are capped to this (the EA itself uses 0).
MAX_WAIT_MS = 1000

# MQL5 integer types: ulong (tickets, deals, magic), long (time_msc), uint (retcode).
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
U32_MAX = 2**32 - 1
MAX_ID_LEN = 64
MAX_SYMBOL_LEN = 64
MAX_REASON_LEN = 1024
_INF = math.inf


# --------------------------------------------------------------------------------------------
# Request bodies (EA -> quantarb)


class Tick(msgspec.Struct):
    """One tick: `{"symbol":"XAUUSD","bid":2650.11,"ask":2650.31,"time_msc":1732150000123}`."""

    symbol: str
    bid: float
    ask: float
    time_msc: int


class TickBatch(msgspec.Struct):
    """`POST /mt5/tick` body: `{"ticks":[...]}` (an empty list is a valid poll)."""

    ticks: list[Tick]


class AckReport(msgspec.Struct):
    """`POST /mt5/ack` body: what the EA did with one command."""

    command_id: str
    status: AckStatus
    retcode: int
    reason: str


class FillReport(msgspec.Struct):
    """`POST /mt5/fill` body: one deal of one command (a repeated deal is ignored)."""

    command_id: str
    deal: int
    order: int
    position: int
    symbol: str
    side: WireSide
    volume: float
    price: float
    commission: float
    time_msc: int
    # DEAL_SWAP: swap booked on this deal (a closing deal carries the position's swap), signed
    # as charged. Optional (an EA from before it was added sends none: 0).
    swap: float = 0.0

    def to_command_fill(self) -> CommandFill:
        return CommandFill(
            deal=self.deal,
            order=self.order,
            position=self.position,
            volume=to_decimal(self.volume),
            price=to_decimal(self.price),
            commission=to_decimal(self.commission),
            time_msc=self.time_msc,
            swap=to_decimal(self.swap),
        )


class PositionReport(msgspec.Struct):
    """One open position in an account report; `type` is the position's direction."""

    ticket: int
    symbol: str
    type: WireSide
    volume: float
    price_open: float
    magic: int
    # POSITION_SWAP: swap accrued on the open position so far. Optional (older EAs: 0).
    swap: float = 0.0


MarginMode = Literal["hedging", "netting", "exchange"]


class AccountReport(msgspec.Struct):
    """`POST /mt5/account` body: the terminal's account and its open positions (all magics).

    `margin_mode` (ACCOUNT_MARGIN_MODE) and `trade_allowed` (the terminal's AutoTrading, the
    EA's algo-trading permission and the account's, all on) are optional: an EA older than
    them leaves them out, and `quantarb doctor` then says it cannot tell."""

    balance: float
    equity: float
    margin_free: float
    positions: list[PositionReport]
    margin_mode: MarginMode | None = None
    trade_allowed: bool | None = None


# --------------------------------------------------------------------------------------------
# Response bodies (quantarb -> EA)


class CommandMessage(msgspec.Struct):
    """One command as the EA receives it. `position` is the ticket to close (0 for `open`)."""

    id: str
    group_id: str
    kind: Literal["open", "close"]
    symbol: str
    side: WireSide
    volume: float
    price: float
    deviation_points: int
    filling: Literal["FOK", "IOC", "RETURN"]
    magic: int
    position: int
    expires_msc: int


class CommandBatch(msgspec.Struct):
    """Answer of `POST /mt5/tick` and `GET /mt5/commands`: `{"commands":[...]}`."""

    commands: list[CommandMessage]


class OkBody(msgspec.Struct, omit_defaults=True):
    """Answer of ack, fill and account: `{"ok":true}`, plus `"duplicate":true` when ignored."""

    ok: bool
    duplicate: bool = False


class FieldErrorBody(msgspec.Struct):
    field: str
    reason: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Any 4xx/5xx answer: `{"error":"..."}`; 422 adds `fields`."""

    error: str
    fields: list[FieldErrorBody] = []


class UnauthorizedBody(msgspec.Struct):
    """401: `reason` is only ever `signature` or `timestamp`."""

    error: str
    reason: str


class ConflictBody(msgspec.Struct):
    """409: `{"error":"instance conflict","reason":"..."}` (another EA instance holds the terminal)."""

    error: str
    reason: str


class HealthBody(msgspec.Struct):
    """`GET /healthz`: `{"status":"ok"|"degraded"|"halted"}` and nothing else."""

    status: str


_ENCODER = msgspec.json.Encoder()


def encode(obj: object) -> bytes:
    """Compact JSON (msgspec never adds whitespace)."""
    return _ENCODER.encode(obj)


def command_message(cmd: Mt5Command) -> CommandMessage:
    """The wire form of a command (Decimal volume and price as JSON numbers)."""
    return CommandMessage(
        id=cmd.command_id,
        group_id=cmd.group_id,
        kind=cmd.kind,
        symbol=cmd.symbol,
        side=cmd.side,
        volume=float(cmd.volume),
        price=float(cmd.price),
        deviation_points=cmd.deviation_points,
        filling=cmd.filling,
        magic=cmd.magic,
        position=cmd.position,
        expires_msc=cmd.expires_msc,
    )


def encode_commands(commands: Iterable[Mt5Command]) -> bytes:
    return _ENCODER.encode(CommandBatch(commands=[command_message(c) for c in commands]))


def to_decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as `value` (2650.35 -> Decimal('2650.35'))."""
    return Decimal(repr(value))


# --------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field; `field` is a path like `ticks[0].bid` (`body` for the whole)."""

    field: str
    reason: str


class InvalidRequest(ValueError):
    """A body or query that fails decoding or validation: answered 422, changes nothing."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))
        self.errors = errors

    def body(self) -> bytes:
        return encode(
            ErrorBody(
                error="invalid request",
                fields=[FieldErrorBody(field=e.field, reason=e.reason) for e in self.errors],
            )
        )


_TICKS = msgspec.json.Decoder(TickBatch)
_ACK = msgspec.json.Decoder(AckReport)
_FILL = msgspec.json.Decoder(FillReport)
_ACCOUNT = msgspec.json.Decoder(AccountReport)
_COMMANDS = msgspec.json.Decoder(CommandBatch)

_MSGSPEC_ERROR = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`$")
_TYPE_WORDS = {
    "float": "number",
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "object": "object",
    "array": "array",
    "null": "null",
}
# Enum values by the name of the field that carries them (for "must be one of ...").
_ENUMS = {
    "status": "accepted, rejected, expired, unknown",
    "side": "buy, sell",
    "type": "buy, sell",
    "kind": "open, close",
    "filling": "FOK, IOC, RETURN",
}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _from_msgspec(exc: msgspec.DecodeError) -> FieldError:
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        if text.startswith("Input data was truncated"):
            return FieldError("body", "malformed JSON: truncated")
        return FieldError("body", f"malformed JSON: {text.removeprefix('JSON is malformed: ')}")
    found = _MSGSPEC_ERROR.match(text)
    msg, path = (found["msg"], (found["path"] or "").lstrip(".")) if found else (text, "")
    if (missing := _MISSING.match(msg)) is not None:
        return FieldError(_join(path, missing["name"]), "required field missing")
    field = path or "body"
    if (expected := _EXPECTED.match(msg)) is not None:
        want = _TYPE_WORDS.get(expected["want"], expected["want"])
        got = _TYPE_WORDS.get(expected["got"], expected["got"])
        return FieldError(field, f"expected {want}, got {got}")
    if msg.startswith("Invalid enum value"):
        leaf = re.sub(r"\[\d+\]$", "", field.rsplit(".", 1)[-1])
        allowed = _ENUMS.get(leaf)
        got = msg.removeprefix("Invalid enum value").strip()
        got = got if len(got) <= 40 else got[:37] + "..."
        return FieldError(field, f"must be one of {allowed}, got {got}" if allowed else msg)
    if msg == "Number out of range":
        return FieldError(field, "number out of range")
    return FieldError(field, msg if len(msg) <= 200 else msg[:197] + "...")


def _decode(body: bytes, decoder: msgspec.json.Decoder[_T]) -> _T:
    """The typed decode; whatever the decoder raises becomes `InvalidRequest` (a 422)."""
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        error = _from_msgspec(exc)
        if body.endswith(b"\x00") and error.field == "body":
            # MQL5 StringToCharArray copies the terminating NUL; the EA must drop it.
            error = FieldError("body", "trailing NUL byte after the JSON (resize the char array by one)")
        raise InvalidRequest([error]) from None
    except RecursionError:
        # msgspec recurses per nesting level (also while skipping an unknown field) and gives
        # up near Python's recursion limit; 64 KiB of brackets gets there.
        raise InvalidRequest([FieldError("body", "nested too deeply")]) from None
    except Exception:  # anything else from the decoder is a bad body too, never a 500
        raise InvalidRequest([FieldError("body", "malformed JSON")]) from None


class _Checker:
    """Collects field errors of one body."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, reason: str) -> None:
        self.errors.append(FieldError(field, reason))

    def positive(self, field: str, value: float) -> bool:
        if not (math.isfinite(value) and value > 0):
            self.add(field, "must be a finite number > 0")
            return False
        return True

    def finite(self, field: str, value: float) -> None:
        if not math.isfinite(value):
            self.add(field, "must be a finite number")

    def integer(self, field: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.add(field, f"must be an integer from {low} to {high}")

    def text(self, field: str, value: str, max_len: int, *, min_len: int = 1) -> bool:
        if not min_len <= len(value) <= max_len:
            self.add(field, f"must be {min_len} to {max_len} characters")
            return False
        return True

    def symbol(self, field: str, value: str, symbols: Set[str], terminal: str) -> None:
        if self.text(field, value, MAX_SYMBOL_LEN) and value not in symbols:
            self.add(field, f"symbol not configured for terminal {terminal}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidRequest(self.errors)


def decode_ticks(body: bytes, symbols: Set[str], terminal: str) -> TickBatch:
    """`POST /mt5/tick`: every tick valid (finite, 0 < bid <= ask, configured symbol), or 422.

    Each tick is first tested in one expression that holds exactly when none of the checks
    below would find an error (the common case, every tick of a working terminal); the
    field-by-field checks, which name each error, run only for a batch where one fails."""
    batch = _decode(body, _TICKS)
    for tick in batch.ticks:
        symbol = tick.symbol
        if not (0.0 < tick.bid <= tick.ask < _INF and 0 <= tick.time_msc <= I64_MAX
                and 0 < len(symbol) <= MAX_SYMBOL_LEN and symbol in symbols):
            break
    else:
        return batch
    check_ticks(batch, symbols, terminal)
    return batch


def check_ticks(batch: TickBatch, symbols: Set[str], terminal: str) -> None:
    """The field-by-field checks of a tick batch: InvalidRequest naming every field in error."""
    check = _Checker()
    for i, tick in enumerate(batch.ticks):
        at = f"ticks[{i}]"
        check.symbol(f"{at}.symbol", tick.symbol, symbols, terminal)
        bid_ok = check.positive(f"{at}.bid", tick.bid)
        ask_ok = check.positive(f"{at}.ask", tick.ask)
        if bid_ok and ask_ok and tick.bid > tick.ask:
            check.add(f"{at}.bid", "bid above ask (crossed quote)")
        check.integer(f"{at}.time_msc", tick.time_msc, 0, I64_MAX)
    check.raise_if_any()


def decode_ack(body: bytes) -> AckReport:
    ack = _decode(body, _ACK)
    check = _Checker()
    check.text("command_id", ack.command_id, MAX_ID_LEN)
    check.integer("retcode", ack.retcode, 0, U32_MAX)
    check.text("reason", ack.reason, MAX_REASON_LEN, min_len=0)
    check.raise_if_any()
    return ack


def decode_fill(body: bytes, symbols: Set[str], terminal: str) -> FillReport:
    fill = _decode(body, _FILL)
    check = _Checker()
    check.text("command_id", fill.command_id, MAX_ID_LEN)
    check.integer("deal", fill.deal, 1, U64_MAX)
    check.integer("order", fill.order, 0, U64_MAX)
    check.integer("position", fill.position, 0, U64_MAX)
    check.symbol("symbol", fill.symbol, symbols, terminal)
    check.positive("volume", fill.volume)
    check.positive("price", fill.price)
    check.finite("commission", fill.commission)
    check.finite("swap", fill.swap)
    check.integer("time_msc", fill.time_msc, 0, I64_MAX)
    check.raise_if_any()
    return fill


def decode_account(body: bytes) -> AccountReport:
    """`POST /mt5/account`. Position symbols are not checked against the configured set:
    the account may hold positions of other EAs or manual trades, which are reported too."""
    report = _decode(body, _ACCOUNT)
    check = _Checker()
    check.finite("balance", report.balance)
    check.finite("equity", report.equity)
    check.finite("margin_free", report.margin_free)
    for i, pos in enumerate(report.positions):
        at = f"positions[{i}]"
        check.integer(f"{at}.ticket", pos.ticket, 1, U64_MAX)
        check.text(f"{at}.symbol", pos.symbol, MAX_SYMBOL_LEN)
        check.positive(f"{at}.volume", pos.volume)
        check.positive(f"{at}.price_open", pos.price_open)
        check.integer(f"{at}.magic", pos.magic, 0, U64_MAX)
        check.finite(f"{at}.swap", pos.swap)
    check.raise_if_any()
    return report


def decode_command_batch(body: bytes) -> CommandBatch:
    """The `{"commands":[...]}` answer, decoded (for tests and tools)."""
    return _decode(body, _COMMANDS)


_WAIT_MS = re.compile(r"[0-9]{1,9}")


def parse_wait_ms(raw: str | None) -> int:
    """The `wait_ms` query parameter: absent means 0; more than MAX_WAIT_MS is capped."""
    if raw is None or raw == "":
        return 0
    if _WAIT_MS.fullmatch(raw) is None:
        raise InvalidRequest([FieldError("wait_ms", "must be a non-negative integer (milliseconds)")])
    return min(int(raw), MAX_WAIT_MS)
