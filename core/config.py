"""Configuration schema (docs/configuration.md): the TOML shape as pydantic models.

Unknown keys are errors everywhere (`extra="forbid"`): a misspelt risk limit must stop the
start, not silently fall back to a default. Secrets are not part of this schema: they come
from the environment only (see `engine.settings`). Defaults are documented on each
field and in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, SecretStr, field_validator, model_validator

from core.alert_policy import channel_label
from core.currency import RATE_MAX, RATE_MIN, rate_pair
from core.instruments import Instrument, Pair
from core.models import Venue

PositiveDecimal = Annotated[Decimal, Field(gt=0)]
NonNegativeDecimal = Annotated[Decimal, Field(ge=0)]

# Upper bounds of durations: far past any sane setting, well inside every integer a timestamp
# (ms since the epoch) is added to on the way to SQLite or the EA.
HOUR_S = 3600.0
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_S = 7 * 86_400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Strict):
    execution: Literal["live", "paper"] = Field(
        "paper", description="live sends real orders; paper fills against the book."
    )
    ledger: str = Field(
        "~/.local/share/quantarb/ledger.db", description="SQLite ledger file (WAL)."
    )
    reconcile_interval_s: float = Field(
        30.0, ge=1, le=HOUR_S, allow_inf_nan=False,
        description="Live: orders, fills and positions of each venue against the ledger, this often.",
    )
    write_ahead: Literal["file", "commit"] = Field(
        "file",
        description="file: an entry order's row is in <ledger>.ahead before it is sent (safe from a "
        "kill; a power loss in the next ms is found by reconciliation); commit: wait for the fsync'd commit.",
    )
    heartbeat_s: float = Field(
        10.0, ge=1, le=HOUR_S, allow_inf_nan=False,
        description="headless: a `heartbeat` log line this often (state, equity, groups, exposure, quote rates).",
    )
    memory_trim_s: float = Field(
        60.0, ge=0, le=HOUR_S, allow_inf_nan=False,
        description="glibc: give the free pages inside the heaps back to the system this often "
        "(malloc_trim); 0 turns it off.",
    )
    malloc_tuning: bool = Field(
        True,
        description="glibc: one malloc arena for every thread and a fixed 128 KiB mmap threshold, set "
        "at start (less fragmentation over weeks); false keeps glibc's defaults. MALLOC_ARENA_MAX, "
        "MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES in the environment win.",
    )


class ListenerConfig(_Strict):
    host: str = Field("127.0.0.1", description="Bind address; loopback unless the EA is remote.")
    port: int = Field(8787, ge=0, le=65535, description="0 picks a free port.")
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = Field(
        64, ge=1, le=10_000, description="Connections open at once; one more is answered 503 and closed."
    )
    request_timeout_s: float = Field(
        10.0, gt=0, le=300, allow_inf_nan=False,
        description="A request's head and body must arrive within this (408); not the time to answer.",
    )
    keep_alive_s: int = Field(5, ge=1, le=300, description="An idle connection is closed this long after an answer.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


def is_loopback_host(host: str) -> bool:
    """`localhost`, or a loopback address (127.0.0.0/8, ::1); any other name or address,
    `0.0.0.0` included, is reachable from elsewhere."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def listener_warning(listener: ListenerConfig) -> str | None:
    """Why a listener reachable from other machines without TLS is risky (the reason of the
    `listener.host` warning), or None: the EA's signed requests and the admin API's bearer
    token would cross the network in clear."""
    if is_loopback_host(listener.host) or listener.tls_cert is not None:
        return None
    return (f"{listener.host!r} is not a loopback address and listener.tls_cert/tls_key are not set: the "
            f"admin token and the EA's traffic cross the network unencrypted; set tls_cert and tls_key, or "
            f"bind 127.0.0.1 and tunnel (ssh -L)")


