"""What a rehearsal world tells the engine: a live-mode config pointing at the simulators, and
the per-run secrets.

`quantarb sim world` (sim/world_cli.py) starts the simulators, then writes these two files:
the config (TOML, no secrets) and `<config>.env` (`NAME=value` lines, mode 0600 from its first
byte) that `set -a; . <config>.env` or a systemd EnvironmentFile loads. The pairs are the
demo's (the ones every simulator prices, `sim.epoch_market.world_pairs`), with the Binance
instruments' filters taken from the simulated market's own listing so the engine's
instrument check agrees with the venue.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from core.config import DEMO_CONFIG, QuantarbConfig
from sim.binance_exchange import DEFAULT_SYMBOLS

BinanceMarket = Literal["spot", "usdm"]
DEFAULT_TERMINAL = "T1"

# Small, tight limits: a rehearsal proves the wiring, it does not need size.
REHEARSAL_RISK: dict[str, object] = {
    "max_leg_notional": "3000",
    "max_open_groups": 2,
    "max_gross_exposure": "15000",
    "daily_loss_limit": "50",
    "max_consecutive_failures": 3,
    "failure_pause_s": 60,
    "venue_block_s": 5,
    "feed_stale_halt_s": 30,
    "venue_down_halt_s": 30,
    "hold_timeout_s": 120,
}
REHEARSAL_STRATEGY: dict[str, object] = {
    "threshold_bps": 8,
    "persistence_ms": 0,
    "cooldown_ms": 3000,
    "max_quote_age_ms": 1500,
}


@dataclass(frozen=True, repr=False)
class WorldSecrets:
    """Fresh credentials for one world run; the repr shows none of them."""

    okx_api_key: str
    okx_api_secret: str
    okx_api_passphrase: str
    binance_api_key: str
    binance_api_secret: str
    mt5_secret: str
    admin_token: str
    terminal: str = DEFAULT_TERMINAL

    @classmethod
    def generate(cls, terminal: str = DEFAULT_TERMINAL) -> WorldSecrets:
        """256 random bits each, URL-safe (no character a shell or an env file must quote), and
        not starting with `-` (which a command line would take for an option)."""
        def fresh() -> str:
            while (token := secrets.token_urlsafe(32)).startswith("-"):
                pass
            return token

        return cls(fresh(), fresh(), fresh(), fresh(), fresh(), fresh(), fresh(), terminal)

    def env(self) -> dict[str, str]:
        """The engine's environment variables (engine/settings.py SECRET_ENV_VARS) -> value."""
        return {
            "QUANTARB_OKX_API_KEY": self.okx_api_key,
            "QUANTARB_OKX_API_SECRET": self.okx_api_secret,
            "QUANTARB_OKX_API_PASSPHRASE": self.okx_api_passphrase,
            "QUANTARB_BINANCE_API_KEY": self.binance_api_key,
            "QUANTARB_BINANCE_API_SECRET": self.binance_api_secret,
            "QUANTARB_ADMIN_TOKEN": self.admin_token,
            f"QUANTARB_MT5_SECRET_{self.terminal}": self.mt5_secret,
        }

    def __repr__(self) -> str:
        return f"WorldSecrets(terminal={self.terminal!r}, ***)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class WorldEndpoints:
    """Where the world's parts answer (http://HOST:PORT bases, and the listener port the EA calls)."""

    okx: str
    binance_spot: str
    binance_usdm: str
    listener_host: str
    listener_port: int

    def binance(self, market: BinanceMarket) -> str:
        return self.binance_spot if market == "spot" else self.binance_usdm

    @property
    def listener_url(self) -> str:
        return f"http://{self.listener_host}:{self.listener_port}"


def _ws(http_base: str) -> str:
    return "ws" + http_base.removeprefix("http")


def _binance_instrument(demo: Mapping[str, Any], market: BinanceMarket) -> dict[str, Any]:
    """The demo's Binance instrument with the simulated market's filters for its symbol."""
    listed = {s.symbol: s for s in DEFAULT_SYMBOLS[market]}
    symbol = str(demo["symbol"])
    spec = listed.get(symbol)
    if spec is None:
        raise ValueError(f"the simulated Binance {market} market does not list {symbol}")
    return {
        **demo,
        "tick_size": str(spec.tick_size),
        "lot_step": str(spec.step_size),
        "min_qty": str(spec.min_qty),
        "min_notional": str(spec.min_notional),
    }


