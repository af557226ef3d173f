"""`quantarb doctor` on one exchange: reachable, clock, instruments, key, permissions, balance.

Each venue is asked through the gateway's own REST client at the configured trading URL, so
what passes here is what the engine will use. In order, each step only when the one before
it answered:

- reachable: the public server time (`/api/v5/public/time`, `/api/v3/time`, `/fapi/v1/time`);
- clock: the venue's clock against this machine's, halfway through that round trip; more than
  `SKEW_LIMIT_MS` apart fails (the gateways correct for an offset, but a drifting machine
  clock is a machine to fix before trading);
- instruments: the venue's definitions against every configured instrument (tick, lot step,
  minimum, contract size, and on Binance the trading status and minimum notional);
- api key: a signed balance read; a refusal names the venue's code (OKX 50111 key, 50113
  signature, 50105 passphrase, 50101 demo/live; Binance -2014 key format, -2015 key, IP or
  permission, -1022 signature) and which secret to look at, never the key or the secret;
- permissions: OKX `account/config` (`perm`, and the account mode the orders need), Binance
  `apiRestrictions`; a key without trading fails, a key that can withdraw is a loud warning;
- balance: what the account holds, listed.

Every request is bounded by `timeout_s` (one attempt, no retries): a dead venue fails within
seconds. Without keys (paper execution needs none) only the public steps run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from typing import TypeVar

import httpx

from core.clock import Clock
from core.config import BinanceVenueConfig, OkxVenueConfig
from core.instruments import Instrument
from engine.doctor_checks import Check, failed, passed, warned
from engine.live_venues import binance_endpoints
from engine.settings import SECRET_ENV_VARS, Secrets
from exchanges.binance.account import api_restrictions, restrictions_url
from exchanges.binance.auth import Credentials
from exchanges.binance.gateway import BinanceGateway
from exchanges.binance.parsers import ParseError
from exchanges.binance.rest import BinanceRest
from exchanges.okx import endpoints as okx_ep
from exchanges.okx.account import ACCOUNT_LEVELS, CONFIG, account_config
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import ConfigMismatch, OkxGateway, OkxGatewayConfig
from exchanges.okx.parsers import OkxParseError
from exchanges.venue import VenueError

SKEW_LIMIT_MS = 1000
T = TypeVar("T")

# What a refusal of the signed read most likely means, by the venue's code.
OKX_HINTS = {
    "50101": "the key is for the other environment: check venues.okx.demo_trading",
    "50102": "the request's timestamp was refused: check this machine's clock",
    "50103": "check QUANTARB_OKX_API_KEY",
    "50104": "check QUANTARB_OKX_API_PASSPHRASE",
    "50105": "the passphrase is wrong: check QUANTARB_OKX_API_PASSPHRASE",
    "50110": "this machine's IP address is not on the key's allow-list",
    "50111": "the venue does not know this key: check QUANTARB_OKX_API_KEY",
    "50113": "the signature is wrong: check QUANTARB_OKX_API_SECRET",
    "50120": "the key lacks the permission for this request",
}
BINANCE_HINTS = {
    "-1021": "the request's timestamp was refused: check this machine's clock",
    "-1022": "the signature is wrong: check QUANTARB_BINANCE_API_SECRET",
    "-2014": "the key is malformed: check QUANTARB_BINANCE_API_KEY",
    "-2015": "the venue refuses this key, this IP address or this request: check QUANTARB_BINANCE_API_KEY, "
             "the key's IP allow-list and its permissions",
}

_ERRORS = (VenueError, OkxParseError, ParseError, ConfigMismatch, KeyError, ValueError, TimeoutError,
           httpx.HTTPError, OSError)


class _Step:
    """Runs one bounded request and says why it failed (never a secret: the gateways' errors
    hold codes and the venue's messages only)."""

    def __init__(self, venue: str, timeout_s: float) -> None:
        self.venue = venue
        self.timeout_s = timeout_s

    async def run(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self.timeout_s)

    def why(self, exc: BaseException, hints: dict[str, str] | None = None) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout_s:g} s"
        if isinstance(exc, VenueError):
            hint = (hints or {}).get(exc.code)
            text = f"{exc.code} {exc.message}".strip()
            return f"{text} ({hint})" if hint else text
        if isinstance(exc, KeyError) and exc.args:
            return str(exc.args[0])
        return str(exc) or type(exc).__name__


def _clock_check(venue: str, off: int) -> Check:
    if abs(off) <= SKEW_LIMIT_MS:
        return passed("clock", venue, f"{off:+d} ms from this machine's clock (limit ±{SKEW_LIMIT_MS} ms)")
    way = "ahead of" if off > 0 else "behind"
    return failed("clock", venue, f"the venue's clock is {abs(off)} ms {way} this machine's (limit "
                                  f"±{SKEW_LIMIT_MS} ms): synchronise this machine's clock (NTP: chrony, "
                                  f"systemd-timesyncd)")


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _missing(secrets: Secrets, attrs: Sequence[str]) -> list[str]:
    return [SECRET_ENV_VARS[a] for a in attrs if getattr(secrets, a) is None]


