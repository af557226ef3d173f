"""The status page in a real headless browser (slow suite; skipped when no Chromium is found).

The engine serves its listener on 127.0.0.1; Chromium loads `GET /` with the page password in
the URL (HTTP Basic), and its DOM after parsing and its screenshot are checked: the trading
state, the reason as text, the equity curve, and the HALTED badge painted in its red. Without
credentials the browser gets the 401 and shows no page. (CI's fast suite checks the same
document as a DOM built by the standard library's parser: tests/unit/test_status_page.py.)
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import demo_config
from engine.operator_api import create_operator_app
from engine.runtime import Runtime
from engine.status_page import page_password
from mt5_bridge.server import EmbeddedServer
from tests.html_support import parse

pytestmark = pytest.mark.slow

TOKEN = "browser-admin-token-0123456789abcdef"
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1000, 1400
HALTED_RED = (0xC6, 0x28, 0x28)


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)})")


async def _run(browser: str, *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    rt = Runtime(demo_config(), is_demo=True, clock=ManualClock(), ledger_path=str(tmp_path / "b.db"),
                 mt5_in_process=True)
    await rt.open_ledger()
    server = EmbeddedServer(create_operator_app(rt.control, rt.view, TOKEN), "127.0.0.1", 0)
    await server.start()
    try:
        yield rt, server.url
    finally:
        await server.stop()
        await rt.close_ledger()


async def test_the_page_renders_in_a_headless_browser(served: tuple[Runtime, str], tmp_path: Path) -> None:
    browser = _browser()
    rt, url = served
    await rt.driver.drive(3000)
    await rt.control.kill("<b>not bold</b> night check")
    with_password = url.replace("http://", f"http://operator:{page_password(TOKEN)}@") + "/"

    doc = parse((await _run(browser, "--dump-dom", with_password)).decode())
    assert doc.by_id("state").text == "HALTED"
    assert doc.by_id("reason").text == "<b>not bold</b> night check"
    assert not doc.find_all("b")
    assert doc.by_id("equity").tag == "svg" and len(doc.by_id("equity").find_all("polyline")) == 1
    assert doc.by_id("positions").rows() == [[p.venue, p.asset, p.qty] for p in rt.view.snapshot().positions]

    shot = tmp_path / "page.png"
    await _run(browser, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", with_password)
    width, height, pixels = _decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    red = sum(1 for px in pixels if _near(px, HALTED_RED))
    assert red > 300, "the HALTED badge is not painted"

    refused = parse((await _run(browser, "--dump-dom", url + "/")).decode())
    assert [e for e in refused.iter() if e.attrs.get("id") == "state"] == []
    assert "authentication required" in refused.text


def _near(px: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(px, colour, strict=True))


def _decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium
    writes): enough to look at a screenshot without an imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            up_left = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        pixels += [(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)]
        prev = line
    return width, height, pixels
