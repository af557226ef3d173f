"""feeds.normalizers and feeds.rest_parsers against the fixtures in tests/fixtures/ and hypothesis.

Every fixture case names its expected outcome (a hand-checked quote, a drop reason, a control
kind, a venue error); the property tests check that nothing ever raises, that the counters
always add up, and that the typed fast path and the general slow path agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Quote
from feeds.normalizers import (
    BinanceBookTickerNormalizer,
    ControlFrame,
    DropReason,
    FrameNormalizer,
    OkxBboNormalizer,
    OkxTickerNormalizer,
)
from feeds.rest_parsers import InvalidResponse, VenueError, parse_binance_book_ticker, parse_okx_ticker_response

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OKX_SYMBOLS = ("BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT-SWAP", "BCH-USDT-SWAP", "BTC-USD-SWAP")
BINANCE_SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT")
RECV_NS = 123_456_789
REASONS = {r.value for r in DropReason}

Factory = Callable[[], FrameNormalizer]


def okx_tickers() -> OkxTickerNormalizer:
    return OkxTickerNormalizer(OKX_SYMBOLS)


def okx_bbo() -> OkxBboNormalizer:
    return OkxBboNormalizer(OKX_SYMBOLS)


def binance() -> BinanceBookTickerNormalizer:
    return BinanceBookTickerNormalizer(BINANCE_SYMBOLS)


FACTORIES: list[Factory] = [okx_tickers, okx_bbo, binance]


def load(name: str) -> list[dict[str, Any]]:
    with (FIXTURES / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def frame_text(case: dict[str, Any], key: str = "frame") -> str:
    if "raw" in case:
        return str(case["raw"])
    return json.dumps(case[key], separators=(",", ":"), ensure_ascii=False)


def cases(*pairs: tuple[str, Factory]) -> list[Any]:
    out = []
    for fixture, factory in pairs:
        for i, case in enumerate(load(fixture)):
            out.append(pytest.param(factory, case, id=f"{fixture}:{i}:{factory.__name__}:{case['name']}"))
    return out


def invariant_holds(n: FrameNormalizer) -> bool:
    return n.frames == n.quote_frames + sum(n.dropped.values()) + sum(n.controls.values())


def assert_quote(q: Quote, venue: str, want: dict[str, Any]) -> None:
    assert q.venue == venue
    assert q.symbol == want["symbol"]
    assert q.bid == want["bid"]
    assert q.ask == want["ask"]
    assert q.bid_size == want["bid_size"]
    assert q.ask_size == want["ask_size"]
    assert q.venue_ts_ms == want["venue_ts_ms"]
    assert type(q.bid) is float and type(q.bid_size) is float and type(q.venue_ts_ms) is int


def check_case(n: FrameNormalizer, case: dict[str, Any], frame: bytes | str) -> None:
    expect = case["expect"]
    quotes = n.normalize(frame, RECV_NS)
    assert invariant_holds(n)
    if "quote" in expect:
        assert len(quotes) == 1, (n.dropped, n.controls)
        assert_quote(quotes[0], n.venue, expect["quote"])
        assert quotes[0].recv_ns == RECV_NS
        assert n.last_control is None
        assert (n.quote_frames, n.quotes, sum(n.dropped.values())) == (1, 1, 0)
    elif "drop" in expect:
        assert quotes == []
        assert all(type(k) is str for k in n.dropped)
        assert n.last_control is None
        assert dict(n.dropped) == {expect["drop"]: 1}
        assert n.quotes == 0 and not n.controls
    else:
        want = expect["control"]
        assert quotes == []
        c = n.last_control
        assert isinstance(c, ControlFrame)
        assert c.venue == n.venue
        assert (c.kind, c.code, c.is_error, c.wants_reconnect) == (
            want["kind"],
            want["code"],
            want["is_error"],
            want["wants_reconnect"],
        )
        assert n.controls == {want["kind"]: 1}
        assert not n.dropped, "a control frame is not a drop"
    if "seq" in expect and isinstance(n, OkxBboNormalizer):
        symbol = json.loads(frame_text(case)).get("arg", {}).get("instId", "")
        assert n.last_seq.get(symbol) == expect["seq"]
        assert n.seq_resets == 0


STREAM_CASES = cases(
    ("okx_tickers.jsonl", okx_tickers),
    ("okx_bbo_tbt.jsonl", okx_bbo),
    ("okx_control.jsonl", okx_tickers),
    ("okx_control.jsonl", okx_bbo),
    ("binance_spot_book_ticker.jsonl", binance),
    ("binance_usdm_book_ticker.jsonl", binance),
    ("binance_control.jsonl", binance),
)


@pytest.mark.parametrize(("factory", "case"), STREAM_CASES)
def test_fixture_str(factory: Factory, case: dict[str, Any]) -> None:
    check_case(factory(), case, frame_text(case))


@pytest.mark.parametrize(("factory", "case"), STREAM_CASES)
def test_fixture_bytes(factory: Factory, case: dict[str, Any]) -> None:
    check_case(factory(), case, frame_text(case).encode())


@pytest.mark.parametrize(("factory", "case"), STREAM_CASES)
def test_fast_and_slow_paths_agree(factory: Factory, case: dict[str, Any]) -> None:
    """The general slow path alone reaches the same quotes as normalize() (fast path first)."""
    frame = frame_text(case)
    fast = factory().normalize(frame, RECV_NS)
    slow, _, _ = factory()._classify(frame, RECV_NS)
    assert fast == slow


def test_every_drop_reason_and_fixture_file_is_exercised() -> None:
    seen: set[str] = set()
    for name in FIXTURES.glob("*.jsonl"):
        for case in load(name.name):
            exp = case["expect"]
            seen.update(v for k, v in exp.items() if k in ("drop", "invalid"))
    assert seen == REASONS
    assert (FIXTURES / "README.md").is_file()


# --- behaviour across frames ----------------------------------------------------------------


def bbo_frame(seq: int, bid: str = "111.05", ask: str = "111.06", inst: str = "BCH-USDT-SWAP") -> str:
    return json.dumps(
        {
            "arg": {"channel": "bbo-tbt", "instId": inst},
            "data": [
                {"asks": [[ask, "10", "0", "2"]], "bids": [[bid, "12", "0", "3"]], "ts": "1670324386", "seqId": seq}
            ],
        }
    )


def test_seq_reset_is_counted_and_not_an_error() -> None:
    n = okx_bbo()
    seqs = [100, 200, 150, 150, 10, 11]
    for s in seqs:
        assert len(n.normalize(bbo_frame(s), RECV_NS)) == 1
    assert n.seq_resets == 2  # 200 -> 150 and 150 -> 10; the idle resend (150 -> 150) is not one
    assert n.last_seq == {"BCH-USDT-SWAP": 11}
    assert n.quotes == len(seqs) and not n.dropped


def test_seq_is_tracked_per_instrument_and_for_dropped_frames() -> None:
    n = okx_bbo()
    n.normalize(bbo_frame(500, inst="BTC-USDT"), RECV_NS)
    n.normalize(bbo_frame(7, inst="BCH-USDT-SWAP"), RECV_NS)
    assert n.seq_resets == 0
    assert n.normalize(bbo_frame(400, bid="2", ask="1", inst="BTC-USDT"), RECV_NS) == []  # crossed
    assert n.dropped == {"crossed": 1}
    assert n.seq_resets == 1
    assert n.last_seq == {"BTC-USDT": 400, "BCH-USDT-SWAP": 7}


def test_last_control_describes_the_latest_frame_without_quotes() -> None:
    n = okx_tickers()
    assert n.normalize('{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"}}', 1) == []
    assert n.last_control is not None and n.last_control.kind == "subscribe"
    assert n.last_control.raw["arg"] == {"channel": "tickers", "instId": "BTC-USDT"}
    ok = frame_text(load("okx_tickers.jsonl")[0])
    assert len(n.normalize(ok, 2)) == 1  # a quote frame leaves last_control alone (read it on [])
    n.normalize("garbage", 3)
    assert n.last_control is None  # a drop clears it
    assert n.counters() == {
        "frames": 3,
        "quote_frames": 1,
        "quotes": 1,
        "controls": 1,
        "dropped": 1,
        "dropped_malformed": 1,
    }


def test_multi_entry_frame_keeps_good_entries_and_counts_the_rest() -> None:
    good = {"instId": "BTC-USDT", "askPx": "2", "askSz": "1", "bidPx": "1", "bidSz": "1", "ts": "5"}
    crossed = {"instId": "BTC-USDT-SWAP", "askPx": "1", "askSz": "1", "bidPx": "2", "bidSz": "1", "ts": "5"}
    unknown = {"instId": "XRP-USDT", "askPx": "2", "askSz": "1", "bidPx": "1", "bidSz": "1", "ts": "5"}
    n = okx_tickers()
    frame = json.dumps({"arg": {"channel": "tickers"}, "data": [crossed, good, unknown]})
    quotes = n.normalize(frame, RECV_NS)
    assert [q.symbol for q in quotes] == ["BTC-USDT"]
    assert n.skipped == {"crossed": 1, "unknown_symbol": 1}
    assert not n.dropped
    n.normalize(json.dumps({"arg": {"channel": "tickers"}, "data": [crossed, unknown]}), RECV_NS)
    assert n.dropped == {"crossed": 1}
    assert n.skipped == {"crossed": 1, "unknown_symbol": 2}
    assert invariant_holds(n)


def test_symbols_must_be_an_iterable_of_symbols() -> None:
    with pytest.raises(TypeError):
        BinanceBookTickerNormalizer("BTCUSDT")
    assert BinanceBookTickerNormalizer(iter(["BTCUSDT"])).symbols == frozenset({"BTCUSDT"})


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(
    "frame",
    ["", b"", " ", "null", "0", "[]", "{}", '"pong"', "ping", b"\xff\xfe", "\ud800", "[" * 5000, '{"data":' * 3000],
)
def test_odd_inputs_are_drops(factory: Factory, frame: bytes | str) -> None:
    n = factory()
    assert n.normalize(frame, RECV_NS) == []
    assert sum(n.dropped.values()) == 1 and invariant_holds(n)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("frame", [None, 42, 1.5, ["a"], {"s": "BTCUSDT"}, bytearray(b"pong"), memoryview(b"{}")])
def test_non_text_inputs_never_raise(factory: Factory, frame: Any) -> None:
    n = factory()
    n.normalize(frame, RECV_NS)
    assert n.frames == 1 and invariant_holds(n)


# --- hypothesis -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)
numeric_strings = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        [
            "0",
            "-0",
            "0.00000000",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "1e999",
            "1e-400",
            "",
            " 1",
            "+1",
            ".5",
            "1_0",
        ]
    ),
)
field_values = numeric_strings | json_values


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for factory in FACTORIES:
        n = factory()
        n.normalize(data, RECV_NS)
        assert n.frames == 1 and invariant_holds(n)


@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(data: str) -> None:
    for factory in FACTORIES:
        n = factory()
        n.normalize(data, RECV_NS)
        assert invariant_holds(n)


@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    frame = json.dumps(value)
    for factory in FACTORIES:
        n = factory()
        out = n.normalize(frame, RECV_NS)
        assert invariant_holds(n)
        assert all(isinstance(q, Quote) for q in out)


def okx_ticker_frame(bid: Any, ask: Any, bsz: Any, asz: Any, ts: Any) -> dict[str, Any]:
    entry = {"instId": "BTC-USDT-SWAP", "bidPx": bid, "askPx": ask, "bidSz": bsz, "askSz": asz, "ts": ts}
    return {"arg": {"channel": "tickers", "instId": "BTC-USDT-SWAP"}, "data": [entry]}


def okx_bbo_frame(bid: Any, ask: Any, bsz: Any, asz: Any, ts: Any) -> dict[str, Any]:
    entry = {"asks": [[ask, asz, "0", "2"]], "bids": [[bid, bsz, "0", "3"]], "ts": ts, "seqId": 42}
    return {"arg": {"channel": "bbo-tbt", "instId": "BTC-USDT-SWAP"}, "data": [entry]}


def binance_frame(bid: Any, ask: Any, bsz: Any, asz: Any, ts: Any) -> dict[str, Any]:
    """USD-M: `T` random, `E` valid (used when `T` is absent or 0)."""
    return {
        "e": "bookTicker",
        "u": 1,
        "E": 1568014460893,
        "T": ts,
        "s": "BTCUSDT",
        "b": bid,
        "B": bsz,
        "a": ask,
        "A": asz,
    }


def binance_combined_frame(bid: Any, ask: Any, bsz: Any, asz: Any, ts: Any) -> dict[str, Any]:
    return {"stream": "btcusdt@bookTicker", "data": {"u": 1, "s": "BTCUSDT", "b": bid, "B": bsz, "a": ask, "A": asz}}


BUILDERS: list[tuple[Factory, Callable[..., dict[str, Any]]]] = [
    (okx_tickers, okx_ticker_frame),
    (okx_bbo, okx_bbo_frame),
    (binance, binance_frame),
    (binance, binance_combined_frame),
]


def check_outcome(n: FrameNormalizer, quotes: list[Quote]) -> None:
    assert invariant_holds(n)
    if quotes:
        (q,) = quotes
        values = (q.bid, q.ask, q.bid_size, q.ask_size)
        assert all(math.isfinite(v) for v in values)
        assert 0 < q.bid <= q.ask
        assert q.bid_size >= 0 and q.ask_size >= 0
        assert q.venue_ts_ms >= 0 and q.recv_ns == RECV_NS
    else:
        assert sum(n.dropped.values()) == 1
        assert set(n.dropped) <= REASONS


timestamps = st.one_of(
    st.integers(min_value=-5, max_value=2**63).map(str), st.integers(min_value=0, max_value=2**53), numeric_strings
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(BUILDERS))),
    st.tuples(numeric_strings, numeric_strings, numeric_strings, numeric_strings, timestamps),
)
def test_valid_shapes_with_random_numbers(which: int, values: tuple[str, str, str, str, Any]) -> None:
    """bid, ask, bid size, ask size, ts as random numeric strings in an otherwise valid frame."""
    factory, build = BUILDERS[which]
    frame = json.dumps(build(*values))
    n = factory()
    quotes = n.normalize(frame, RECV_NS)
    check_outcome(n, quotes)
    slow, _, _ = factory()._classify(frame, RECV_NS)
    assert quotes == slow


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(BUILDERS))), st.lists(field_values, min_size=5, max_size=5))
def test_valid_shapes_with_arbitrary_field_values(which: int, values: list[Any]) -> None:
    factory, build = BUILDERS[which]
    frame = json.dumps(build(*values))
    n = factory()
    check_outcome(n, n.normalize(frame.encode(), RECV_NS))


@given(
    st.lists(
        st.sampled_from(
            [frame_text(c) for f in ("okx_tickers.jsonl", "okx_bbo_tbt.jsonl", "okx_control.jsonl") for c in load(f)]
        ),
        max_size=30,
    )
)
def test_counters_add_up_over_a_stream(frames: list[str]) -> None:
    for factory in (okx_tickers, okx_bbo):
        n = factory()
        produced = sum(len(n.normalize(f, RECV_NS)) for f in frames)
        assert n.frames == len(frames)
        assert n.quotes == produced
        assert invariant_holds(n)


# --- REST bodies ----------------------------------------------------------------------------


def rest_body(case: dict[str, Any]) -> bytes:
    return frame_text(case, "body").encode()


def check_rest(case: dict[str, Any], venue: str, call: Callable[[bytes], list[Quote]]) -> None:
    expect = case["expect"]
    body = rest_body(case)
    if "quotes" in expect:
        quotes = call(body)
        assert len(quotes) == len(expect["quotes"])
        for q, want in zip(quotes, expect["quotes"], strict=True):
            assert_quote(q, venue, want)
            assert q.recv_ns == RECV_NS
    elif "venue_error" in expect:
        with pytest.raises(VenueError) as err:
            call(body)
        assert (err.value.code, err.value.msg, err.value.venue) == (
            expect["venue_error"]["code"],
            expect["venue_error"]["msg"],
            venue,
        )
    else:
        with pytest.raises(InvalidResponse) as bad:
            call(body)
        assert isinstance(bad.value, ValueError)
        assert bad.value.reason == expect["invalid"]
        assert expect["invalid"] in str(bad.value)


@pytest.mark.parametrize("case", load("okx_rest_ticker.jsonl"), ids=lambda c: c["name"])
def test_okx_rest_fixture(case: dict[str, Any]) -> None:
    check_rest(case, "okx", lambda body: parse_okx_ticker_response(body, RECV_NS))


@pytest.mark.parametrize("case", load("binance_rest_book_ticker.jsonl"), ids=lambda c: c["name"])
def test_binance_rest_fixture(case: dict[str, Any]) -> None:
    check_rest(case, "binance", lambda body: parse_binance_book_ticker(body, case["key"], RECV_NS))


def test_rest_symbol_filter_skips_other_entries_before_validation() -> None:
    body = json.dumps(
        [
            {"symbol": "HALTED", "bidPrice": "0", "bidQty": "0", "askPrice": "0", "askQty": "0"},
            {"symbol": "BTCUSDT", "bidPrice": "1", "bidQty": "1", "askPrice": "2", "askQty": "1", "time": 7},
        ]
    ).encode()
    (q,) = parse_binance_book_ticker(body, "time", RECV_NS, symbols={"BTCUSDT"})
    assert (q.symbol, q.venue_ts_ms) == ("BTCUSDT", 7)
    with pytest.raises(InvalidResponse, match="HALTED"):
        parse_binance_book_ticker(body, "time", RECV_NS)
    okx = load("okx_rest_ticker.jsonl")[1]
    (q,) = parse_okx_ticker_response(rest_body(okx), RECV_NS, symbols=("ETH-USDT-SWAP",))
    assert q.symbol == "ETH-USDT-SWAP"


def rest_calls(body: bytes) -> list[Callable[[], list[Quote]]]:
    return [
        lambda: parse_okx_ticker_response(body, RECV_NS),
        lambda: parse_binance_book_ticker(body, None, RECV_NS),
        lambda: parse_binance_book_ticker(body, "time", RECV_NS),
    ]


def only_documented_exceptions(body: bytes) -> None:
    for call in rest_calls(body):
        try:
            quotes = call()
        except (VenueError, InvalidResponse):
            continue
        for q in quotes:
            assert 0 < q.bid <= q.ask and q.bid_size >= 0 and q.ask_size >= 0
            assert all(math.isfinite(v) for v in (q.bid, q.ask, q.bid_size, q.ask_size))


@given(st.binary(max_size=300))
def test_rest_arbitrary_bytes(body: bytes) -> None:
    only_documented_exceptions(body)


@given(json_values)
def test_rest_arbitrary_json(value: Any) -> None:
    only_documented_exceptions(json.dumps(value).encode())


@settings(max_examples=200)
@given(
    st.one_of(st.just("0"), st.just(0), json_values),
    st.lists(numeric_strings | field_values, min_size=5, max_size=5),
    st.booleans(),
)
def test_rest_structured_random(code: Any, values: list[Any], as_list: bool) -> None:
    bid, ask, bsz, asz, ts = values
    entry = {"instId": "BTC-USDT", "bidPx": bid, "askPx": ask, "bidSz": bsz, "askSz": asz, "ts": ts}
    only_documented_exceptions(json.dumps({"code": code, "msg": "", "data": [entry]}).encode())
    entry = {"symbol": "BTCUSDT", "bidPrice": bid, "bidQty": bsz, "askPrice": ask, "askQty": asz, "time": ts}
    only_documented_exceptions(json.dumps([entry] if as_list else entry).encode())
