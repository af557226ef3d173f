"""Bench: venue frames through the feed normalizers, and through ccxt's parsers when installed.

Frames are generated before the clock starts: 8 instruments with random-walk mids, spreads of
one to three ticks, varied sizes, strictly increasing timestamps (and `seqId`s), formatted as
each venue formats them (OKX trims trailing zeros, Binance spot pads to 8 decimals). Four
streams: OKX `tickers` (with the 24 h fields OKX sends), OKX `bbo-tbt`, Binance spot
`bookTicker` on a raw stream, Binance USD-M `bookTicker` on a combined `/public/stream`.
Frames are `str`, as a WebSocket client hands text frames over; bytes are timed too.

Each normalizer is timed over all frames, best of `repeat` passes, each on a fresh
normalizer. When `import ccxt` works, ccxt's own code path runs on the first `ccxt_frames`
frames of the same streams, without network: a ccxt.pro exchange with its markets set by
hand, and a real ccxt WebSocket `Client` whose `handle_text_or_binary_message` decodes the
frame with ccxt's JSON parser (orjson when importable) and dispatches it to the exchange's
`handle_message` (OKX: `handle_ticker` / `handle_order_book` -> `handle_bid_ask`; Binance:
`handle_bids_asks` -> `parse_ws_ticker`). ccxt builds its full unified ticker dict, so the
ratio is "what the project would pay per frame through ccxt", not a like-for-like parser
duel. A sample of frames is checked to give the same bid/ask/sizes on both sides.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

from feeds.normalizers import (
    BinanceBookTickerNormalizer,
    FrameNormalizer,
    OkxBboNormalizer,
    OkxTickerNormalizer,
)

EPOCH_MS = 1_732_150_000_000
# base, start price, price tick (also the USD-M tick), price decimals
INSTRUMENTS: tuple[tuple[str, float, float, int], ...] = (
    ("BTC", 67_000.0, 0.1, 1),
    ("ETH", 3_500.0, 0.01, 2),
    ("SOL", 150.0, 0.01, 2),
    ("BNB", 580.0, 0.01, 2),
    ("XRP", 0.52, 0.0001, 4),
    ("DOGE", 0.13, 0.00001, 5),
    ("ADA", 0.45, 0.0001, 4),
    ("LTC", 80.0, 0.01, 2),
)
STREAMS = ("okx_tickers", "okx_bbo_tbt", "binance_spot", "binance_usdm")
TARGETS = {"binance_spot": 500_000, "binance_usdm": 500_000, "okx_bbo_tbt": 300_000}
SAMPLE = 200  # frames whose parsed values are compared with ccxt's


def okx_symbol(base: str) -> str:
    return f"{base}-USDT-SWAP"


def binance_symbol(base: str) -> str:
    return f"{base}USDT"


def _trim(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class FrameMaker:
    """Venue frames for a shared random walk of INSTRUMENTS' mids, one instrument per frame."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mids = [start for _, start, _, _ in INSTRUMENTS]
        self.seq = [self.rng.randrange(10**8, 10**9) for _ in INSTRUMENTS]
        self.update_id = self.rng.randrange(10**9, 10**10)
        self.ts = EPOCH_MS

    def next(self, stream: str) -> str:
        rng = self.rng
        i = rng.randrange(len(INSTRUMENTS))
        base, _, tick, dec = INSTRUMENTS[i]
        self.mids[i] *= math.exp(rng.gauss(0.0, 2e-4))
        bid_ticks = math.floor(self.mids[i] / tick)
        bid = bid_ticks * tick
        ask = (bid_ticks + rng.randint(1, 3)) * tick
        self.ts += rng.randint(0, 3)
        self.seq[i] += rng.randint(1, 50)
        self.update_id += rng.randint(1, 20)
        if stream == "okx_tickers":
            return self._okx_ticker(okx_symbol(base), bid, ask, dec)
        if stream == "okx_bbo_tbt":
            return self._okx_bbo(okx_symbol(base), bid, ask, dec, self.seq[i])
        if stream == "binance_spot":
            return self._binance_spot(binance_symbol(base), bid, ask)
        return self._binance_usdm(binance_symbol(base), bid, ask, dec)

    def _okx_ticker(self, inst: str, bid: float, ask: float, dec: int) -> str:
        rng = self.rng
        data = {
            "instType": "SWAP", "instId": inst, "last": _trim(bid if rng.random() < 0.5 else ask, dec),
            "lastSz": str(rng.randint(1, 50)), "askPx": _trim(ask, dec), "askSz": str(rng.randint(1, 5000)),
            "bidPx": _trim(bid, dec), "bidSz": str(rng.randint(1, 5000)),
            "open24h": _trim(bid * 0.99, dec), "high24h": _trim(bid * 1.02, dec), "low24h": _trim(bid * 0.97, dec),
            "volCcy24h": f"{rng.uniform(1e4, 1e6):.4f}", "vol24h": str(rng.randint(10**6, 10**8)),
            "sodUtc0": _trim(bid * 0.995, dec), "sodUtc8": _trim(bid * 1.004, dec), "ts": str(self.ts),
        }  # fmt: skip
        return _dumps({"arg": {"channel": "tickers", "instId": inst}, "data": [data]})

    def _okx_bbo(self, inst: str, bid: float, ask: float, dec: int, seq: int) -> str:
        rng = self.rng
        data: dict[str, Any] = {
            "asks": [[_trim(ask, dec), str(rng.randint(1, 5000)), "0", str(rng.randint(1, 40))]],
            "bids": [[_trim(bid, dec), str(rng.randint(1, 5000)), "0", str(rng.randint(1, 40))]],
            "ts": str(self.ts),
            "seqId": seq,
        }
        return _dumps({"arg": {"channel": "bbo-tbt", "instId": inst}, "data": [data]})

    def _binance_spot(self, symbol: str, bid: float, ask: float) -> str:
        rng = self.rng
        return _dumps({
            "u": self.update_id, "s": symbol, "b": f"{bid:.8f}", "B": f"{rng.uniform(0, 50):.8f}",
            "a": f"{ask:.8f}", "A": f"{rng.uniform(0, 50):.8f}",
        })  # fmt: skip

    def _binance_usdm(self, symbol: str, bid: float, ask: float, dec: int) -> str:
        rng = self.rng
        book = {
            "e": "bookTicker", "u": self.update_id, "s": symbol, "b": f"{bid:.{dec}f}",
            "B": f"{rng.uniform(0, 50):.3f}", "a": f"{ask:.{dec}f}", "A": f"{rng.uniform(0, 50):.3f}",
            "T": self.ts - rng.randint(0, 3), "E": self.ts,
        }  # fmt: skip
        return _dumps({"stream": f"{symbol.lower()}@bookTicker", "data": book})


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def make_frames(n: int, seed: int) -> dict[str, list[str]]:
    """`n` frames per stream, the streams interleaved on one random walk."""
    maker = FrameMaker(seed)
    out: dict[str, list[str]] = {name: [] for name in STREAMS}
    for _ in range(n):
        for name in STREAMS:
            out[name].append(maker.next(name))
    return out


