"""The funding and rate pollers keep one HTTP client per venue URL for their life (issue 19).

A client per poll built a fresh SSL context each time (hundreds of KB of OpenSSL allocations in
glibc's main arena, every 30-60 s for weeks) and a new connection. Here a keep-alive HTTP/1.1
server on 127.0.0.1 (`sim.http_front`) answers as OKX does and counts the TCP connections it
accepts and sees end: polls close together share one connection (one client), and stopping the
poller (cancelling `run`, as the runtime's stop does) closes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from core.clock import ManualClock
from engine.funding import FundingAccrual, Perpetual
from engine.rates import RateFeed, RateSource
from feeds.funding import OKX_HISTORY_PATH
from feeds.rates import OKX_TICKER_PATH
from sim.http_front import HttpFront, HttpRequest, HttpResponse

T0 = 1_700_000_000_000
SWAP = "BTC-USDT-SWAP"
BOOK = "USDT-USD"


class CountingFront(HttpFront):
    """An OKX-like REST port counting the connections accepted and ended; `drop_next` loses the
    next answer (the connection is cut, as a venue's load balancer may)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0, self._answer, lambda _path: None)
        self.accepted = 0
        self.ended = 0
        self.drop_next = False
        self.changed = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await super()._serve(reader, writer)
        finally:
            self.ended += 1
            self.changed.set()

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        self.changed.set()
        if self.drop_next:
            self.drop_next = False
            return HttpResponse(200, drop=True)
        if request.path == OKX_HISTORY_PATH:
            return HttpResponse(200, json.dumps({"code": "0", "msg": "", "data": []}).encode())
        if request.path == OKX_TICKER_PATH:
            row = {"instId": request.query["instId"][0], "bidPx": "0.9990", "askPx": "0.9992", "ts": str(T0)}
            return HttpResponse(200, json.dumps({"code": "0", "msg": "", "data": [row]}).encode())
        return HttpResponse(404, b'{"code":"404","msg":"no such path"}')

    async def until(self, what: str, test: Callable[[], bool]) -> None:
        """Wait until `test()` holds; the test fails after 10 s rather than going on."""
        async def wait() -> None:
            while not test():
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout=10)
        except TimeoutError:
            pytest.fail(f"{what}: accepted={self.accepted} ended={self.ended} requests={self.requests}")


@pytest.fixture
async def front() -> AsyncIterator[CountingFront]:
    f = CountingFront()
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def _accrual(front: CountingFront, poll_s: float = 60.0) -> FundingAccrual:
    async def held(*_: object) -> Decimal:
        return Decimal(0)
    accrual = FundingAccrual([Perpetual("okx", SWAP, front.base_url)], lambda *a: None, lambda b: None,
                             ManualClock(wall_ms=T0), held, poll_s=poll_s)
    accrual.restore({})
    return accrual


def _feed(front: CountingFront, poll_s: float = 30.0) -> RateFeed:
    return RateFeed([RateSource("okx", BOOK, front.base_url)], "USD", {}, ManualClock(wall_ms=T0),
                    max_age_s=60, poll_s=poll_s)


@pytest.mark.timeout(60)
async def test_funding_polls_share_one_connection(front: CountingFront) -> None:
    accrual = _accrual(front)
    try:
        for _ in range(3):
            assert await accrual.poll_once() == []
        assert accrual.errors == 0, accrual.last_error
        assert (front.requests, front.accepted) == (3, 1)  # a client per poll: 3 connections
    finally:
        await accrual.aclose()
    await front.until("the connection ends once the accrual is closed", lambda: front.ended == 1)


@pytest.mark.timeout(60)
async def test_rate_polls_share_one_connection(front: CountingFront) -> None:
    feed = _feed(front)
    try:
        for _ in range(3):
            assert await feed.poll_once() == 1
        assert (front.requests, front.accepted) == (3, 1)
    finally:
        await feed.aclose()
    await front.until("the connection ends once the feed is closed", lambda: front.ended == 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("poller", ["funding", "rates"])
async def test_a_cancelled_poller_closes_its_client(front: CountingFront, poller: str) -> None:
    """The runtime stops the pollers by cancelling `run`: the connection must end then, not
    whenever the client is collected."""
    loop = _accrual(front, poll_s=0.01) if poller == "funding" else _feed(front, poll_s=0.01)
    task = asyncio.create_task(loop.run())
    try:
        await front.until("three polls", lambda: front.requests >= 3)
        assert (front.accepted, front.ended) == (1, 0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await front.until("the connection ends when run is cancelled", lambda: front.ended == 1)
    assert front.accepted == 1


@pytest.mark.timeout(60)
async def test_a_lost_answer_is_an_error_and_the_next_poll_reads(front: CountingFront) -> None:
    """A cut connection fails that poll only (counted and logged as before); the client is kept
    and connects again. A closed poller's next poll makes a new client, never a closed one."""
    feed = _feed(front)
    try:
        assert await feed.poll_once() == 1
        front.drop_next = True
        assert await feed.poll_once() == 0
        assert feed.failures == 1 and feed.describe(T0)[0]["error"]
        assert await feed.poll_once() == 1
        assert feed.describe(T0)[0]["error"] is None
        assert front.accepted == 2  # the cut one, then one more
        await feed.aclose()
        assert await feed.poll_once() == 1
        assert front.accepted == 3
    finally:
        await feed.aclose()
    await front.until("every connection ends", lambda: front.ended == 3)

    accrual = _accrual(front)
    try:
        front.drop_next = True
        assert await accrual.poll_once() == []
        assert accrual.errors == 1 and accrual.last_error is not None
        assert accrual.last_error.startswith(f"okx:{SWAP}: ")
        assert await accrual.poll_once() == []
        assert accrual.errors == 1
        await accrual.aclose()
        assert await accrual.poll_once() == []
        assert accrual.errors == 1 and front.accepted == 6
    finally:
        await accrual.aclose()
    await front.until("every connection ends", lambda: front.ended == 6)