class _FeedConfig(_Strict):
    """Market-data lifecycle settings shared by the exchange feeds."""

    transport: Literal["ws", "rest"] = Field("ws", description="rest: poll REST tickers only.")
    silence_s: float = Field(
        20.0, gt=0, le=HOUR_S, allow_inf_nan=False, description="No frame this long: keepalive, then reconnect."
    )
    pong_timeout_s: float = Field(10.0, gt=0, le=HOUR_S, allow_inf_nan=False)
    rest_interval_s: float = Field(1.0, gt=0, le=HOUR_S, allow_inf_nan=False, description="REST poll period.")
    connect_timeout_s: float = Field(10.0, gt=0, le=HOUR_S, allow_inf_nan=False)
    backoff_initial_s: float = Field(0.5, gt=0, le=HOUR_S, allow_inf_nan=False)
    backoff_cap_s: float = Field(30.0, gt=0, le=HOUR_S, allow_inf_nan=False)

    @model_validator(mode="after")
    def _backoff_order(self) -> _FeedConfig:
        if self.backoff_cap_s < self.backoff_initial_s:
            raise ValueError("backoff_cap_s must be >= backoff_initial_s")
        return self


class OkxVenueConfig(_FeedConfig):
    ws_url: str = "wss://ws.okx.com:8443/ws/v5/public"
    rest_url: str = Field("https://www.okx.com", description="Also https://openapi.okx.com.")
    private_ws_url: str | None = Field(
        None, description="Private WebSocket (login, orders, order entry); default by demo_trading."
    )
    demo_trading: bool = Field(
        False, description="OKX demo trading: the x-simulated-trading header and the demo WebSocket host."
    )
    td_mode: Literal["cross", "isolated"] = Field("cross", description="Margin mode of swap/futures orders.")
    ws_orders: bool = Field(True, description="Orders over the private WebSocket (REST when it is down).")


class BinanceVenueConfig(_FeedConfig):
    market: Literal["spot", "usdm"] = "usdm"
    ws_url: str | None = Field(None, description="Defaults by market: spot or USD-M (routes added).")
    rest_url: str | None = Field(None, description="Defaults by market.")
    max_lifetime_s: float = Field(
        23.5 * 3600, gt=0, le=24 * HOUR_S, allow_inf_nan=False, description="Reconnect before Binance's 24 h limit."
    )
    testnet: bool = Field(False, description="Trade on Binance's testnet (its default URLs).")
    trade_rest_url: str | None = Field(None, description="Private REST base; default by market and testnet.")
    ws_api_url: str | None = Field(None, description="WebSocket API (orders, spot user data); default by market.")
    user_stream_url: str | None = Field(None, description="USD-M private stream base; default by market.")
    recv_window_ms: int = Field(5000, ge=100, le=60_000, description="Binance recvWindow of signed requests.")
    ws_orders: bool = Field(True, description="Orders over the WebSocket API (REST when it is down).")


class Mt5VenueConfig(_Strict):
    terminals: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]] = Field(
        default_factory=lambda: ["T1"],
        min_length=1,
        description="Terminal ids; the secret of each is QUANTARB_MT5_SECRET_<ID>.",
    )
    magic: int = Field(7701, ge=0, le=2**63 - 1, description="Magic number on every EA order.")
    deviation_points: int = Field(20, ge=0, le=1_000_000)
    filling: Literal["FOK", "IOC", "RETURN"] = "IOC"
    command_ttl_ms: int = Field(2000, gt=0, le=HOUR_MS, description="Commands expire unacked after this.")
    close_opposite: bool = Field(
        True,
        description="On a hedging account, a leg against an open position of ours closes (part of) it "
        "instead of opening an offsetting ticket.",
    )


    @field_validator("terminals")
    @classmethod
    def _unique_terminals(cls, terminals: list[str]) -> list[str]:
        if len(set(terminals)) != len(terminals):
            raise ValueError("terminal ids must be unique")
        return terminals


