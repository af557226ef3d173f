"""Venue frames in, venue-independent `Quote`s out: the parsing half of a market-data feed.

One normalizer per channel: `OkxTickerNormalizer` (OKX `tickers`), `OkxBboNormalizer` (OKX
`bbo-tbt`) and `BinanceBookTickerNormalizer` (Binance spot and USD-M `bookTicker`, raw
`/ws/<stream>` and combined `/stream?streams=` frames alike). Each is built with the exact
venue symbols its feed serves and turns one WebSocket frame into a list of quotes:

    normalizer = OkxBboNormalizer(["BTC-USDT-SWAP"])
    quotes = normalizer.normalize(frame, recv_ns)        # frame: bytes | str
    if not quotes and normalizer.last_control is not None:
        handle(normalizer.last_control)                  # ack, error, notice, pong, ...

Contract of `normalize(frame, recv_ns) -> list[Quote]`:

- It never raises, whatever `frame` holds. Every frame ends in exactly one of three outcomes,
  so `frames == quote_frames + sum(dropped.values()) + sum(controls.values())` always holds:
  - a **quote frame**: one quote per valid entry (in practice one per frame);
  - a **control frame**: `[]` is returned and `last_control` is set to a `ControlFrame` (kind,
    code, msg, the decoded dict). Control frames are not errors and are not drops. They are
    OKX `{"event": ...}` frames (`subscribe`, `unsubscribe`, `error`, `notice`,
    `channel-conn-count`, `channel-conn-count-error`, `login`, ...), the OKX text frame `pong`
    (kind `pong`), Binance `{"result": ..., "id": ...}` (kind `result`), Binance
    `{"error": {...}, "id": ...}` or `{"code": ..., "msg": ...}` (kind `error`) and Binance
    `{"e": "serverShutdown", ...}`;
  - a **drop**: `[]` is returned and `dropped[reason]` is incremented (see `DropReason`).
- `last_control` is set by every call that returns `[]`: the control frame, or None for a
  drop. After a call that returned quotes it is not touched (the fast path stays minimal),
  so read it only when the result is empty.
- A multi-entry frame (OKX `data` with several elements; never seen on these channels) is a
  quote frame if any entry is valid; its rejected entries are counted in `skipped`. A frame
  whose entries are all rejected is one drop, under its first entry's reason (the others go
  to `skipped`).

Values stay in the venue's own units (OKX swap sizes in contracts); conversion to base units
happens in `core.compare`. A quote is emitted only when `0 < bid <= ask`, both sizes are
`>= 0` (zero is allowed: Binance sends it) and every value is finite. Prices and sizes may be
JSON numbers or numeric strings (`"25.35190000"`); strings are parsed by msgspec's rules
(`"1e5"`, `"nan"` and `"inf"` parse; `" 1"`, `"+1"`, `".5"` and `""` do not). An empty string
or null where a price or size belongs is `missing_field` (OKX sends `""` for an absent side).
Venue timestamps are milliseconds: OKX `ts`, Binance `T` (transaction time) else `E` (event
time) else 0 (spot `bookTicker` carries none). A missing timestamp is 0, a negative one is
`non_positive`.

OKX `bbo-tbt` (trap #1 of the venue notes): levels are `asks`/`bids` arrays of
`[px, sz, "0", numOrders]` and `instId` appears only in `arg`. `last_seq[instId]` keeps the
`seqId` of the latest frame of each served instrument (dropped frames included), and
`seq_resets` counts frames whose `seqId` went backwards (the venue may reset it after
maintenance; that is not an error, the quote is emitted). An idle resend repeats the same
`seqId` and is emitted too: the venue is saying the book is still current.

REST bodies (the polling fallback) are parsed by `feeds.rest_parsers` with the same field
rules (`parse_number`, `parse_timestamp`, `check_book`, `build_quote` below).

Speed: each normalizer first tries a typed msgspec decode (`strict=False`, numeric strings to
float) and a single combined range check; anything unusual (controls, drops, odd shapes) is
re-parsed by a general slow path that finds the exact outcome. The fast path alone decides
only the valid common case, so both paths agree by construction. See
`quantarb_tui/bench/feeds.py` for measured rates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import msgspec

from core.models import Quote, Venue

_INF = math.inf


class DropReason(StrEnum):
    """Why a frame (or an entry of one) produced no quote."""

    MALFORMED = "malformed"  # not JSON, or the wrong JSON shape (not an object, arg not an object, ...)
    MISSING_FIELD = "missing_field"  # a required field is absent, null or "" (one-sided book included)
    NON_NUMERIC = "non_numeric"  # a price, size or timestamp that does not parse as a number
    NON_FINITE = "non_finite"  # nan or inf
    NON_POSITIVE = "non_positive"  # a price <= 0 (or a negative timestamp)
    NEGATIVE_SIZE = "negative_size"  # a size < 0
    CROSSED = "crossed"  # bid > ask
    UNKNOWN_SYMBOL = "unknown_symbol"  # not one of the symbols this normalizer serves
    EMPTY_DATA = "empty_data"  # OKX `data: []`
    WRONG_CHANNEL = "wrong_channel"  # another channel's frame (OKX arg.channel, Binance `e`)


@dataclass(slots=True, frozen=True)
class ControlFrame:
    """A venue frame that is not market data: acknowledgements, errors, notices, pongs.

    `kind` is the OKX `event` value, `pong`, or for Binance `result`, `error` or the `e` value
    (`serverShutdown`). `code` and `msg` are the venue's (as strings, "" when absent); `raw`
    is the decoded frame ({} for `pong`).
    """

    venue: Venue
    kind: str
    code: str = ""
    msg: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.kind in ("error", "channel-conn-count-error")

    @property
    def wants_reconnect(self) -> bool:
        """The venue announced that it will close this connection soon (OKX 64008 notice,
        Binance serverShutdown): open a new connection, then drop this one."""
        return self.kind in ("notice", "serverShutdown")


# --- shared field validation (also used by feeds.rest_parsers) -------------------------------


def parse_number(value: Any) -> float | DropReason:
    """A price or size from a JSON value: a float, or the reason it is not one."""
    if value is None or value == "":
        return DropReason.MISSING_FIELD
    if isinstance(value, bool):
        return DropReason.NON_NUMERIC
    try:
        return msgspec.convert(value, float, strict=False)
    except (msgspec.ValidationError, TypeError, ValueError):
        return DropReason.NON_NUMERIC


def parse_timestamp(value: Any) -> int | DropReason:
    """A venue timestamp in ms from a JSON value: 0 when absent, or the reason it is invalid."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return DropReason.NON_NUMERIC
    try:
        ts = msgspec.convert(value, int, strict=False)
    except (msgspec.ValidationError, TypeError, ValueError):
        return DropReason.NON_NUMERIC
    return ts if ts >= 0 else DropReason.NON_POSITIVE