def _normalizer(name: str) -> FrameNormalizer:
    if name == "okx_tickers":
        return OkxTickerNormalizer(okx_symbol(b) for b, *_ in INSTRUMENTS)
    if name == "okx_bbo_tbt":
        return OkxBboNormalizer(okx_symbol(b) for b, *_ in INSTRUMENTS)
    return BinanceBookTickerNormalizer(binance_symbol(b) for b, *_ in INSTRUMENTS)


def _time_pass(fn: Callable[[Any, int], object], frames: list[Any]) -> int:
    perf = time.perf_counter_ns
    t0 = perf()
    for frame in frames:
        fn(frame, 0)
    return perf() - t0


def _time_ours(name: str, frames: list[Any], repeat: int) -> tuple[float, FrameNormalizer]:
    best = math.inf
    first: FrameNormalizer | None = None
    for _ in range(repeat):
        n = _normalizer(name)
        first = first or n
        best = min(best, _time_pass(n.normalize, frames))
    assert first is not None
    return len(frames) / (best / 1e9), first


# --- ccxt, without network -------------------------------------------------------------------


def _market(market_id: str, base: str, kind: str, tick: float) -> dict[str, Any]:
    swap = kind == "swap"
    return {
        "id": market_id, "symbol": f"{base}/USDT:USDT" if swap else f"{base}/USDT", "base": base, "quote": "USDT",
        "settle": "USDT" if swap else None, "baseId": base, "quoteId": "USDT", "settleId": "USDT" if swap else None,
        "type": kind, "spot": not swap, "margin": False, "swap": swap, "future": False, "option": False,
        "contract": swap, "linear": True if swap else None, "inverse": False if swap else None,
        "contractSize": 0.01 if swap else None, "active": True, "precision": {"amount": 1.0, "price": tick},
        "limits": {},
    }  # fmt: skip


