"""`quantarb doctor`: is this machine ready to trade this configuration? (docs/operator.md)

Everything a start needs, checked from outside the engine, each finding a `Check`:

- config: every secret the config needs is set (`engine.readiness`), and the loader's warnings;
- okx, binance: reachable, clock, instruments, key, permissions, balance (`engine.doctor_venues`);
- mt5, per terminal: its secret is set; then, from the running engine's `/api/status`
  (`mt5_terminals`), when its EA was last seen, its account's margin mode and whether
  AutoTrading is on. Those three need the engine: without one answering, the `ea` check
  fails and says so (the EA talks only to a running engine; nothing else can vouch for it);
- listener: the configured address can be bound, or a running quantarb holds it; the TLS
  certificate and key load; a bind off loopback without TLS is a warning;
- ledger: its directory is writable, the file (when it exists) passes `ledger check`
  (quick_check and the invariants), and whether a running engine holds it (not a failure).

A simulated venue (the built-in demo, `[demo] enabled`) has nothing to reach: one passing
`simulated` check says so. Nothing here prints or returns a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.clock import Clock, RealClock
from core.config import ListenerConfig, is_loopback_host, listener_warning
from engine.doctor_checks import Check, failed, passed, warned
from engine.doctor_venues import binance_checks, okx_checks
from engine.readiness import secret_needs, start_problems
from engine.settings import FILE_SUFFIX, LoadedConfig, mt5_secret_env_var
from ledger import queries
from ledger.errors import LedgerError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the lock is not probed
    fcntl = None  # type: ignore[assignment]

EA_STALE_MS = 10_000  # an EA polls every few hundred ms and reports its account every few seconds
DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class EngineProbe:
    """What asking the running engine gave: its `/api/status` document, or why there is none."""

    url: str | None
    status: Mapping[str, Any] | None
    problem: str = ""


async def run_doctor(loaded: LoadedConfig, probe: EngineProbe, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                     clock: Clock | None = None, ledger_path: str | None = None) -> list[Check]:
    """Every check, in the order they are shown: config, okx, binance, mt5, listener, ledger."""
    clk = clock or RealClock()
    cfg = loaded.config
    simulated = loaded.is_demo or cfg.demo.enabled
    live = cfg.engine.execution == "live" and not simulated
    instruments = [i for pair in cfg.build_pairs() for i in pair.instruments]
    checks = config_checks(loaded)
    venue_runs = []
    if cfg.venues.okx is not None:
        venue_runs.append(_simulated("okx") if simulated else
                          okx_checks(cfg.venues.okx, instruments, loaded.secrets, clk, live=live,
                                     timeout_s=timeout_s))
    if cfg.venues.binance is not None:
        venue_runs.append(_simulated("binance") if simulated else
                          binance_checks(cfg.venues.binance, instruments, loaded.secrets, clk, live=live,
                                         timeout_s=timeout_s))
    for found in await asyncio.gather(*venue_runs):
        checks.extend(found)
    checks.extend(mt5_checks(loaded, probe))
    checks.extend(listener_checks(cfg.listener, probe))
    checks.extend(await ledger_checks(ledger_path or cfg.engine.ledger))
    return checks


async def _simulated(venue: str) -> list[Check]:
    return [passed("simulated", venue, "the demo simulates this venue in process: nothing to reach")]


# ------------------------------------------------------------------------------ config


def config_checks(loaded: LoadedConfig) -> list[Check]:
    needs = [n for n in secret_needs(loaded) if n.required]
    problems = start_problems(loaded)
    out = [failed("secrets", None, "; ".join(problems)) if problems else
           passed("secrets", None, f"every required secret is set: {', '.join(n.variable for n in needs)}"
                  if needs else "this configuration requires no secret")]
    listener = listener_warning(loaded.config.listener)
    for warning in loaded.warnings:
        if listener is None or not warning.endswith(listener):  # that one is the listener's check
            out.append(warned("config", None, warning))
    return out


# ------------------------------------------------------------------------------ MT5


def mt5_checks(loaded: LoadedConfig, probe: EngineProbe) -> list[Check]:
    venue = loaded.config.venues.mt5
    if venue is None:
        return []
    simulated = loaded.is_demo or loaded.config.demo.enabled
    status = probe.status
    rows = status.get("mt5_terminals") if status is not None else None
    now_ms = status.get("ts_ms") if status is not None else None
    out: list[Check] = []
    for terminal in venue.terminals:
        out.append(_secret_check(loaded, terminal, simulated))
        if status is None:
            out.append(failed(f"{terminal} ea", "mt5", f"not checked: {probe.problem}; the EA, its account mode "
                                                      "and AutoTrading are read from the running engine"))
            continue
        if not isinstance(rows, list) or not isinstance(now_ms, int):
            out.append(failed(f"{terminal} ea", "mt5", "the running engine's status has no mt5_terminals: it is "
                                                      "older than this quantarb; restart it"))
            continue
        row = next((r for r in rows if isinstance(r, dict) and r.get("terminal") == terminal), None)
        if row is None:
            out.append(failed(f"{terminal} ea", "mt5", f"the running engine ({probe.url}) has no terminal "
                                                      f"{terminal}: it runs another configuration"))
            continue
        out.extend(_terminal_checks(terminal, row, now_ms, probe.url))
    return out


def _secret_check(loaded: LoadedConfig, terminal: str, simulated: bool) -> Check:
    var = mt5_secret_env_var(terminal)
    name = f"{terminal} secret"
    if loaded.secrets.mt5_secret(terminal) is not None:
        return passed(name, "mt5", f"{var} is set (from {loaded.secrets.sources.get(var, var)})")
    if simulated:
        return passed(name, "mt5", "not set: the simulated terminal gets one generated for the run")
    return failed(name, "mt5", f"{var} is not set: the engine will not start; set {var} (or {var}{FILE_SUFFIX}) "
                               f"to the secret in the EA's InpSecret")


def _when(ms: int, now_ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{max(0, now_ms - ms) / 1000:.1f} s ago ({stamp})"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _terminal_checks(terminal: str, row: Mapping[str, Any], now_ms: int, url: str | None) -> list[Check]:
    out: list[Check] = []
    seen = _int(row.get("last_seen_ms"))
    if seen is None:
        out.append(failed(f"{terminal} ea", "mt5", f"the EA has not reached the listener since the engine started: "
                                                   f"is it attached to a chart, with InpBaseUrl {url or '?'} allowed "
                                                   f"under Tools > Options > Expert Advisors > WebRequest?"))
    elif now_ms - seen > EA_STALE_MS:
        out.append(failed(f"{terminal} ea", "mt5", f"last seen {_when(seen, now_ms)}: the EA stopped talking to "
                                                   "the listener"))
    else:
        tick = _int(row.get("last_tick_ms"))
        ticks = f"; last tick {_when(tick, now_ms)}" if tick is not None else "; no tick yet"
        out.append(passed(f"{terminal} ea", "mt5", f"seen {_when(seen, now_ms)}{ticks}"))
    account = _int(row.get("account_ms"))
    if account is None:
        why = "no account report from the EA yet (it sends one every few seconds)"
        return [*out, failed(f"{terminal} account mode", "mt5", why), failed(f"{terminal} autotrading", "mt5", why)]
    mode = row.get("margin_mode")
    name = f"{terminal} account mode"
    if mode is None:
        out.append(warned(name, "mt5", "the EA does not report its margin mode: it is older than this quantarb; "
                                       "update QuantArbBridge.mq5"))
    elif mode == "hedging":
        out.append(passed(name, "mt5", "hedging"))
    else:
        out.append(warned(name, "mt5", f"{mode}: the account nets positions per symbol (with manual trades too); "
                                       "a hedging account keeps quantarb's positions apart"))
    allowed = row.get("trade_allowed")
    name = f"{terminal} autotrading"
    if allowed is True:
        out.append(passed(name, "mt5", "on"))
    elif allowed is False:
        out.append(failed(name, "mt5", "off: the terminal's AutoTrading button, the EA's Allow Algo Trading or "
                                       "the account's trading permission is off; every command will be refused"))
    else:
        out.append(warned(name, "mt5", "the EA does not report it: it is older than this quantarb; update "
                                       "QuantArbBridge.mq5"))
    return out


# ------------------------------------------------------------------------------ listener


def listener_checks(listener: ListenerConfig, probe: EngineProbe) -> list[Check]:
    return [_bind_check(listener, probe), _tls_check(listener)]


def _bind_check(listener: ListenerConfig, probe: EngineProbe) -> Check:
    name = "listener bind"
    host, port = listener.host, listener.port
    where = f"{host}:{port}"
    if port == 0:
        return passed(name, None, f"{host} port 0: the engine picks a free port at start")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return failed(name, None, f"{where}: the address does not resolve ({exc.strerror})")
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener does
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            if probe.status is not None and probe.url is not None and urlsplit(probe.url).port == port:
                return passed(name, None, f"{where} is held by the running quantarb ({probe.url})")
            return failed(name, None, f"{where} is in use by another program (see: ss -ltnp 'sport = :{port}')")
        return failed(name, None, f"{where} cannot be bound: {exc.strerror or exc}")
    return passed(name, None, f"{where} can be bound")


def _tls_check(listener: ListenerConfig) -> Check:
    name = "listener tls"
    if listener.tls_cert is None or listener.tls_key is None:
        warning = listener_warning(listener)
        if warning is not None:
            return warned(name, None, f"listener.host {warning}")
        return passed(name, None, "off (loopback only)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = os.path.expanduser(listener.tls_cert), os.path.expanduser(listener.tls_key)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # an OSError too: caught first
        return failed(name, None, f"{cert} and {key} do not load as a certificate and its key: {exc.reason or exc}")
    except OSError as exc:
        return failed(name, None, f"cannot read {exc.filename or cert}: {exc.strerror or exc}")
    scope = "" if not is_loopback_host(listener.host) else " (on loopback)"
    return passed(name, None, f"certificate {cert} and its key load{scope}")


# ------------------------------------------------------------------------------ ledger


async def ledger_checks(ledger: str) -> list[Check]:
    path, exists = await asyncio.to_thread(_locate, ledger)
    directory = await asyncio.to_thread(_directory_check, path)
    file = await _file_check(path, exists)
    return [directory, file, await asyncio.to_thread(_lock_check, path)]


def _locate(ledger: str) -> tuple[Path, bool]:
    path = Path(ledger).expanduser()
    return path, path.exists()


def _directory_check(path: Path) -> Check:
    name = "ledger directory"
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return failed(name, None, f"{existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        return failed(name, None, f"{existing} is not writable by this user")
    if existing != directory:
        return passed(name, None, f"{directory} does not exist yet; the first start creates it under {existing}")
    return passed(name, None, f"{directory} is writable")


async def _file_check(path: Path, exists: bool) -> Check:
    name = "ledger file"
    if not exists:
        return passed(name, None, f"{path} does not exist yet: the first start creates it")
    try:
        async with queries.open_reader(path) as db:
            doc = await queries.check(db)
    except LedgerError as exc:
        return failed(name, None, str(exc))
    if doc.get("ok"):
        return passed(name, None, f"{path}: intact (quick_check and every invariant; {doc.get('last_seq')} events)")
    bad = ", ".join(str(c.get("name")) for c in doc.get("checks", []) if not c.get("ok"))
    advice = "; the file is damaged: do not trade on it" if doc.get("damaged") else ""
    return failed(name, None, f"{path}: {bad} failed{advice}; see: quantarb ledger check --ledger {path}")


def _lock_check(path: Path) -> Check:
    """Whether an engine holds the ledger (its `<resolved>.lock`): reported, not judged."""
    name = "ledger in use"
    lock = path.resolve().with_name(path.resolve().name + ".lock")
    if fcntl is None or not lock.exists():
        return passed(name, None, "no engine holds it")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return failed(name, None, f"cannot open {lock}: {exc.strerror or exc}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            pid = holder if holder.isdigit() else "?"
            return passed(name, None, f"held by a running engine (pid {pid}); one engine per ledger")
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return passed(name, None, "no engine holds it")
    finally:
        os.close(fd)


__all__ = ["DEFAULT_TIMEOUT_S", "EA_STALE_MS", "EngineProbe", "config_checks", "ledger_checks", "listener_checks",
           "mt5_checks", "run_doctor"]
