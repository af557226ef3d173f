"""Bench: signed `POST /mt5/tick` requests per second and latency, quantarb's listener against
the seed design, side by side in one run.

(A) the real listener: `EmbeddedServer` (uvicorn in an asyncio loop) + `create_app` +
`Mt5Bridge` + `SignatureVerifier` + `CommandQueue`, ticks to a counting sink; (B) the seed
design: a stdlib `ThreadingHTTPServer` that checks the same signature, `json.loads` the body
and rewrites a latest-tick JSON file per request. Each runs in its own process
(`quantarb_tui.bench.listener_server`), so the load generator does not share its GIL.

Requests are signed before the clock starts: `requests` distinct ticks per server (distinct
bodies, timestamps spread over the run, all inside the listener's +-30 s window; the replay
cache refuses a signature twice, so nothing is ever sent twice). Load comes from wrk when it
is installed, `connections` keep-alive connections, with a Lua script that walks through the
pre-signed requests and reports wrk's latency percentiles as JSON from its `done` hook. A run
ends after `duration_s` or when the pre-signed requests run out, whichever comes first. Without
wrk a multi-process Python client (one process and one raw keep-alive socket per connection)
does it; the result says so, and on a small machine that client may be the bottleneck.

Every response must be a 200: wrk's non-2xx and socket errors are counted, and each server
reports how many ticks it accepted and what it refused. `valid` is false otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mt5_bridge.auth import sign
from quantarb_tui.bench.common import percentile
from quantarb_tui.bench.listener_server import SYMBOL, TERMINAL

LoadGenerator = Literal["auto", "wrk", "python"]

PATH = "/mt5/tick"
TARGET_RATIO = 5.0
TARGET_P99_MS = 2.0
MAX_DURATION_S = 25.0  # pre-signed timestamps must stay inside the +-30 s window
_EXHAUSTED = "qa-bench-exhausted"
_WRK_JSON = "qa-bench-json "
_REPO_ROOT = Path(__file__).resolve().parents[2]

WRK_SCRIPT = r"""
-- Walks through pre-signed POST /mt5/tick requests; each is sent once (the listener refuses
-- a repeated signature). args: data file, number of wrk threads, terminal id.
local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local path, nthreads, terminal = args[1], tonumber(args[2]), args[3]
   reqs = {}
   idx = 0
   announced = false
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == id then
         local ts, sig, body = line:match("^(%d+)\t(%x+)\t(.*)$")
         reqs[#reqs + 1] = wrk.format("POST", "/mt5/tick", {
            ["X-QA-Terminal"] = terminal, ["X-QA-Timestamp"] = ts, ["X-QA-Signature"] = sig,
            ["Content-Type"] = "application/json",
         }, body)
      end
      i = i + 1
   end
   -- Asked for more after the last one (the thread is stopping): a harmless unsigned request.
   filler = wrk.format("GET", "/healthz", {}, nil)
end

function request()
   idx = idx + 1
   if idx > #reqs then
      return filler
   end
   if idx == #reqs and not announced then
      announced = true
      io.write("qa-bench-exhausted\n")
      io.flush()
      wrk.thread:stop()
   end
   return reqs[idx]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'qa-bench-json {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.2f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


# ------------------------------------------------------------------------------ requests