def check_book(bid: float, ask: float, bid_size: float, ask_size: float) -> DropReason | None:
    """None when `0 < bid <= ask`, sizes >= 0 and all finite; otherwise the first failed rule."""
    if not (math.isfinite(bid) and math.isfinite(ask) and math.isfinite(bid_size) and math.isfinite(ask_size)):
        return DropReason.NON_FINITE
    if bid <= 0.0 or ask <= 0.0:
        return DropReason.NON_POSITIVE
    if bid_size < 0.0 or ask_size < 0.0:
        return DropReason.NEGATIVE_SIZE
    if bid > ask:
        return DropReason.CROSSED
    return None


def build_quote(
    venue: Venue, symbol: str, *, bid: Any, ask: Any, bid_size: Any, ask_size: Any, ts: Any, recv_ns: int
) -> Quote | DropReason:
    """Validate raw JSON values and build a Quote, or say why not (the slow, exact path)."""
    values: list[float] = []
    for raw in (bid, ask, bid_size, ask_size):
        v = parse_number(raw)
        if isinstance(v, DropReason):
            return v
        values.append(v)
    bid_f, ask_f, bid_size_f, ask_size_f = values
    bad = check_book(bid_f, ask_f, bid_size_f, ask_size_f)
    if bad is not None:
        return bad
    ts_ms = parse_timestamp(ts)
    if isinstance(ts_ms, DropReason):
        return ts_ms
    return Quote(venue, symbol, bid_f, ask_f, bid_size_f, ask_size_f, ts_ms, recv_ns)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


