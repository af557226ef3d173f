"""`quantarb sim venue ...`: a simulated venue from the command line, as an operator rehearses with.

Each prints exactly `listening on http://HOST:PORT` once it listens, answers the venue's own
server-time endpoint there, refuses a private request without the configured key with the
venue's code, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

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