class VenuesConfig(_Strict):
    okx: OkxVenueConfig | None = None
    binance: BinanceVenueConfig | None = None
    mt5: Mt5VenueConfig | None = None

    def enabled(self) -> tuple[Venue, ...]:
        names: list[Venue] = []
        if self.mt5 is not None:
            names.append("mt5")
        if self.okx is not None:
            names.append("okx")
        if self.binance is not None:
            names.append("binance")
        return tuple(names)


class _InstrumentBase(_Strict):
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    price_scale: PositiveDecimal = Decimal(1)
    tick_size: PositiveDecimal = Decimal("0.01")
    min_notional: NonNegativeDecimal = Decimal(0)


class Mt5InstrumentConfig(_InstrumentBase):
    qty_per_lot: PositiveDecimal = Field(Decimal(1), description="Base units per MT5 lot.")
    lot_step: PositiveDecimal = Decimal("0.01")
    min_qty: NonNegativeDecimal = Decimal("0.01")
    taker_fee_bps: Annotated[float, Field(ge=0, le=1000)] = 0.0


class OkxInstrumentConfig(_InstrumentBase):
    qty_per_contract: PositiveDecimal = Field(Decimal(1), description="Base units per contract.")
    lot_step: PositiveDecimal = Decimal(1)
    min_qty: NonNegativeDecimal = Decimal(1)
    taker_fee_bps: Annotated[float, Field(ge=0, le=1000)] = 5.0
    channel: Literal["tickers", "bbo-tbt"] = "tickers"


class BinanceInstrumentConfig(_InstrumentBase):
    qty_per_contract: PositiveDecimal = Field(Decimal(1), description="Base units per unit.")
    lot_step: PositiveDecimal = Decimal("0.001")
    min_qty: NonNegativeDecimal = Decimal("0.001")
    taker_fee_bps: Annotated[float, Field(ge=0, le=1000)] = 5.0


class PairInstruments(_Strict):
    mt5: Mt5InstrumentConfig | None = None
    okx: OkxInstrumentConfig | None = None
    binance: BinanceInstrumentConfig | None = None


class PairConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,16}$")]
    instruments: PairInstruments
    enabled: bool = Field(
        True, description="false: quoted and shown, but opens no new groups (steerable at runtime)."
    )

    @model_validator(mode="after")
    def _two_venues(self) -> PairConfig:
        present = [v for v in ("mt5", "okx", "binance") if getattr(self.instruments, v)]
        if len(present) < 2:
            raise ValueError("a pair needs instruments on at least two venues")
        return self

    def to_pair(self) -> Pair:
        insts: list[Instrument] = []
        if (m := self.instruments.mt5) is not None:
            insts.append(_instrument("mt5", self.name, m, m.qty_per_lot))
        if (o := self.instruments.okx) is not None:
            insts.append(_instrument("okx", self.name, o, o.qty_per_contract))
        if (b := self.instruments.binance) is not None:
            insts.append(_instrument("binance", self.name, b, b.qty_per_contract))
        return Pair(name=self.name, instruments=tuple(insts))


def _instrument(
    venue: Venue,
    pair: str,
    cfg: Mt5InstrumentConfig | OkxInstrumentConfig | BinanceInstrumentConfig,
    qty_per_unit: Decimal,
) -> Instrument:
    return Instrument(
        venue=venue,
        symbol=cfg.symbol,
        pair=pair,
        qty_per_unit=qty_per_unit,
        tick_size=cfg.tick_size,
        lot_step=cfg.lot_step,
        min_qty=cfg.min_qty,
        taker_fee_bps=cfg.taker_fee_bps,
        price_scale=cfg.price_scale,
        min_notional=cfg.min_notional,
    )