# --- typed fast-path shapes ------------------------------------------------------------------
# gc=False: decoded frames are short-lived and hold no reference cycles.


class _OkxArg(msgspec.Struct, gc=False):
    channel: str = ""
    instId: str = ""


class _OkxTicker(msgspec.Struct, gc=False):
    bidPx: float
    askPx: float
    bidSz: float
    askSz: float
    instId: str = ""
    ts: int = 0


class _OkxTickerFrame(msgspec.Struct, gc=False):
    arg: _OkxArg
    data: list[_OkxTicker]


class _OkxLevel(msgspec.Struct, array_like=True, gc=False):
    """`[px, sz, "0", numOrders]`: only price and size are decoded; the rest is skipped."""

    px: float
    sz: float


class _OkxBbo(msgspec.Struct, gc=False):
    asks: list[_OkxLevel]
    bids: list[_OkxLevel]
    ts: int = 0
    seqId: int = -1


class _OkxBboFrame(msgspec.Struct, gc=False):
    arg: _OkxArg
    data: list[_OkxBbo]


class _BnBookTicker(msgspec.Struct, gc=False):
    s: str
    b: float
    B: float
    a: float
    A: float
    e: str = ""
    E: int = 0
    T: int = 0


class _BnCombined(msgspec.Struct, gc=False):
    data: _BnBookTicker


_OKX_TICKER_DECODE = msgspec.json.Decoder(_OkxTickerFrame, strict=False).decode
_OKX_BBO_DECODE = msgspec.json.Decoder(_OkxBboFrame, strict=False).decode
_BN_RAW_DECODE = msgspec.json.Decoder(_BnBookTicker, strict=False).decode
_BN_COMBINED_DECODE = msgspec.json.Decoder(_BnCombined, strict=False).decode
_ANY_DECODE = msgspec.json.Decoder().decode
_COMBINED_PREFIXES = (b'{"stream"', '{"stream"')


# --- the normalizers -------------------------------------------------------------------------

# What the slow path decided: (quotes, rejected-entry reasons, control frame or None).
_Outcome = tuple[list[Quote], list[DropReason], ControlFrame | None]


class FrameNormalizer:
    """Shared counters, symbol set and slow-path accounting. Subclasses add the fast path.

    Counters: `frames` (calls), `quote_frames` (frames that produced quotes), `quotes`
    (quotes produced), `dropped` (frames per DropReason), `controls` (control frames per
    kind), `skipped` (rejected extra entries of multi-entry frames, per reason).
    """

    venue: ClassVar[Venue]

    __slots__ = ("_extra_quotes", "_symbols", "controls", "dropped", "frames", "last_control", "skipped")

    def __init__(self, symbols: Iterable[str]) -> None:
        if isinstance(symbols, str | bytes):
            raise TypeError("symbols must be an iterable of symbols, not a single string")
        self._symbols: frozenset[str] = frozenset(symbols)
        self.frames = 0
        self._extra_quotes = 0  # quotes beyond the first of multi-entry frames
        self.dropped: Counter[str] = Counter()
        self.controls: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.last_control: ControlFrame | None = None

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols

    @property
    def quote_frames(self) -> int:
        """Frames that produced quotes: every frame has exactly one outcome, so this is what
        is neither a drop nor a control (derived, so the fast path counts only `frames`)."""
        return self.frames - sum(self.dropped.values()) - sum(self.controls.values())

    @property
    def quotes(self) -> int:
        return self.quote_frames + self._extra_quotes

    def normalize(self, frame: bytes | str, recv_ns: int) -> list[Quote]:
        """One frame in, its quotes out; never raises (see the module docstring)."""
        self.frames += 1
        return self._slow(frame, recv_ns)

    def counters(self) -> dict[str, int]:
        """A flat JSON-able snapshot for status views and metrics."""
        out = {
            "frames": self.frames,
            "quote_frames": self.quote_frames,
            "quotes": self.quotes,
            "controls": sum(self.controls.values()),
            "dropped": sum(self.dropped.values()),
        }
        out.update({f"dropped_{k}": v for k, v in sorted(self.dropped.items())})
        return out

    def _slow(self, frame: Any, recv_ns: int) -> list[Quote]:
        """Exact classification and accounting; `frames` is already counted by the caller."""
        try:
            quotes, rejected, control = self._classify(frame, recv_ns)
        except Exception:  # a bug or a pathological input: still never raise
            quotes, rejected, control = [], [DropReason.MALFORMED], None
        self.last_control = control
        if control is not None:
            self.controls[control.kind] += 1
            return []
        if quotes:
            self._extra_quotes += len(quotes) - 1
            for reason in rejected:
                self.skipped[reason.value] += 1
            return quotes
        self.dropped[rejected[0].value if rejected else DropReason.MALFORMED.value] += 1
        for reason in rejected[1:]:
            self.skipped[reason.value] += 1
        return []

    def _classify(self, frame: Any, recv_ns: int) -> _Outcome:
        raise NotImplementedError


