"""`quantarb sim venue ...`: a simulated venue from the command line, as an operator rehearses with.

Each prints exactly `listening on http://HOST:PORT` once it listens, answers the venue's own
server-time endpoint there, refuses a private request without the configured key with the
venue's code, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

CASES = {
    "okx": ("/api/v5/public/time", "/api/v5/account/balance", "50103"),
    "binance-spot": ("/api/v3/time", "/api/v3/account", "-2014"),
    "binance-usdm": ("/fapi/v1/time", "/fapi/v2/balance", "-2014"),
}


@pytest.mark.parametrize("venue", list(CASES))
def test_sim_venue_listens_answers_and_stops_on_sigterm(venue: str) -> None:
    args = [sys.executable, "-m", "quantarb_tui.cli", "sim", "venue", venue, "--port", "0",
            "--api-key", "rehearsal-key", "--secret", "rehearsal-secret"]
    if venue == "okx":
        args += ["--passphrase", "rehearsal-pass"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, (line, proc.poll())
        base = match.group(1)
        public, private, code = CASES[venue]
        with httpx.Client(base_url=base, timeout=5) as client:
            assert client.get(public).status_code == 200
            refused = client.get(private)  # no key, no signature
            assert code in refused.text, refused.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_okx_needs_a_passphrase() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quantarb_tui.cli", "sim", "venue", "okx", "--port", "0", "--api-key", "k",
         "--secret", "s"], capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "okx needs --passphrase" in result.stderr


def test_keys_come_from_the_engines_variables_when_not_on_the_command_line() -> None:
    # What `quantarb sim world` does: no secret on the command line (`ps` would show it).
    key, secret = "-key-from-env", "-secret-from-env"  # a leading `-` must not read as an option
    env = {**os.environ, "QUANTARB_BINANCE_API_KEY": key, "QUANTARB_BINANCE_API_SECRET": secret}
    proc = subprocess.Popen([sys.executable, "-m", "quantarb_tui.cli", "sim", "venue", "binance-usdm", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, (line, proc.poll())
        query = f"timestamp={int(time.time() * 1000)}"
        signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        with httpx.Client(base_url=match.group(1), timeout=5) as client:
            signed = client.get(f"/fapi/v2/balance?{query}&signature={signature}", headers={"X-MBX-APIKEY": key})
            assert signed.status_code == 200, signed.text
            wrong = client.get(f"/fapi/v2/balance?{query}&signature={signature}", headers={"X-MBX-APIKEY": "other"})
            assert wrong.status_code != 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_keys_anywhere_it_says_where_they_come_from() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTARB_")}
    result = subprocess.run([sys.executable, "-m", "quantarb_tui.cli", "sim", "venue", "binance-spot", "--port", "0"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2
    assert "binance-spot needs --api-key and --secret (or QUANTARB_BINANCE_API_KEY and QUANTARB_BINANCE_API_SECRET)" \
        in result.stderr