class StrategyConfig(_Strict):
    threshold_bps: float = Field(
        8.0, ge=0, allow_inf_nan=False, description="Minimum net edge (after both fees) to trade."
    )
    max_edge_bps: float = Field(
        300.0, gt=0, allow_inf_nan=False,
        description="An edge above this is not an opportunity but a bad price: refused (edge_above_ceiling).",
    )
    max_quote_deviation_bps: float = Field(
        500.0, gt=0, allow_inf_nan=False,
        description="A quote whose mid is further than this from every other venue's fresh mid is "
        "refused (price_outlier).",
    )
    persistence_ms: int = Field(0, ge=0, le=HOUR_MS, description="Edge must hold this long before an intent.")
    cooldown_ms: int = Field(3000, ge=0, le=DAY_MS, description="Per pair and direction, after an intent.")
    max_quote_age_ms: int = Field(1500, gt=0, le=HOUR_MS, description="Older quotes never trade.")
    leg_policy: Literal["concurrent", "mt5_first", "exchange_first"] = "concurrent"
    group_deadline_ms: int = Field(5000, gt=0, le=HOUR_MS, description="A group must settle within this.")
    max_slippage_bps: float = Field(
        15.0, ge=0, le=1000, allow_inf_nan=False,
        description="Compensation limits sit at most this far through the current touch.",
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="retry_hedge attempts on the unfilled venue before unwinding."
    )
    order_timeout_ms: int = Field(
        3000, gt=0, le=HOUR_MS, description="No answer this long: the order is unknown and queried by client id."
    )

    @model_validator(mode="after")
    def _ceiling_above_threshold(self) -> StrategyConfig:
        if self.threshold_bps >= self.max_edge_bps:
            raise ValueError(f"threshold_bps: must be < max_edge_bps ({self.max_edge_bps:g})")
        return self


class RiskConfig(_Strict):
    """Limits every order is judged against, and the automatic breakers (core.risk, core.breakers).

    Notional amounts are in the quote currency (USD/USDT). Exposure limits are worst-case:
    positions plus every open order filling in full.
    """

    max_leg_notional: PositiveDecimal = Field(Decimal(5000), description="One leg's notional.")
    max_open_groups: int = Field(3, ge=1, le=1_000_000, description="Hedge groups in flight at once.")
    max_gross_exposure: PositiveDecimal = Field(
        Decimal(20000), description="Default for the per-venue and per-asset gross exposure limits."
    )
    max_venue_exposure: PositiveDecimal | None = Field(
        None, description="Gross notional per venue (default: max_gross_exposure)."
    )
    max_asset_exposure: PositiveDecimal | None = Field(
        None, description="Gross notional per asset over all venues (default: max_gross_exposure)."
    )
    min_free_balance: Decimal = Field(
        Decimal(0), ge=0, description="Free balance/margin floor per venue; below it no new intents (0: off)."
    )
    daily_loss_limit: PositiveDecimal = Field(Decimal(200), description="Realized loss today (UTC) that halts.")
    max_consecutive_failures: int = Field(
        3, ge=1, le=1_000_000, description="Failed or compensated groups in a row that pause trading."
    )
    failure_pause_s: float = Field(
        300, gt=0, le=WEEK_S, allow_inf_nan=False, description="How long that pause lasts."
    )
    venue_block_s: float = Field(
        5, gt=0, le=WEEK_S, allow_inf_nan=False, description="No quote this long: no new intents on the venue."
    )
    outlier_block_count: int = Field(
        5, ge=1, le=1_000_000,
        description="Quotes refused as price outliers in a row that block the venue (released when one agrees).",
    )
    feed_stale_halt_s: float = Field(
        30, gt=0, le=WEEK_S, allow_inf_nan=False, description="No quote this long: halt."
    )
    venue_down_halt_s: float = Field(
        30, gt=0, le=WEEK_S, allow_inf_nan=False, description="Disconnected this long: halt."
    )
    hold_timeout_s: float = Field(
        600, gt=0, le=WEEK_S, allow_inf_nan=False, description="A group open this long raises an alert and is unwound."
    )
    hold_alert_s: float = Field(
        28_800, gt=0, le=WEEK_S, allow_inf_nan=False,
        description="A hedge (an asset's legs) held this long raises an alert.",
    )
    hold_close_s: float = Field(
        86_400, gt=0, le=WEEK_S, allow_inf_nan=False,
        description="A hedge held this long gets hold_action (>= hold_alert_s).",
    )
    hold_action: Literal["close", "alert"] = Field(
        "alert", description="After hold_close_s: close the asset's legs at market on every venue, or only alert."
    )

    @model_validator(mode="after")
    def _hold_order(self) -> RiskConfig:
        if self.hold_close_s < self.hold_alert_s:
            raise ValueError(f"hold_close_s: must be >= hold_alert_s ({self.hold_alert_s:g})")
        return self