class _OkxNormalizer(FrameNormalizer):
    """OKX public channels: `{"arg": {...}, "data": [...]}` pushes, `{"event": ...}` controls."""

    venue: ClassVar[Venue] = "okx"
    channel: ClassVar[str] = ""

    __slots__ = ()

    def _classify(self, frame: Any, recv_ns: int) -> _Outcome:
        if frame in ("pong", b"pong"):
            return [], [], ControlFrame("okx", "pong")
        try:
            obj = _ANY_DECODE(frame)
        except Exception:
            return [], [DropReason.MALFORMED], None
        if not isinstance(obj, dict):
            return [], [DropReason.MALFORMED], None
        if "event" in obj:
            event = obj["event"]
            if not isinstance(event, str):
                return [], [DropReason.MALFORMED], None
            return [], [], ControlFrame("okx", event, _text(obj.get("code")), _text(obj.get("msg")), obj)
        arg = obj.get("arg")
        data = obj.get("data")
        if arg is None or data is None:
            return [], [DropReason.MISSING_FIELD], None
        if not isinstance(arg, dict) or not isinstance(data, list):
            return [], [DropReason.MALFORMED], None
        if arg.get("channel") != self.channel:
            return [], [DropReason.WRONG_CHANNEL], None
        if not data:
            return [], [DropReason.EMPTY_DATA], None
        quotes: list[Quote] = []
        rejected: list[DropReason] = []
        for entry in data:
            result = self._entry(arg, entry, recv_ns) if isinstance(entry, dict) else DropReason.MALFORMED
            if isinstance(result, Quote):
                quotes.append(result)
            else:
                rejected.append(result)
        return quotes, rejected, None

    def _entry(self, arg: dict[str, Any], entry: dict[str, Any], recv_ns: int) -> Quote | DropReason:
        raise NotImplementedError


class OkxTickerNormalizer(_OkxNormalizer):
    """OKX `tickers` channel: string fields `bidPx`/`askPx`/`bidSz`/`askSz`/`ts`; `instId` in
    each data entry (and in `arg`, used when an entry lacks it)."""

    channel: ClassVar[str] = "tickers"

    __slots__ = ()

    def normalize(self, frame: bytes | str, recv_ns: int) -> list[Quote]:
        self.frames += 1
        try:
            msg = _OKX_TICKER_DECODE(frame)
            data = msg.data
            if len(data) == 1 and msg.arg.channel == "tickers":
                d = data[0]
                symbol = d.instId or msg.arg.instId
                bid = d.bidPx
                ask = d.askPx
                bid_size = d.bidSz
                ask_size = d.askSz
                ts = d.ts
                if (
                    0.0 < bid <= ask < _INF
                    and 0.0 <= bid_size < _INF
                    and 0.0 <= ask_size < _INF
                    and ts >= 0
                    and symbol in self._symbols
                ):
                    return [Quote("okx", symbol, bid, ask, bid_size, ask_size, ts, recv_ns)]
        except Exception:
            pass
        return self._slow(frame, recv_ns)

    def _entry(self, arg: dict[str, Any], entry: dict[str, Any], recv_ns: int) -> Quote | DropReason:
        symbol = entry.get("instId") or arg.get("instId")
        if symbol is None:
            return DropReason.MISSING_FIELD
        if not isinstance(symbol, str):
            return DropReason.MALFORMED
        if symbol not in self._symbols:
            return DropReason.UNKNOWN_SYMBOL
        return build_quote(
            "okx",
            symbol,
            bid=entry.get("bidPx"),
            ask=entry.get("askPx"),
            bid_size=entry.get("bidSz"),
            ask_size=entry.get("askSz"),
            ts=entry.get("ts"),
            recv_ns=recv_ns,
        )


