"""MT5 wire bodies: the contract's field names, decoding, validation, encoding; bridge health."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import ManualClock
from mt5_bridge import protocol
from mt5_bridge.protocol import InvalidRequest
from tests.mt5_support import make_command, make_rig, tick

SYMBOLS = frozenset({"XAUUSD", "BTCUSD"})


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def test_field_names_are_the_contract() -> None:
    assert _fields(protocol.TickBatch) == ("ticks",)
    assert _fields(protocol.Tick) == ("symbol", "bid", "ask", "time_msc")
    assert _fields(protocol.CommandBatch) == ("commands",)
    assert _fields(protocol.CommandMessage) == (
        "id", "group_id", "kind", "symbol", "side", "volume", "price", "deviation_points", "filling", "magic",
        "position", "expires_msc")
    assert _fields(protocol.AckReport) == ("command_id", "status", "retcode", "reason")
    assert _fields(protocol.FillReport) == (
        "command_id", "deal", "order", "position", "symbol", "side", "volume", "price", "commission", "time_msc",
        "swap")
    assert _fields(protocol.AccountReport) == (
        "balance", "equity", "margin_free", "positions", "margin_mode", "trade_allowed")
    assert _fields(protocol.PositionReport) == (
        "ticket", "symbol", "type", "volume", "price_open", "magic", "swap")


def test_design_examples_decode() -> None:
    batch = protocol.decode_ticks(
        b'{"ticks":[{"symbol":"XAUUSD","bid":2650.11,"ask":2650.31,"time_msc":1732150000123}]}', SYMBOLS, "T1")
    assert batch.ticks == [protocol.Tick("XAUUSD", 2650.11, 2650.31, 1732150000123)]
    ack = protocol.decode_ack(b'{"command_id":"o-1","status":"accepted","retcode":10009,"reason":""}')
    assert (ack.command_id, ack.status, ack.retcode, ack.reason) == ("o-1", "accepted", 10009, "")
    fill = protocol.decode_fill(
        b'{"command_id":"o-1","deal":123,"order":456,"position":789,"symbol":"XAUUSD","side":"buy",'
        b'"volume":0.1,"price":2650.35,"commission":-0.7,"time_msc":1732150000456}', SYMBOLS, "T1")
    cf = fill.to_command_fill()
    assert (cf.deal, cf.order, cf.position, cf.volume, cf.price, cf.commission, cf.time_msc) == (
        123, 456, 789, Decimal("0.1"), Decimal("2650.35"), Decimal("-0.7"), 1732150000456)
    account = protocol.decode_account(
        b'{"balance":1,"equity":2.5,"margin_free":-3,"positions":[{"ticket":1,"symbol":"EURUSD","type":"sell",'
        b'"volume":1,"price_open":1.05,"magic":0}]}')
    assert account.positions[0].type == "sell" and account.margin_free == -3.0
    assert (account.margin_mode, account.trade_allowed) == (None, None)  # an EA older than these fields


def test_account_margin_mode_and_autotrading_decode_and_are_checked() -> None:
    body = b'{"balance":1,"equity":1,"margin_free":1,"positions":[],"margin_mode":"netting","trade_allowed":false}'
    account = protocol.decode_account(body)
    assert (account.margin_mode, account.trade_allowed) == ("netting", False)
    with pytest.raises(protocol.InvalidRequest) as bad_mode:
        protocol.decode_account(body.replace(b'"netting"', b'"cross"'))
    assert [f.field for f in bad_mode.value.errors] == ["margin_mode"]
    with pytest.raises(protocol.InvalidRequest) as bad_flag:
        protocol.decode_account(body.replace(b"false", b'"no"'))
    assert [f.field for f in bad_flag.value.errors] == ["trade_allowed"]


def test_unknown_fields_are_ignored_and_empty_batches_are_valid() -> None:
    body = b'{"ticks":[{"symbol":"XAUUSD","bid":1,"ask":1,"time_msc":0,"flags":6}],"v":2}'
    assert len(protocol.decode_ticks(body, SYMBOLS, "T1").ticks) == 1
    assert protocol.decode_ticks(b'{"ticks":[]}', SYMBOLS, "T1").ticks == []


def test_all_value_errors_are_reported_together() -> None:
    body = json.dumps({"ticks": [tick(bid=3.0, ask=2.0), tick("X"), tick(bid=0.0, ask=-1.0)]}).encode()
    with pytest.raises(InvalidRequest) as info:
        protocol.decode_ticks(body, SYMBOLS, "T1")
    assert [(e.field, e.reason) for e in info.value.errors] == [
        ("ticks[0].bid", "bid above ask (crossed quote)"),
        ("ticks[1].symbol", "symbol not configured for terminal T1"),
        ("ticks[2].bid", "must be a finite number > 0"),
        ("ticks[2].ask", "must be a finite number > 0"),
    ]
    assert json.loads(info.value.body()) == {"error": "invalid request", "fields": [
        {"field": f, "reason": r} for f, r in [(e.field, e.reason) for e in info.value.errors]]}


def test_string_and_integer_bounds() -> None:
    with pytest.raises(InvalidRequest) as info:
        protocol.decode_ack(json.dumps({"command_id": "", "status": "rejected", "retcode": 2**32,
                                        "reason": "x" * 1025}).encode())
    assert [e.field for e in info.value.errors] == ["command_id", "retcode", "reason"]
    with pytest.raises(InvalidRequest) as info:
        protocol.decode_fill(json.dumps({
            "command_id": "c", "deal": 2**64, "order": -1, "position": 0, "symbol": "XAUUSD", "side": "buy",
            "volume": 1, "price": 1, "commission": 0, "time_msc": 2**63}).encode(), SYMBOLS, "T1")
    assert [e.field for e in info.value.errors] == ["deal", "order", "time_msc"]


def test_swap_is_optional_and_checked() -> None:
    """`swap` (DEAL_SWAP on a fill, POSITION_SWAP on a position) was added after the contract:
    an EA that does not send it reads as 0; a sent value must be finite."""
    base = {"command_id": "c", "deal": 1, "order": 0, "position": 0, "symbol": "XAUUSD", "side": "sell",
            "volume": 0.1, "price": 2650.35, "commission": -0.7, "time_msc": 1}
    assert protocol.decode_fill(json.dumps(base).encode(), SYMBOLS, "T1").to_command_fill().swap == Decimal(0)
    booked = protocol.decode_fill(json.dumps({**base, "swap": -1.23}).encode(), SYMBOLS, "T1")
    assert booked.to_command_fill().swap == Decimal("-1.23")
    with pytest.raises(InvalidRequest) as info:
        protocol.decode_fill(json.dumps(base).encode()[:-1] + b',"swap":1e999}', SYMBOLS, "T1")
    assert [e.field for e in info.value.errors] == ["swap"]
    position = {"ticket": 1, "symbol": "XAUUSD", "type": "buy", "volume": 0.1, "price_open": 2650.0, "magic": 7}
    old = protocol.decode_account(json.dumps({"balance": 1, "equity": 1, "margin_free": 1,
                                              "positions": [position]}).encode())
    new = protocol.decode_account(json.dumps({"balance": 1, "equity": 1, "margin_free": 1,
                                              "positions": [{**position, "swap": -0.42}]}).encode())
    assert (old.positions[0].swap, new.positions[0].swap) == (0.0, -0.42)
    with pytest.raises(InvalidRequest) as info:
        protocol.decode_account(b'{"balance":1,"equity":1,"margin_free":1,"positions":[{"ticket":1,"symbol":"X",'
                                b'"type":"buy","volume":1,"price_open":1,"magic":0,"swap":-1e999}]}')
    assert [e.field for e in info.value.errors] == ["positions[0].swap"]


def test_command_encoding_is_compact_and_exact() -> None:
    cmd = make_command("o-1", expires_msc=1732150002123)
    assert protocol.encode_commands([cmd]) == (
        b'{"commands":[{"id":"o-1","group_id":"g-1","kind":"open","symbol":"XAUUSD","side":"buy","volume":0.1,'
        b'"price":2650.31,"deviation_points":20,"filling":"IOC","magic":7701,"position":0,'
        b'"expires_msc":1732150002123}]}')
    assert protocol.encode_commands([]) == b'{"commands":[]}'
    assert protocol.decode_command_batch(protocol.encode_commands([cmd])).commands[0].id == "o-1"


def test_to_decimal_is_the_shortest_exact_form() -> None:
    assert protocol.to_decimal(2650.35) == Decimal("2650.35")
    assert protocol.to_decimal(0.1) == Decimal("0.1")
    assert protocol.to_decimal(1e-05) == Decimal("0.00001")


def test_wait_ms() -> None:
    assert protocol.parse_wait_ms(None) == 0
    assert protocol.parse_wait_ms("") == 0
    assert protocol.parse_wait_ms("250") == 250
    assert protocol.parse_wait_ms("999999999") == protocol.MAX_WAIT_MS
    for bad in ("-1", "1.5", "x", " 1", "1\n", "1" * 10):
        with pytest.raises(InvalidRequest):
            protocol.parse_wait_ms(bad)


_DECODERS = [
    lambda b: protocol.decode_ticks(b, SYMBOLS, "T1"),
    protocol.decode_ack,
    lambda b: protocol.decode_fill(b, SYMBOLS, "T1"),
    protocol.decode_account,
]


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + b"0" + closer * depth


@pytest.mark.parametrize("decode", _DECODERS)
@pytest.mark.parametrize("nest", [
    lambda n: b'{"x":' + _nested(n) + b',"ticks":[]}',  # skipped unknown field: the decoder recurses
    lambda n: b'{"x":' + _nested(n, b'{"a":', b"}") + b"}",
    _nested,
])
def test_deep_nesting_is_an_invalid_request_not_a_recursion_error(
    decode: Callable[[bytes], object], nest: Callable[[int], bytes]
) -> None:
    """msgspec raises RecursionError past ~1000 levels; the boundary answers 422 instead."""
    with pytest.raises(InvalidRequest) as caught:
        decode(nest(2000))
    assert caught.value.errors[0].field == "body"
    assert json.loads(caught.value.body())["error"] == "invalid request"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.integers(900, 5000).map(
    lambda n: b'{"x":' + _nested(n) + b',"ticks":[],"command_id":"c"}'), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["ticks", "symbol", "bid", "ask", "time_msc", "command_id", "status", "retcode", "reason",
                         "deal", "positions", "balance", "x"]), inner, max_size=5),
    max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_decoders_only_ever_raise_invalid_request(body: bytes) -> None:
    for decode in _DECODERS:
        try:
            decode(body)
        except InvalidRequest as exc:
            assert exc.errors and all(e.field and e.reason for e in exc.errors)
            json.loads(exc.body())


async def test_tick_rate_is_computed_on_read() -> None:
    clock = ManualClock(mono_ns=10 * 1_000_000_000)
    rig = make_rig(clock)
    body = json.dumps({"ticks": [tick(), tick("BTCUSD", 1.0, 2.0)]}).encode()
    assert rig.bridge.health("T1").ticks_per_s == 0.0
    for _ in range(100):  # 2 ticks every 100 ms for 10 s: 20 ticks/s
        assert (await rig.bridge.tick("T1", body)).status == 200
        clock.advance(ms=100)
    health = rig.bridge.health("T1")
    assert health.ticks == 200
    assert health.ticks_per_s == pytest.approx(20.0, rel=0.1)
    clock.advance(ms=30_000)
    assert rig.bridge.health("T1").ticks_per_s == 0.0


def _number(value: float) -> str:
    """A JSON number for any float; a non-finite one (no JSON form) as an overflowing literal,
    which the decoder refuses as out of range."""
    if not math.isfinite(value):
        return "-1e999" if value < 0 else "1e999"
    return repr(value)


# Mostly valid ticks with at most one field off, so that both outcomes come up in every run; the
# symbol set holds an empty and an over-long name, which only the length check refuses.
_WIDE = SYMBOLS | {"", "X" * 65}
_good_tick = st.tuples(st.sampled_from(sorted(SYMBOLS)), st.floats(0.01, 1e6), st.floats(0.0, 1e3),
                       st.integers(0, protocol.I64_MAX)).map(lambda t: (t[0], t[1], t[1] + t[2], t[3]))
_bad_field = st.one_of(
    st.tuples(st.just(0), st.one_of(st.sampled_from(sorted(_WIDE)), st.text(max_size=70))),
    st.tuples(st.just(1), st.one_of(st.floats(), st.sampled_from((0.0, -0.0, -1.0)))),
    st.tuples(st.just(2), st.one_of(st.floats(), st.sampled_from((0.0, -0.0, -1.0)))),
    st.tuples(st.just(3), st.one_of(st.integers(-5, -1), st.just(protocol.I64_MAX),
                                    st.integers(protocol.I64_MAX + 1, 2**64 - 1))),
)


@st.composite
def _tick_fields(draw: st.DrawFn) -> tuple[str, float, float, int]:
    fields: list[object] = list(draw(_good_tick))
    if draw(st.booleans()):
        i, value = draw(_bad_field)
        fields[i] = value
    s, b, a, t = fields
    assert isinstance(s, str) and isinstance(b, float) and isinstance(a, float) and isinstance(t, int)
    return s, b, a, t


@settings(max_examples=500, deadline=None)
@given(ticks=st.lists(_tick_fields(), max_size=4))
def test_the_tick_fast_path_decides_as_the_field_checks(ticks: list[tuple[str, float, float, int]]) -> None:
    """decode_ticks accepts a batch in one test per tick; the field-by-field checks
    (check_ticks) must agree on every batch: the same batch accepted, the same errors."""
    body = ('{"ticks":[' + ",".join(
        f'{{"symbol":{json.dumps(s)},"bid":{_number(b)},"ask":{_number(a)},"time_msc":{t}}}'
        for s, b, a, t in ticks) + "]}").encode()
    try:
        reference = protocol._decode(body, protocol._TICKS)
    except InvalidRequest:
        with pytest.raises(InvalidRequest):
            protocol.decode_ticks(body, _WIDE, "T1")
        return
    try:
        protocol.check_ticks(reference, _WIDE, "T1")
        expected: object = reference
    except InvalidRequest as exc:
        expected = [(e.field, e.reason) for e in exc.errors]
    try:
        got: object = protocol.decode_ticks(body, _WIDE, "T1")
    except InvalidRequest as exc:
        got = [(e.field, e.reason) for e in exc.errors]
    assert got == expected