def world_config(
    endpoints: WorldEndpoints,
    *,
    ledger: Path,
    binance_market: BinanceMarket = "usdm",
    terminal: str = DEFAULT_TERMINAL,
) -> dict[str, Any]:
    """The live-mode config of a world, as TOML-ready data (validated: a bad one raises)."""
    okx, binance = endpoints.okx, endpoints.binance(binance_market)
    pairs: list[dict[str, Any]] = []
    demo_pairs: Sequence[Mapping[str, Any]] = DEMO_CONFIG["pairs"]  # type: ignore[assignment]
    for pair in demo_pairs:
        instruments = dict(pair["instruments"])
        instruments["binance"] = _binance_instrument(instruments["binance"], binance_market)
        pairs.append({"name": pair["name"], "instruments": instruments})
    data: dict[str, Any] = {
        "engine": {"execution": "live", "ledger": str(ledger), "reconcile_interval_s": 10.0},
        "listener": {"host": endpoints.listener_host, "port": endpoints.listener_port},
        "venues": {
            "mt5": {"terminals": [terminal]},
            "okx": {
                "rest_url": okx,
                "ws_url": f"{_ws(okx)}/ws/v5/public",
                "private_ws_url": f"{_ws(okx)}/ws/v5/private",
                "demo_trading": False,
            },
            "binance": {
                "market": binance_market,
                "rest_url": binance,
                "ws_url": _ws(binance),
                "trade_rest_url": binance,
                "ws_api_url": _ws(binance) + ("/ws-api/v3" if binance_market == "spot" else "/ws-fapi/v1"),
                **({"user_stream_url": f"{_ws(binance)}/private"} if binance_market == "usdm" else {}),
            },
        },
        "pairs": pairs,
        "strategy": dict(REHEARSAL_STRATEGY),
        "risk": dict(REHEARSAL_RISK),
    }
    QuantarbConfig.model_validate(data)
    return data


# ------------------------------------------------------------------ TOML


def to_toml(data: Mapping[str, Any], header: str = "") -> str:
    """Tables, arrays of tables, strings, numbers, booleans and lists of scalars: what a world
    config holds (the standard library reads TOML but does not write it)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    body: list[str] = []
    _table(data, (), body)
    while body and not body[0]:
        del body[0]
    if lines and body:
        lines.append("")
    return "\n".join(lines + body) + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(data: Mapping[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    for key, value in data.items():
        if not _is_table(value) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in data.items():
        path = (*prefix, key)
        if _is_table(value):
            scalars = any(not _is_table(v) and not _is_table_array(v) for v in value.values())
            if scalars or not value:
                lines.extend(["", f"[{'.'.join(_key(k) for k in path)}]"])
            _table(value, path, lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{'.'.join(_key(k) for k in path)}]]"])
                _table(item, path, lines)


def _key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _string(key)


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped):
        raise ValueError("control characters are not written to a world config")
    return f'"{escaped}"'


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return _string(str(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


# ------------------------------------------------------------------ files


def env_file_text(values: Mapping[str, str]) -> str:
    """`NAME=value` lines (values are URL-safe tokens: nothing to quote)."""
    for name, value in values.items():
        if not name.isidentifier() or not value or any(c.isspace() or c in "\"'$`\\#" for c in value):
            raise ValueError(f"{name}: not a value an env file carries unquoted")
    return "".join(f"{name}={value}\n" for name, value in values.items())


def write_file(path: Path, text: str, *, mode: int) -> None:
    """Write `text` to `path` atomically with `mode` from the first byte: a private temp file
    in the same folder (created with that mode), synced, then renamed over `path`."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = [
    "DEFAULT_TERMINAL",
    "REHEARSAL_RISK",
    "REHEARSAL_STRATEGY",
    "WorldEndpoints",
    "WorldSecrets",
    "env_file_text",
    "to_toml",
    "world_config",
    "write_file",
]