class OkxBboNormalizer(_OkxNormalizer):
    """OKX `bbo-tbt` channel: `asks`/`bids` as `[[px, sz, "0", numOrders]]`, `ts`, `seqId`;
    `instId` only in `arg`. Tracks `last_seq` per instrument and counts `seq_resets`."""

    channel: ClassVar[str] = "bbo-tbt"

    __slots__ = ("last_seq", "seq_resets")

    def __init__(self, symbols: Iterable[str]) -> None:
        super().__init__(symbols)
        self.last_seq: dict[str, int] = {}
        self.seq_resets = 0

    def counters(self) -> dict[str, int]:
        out = super().counters()
        out["seq_resets"] = self.seq_resets
        return out

    def _track(self, symbol: str, seq: int) -> None:
        last = self.last_seq.get(symbol)
        if last is not None and seq < last:
            self.seq_resets += 1
        self.last_seq[symbol] = seq

    def normalize(self, frame: bytes | str, recv_ns: int) -> list[Quote]:
        self.frames += 1
        try:
            msg = _OKX_BBO_DECODE(frame)
            data = msg.data
            if len(data) == 1 and msg.arg.channel == "bbo-tbt":
                d = data[0]
                symbol = msg.arg.instId
                best_bid = d.bids[0]
                best_ask = d.asks[0]
                bid = best_bid.px
                ask = best_ask.px
                bid_size = best_bid.sz
                ask_size = best_ask.sz
                ts = d.ts
                seq = d.seqId
                if (
                    0.0 < bid <= ask < _INF
                    and 0.0 <= bid_size < _INF
                    and 0.0 <= ask_size < _INF
                    and ts >= 0
                    and symbol in self._symbols
                ):
                    if seq >= 0:
                        last_seq = self.last_seq
                        if seq < last_seq.get(symbol, -1):
                            self.seq_resets += 1
                        last_seq[symbol] = seq
                    return [Quote("okx", symbol, bid, ask, bid_size, ask_size, ts, recv_ns)]
        except Exception:
            pass
        return self._slow(frame, recv_ns)

    def _entry(self, arg: dict[str, Any], entry: dict[str, Any], recv_ns: int) -> Quote | DropReason:
        symbol = arg.get("instId")
        if symbol is None:
            return DropReason.MISSING_FIELD
        if not isinstance(symbol, str):
            return DropReason.MALFORMED
        if symbol not in self._symbols:
            return DropReason.UNKNOWN_SYMBOL
        seq_v = entry.get("seqId")
        if seq_v is not None and seq_v != "":
            seq = parse_timestamp(seq_v)  # the same rules: an integer >= 0, else not tracked
            if not isinstance(seq, DropReason):
                self._track(symbol, seq)
        bids = entry.get("bids")
        asks = entry.get("asks")
        if bids is None or asks is None:
            return DropReason.MISSING_FIELD
        if not isinstance(bids, list) or not isinstance(asks, list):
            return DropReason.MALFORMED
        if not bids or not asks:
            return DropReason.MISSING_FIELD  # one-sided or empty book
        best_bid = bids[0]
        best_ask = asks[0]
        if not isinstance(best_bid, list) or not isinstance(best_ask, list):
            return DropReason.MALFORMED
        if len(best_bid) < 2 or len(best_ask) < 2:
            return DropReason.MISSING_FIELD
        return build_quote(
            "okx",
            symbol,
            bid=best_bid[0],
            ask=best_ask[0],
            bid_size=best_bid[1],
            ask_size=best_ask[1],
            ts=entry.get("ts"),
            recv_ns=recv_ns,
        )