class _CcxtStream:
    """One ccxt exchange plus the WebSocket Client that feeds it frames."""

    def __init__(self, exchange: Any, client: Any, symbol_of: Callable[[str], str]) -> None:
        self.exchange = exchange
        self.client = client
        self.handle: Callable[[Any], object] = client.handle_text_or_binary_message
        self.symbol_of = symbol_of  # venue symbol -> ccxt unified symbol

    def parsed(self, venue_symbol: str) -> tuple[float, float, float, float]:
        t = self.exchange.bidsasks[self.symbol_of(venue_symbol)]
        return (float(t["bid"]), float(t["ask"]), float(t["bidVolume"]), float(t["askVolume"]))


def _ccxt_streams() -> tuple[dict[str, _CcxtStream], str, str]:
    """ccxt set up for the four streams; raises ImportError when ccxt is not installed."""
    ccxt = importlib.import_module("ccxt")
    pro = importlib.import_module("ccxt.pro")
    ws_client = importlib.import_module("ccxt.async_support.base.ws.client")
    swaps = {b: f"{b}/USDT:USDT" for b, *_ in INSTRUMENTS}

    def make(cls_name: str, markets: list[dict[str, Any]], url: str) -> tuple[Any, Any]:
        exchange = getattr(pro, cls_name)({"enableRateLimit": False})
        exchange.set_markets(markets)
        client = ws_client.Client(url, exchange.handle_message, None, None, None, {})
        return exchange, client

    okx_markets = [_market(okx_symbol(b), b, "swap", tick) for b, _, tick, _ in INSTRUMENTS]
    spot_markets = [_market(binance_symbol(b), b, "spot", tick) for b, _, tick, _ in INSTRUMENTS]
    usdm_markets = [_market(binance_symbol(b), b, "swap", tick) for b, _, tick, _ in INSTRUMENTS]

    def okx_unified(s: str) -> str:
        return swaps[s.split("-", maxsplit=1)[0]]

    def bn_spot_unified(s: str) -> str:
        return f"{s.removesuffix('USDT')}/USDT"

    def bn_usdm_unified(s: str) -> str:
        return f"{s.removesuffix('USDT')}/USDT:USDT"

    streams: dict[str, _CcxtStream] = {}
    okx_url = "wss://ws.okx.com:8443/ws/v5/public"
    for name in ("okx_tickers", "okx_bbo_tbt"):
        streams[name] = _CcxtStream(*make("okx", okx_markets, okx_url), okx_unified)
    spot_url = "wss://stream.binance.com:9443/ws/btcusdt@bookTicker"
    streams["binance_spot"] = _CcxtStream(*make("binance", spot_markets, spot_url), bn_spot_unified)
    usdm_url = "wss://fstream.binance.com/public/stream?streams=btcusdt@bookTicker"
    streams["binance_usdm"] = _CcxtStream(*make("binanceusdm", usdm_markets, usdm_url), bn_usdm_unified)
    parser = getattr(ws_client.json_parser, "__name__", "json")
    return streams, str(ccxt.__version__), parser