def write_requests(path: Path, secret: bytes, n: int, span_ms: int) -> None:
    """`n` distinct signed ticks, one `timestamp\\tsignature\\tbody` line each; timestamps
    rise from now over `span_ms`."""
    t0 = time.time_ns() // 1_000_000
    with path.open("w", encoding="ascii") as fh:
        for i in range(n):
            ts = str(t0 + i * span_ms // max(n, 1))
            bid = 2600.0 + (i % 10_000) * 0.01
            body = (
                f'{{"ticks":[{{"symbol":"{SYMBOL}","bid":{bid:.2f},"ask":{bid + 0.2:.2f},"time_msc":{t0 + i}}}]}}'
            ).encode()
            fh.write(f"{ts}\t{sign(secret, ts, 'POST', PATH, body)}\t{body.decode()}\n")


def _raw_requests(path: Path, host: str, port: int, part: int, parts: int) -> list[bytes]:
    out: list[bytes] = []
    with path.open("rb") as fh:
        for i, line in enumerate(fh):
            if i % parts != part:
                continue
            ts, sig, body = line.rstrip(b"\n").split(b"\t", 2)
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nX-QA-Terminal: {TERMINAL}\r\n"
                f"X-QA-Timestamp: {ts.decode()}\r\nX-QA-Signature: {sig.decode()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            out.append(head + body)
    return out


# ------------------------------------------------------------------------------ servers


class _ServerProcess:
    """One bench server in a child process; `stop()` returns its counters."""

    def __init__(self, mode: str, secret: bytes, workdir: Path, *, keep_alive: bool = True) -> None:
        cmd = [sys.executable, "-m", "quantarb_tui.bench.listener_server", "--mode", mode, "--port", "0",
               "--secret-hex", secret.hex(), "--tick-file", str(workdir / f"{mode}-latest-tick.json")]
        if not keep_alive:
            cmd.append("--no-keep-alive")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        # stderr to a file: a pipe nobody reads could fill up and stall the server
        self.stderr_path = workdir / f"{mode}-server.stderr"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, 30.0)
        if not line:
            self.proc.kill()
            self.proc.communicate(timeout=10)
            raise RuntimeError(f"bench server {mode} did not start: {self._stderr()}")
        self.port = int(json.loads(line)["port"])

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"bench server exited {self.proc.returncode}: {self._stderr()}")
        stats: dict[str, Any] = json.loads(lines[-1])
        return stats