class BinanceBookTickerNormalizer(FrameNormalizer):
    """Binance `<symbol>@bookTicker`, spot (`u s b B a A`) and USD-M (adds `e E T`, and
    sometimes `st`/`ps`, ignored), raw or wrapped as `{"stream": ..., "data": {...}}`."""

    venue: ClassVar[Venue] = "binance"

    __slots__ = ()

    def normalize(self, frame: bytes | str, recv_ns: int) -> list[Quote]:
        self.frames += 1
        try:
            msg = _BN_COMBINED_DECODE(frame).data if frame[:9] in _COMBINED_PREFIXES else _BN_RAW_DECODE(frame)
            bid = msg.b
            ask = msg.a
            bid_size = msg.B
            ask_size = msg.A
            ts = msg.T or msg.E
            symbol = msg.s
            if (
                0.0 < bid <= ask < _INF
                and 0.0 <= bid_size < _INF
                and 0.0 <= ask_size < _INF
                and ts >= 0
                and symbol in self._symbols
                and (not msg.e or msg.e == "bookTicker")
            ):
                return [Quote("binance", symbol, bid, ask, bid_size, ask_size, ts, recv_ns)]
        except Exception:
            pass
        return self._slow(frame, recv_ns)

    def _classify(self, frame: Any, recv_ns: int) -> _Outcome:
        try:
            obj = _ANY_DECODE(frame)
        except Exception:
            return [], [DropReason.MALFORMED], None
        if not isinstance(obj, dict):
            return [], [DropReason.MALFORMED], None
        if "stream" in obj and "data" in obj:
            obj = obj["data"]
            if not isinstance(obj, dict):
                return [], [DropReason.MALFORMED], None
        event = obj.get("e")
        if event not in (None, "", "bookTicker"):
            if event == "serverShutdown":
                return [], [], ControlFrame("binance", "serverShutdown", raw=obj)
            return [], [DropReason.WRONG_CHANNEL if isinstance(event, str) else DropReason.MALFORMED], None
        if not event and "s" not in obj:
            if "error" in obj:  # {"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}
                err = obj["error"]
                code = _text(err.get("code")) if isinstance(err, dict) else ""
                text = _text(err.get("msg")) if isinstance(err, dict) else _text(err)
                return [], [], ControlFrame("binance", "error", code, text, obj)
            if "code" in obj and "msg" in obj:  # the docs' flat form {"code": 0, "msg": "Unknown property"}
                return [], [], ControlFrame("binance", "error", _text(obj["code"]), _text(obj["msg"]), obj)
            if "result" in obj and "id" in obj:  # {"result": null, "id": 1}
                return [], [], ControlFrame("binance", "result", raw=obj)
        symbol = obj.get("s")
        if symbol is None:
            return [], [DropReason.MISSING_FIELD], None
        if not isinstance(symbol, str):
            return [], [DropReason.MALFORMED], None
        if symbol not in self._symbols:
            return [], [DropReason.UNKNOWN_SYMBOL], None
        ts_v = obj.get("T")  # the matching time; the event time E when T is absent or 0
        if parse_timestamp(ts_v) == 0:
            ts_v = obj.get("E")
        result = build_quote(
            "binance",
            symbol,
            bid=obj.get("b"),
            ask=obj.get("a"),
            bid_size=obj.get("B"),
            ask_size=obj.get("A"),
            ts=ts_v,
            recv_ns=recv_ns,
        )
        if isinstance(result, Quote):
            return [result], [], None
        return [], [result], None


__all__ = [
    "BinanceBookTickerNormalizer",
    "ControlFrame",
    "DropReason",
    "FrameNormalizer",
    "OkxBboNormalizer",
    "OkxTickerNormalizer",
    "build_quote",
    "check_book",
    "parse_number",
    "parse_timestamp",
]
