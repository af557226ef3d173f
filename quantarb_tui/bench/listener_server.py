"""The two servers of the listener bench, each run in its own process (no shared GIL with the
load generator):

    python -m quantarb_tui.bench.listener_server --mode quantarb --port 0 --secret-hex HEX
    python -m quantarb_tui.bench.listener_server --mode baseline --port 0 --secret-hex HEX --tick-file PATH

`quantarb`: the real listener, `EmbeddedServer` (uvicorn in the process's asyncio loop, as the
runtime runs it) serving `create_app` on an `Mt5Bridge` with its `SignatureVerifier` and an
empty `CommandQueue`; ticks go to a sink that counts them (the bench measures the listener,
not the pipeline behind it).

`baseline`: the seed design, a stdlib `ThreadingHTTPServer` (a thread per connection) that
checks the same HMAC signature, timestamp window and replays, parses the JSON body with
`json.loads`, and rewrites a latest-tick JSON file per request (write, then `os.replace`). By
default at its best (HTTP/1.1 keep-alive, TCP_NODELAY); `--no-keep-alive` keeps the stdlib's
defaults (HTTP/1.0, one connection per request, Nagle on).

Both print one JSON line `{"port": N}` once they accept connections, serve until SIGTERM or
SIGINT, then print one JSON line of counters (`ticks`, `rejected`) and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TERMINAL = "BENCH"
SYMBOL = "XAUUSD"
WINDOW_MS = 30_000


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ quantarb


async def serve_quantarb(host: str, port: int, secret: bytes) -> dict[str, Any]:
    from core.clock import RealClock
    from core.models import Quote
    from mt5_bridge.app import create_app
    from mt5_bridge.auth import SignatureVerifier
    from mt5_bridge.bridge import Mt5Bridge
    from mt5_bridge.queue import CommandQueue, InMemoryCommandStore
    from mt5_bridge.server import EmbeddedServer

    clock = RealClock()
    ticks = 0

    def sink(quote: Quote) -> None:
        nonlocal ticks
        ticks += 1

    bridge = Mt5Bridge(
        verifier=SignatureVerifier({TERMINAL: secret}, clock),
        queue=CommandQueue(InMemoryCommandStore(), clock),
        clock=clock,
        symbols={TERMINAL: [SYMBOL]},
        quote_sink=sink,
        magic=7701,
    )
    server = EmbeddedServer(create_app(bridge), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    _emit({"port": server.port})
    await stop.wait()
    await server.stop()
    return {"ticks": ticks, "rejected": dict(bridge.rejected), "replay_evictions": bridge.verifier.evictions}


# ------------------------------------------------------------------------------ baseline


class _BaselineState:
    def __init__(self, secret: bytes, tick_file: str) -> None:
        self.secret = secret
        self.tick_file = tick_file
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.ticks = 0
        self.rejected: Counter[str] = Counter()


class _BaselineHandler(BaseHTTPRequestHandler):
    # The baseline's best case: keep-alive, and no Nagle stall between the header and body
    # writes (with Nagle on, every answer waits ~40 ms for the client's delayed ACK).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _BaselineServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, b'{"status":"ok"}')
        else:
            self._answer(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/mt5/tick":
            self._answer(404, b'{"error":"not found"}')
            return
        terminal = self.headers.get("X-QA-Terminal")
        ts = self.headers.get("X-QA-Timestamp") or ""
        sig = self.headers.get("X-QA-Signature") or ""
        if terminal != TERMINAL or not ts.isdigit() or abs(int(ts) - time.time_ns() // 1_000_000) > WINDOW_MS:
            state.rejected["timestamp"] += 1
            self._answer(401, b'{"error":"unauthorized","reason":"timestamp"}')
            return
        message = ts.encode() + b"\nPOST\n" + self.path.encode() + b"\n" + body
        expected = hmac.new(state.secret, message, hashlib.sha256).hexdigest()
        with state.lock:
            fresh = hmac.compare_digest(expected, sig) and sig not in state.seen
            if fresh:
                state.seen.add(sig)
        if not fresh:
            state.rejected["signature"] += 1
            self._answer(401, b'{"error":"unauthorized","reason":"signature"}')
            return
        try:
            ticks = json.loads(body)["ticks"]
            latest = {t["symbol"]: {"bid": float(t["bid"]), "ask": float(t["ask"]), "time_msc": int(t["time_msc"])}
                      for t in ticks}
        except (ValueError, KeyError, TypeError):
            state.rejected["invalid"] += 1
            self._answer(422, b'{"error":"invalid request"}')
            return
        tmp = f"{state.tick_file}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(latest, fh)
        os.replace(tmp, state.tick_file)
        with state.lock:
            state.ticks += len(latest)
        self._answer(200, b'{"commands":[]}')


class _BaselineHandlerDefaults(_BaselineHandler):
    """The stdlib's defaults: HTTP/1.0 (a connection per request), Nagle on."""

    protocol_version = "HTTP/1.0"
    disable_nagle_algorithm = False


class _BaselineServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: _BaselineState, keep_alive: bool) -> None:
        super().__init__(address, _BaselineHandler if keep_alive else _BaselineHandlerDefaults)
        self.state = state


def serve_baseline(host: str, port: int, secret: bytes, tick_file: str, *, keep_alive: bool = True) -> dict[str, Any]:
    state = _BaselineState(secret, tick_file)
    httpd = _BaselineServer((host, port), state, keep_alive)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    _emit({"port": httpd.server_address[1]})
    while not stop.wait(0.1):
        pass
    httpd.shutdown()
    httpd.server_close()
    serving.join(5)
    with state.lock:
        return {"ticks": state.ticks, "rejected": dict(state.rejected)}


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("quantarb", "baseline"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-hex", required=True)
    parser.add_argument("--tick-file", default="latest-tick.json", help="baseline: the file rewritten per tick")
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="baseline: the stdlib defaults (HTTP/1.0, a connection per request, Nagle on)")
    args = parser.parse_args(argv)
    secret = bytes.fromhex(args.secret_hex)
    if args.mode == "quantarb":
        stats = asyncio.run(serve_quantarb(args.host, args.port, secret))
    else:
        stats = serve_baseline(args.host, args.port, secret, args.tick_file, keep_alive=not args.no_keep_alive)
    _emit(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