class DemoConfig(_Strict):
    """The built-in simulated world: every configured venue simulated on this machine.

    The built-in demo (no config file) always runs it; a config file opts in with
    `enabled = true` to try its pairs without keys or network.
    """

    enabled: bool = False
    seed: int = 7
    tick_ms: int = Field(50, gt=0, le=60_000, description="Mean interval between quotes per instrument.")
    dislocation_every_s: float = Field(
        3.0, gt=0, allow_inf_nan=False, description="Mean time between dislocations."
    )
    currency_book_mid: float = Field(
        1.0, ge=0.001, le=1_000_000, allow_inf_nan=False,
        description="Mid of the simulated currency books (`[money] rate_books` served by the demo).",
    )


Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class PaperConfig(_Strict):
    """How realistic (and unreliable) paper execution is. The defaults: no latency, no faults.

    Every draw is seeded (per venue), so a run replays. Faults exercise every compensation
    path: partial fills and rejects break hedges, timeouts and lost acknowledgements leave
    orders `unknown` until a query by client order id resolves them.
    """

    latency_ms_min: float = Field(0.0, ge=0, le=60_000, allow_inf_nan=False, description="Least order latency (ms).")
    latency_ms_max: float = Field(0.0, ge=0, le=60_000, allow_inf_nan=False, description="Most order latency (ms).")
    slippage_bps: float = Field(
        0.0, ge=0, le=1000, allow_inf_nan=False, description="Adverse slippage against the touch, up to this."
    )
    partial_rate: Rate = Field(0.0, description="Share of orders that fill only partly.")
    partial_min_fraction: Rate = Field(0.1, description="Least fraction a partial fill takes.")
    reject_rate: Rate = Field(0.0, description="Share of orders the venue rejects.")
    timeout_rate: Rate = Field(0.0, description="Share of orders whose answer times out.")
    lost_ack_rate: Rate = Field(0.0, description="Share of orders that execute but lose the answer.")
    seed: int = Field(11, description="Seed of the draws (combined with the venue).")
    balance: PositiveDecimal = Field(
        Decimal(100_000), description="Each paper venue's account, in the quote currency (free margin source)."
    )
    leverage: PositiveDecimal = Field(
        Decimal(10), description="Margin a paper derivatives venue holds: gross position notional / leverage."
    )
    spot_inventory: dict[Annotated[str, Field(min_length=1, max_length=32)],
                         Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="What a paper spot account (Binance spot) holds at start, base units per pair: it sells only "
                    "what it holds and pays its buys in full (no leverage).",
    )

    @model_validator(mode="after")
    def _latency_order(self) -> PaperConfig:
        if self.latency_ms_max < self.latency_ms_min:
            raise ValueError("latency_ms_max must be >= latency_ms_min")
        return self


_CCY = r"^[A-Z0-9]{2,10}$"


