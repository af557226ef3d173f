"""A recorded session without sockets: the synthetic market's ticks as the frames each venue
sends (OKX `tickers`/`bbo-tbt`, Binance `bookTicker` on a combined stream, the EA's
`POST /mt5/tick` bodies), with the receive times a recorder would have stamped.

Tests and the replay bench write these into a recording (feeds.recording) instead of
running `quantarb record` against the loopback venues for seconds: the same seed gives the
same frames, and any length is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from core.instruments import Pair
from sim.market import SimTick, SyntheticMarket
from sim.venue_server import fmt_fixed8, fmt_trim

START_NS = 5_000_000_000  # the recorder's monotonic reading at the first step


@dataclass(frozen=True, slots=True)
class SessionFrame:
    venue: str
    feed: str
    frame: str
    recv_ns: int


class SessionFrames:
    """Frames of a synthetic session: `okx_channel` per OKX symbol, Binance USD-M or spot."""

    def __init__(self, pairs: Sequence[Pair], *, seed: int, okx_channels: Mapping[str, str] | None = None,
                 binance_market: str = "usdm", mt5_terminal: str = "DEMO", tick_ms: float = 50.0,
                 dislocation_every_s: float = 3.0) -> None:
        self.market = SyntheticMarket(pairs, seed=seed, tick_ms=tick_ms, dislocation_every_s=dislocation_every_s)
        self._okx_channels = okx_channels or {}
        self._binance_feed = f"binance-{binance_market}"
        self._spot = binance_market == "spot"
        self._mt5_feed = f"mt5:{mt5_terminal}"
        self._seq: dict[str, int] = {}
        self._update_id = 1_000_000
        self._now_ns = START_NS

    def frames(self, steps: int, dt_ms: float = 20.0) -> Iterator[SessionFrame]:
        """`steps` market steps of `dt_ms`; the ticks of one step arrive 1 us apart."""
        step_ns = round(dt_ms * 1_000_000)
        for _ in range(steps):
            self._now_ns += step_ns
            mt5: list[SimTick] = []
            recv_ns = self._now_ns
            for tick in self.market.advance(dt_ms / 1000.0):
                if tick.venue == "mt5":
                    mt5.append(tick)
                    continue
                recv_ns += 1_000
                if tick.venue == "okx":
                    yield SessionFrame("okx", "okx", self._okx(tick), recv_ns)
                else:
                    yield SessionFrame("binance", self._binance_feed, self._binance(tick), recv_ns)
            if mt5:  # the EA posts a step's ticks as one batch
                body = {"ticks": [{"symbol": t.symbol, "bid": t.bid, "ask": t.ask, "time_msc": t.ts_ms} for t in mt5]}
                yield SessionFrame("mt5", self._mt5_feed, json.dumps(body, separators=(",", ":")), recv_ns + 1_000)

    def frame_of(self, tick: SimTick, recv_ns: int) -> SessionFrame:
        """One tick as the frame its venue sends (an MT5 tick as a one-tick EA body): for a
        run that records the ticks it trades on as they come."""
        if tick.venue == "mt5":
            body = {"ticks": [{"symbol": tick.symbol, "bid": tick.bid, "ask": tick.ask, "time_msc": tick.ts_ms}]}
            return SessionFrame("mt5", self._mt5_feed, json.dumps(body, separators=(",", ":")), recv_ns)
        if tick.venue == "okx":
            return SessionFrame("okx", "okx", self._okx(tick), recv_ns)
        return SessionFrame("binance", self._binance_feed, self._binance(tick), recv_ns)

    def _okx(self, tick: SimTick) -> str:
        if self._okx_channels.get(tick.symbol, "tickers") == "bbo-tbt":
            seq = self._seq[tick.symbol] = self._seq.get(tick.symbol, 100) + 1
            data: dict[str, object] = {
                "asks": [[fmt_trim(tick.ask), fmt_trim(tick.ask_size), "0", "1"]],
                "bids": [[fmt_trim(tick.bid), fmt_trim(tick.bid_size), "0", "1"]],
                "ts": str(tick.ts_ms), "seqId": seq,
            }
            return _dumps({"arg": {"channel": "bbo-tbt", "instId": tick.symbol}, "data": [data]})
        fields = {
            "instType": "SWAP", "instId": tick.symbol, "last": fmt_trim(tick.bid), "lastSz": "1",
            "askPx": fmt_trim(tick.ask), "askSz": fmt_trim(tick.ask_size),
            "bidPx": fmt_trim(tick.bid), "bidSz": fmt_trim(tick.bid_size), "ts": str(tick.ts_ms),
        }  # fmt: skip
        return _dumps({"arg": {"channel": "tickers", "instId": tick.symbol}, "data": [fields]})

    def _binance(self, tick: SimTick) -> str:
        self._update_id += 1
        book: dict[str, object] = {
            "u": self._update_id, "s": tick.symbol, "b": fmt_fixed8(tick.bid), "B": fmt_fixed8(tick.bid_size),
            "a": fmt_fixed8(tick.ask), "A": fmt_fixed8(tick.ask_size),
        }  # fmt: skip
        if self._spot:
            return _dumps(book)
        book = {"e": "bookTicker", **book, "T": tick.ts_ms, "E": tick.ts_ms}
        return _dumps({"stream": f"{tick.symbol.lower()}@bookTicker", "data": book})


def _dumps(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"))


__all__ = ["START_NS", "SessionFrame", "SessionFrames"]