def _agree(name: str, stream: _CcxtStream, frames: list[str]) -> bool:
    """Same bid, ask and sizes from ccxt and from our normalizer on the first SAMPLE frames."""
    ours = _normalizer(name)
    for frame in frames[:SAMPLE]:
        (q,) = ours.normalize(frame, 0)
        stream.handle(frame)
        if stream.parsed(q.symbol) != (q.bid, q.ask, q.bid_size, q.ask_size):
            return False
    return True


def _time_ccxt(stream: _CcxtStream, frames: list[str], repeat: int) -> float:
    handle = stream.handle
    best = math.inf
    perf = time.perf_counter_ns
    for _ in range(repeat):
        t0 = perf()
        for frame in frames:
            handle(frame)
        best = min(best, perf() - t0)
    return len(frames) / (best / 1e9)


def bench_feeds(frames: int = 200_000, seed: int = 1, *, ccxt_frames: int = 30_000, repeat: int = 3) -> dict[str, Any]:
    streams = make_frames(frames, seed)
    results: dict[str, dict[str, Any]] = {}
    lines = [
        f"frames          {frames:,} per stream, {len(INSTRUMENTS)} instruments, random-walk prices, best of {repeat}"
    ]
    for name in STREAMS:
        text = streams[name]
        fps, n = _time_ours(name, text, repeat)
        fps_bytes, _ = _time_ours(name, [f.encode() for f in text], repeat)
        results[name] = {
            "frames_per_s": round(fps),
            "us_per_frame": round(1e6 / fps, 3),
            "frames_per_s_bytes": round(fps_bytes),
            "quotes": n.quotes,
            "dropped": sum(n.dropped.values()),
        }
        target = TARGETS.get(name)
        mark = f"   target {target:,}: {'ok' if fps >= target else 'MISSED'}" if target else ""
        lines.append(f"{name:<15} {fps:>11,.0f} frames/s  {1e6 / fps:6.3f} us  (bytes {fps_bytes:,.0f}/s){mark}")
    targets_met = all(results[name]["frames_per_s"] >= target for name, target in TARGETS.items())

    ccxt_result: dict[str, Any] | None
    try:
        ccxt_streams, version, parser = _ccxt_streams()
    except ImportError:
        ccxt_result = None
        note = "ccxt is not installed: pip install ccxt to compare with its parsers"
        lines.append(f"ccxt            {note}")
    else:
        n_ccxt = min(frames, ccxt_frames)
        note = (
            f"ccxt {version} (JSON by {parser}) on the first {n_ccxt:,} frames of each stream: Client."
            "handle_text_or_binary_message -> exchange.handle_message, markets set by hand, no network"
        )
        lines.append(f"ccxt            {version}, JSON by {parser}, {n_ccxt:,} frames per stream, best of {repeat}")
        per_stream: dict[str, Any] = {}
        for name in STREAMS:
            stream = ccxt_streams[name]
            agree = _agree(name, stream, streams[name])
            fps = _time_ccxt(stream, streams[name][:n_ccxt], repeat)
            ratio = results[name]["frames_per_s"] / fps
            per_stream[name] = {
                "frames_per_s": round(fps),
                "us_per_frame": round(1e6 / fps, 2),
                "ratio": round(ratio, 1),
                "agree": agree,
            }
            lines.append(
                f"  {name:<13} {fps:>11,.0f} frames/s  {1e6 / fps:6.2f} us   ours x{ratio:.1f} faster"
                f"{'' if agree else '   VALUES DIFFER'}"
            )
        ccxt_result = {"version": version, "json": parser, "frames": n_ccxt, "streams": per_stream}
    return {
        "frames": frames,
        "instruments": len(INSTRUMENTS),
        "seed": seed,
        "normalizers": results,
        "targets": dict(TARGETS),
        "targets_met": targets_met,
        "ccxt": ccxt_result,
        "ccxt_note": note,
        "lines": lines,
    }