def _no_keys(venue: str, missing: list[str], attrs: Sequence[str], live: bool) -> Check | None:
    """A check for absent keys, or None when every key is set."""
    if not missing:
        return None
    if len(missing) == len(attrs) and not live:
        return passed("api key", venue, "no key set (paper execution needs none): key, permissions and balance "
                                        "not checked")
    return failed("api key", venue, f"not set: {', '.join(missing)}")


# ------------------------------------------------------------------------------ OKX


async def okx_checks(cfg: OkxVenueConfig, instruments: Sequence[Instrument], secrets: Secrets, clock: Clock,
                     *, live: bool, timeout_s: float) -> list[Check]:
    venue = "okx"
    step = _Step(venue, timeout_s)
    attrs = ("okx_api_key", "okx_api_secret", "okx_api_passphrase")
    key_check = _no_keys(venue, _missing(secrets, attrs), attrs, live)
    creds: OkxCredentials | None = None
    if key_check is None:
        try:
            creds = OkxCredentials(*(getattr(secrets, a).get_secret_value() for a in attrs))
        except ValueError as exc:
            key_check = failed("api key", venue, str(exc))
    gateway = OkxGateway(  # REST only: the private stream is not opened
        creds or OkxCredentials("public", "public", "public"),  # public requests are not signed
        clock,
        OkxGatewayConfig(rest_url=cfg.rest_url, demo=cfg.demo_trading, td_mode=cfg.td_mode,
                         request_timeout_s=timeout_s, read_retries=0, rate_limit_retries=0, stream=False),
    )
    checks: list[Check] = []
    try:
        started = time.monotonic()
        try:
            await step.run(gateway.rest.sync_time())
        except _ERRORS as exc:
            return [failed("reachable", venue, f"{cfg.rest_url}: {step.why(exc)}")]
        rtt = (time.monotonic() - started) * 1000
        checks.append(passed("reachable", venue, f"{cfg.rest_url} answered in {rtt:.0f} ms"))
        checks.append(_clock_check(venue, gateway.rest.offset.offset_ms))
        checks.append(await _okx_instruments(gateway, instruments, step))
        if creds is None:
            checks.append(key_check or failed("api key", venue, "not set"))
            return checks
        try:
            balance = await step.run(gateway.balance())
        except _ERRORS as exc:
            checks.append(failed("api key", venue, f"a signed request was refused: {step.why(exc, OKX_HINTS)}"))
            return checks
        checks.append(passed("api key", venue, "a signed request was accepted"))
        checks.extend(await _okx_permissions(gateway, instruments, step))
        held = ", ".join(f"{ccy} {_amount(amount)} (available {_amount(balance.available.get(ccy, Decimal(0)))})"
                         for ccy, amount in sorted(balance.cash.items()) if amount)
        checks.append(passed("balance", venue, f"total equity {_amount(balance.total_equity)} USD"
                                               + (f"; {held}" if held else "; no currency held")))
        return checks
    finally:
        await gateway.rest.aclose()


async def _okx_instruments(gateway: OkxGateway, instruments: Sequence[Instrument], step: _Step) -> Check:
    mine = [i for i in instruments if i.venue == "okx"]
    if not mine:
        return passed("instruments", "okx", "no pair trades here")
    try:
        await step.run(gateway.load_specs(i.symbol for i in mine))
        gateway.verify_config(mine)
    except _ERRORS as exc:
        return failed("instruments", "okx", step.why(exc))
    return passed("instruments", "okx", f"the config matches the venue: {', '.join(i.symbol for i in mine)}")


async def _okx_permissions(gateway: OkxGateway, instruments: Sequence[Instrument], step: _Step) -> list[Check]:
    venue = "okx"
    try:
        account = await step.run(account_config(gateway.rest))
    except _ERRORS as exc:
        return [failed("permissions", venue, f"GET {CONFIG}: {step.why(exc, OKX_HINTS)}")]
    perm = ",".join(sorted(account.perms))
    out: list[Check] = []
    if not account.can_trade:
        out.append(failed("permissions", venue, f"the key's permissions are {perm}: it cannot trade; give it "
                                                "the Trade permission"))
    elif account.can_withdraw:
        out.append(warned("permissions", venue, f"the key's permissions are {perm}: THIS KEY CAN WITHDRAW. A "
                                                "trading key needs read and trade only: create one without "
                                                "withdrawal"))
    else:
        out.append(passed("permissions", venue, f"{perm} (no withdrawal)"))
    derivatives = [i.symbol for i in instruments
                   if i.venue == "okx" and okx_ep.inst_type_of(i.symbol) in ("SWAP", "FUTURES")]
    level = ACCOUNT_LEVELS[account.account_level]
    if derivatives and not account.derivatives:
        out.append(failed("account mode", venue, f"the account is in {level} mode (acctLv 1), which cannot "
                                                 f"trade {', '.join(derivatives)}: switch it to a margin mode"))
    elif derivatives and account.position_mode != "net_mode":
        out.append(failed("account mode", venue, f"position mode {account.position_mode}: quantarb's orders "
                                                 f"carry no posSide, which OKX requires of swaps and futures in "
                                                 f"long/short mode; switch the account to net mode"))
    else:
        out.append(passed("account mode", venue, f"{level} (acctLv {account.account_level}), "
                                                 f"{account.position_mode}"))
    return out