class MoneyConfig(_Strict):
    """How money is counted (docs/ledger.md, Money): one account currency, and the rates into it
    the operator vouches for. A currency without a rate is shown as missing, never as 1."""

    account_currency: Annotated[str, Field(pattern=_CCY)] = Field("USD", description="Equity is stated in this.")
    rates: dict[Annotated[str, Field(pattern=_CCY)], Annotated[Decimal, Field(ge=RATE_MIN, le=RATE_MAX)]] = Field(
        default_factory=dict, description='1 unit of each = this much account currency, e.g. {USDT = "0.9995"}.'
    )
    rate_books: list[str] = Field(
        default_factory=list,
        description='Currency books whose mid is a rate, "venue:symbol", e.g. ["okx:USDC-USDT", "binance:USDCUSDT"].',
    )
    rate_max_age_s: float = Field(
        300.0, gt=0, le=24 * HOUR_S, allow_inf_nan=False,
        description="A book's rate older than this is stale: the typed-in rate (if any) is used, else missing.",
    )
    rate_poll_s: float = Field(30.0, gt=0, le=HOUR_S, allow_inf_nan=False, description="Rate books read this often.")
    rate_tolerance_bps: float = Field(
        1.0, ge=0, le=100, allow_inf_nan=False,
        description="A book's rate within this many bp of the rate in force is no change: it stays in force "
                    "and nothing is journaled (0: every move of the mid is a new rate, one ledger row each).",
    )

    @field_validator("rate_books")
    @classmethod
    def _rate_books(cls, books: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, book in enumerate(books):
            venue, sep, symbol = book.partition(":")
            if not sep or venue not in ("okx", "binance", "mt5") or not symbol or len(symbol) > 64:
                raise ValueError(f"rate_books[{i}] {book[:80]!r}: not venue:symbol (venue okx, binance or mt5)")
            spot = venue != "okx" or symbol.count("-") == 1  # OKX names a swap or future by a suffix
            if not spot or rate_pair(venue, symbol) is None:  # type: ignore[arg-type]  # checked just above
                raise ValueError(f"rate_books[{i}] {book!r}: not a currency book (e.g. okx:USDC-USDT, "
                                 "binance:USDCUSDT, mt5:USDTUSD)")
            if book in seen:
                raise ValueError(f"rate_books[{i}] {book!r}: listed twice")
            seen.add(book)
        return books

    @model_validator(mode="after")
    def _rates_outlive_a_poll(self) -> MoneyConfig:
        """A book read every `rate_poll_s` that is stale sooner than that flaps between its rate
        and the typed one (or missing) at every poll: two `rate` rows a poll, figures missing."""
        if self.rate_max_age_s <= self.rate_poll_s:
            raise ValueError(f"rate_max_age_s ({self.rate_max_age_s:g}) must exceed rate_poll_s "
                             f"({self.rate_poll_s:g}): else every book is stale before its next read")
        return self

    def rate_book_keys(self) -> list[tuple[Venue, str]]:
        """The rate books as (venue, symbol), in the configured order."""
        out: list[tuple[Venue, str]] = []
        for book in self.rate_books:
            venue, _, symbol = book.partition(":")
            out.append((venue, symbol))  # type: ignore[arg-type]  # validated
        return out

# An alert URL: `scheme://` then no whitespace. Apprise judges the rest when the engine starts
# (and `config check`); the value itself is never echoed in an error: it may hold a token.
_ALERT_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://\S+")
MAX_ALERT_URL_CHARS = 2048
# A secret in memory (its repr is `**********`), shown everywhere as `channel_label` gives it:
# `config show`, `model_dump` and any log line see `tgram://***`, never the token.
AlertUrl = Annotated[SecretStr, PlainSerializer(lambda url: channel_label(url.get_secret_value()), return_type=str)]


class AlertsConfig(_Strict):
    """Where the engine's alerts go (apprise URLs) and how often (engine.alerts).

    No URL: no alert is sent. A channel that fails or hangs never holds up trading: each
    has its own thread and a bounded queue.
    """

    # A URL may hold a token: pydantic's own error text (`input_value=...`) must not show it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    urls: list[AlertUrl] = Field(
        default_factory=list, description="Apprise URLs (tgram://, discord://, slack://, mailto://, json://, ...)."
    )
    dedup_s: float = Field(
        300.0, ge=0, le=DAY_MS / 1000, allow_inf_nan=False,
        description="The same alert again within this is counted, not sent.",
    )
    max_per_minute: int = Field(
        10, ge=1, le=1000, description="Messages per 60 s; more are held back (urgent ones always go)."
    )
    pnl_levels: list[Decimal] = Field(
        default_factory=list, description="Daily realized PnL levels (quote currency) that raise an alert."
    )
    queue_size: int = Field(100, ge=1, le=100_000, description="Messages waiting per channel; more are dropped.")
    timeout_s: float = Field(
        10.0, gt=0, le=300, allow_inf_nan=False, description="Connect and read timeout of one message."
    )

    # Model validators, so that the message's `urls[1]` path is relative to this table.
    @model_validator(mode="before")
    @classmethod
    def _urls(cls, data: object) -> object:
        # Before type validation: pydantic's own errors would quote the value (a token).
        if not isinstance(data, dict) or "urls" not in data:
            return data
        value = data["urls"]
        if not isinstance(value, list | tuple):
            raise ValueError("urls: expected an array of URL strings")
        seen: set[str] = set()
        for i, url in enumerate(value):
            if not isinstance(url, str):
                raise ValueError(f"urls[{i}]: expected a URL string")
            if len(url) > MAX_ALERT_URL_CHARS or not _ALERT_URL.fullmatch(url):
                raise ValueError(f"urls[{i}]: not a URL (scheme://..., no spaces, at most "
                                 f"{MAX_ALERT_URL_CHARS} characters); the value is not shown (it may hold a token)")
            if url in seen:
                raise ValueError(f"urls[{i}]: listed twice")
            seen.add(url)
        return {**data, "urls": list(value)}

    @model_validator(mode="after")
    def _levels(self) -> AlertsConfig:
        for i, level in enumerate(self.pnl_levels):
            if not level.is_finite() or level == 0:
                raise ValueError(f"pnl_levels[{i}]: must be a finite number other than 0")
        if len(set(self.pnl_levels)) != len(self.pnl_levels):
            raise ValueError("pnl_levels: each level only once")
        return self


