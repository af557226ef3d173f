"""Market-data sources built from a config: one place that knows which feed serves what.

Used by the runtime, the recorder and the replay, so all three see the same feed names,
symbols, channels and timing (the demo's servers come from `engine.demo`).
"""

from __future__ import annotations

from typing import Protocol

from core.clock import Clock
from core.config import BinanceVenueConfig, OkxVenueConfig, QuantarbConfig
from engine.rates import RateSource
from feeds.base import FeedTiming, QuoteSink, WsFeed
from feeds.binance import DEFAULT_REST as BINANCE_DEFAULT_REST
from feeds.binance import BinanceFeed
from feeds.okx import OkxFeed

PerpetualSource = tuple[str, str, str]  # venue, symbol, public REST base URL


class VenueEndpoints(Protocol):
    """Where the exchange feeds connect instead of the configured URLs (the demo's servers)."""

    @property
    def okx_ws_url(self) -> str: ...
    @property
    def okx_rest_url(self) -> str: ...
    @property
    def binance_ws_url(self) -> str: ...
    @property
    def binance_rest_url(self) -> str: ...


def feed_timing(cfg: OkxVenueConfig | BinanceVenueConfig) -> FeedTiming:
    return FeedTiming(
        silence_s=cfg.silence_s,
        pong_timeout_s=cfg.pong_timeout_s,
        rest_interval_s=cfg.rest_interval_s,
        connect_timeout_s=cfg.connect_timeout_s,
        backoff_initial_s=cfg.backoff_initial_s,
        backoff_cap_s=cfg.backoff_cap_s,
    )


def build_feeds(
    config: QuantarbConfig, sink: QuoteSink, clock: Clock, world: VenueEndpoints | None = None
) -> list[WsFeed]:
    """The exchange feeds of `config`: on the real venues, or on a started world's servers."""
    feeds: list[WsFeed] = []
    okx = config.venues.okx
    okx_insts = [
        (p.instruments.okx.symbol, p.instruments.okx.channel)
        for p in config.pairs
        if p.instruments.okx is not None
    ]
    if okx is not None and okx_insts:
        feeds.append(
            OkxFeed(
                ws_url=world.okx_ws_url if world else okx.ws_url,
                rest_url=world.okx_rest_url if world else okx.rest_url,
                instruments=okx_insts,
                sink=sink,
                clock=clock,
                transport=okx.transport,
                timing=feed_timing(okx),
            )
        )
    binance = config.venues.binance
    bn_symbols = [p.instruments.binance.symbol for p in config.pairs if p.instruments.binance is not None]
    if binance is not None and bn_symbols:
        feeds.append(
            BinanceFeed(
                market=binance.market,
                symbols=bn_symbols,
                sink=sink,
                clock=clock,
                ws_url=world.binance_ws_url if world else binance.ws_url,
                rest_url=world.binance_rest_url if world else binance.rest_url,
                transport=binance.transport,
                timing=feed_timing(binance),
                max_lifetime_s=binance.max_lifetime_s,
            )
        )
    return feeds


def perpetual_sources(feeds: list[WsFeed]) -> list[PerpetualSource]:
    """The perpetuals among the feeds' instruments, with the REST base their funding is read
    from: OKX `-SWAP` instruments and every symbol of a Binance USD-M feed."""
    out: list[PerpetualSource] = []
    for feed in feeds:
        if isinstance(feed, OkxFeed):
            out += [("okx", symbol, feed.rest_url) for symbol, _ in feed.instruments if symbol.endswith("-SWAP")]
        elif isinstance(feed, BinanceFeed) and feed.market == "usdm":
            out += [("binance", symbol, feed.rest_url) for symbol in feed.symbols]
    return out


def rate_sources(config: QuantarbConfig, world: VenueEndpoints | None = None) -> list[RateSource]:
    """`[money] rate_books` with where each is read: the venue's public REST (a started world's
    servers in a demo or sim), or the EA's ticks for an MT5 book."""
    out: list[RateSource] = []
    okx, binance = config.venues.okx, config.venues.binance
    for venue, symbol in config.money.rate_book_keys():
        if venue == "okx" and okx is not None:
            out.append(RateSource("okx", symbol, world.okx_rest_url if world else okx.rest_url))
        elif venue == "binance" and binance is not None:
            url = world.binance_rest_url if world else binance.rest_url or BINANCE_DEFAULT_REST[binance.market]
            out.append(RateSource("binance", symbol, url, binance.market))
        elif venue == "mt5":
            out.append(RateSource("mt5", symbol))
    return out