def _readline(stream: Any, timeout_s: float) -> str:
    """One line from a child's pipe, or "" after `timeout_s` or at EOF."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].strip() if result else ""


# ------------------------------------------------------------------------------ load: wrk


def _run_wrk(wrk: str, port: int, data: Path, script: Path, connections: int, threads: int,
             duration_s: float) -> dict[str, Any]:
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration_s))}s",
           "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}{PATH}", "--",
           str(data), str(threads), TERMINAL]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    exhausted = 0
    doc: dict[str, Any] | None = None
    output: list[str] = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith(_EXHAUSTED):
            exhausted += 1
            if exhausted == threads and proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # wrk then reports the time actually run
        elif line.startswith(_WRK_JSON):
            doc = json.loads(line[len(_WRK_JSON):])
    err = proc.stderr.read()
    proc.wait(timeout=30)
    if doc is None:
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {''.join(output)[-2000:]} {err[-2000:]}")
    errors = doc["errors"]
    lat = doc["latency_us"]
    seconds = doc["duration_us"] / 1e6
    return {
        "requests": doc["requests"],
        "seconds": round(seconds, 3),
        "requests_per_s": round(doc["requests"] / seconds) if seconds > 0 else 0,
        "latency_ms": {k: round(lat[k] / 1000, 3) for k in ("p50", "p90", "p99", "p999", "max")},
        "non_2xx": errors["status"],
        "socket_errors": {k: errors[k] for k in ("connect", "read", "write", "timeout")},
        "ran_out_of_requests": exhausted == threads,
    }


# ------------------------------------------------------------------------------ load: Python


def _client_worker(part: int, parts: int, data: str, port: int, duration_s: float,
                   ready: Any, go: Any, results: Any) -> None:
    """One connection of the fallback client: send its share of the requests one after the
    other on a keep-alive socket, timing each; report latencies and statuses."""
    host = "127.0.0.1"
    requests = _raw_requests(Path(data), host, port, part, parts)
    statuses: Counter[int] = Counter()
    latencies: list[int] = []
    errors = 0
    def connect() -> tuple[socket.socket, Any]:
        s = socket.create_connection((host, port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s, s.makefile("rb", buffering=65536)

    sock, reader = connect()
    reconnect = False
    ready.put(part)
    go.wait(60)
    perf = time.perf_counter_ns
    start = perf()
    deadline = start + int(duration_s * 1e9)
    end = start
    try:
        for raw in requests:
            t = perf()
            if t >= deadline:
                break
            if reconnect:  # the server closed after its answer (HTTP/1.0): not timed, as in wrk
                reader.close()
                sock.close()
                sock, reader = connect()
                t = perf()
            sock.sendall(raw)
            status_line = reader.readline()
            if not status_line:
                errors += 1
                break
            status = int(status_line.split()[1])
            reconnect = status_line.startswith(b"HTTP/1.0")
            length = 0
            while True:
                header = reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection":
                    reconnect = value.strip().lower() == b"close"
            reader.read(length)
            end = perf()
            latencies.append(end - t)
            statuses[status] += 1
    except OSError:
        errors += 1
    finally:
        reader.close()
        sock.close()
    results.put({"part": part, "start_ns": start, "end_ns": end, "latencies": latencies,
                 "statuses": dict(statuses), "errors": errors, "exhausted": len(latencies) == len(requests)})


def _run_python(port: int, data: Path, connections: int, duration_s: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client_worker, args=(k, connections, str(data), port, duration_s, ready, go, results),
                         daemon=True) for k in range(connections)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        parts = [results.get(timeout=duration_s + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    latencies = sorted(ns for part in parts for ns in part["latencies"])
    statuses: Counter[int] = Counter()
    for part in parts:
        statuses.update({int(k): v for k, v in part["statuses"].items()})
    # perf_counter is system-wide (CLOCK_MONOTONIC): comparable across the worker processes.
    seconds = (max(p["end_ns"] for p in parts) - min(p["start_ns"] for p in parts)) / 1e9
    done = len(latencies)
    return {
        "requests": done,
        "seconds": round(seconds, 3),
        "requests_per_s": round(done / seconds) if seconds > 0 else 0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) / 1e6, 3),
            "p90": round(percentile(latencies, 90) / 1e6, 3),
            "p99": round(percentile(latencies, 99) / 1e6, 3),
            "p999": round(percentile(latencies, 99.9) / 1e6, 3),
            "max": round((latencies[-1] if latencies else 0) / 1e6, 3),
        },
        "non_2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "socket_errors": {"client": sum(p["errors"] for p in parts)},
        "ran_out_of_requests": all(p["exhausted"] for p in parts),
    }


# ------------------------------------------------------------------------------ the bench


@contextlib.contextmanager
def _server(mode: str, secret: bytes, workdir: Path, stats: dict[str, Any], *,
            keep_alive: bool) -> Iterator[_ServerProcess]:
    server = _ServerProcess(mode, secret, workdir, keep_alive=keep_alive)
    try:
        yield server
    finally:
        stats.update(server.stop())


def _measure(mode: str, *, secret: bytes, workdir: Path, requests: int, connections: int, duration_s: float,
             wrk: str | None, threads: int, keep_alive: bool = True) -> dict[str, Any]:
    data = workdir / f"{mode}-requests.tsv"
    write_requests(data, secret, requests, int(duration_s * 1000))
    server_stats: dict[str, Any] = {}
    with _server(mode, secret, workdir, server_stats, keep_alive=keep_alive) as server:
        if wrk is not None:
            script = workdir / "presigned.lua"
            script.write_text(WRK_SCRIPT, encoding="utf-8")
            result = _run_wrk(wrk, server.port, data, script, connections, threads, duration_s)
        else:
            result = _run_python(server.port, data, connections, duration_s)
    result["server_ticks"] = server_stats.get("ticks", 0)
    result["server_rejected"] = server_stats.get("rejected", {})
    errors = sum(result["socket_errors"].values())
    result["all_200"] = (
        result["requests"] > 0 and result["non_2xx"] == 0 and errors == 0 and not result["server_rejected"]
        # every counted answer is a tick the server took (wrk may stop with a few in flight)
        and result["server_ticks"] >= result["requests"]
    )
    return result


def bench_listener(
    requests: int = 50_000,
    connections: int = 8,
    duration_s: float = 10.0,
    *,
    load_generator: LoadGenerator = "auto",
    baseline_keep_alive: bool = True,
) -> dict[str, Any]:
    """Signed tick pushes per second and latency: quantarb's listener vs the seed design.

    `requests`: pre-signed distinct requests per server (the run stops early when they run
    out); `connections`: keep-alive connections; `duration_s`: at most this long per server
    (<= 25 s); `load_generator`: `wrk`, `python` (the fallback client), or `auto` (wrk when
    installed); `baseline_keep_alive=False` runs the baseline with the stdlib's defaults
    (HTTP/1.0, a connection per request, Nagle on) instead of at its best.
    """
    if requests < connections or connections < 1:
        raise ValueError("need connections >= 1 and at least one request per connection")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}]: signatures are valid for 30 s")
    wrk = shutil.which("wrk") if load_generator in ("auto", "wrk") else None
    if load_generator == "wrk" and wrk is None:
        raise RuntimeError("wrk is not installed")
    cpus = os.cpu_count() or 2
    # The server takes one core; wrk gets the rest (at least one thread, at most one per connection).
    threads = max(1, min(connections, cpus - 1))
    secret = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory(prefix="qa-bench-listener-") as tmp:
        workdir = Path(tmp)
        measure = functools.partial(_measure, secret=secret, workdir=workdir, requests=requests,
                                    connections=connections, duration_s=duration_s, wrk=wrk, threads=threads)
        listener = measure("quantarb")
        baseline = measure("baseline", keep_alive=baseline_keep_alive)
    ratio = listener["requests_per_s"] / baseline["requests_per_s"] if baseline["requests_per_s"] else 0.0
    valid = listener["all_200"] and baseline["all_200"]
    method = f"wrk ({threads} thread{'s' if threads > 1 else ''})" if wrk else "python fallback client"
    fallback_note = (
        "" if wrk else
        f"wrk not found: {connections} Python client processes (raw sockets, one request at a time each) "
        f"generated the load on {cpus} CPUs shared with the server; the client may be the bottleneck, "
        "so these figures are a lower bound"
    )
    ratio_met = valid and ratio >= TARGET_RATIO
    p99_met = valid and listener["latency_ms"]["p99"] <= TARGET_P99_MS

    def row(name: str, r: dict[str, Any]) -> str:
        lat = r["latency_ms"]
        return (f"{name:<9} {r['requests_per_s']:>8,} req/s   p50 {lat['p50']:.3f} ms   p99 {lat['p99']:.3f} ms   "
                f"({r['requests']:,} requests in {r['seconds']:.1f} s, all 200: {r['all_200']})")

    lines = [
        f"load      {method}, {connections} connections, <= {duration_s:g} s or {requests:,} pre-signed "
        "ticks per server",
        "baseline  stdlib ThreadingHTTPServer, " + (
            "HTTP/1.1 keep-alive, TCP_NODELAY (its best case)" if baseline_keep_alive
            else "stdlib defaults (HTTP/1.0, a connection per request, Nagle on)"),
        row("listener", listener),
        row("baseline", baseline),
        f"ratio     x{ratio:.1f} (target >= x{TARGET_RATIO:g}: {'met' if ratio_met else 'NOT met'}); "
        f"listener p99 target <= {TARGET_P99_MS:g} ms: {'met' if p99_met else 'NOT met'}",
    ]
    if fallback_note:
        lines.append(f"note      {fallback_note}")
    if not valid:
        lines.append("INVALID   some responses were not 200 (or the servers refused ticks): see the counters")
    return {
        "method": "wrk" if wrk else "python",
        "fallback_used": wrk is None,
        "fallback_note": fallback_note,
        "connections": connections,
        "wrk_threads": threads if wrk else 0,
        "duration_s": duration_s,
        "requests_presigned": requests,
        "baseline_keep_alive": baseline_keep_alive,
        "listener": listener,
        "baseline": baseline,
        "ratio": round(ratio, 2),
        "valid": valid,
        "targets": {"ratio_min": TARGET_RATIO, "p99_ms_max": TARGET_P99_MS, "ratio_met": ratio_met,
                    "p99_met": p99_met},
        "lines": lines,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    from quantarb_tui.bench.common import machine_info

    parser = argparse.ArgumentParser(description="quantarb listener bench (signed POST /mt5/tick)")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--baseline-no-keep-alive", action="store_true",
                        help="run the baseline with the stdlib defaults (HTTP/1.0, Nagle on)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = bench_listener(args.requests, args.connections, args.duration, load_generator=args.load_generator,
                            baseline_keep_alive=not args.baseline_no_keep_alive)
    if args.json:
        clean = {k: v for k, v in result.items() if k != "lines"}
        sys.stdout.write(json.dumps({"machine": machine_info(), "results": {"listener": clean}}, indent=2) + "\n")
    else:
        sys.stdout.write("[listener]\n" + "".join(f"  {line}\n" for line in result["lines"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