class QuantarbConfig(_Strict):
    engine: EngineConfig = EngineConfig()
    listener: ListenerConfig = ListenerConfig()
    venues: VenuesConfig = VenuesConfig()
    pairs: list[PairConfig] = Field(min_length=1)
    strategy: StrategyConfig = StrategyConfig()
    risk: RiskConfig = RiskConfig()
    demo: DemoConfig = DemoConfig()
    paper: PaperConfig = PaperConfig()
    money: MoneyConfig = MoneyConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("pairs")
    @classmethod
    def _unique_pairs(cls, pairs: list[PairConfig]) -> list[PairConfig]:
        names = [p.name for p in pairs]
        if len(set(names)) != len(names):
            raise ValueError("pair names must be unique")
        return pairs

    @model_validator(mode="after")
    def _venues_configured(self) -> QuantarbConfig:
        enabled = set(self.venues.enabled())
        for i, pair in enumerate(self.pairs):
            for venue in ("mt5", "okx", "binance"):
                if getattr(pair.instruments, venue) is not None and venue not in enabled:
                    raise ValueError(
                        f"pairs[{i}].instruments.{venue}: venue {venue} has no [venues.{venue}] section"
                    )
        return self

    @model_validator(mode="after")
    def _rate_books_served(self) -> QuantarbConfig:
        """A rate book is read from its venue's public REST (OKX, Binance) or the EA's ticks
        (MT5): its venue must be configured, and the EA only sends ticks of the pairs' symbols."""
        enabled = set(self.venues.enabled())
        mt5_symbols = {p.instruments.mt5.symbol for p in self.pairs if p.instruments.mt5 is not None}
        for i, (venue, symbol) in enumerate(self.money.rate_book_keys()):
            if venue not in enabled:
                raise ValueError(f"money.rate_books[{i}] {venue}:{symbol}: venue {venue} has no "
                                 f"[venues.{venue}] section")
            if venue == "mt5" and symbol not in mt5_symbols:
                raise ValueError(f"money.rate_books[{i}] mt5:{symbol}: not one of the EA's symbols (a pair's "
                                 f"instruments.mt5.symbol: {', '.join(sorted(mt5_symbols)) or 'none'})")
        return self

    def build_pairs(self) -> tuple[Pair, ...]:
        return tuple(p.to_pair() for p in self.pairs)