# ------------------------------------------------------------------------------ Binance


async def binance_checks(cfg: BinanceVenueConfig, instruments: Sequence[Instrument], secrets: Secrets,
                         clock: Clock, *, live: bool, timeout_s: float) -> list[Check]:
    venue = "binance"
    step = _Step(venue, timeout_s)
    attrs = ("binance_api_key", "binance_api_secret")
    key_check = _no_keys(venue, _missing(secrets, attrs), attrs, live)
    creds: Credentials | None = None
    if key_check is None:
        try:
            creds = Credentials(*(getattr(secrets, a).get_secret_value() for a in attrs))
        except ValueError as exc:
            key_check = failed("api key", venue, str(exc))
    endpoints = binance_endpoints(cfg)  # the engine's own: the trading REST base is what is checked
    signing = creds or Credentials("public", "public")  # public requests are not signed
    rest = BinanceRest(endpoints, signing, clock, recv_window_ms=cfg.recv_window_ms, timeout_s=timeout_s)
    gateway = BinanceGateway(endpoints, signing, clock, rest=rest)
    url = endpoints.rest_url
    checks: list[Check] = []
    try:
        started = time.monotonic()
        try:
            await step.run(rest.sync_time())
        except _ERRORS as exc:
            return [failed("reachable", venue, f"{url}: {step.why(exc)}")]
        rtt = (time.monotonic() - started) * 1000
        checks.append(passed("reachable", venue, f"{url} ({cfg.market}) answered in {rtt:.0f} ms"))
        checks.append(_clock_check(venue, rest.offset.offset_ms))
        checks.append(await _binance_instruments(gateway, instruments, step))
        if creds is None:
            checks.append(key_check or failed("api key", venue, "not set"))
            return checks
        try:
            balances = await step.run(gateway.balances())
        except _ERRORS as exc:
            checks.append(failed("api key", venue,
                                 f"a signed request was refused: {step.why(exc, BINANCE_HINTS)}"))
            return checks
        checks.append(passed("api key", venue, "a signed request was accepted"))
        checks.append(await _binance_permissions(rest, creds, clock, cfg, step))
        held = ", ".join(f"{b.asset} {_amount(b.free + b.locked)} (free {_amount(b.free)})"
                         for _, b in sorted(balances.items()) if b.free or b.locked)
        checks.append(passed("balance", venue, held or "no asset held"))
        return checks
    finally:
        await gateway.close()


async def _binance_instruments(gateway: BinanceGateway, instruments: Sequence[Instrument], step: _Step) -> Check:
    mine = [i for i in instruments if i.venue == "binance"]
    if not mine:
        return passed("instruments", "binance", "no pair trades here")
    try:
        await step.run(gateway.load_specs())
    except _ERRORS as exc:
        return failed("instruments", "binance", step.why(exc))
    problems = gateway.check_instruments(mine)
    if problems:
        return failed("instruments", "binance", "; ".join(problems))
    return passed("instruments", "binance", f"the config matches the venue: {', '.join(i.symbol for i in mine)}")


async def _binance_permissions(rest: BinanceRest, creds: Credentials, clock: Clock, cfg: BinanceVenueConfig,
                               step: _Step) -> Check:
    venue = "binance"
    where = restrictions_url(rest.endpoints, is_testnet=cfg.testnet)
    if where is None:
        return passed("permissions", venue, "not checked: Binance's testnets serve no /sapi endpoints")
    try:
        found = await step.run(api_restrictions(rest, creds, clock, where, timeout_s=step.timeout_s))
    except _ERRORS as exc:
        return failed("permissions", venue, f"{where} apiRestrictions: {step.why(exc, BINANCE_HINTS)}")
    trading = "enableSpotAndMarginTrading" if cfg.market == "spot" else "enableFutures"
    if not found.can_trade(cfg.market):
        return failed("permissions", venue, f"{trading} is off: the key cannot trade on {cfg.market}; enable it "
                                            "on the key")
    if found.withdrawals:
        return warned("permissions", venue, "enableWithdrawals is on: THIS KEY CAN WITHDRAW. A trading key needs "
                                            "reading and trading only: create one without withdrawal")
    ip = "IP-restricted" if found.ip_restricted else "not IP-restricted"
    return passed("permissions", venue, f"{trading} on, withdrawals off, {ip}")


__all__ = ["BINANCE_HINTS", "OKX_HINTS", "SKEW_LIMIT_MS", "binance_checks", "okx_checks"]