def demo_config() -> QuantarbConfig:
    """The built-in demo: three venues, three pairs, paper execution on simulated venues."""
    return QuantarbConfig.model_validate(DEMO_CONFIG)


DEMO_CONFIG: dict[str, object] = {
    "engine": {"execution": "paper", "ledger": "~/.local/share/quantarb/demo.db"},
    # The simulated market prices USD (MT5) and USDT (OKX, Binance) alike: one to one by
    # construction, said here rather than assumed.
    "money": {"account_currency": "USD", "rates": {"USDT": "1"}},
    "venues": {
        # 5000 points: 50 USD at a 0.01 point, about 5 bps on BTCUSD; the EA refuses a leg when
        # the market has moved further than this from the command's price.
        "mt5": {"terminals": ["DEMO"], "deviation_points": 5000},
        "okx": {},
        "binance": {"market": "usdm"},
    },
    "pairs": [
        {
            "name": "XAU",
            "instruments": {
                "mt5": {"symbol": "XAUUSD", "qty_per_lot": "100", "lot_step": "0.01", "min_qty": "0.01"},
                "okx": {"symbol": "XAUT-USDT-SWAP", "qty_per_contract": "0.001", "lot_step": "1",
                        "min_qty": "1", "tick_size": "0.1"},
                "binance": {"symbol": "PAXGUSDT", "qty_per_contract": "1", "lot_step": "0.001",
                            "min_qty": "0.001"},
            },
        },
        {
            "name": "BTC",
            "instruments": {
                "mt5": {"symbol": "BTCUSD", "qty_per_lot": "1", "lot_step": "0.01", "min_qty": "0.01"},
                "okx": {"symbol": "BTC-USDT-SWAP", "qty_per_contract": "0.01", "lot_step": "1",
                        "min_qty": "1", "tick_size": "0.1"},
                "binance": {"symbol": "BTCUSDT", "qty_per_contract": "1", "lot_step": "0.001",
                            "min_qty": "0.001", "tick_size": "0.1"},
            },
        },
        {
            "name": "ETH",
            "instruments": {
                "mt5": {"symbol": "ETHUSD", "qty_per_lot": "1", "lot_step": "0.01", "min_qty": "0.01"},
                "okx": {"symbol": "ETH-USDT-SWAP", "qty_per_contract": "0.1", "lot_step": "1",
                        "min_qty": "1"},
                "binance": {"symbol": "ETHUSDT", "qty_per_contract": "1", "lot_step": "0.001",
                            "min_qty": "0.001"},
            },
        },
    ],
    "strategy": {"threshold_bps": 8, "persistence_ms": 0, "cooldown_ms": 3000, "max_quote_age_ms": 1500},
    # Room for positions to build up across venues (each hedged group leaves one per venue).
    "risk": {"max_leg_notional": "5000", "max_open_groups": 3, "max_gross_exposure": "60000"},
    "demo": {"enabled": True},
    # Inventory for a spot leg (venues.binance.market = "spot"): a paper spot account sells only
    # what it holds, so the demo starts holding some of each asset.
    "paper": {"spot_inventory": {"XAU": "20", "BTC": "2", "ETH": "40"}},
}
