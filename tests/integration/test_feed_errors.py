"""A feed that cannot reach its venue says why in the engine's log, and says when it is back:
a real OkxFeed against a port that refuses connections, then against the OKX simulator on
that same port."""

from __future__ import annotations

import asyncio
import socket

from core.clock import RealClock
from core.models import Quote
from engine.events import EngineEvent, EventLog
from engine.feed_log import FeedErrorLog
from feeds.base import FeedTiming
from feeds.health import FeedState
from feeds.okx import TICKERS, OkxFeed
from sim.market import SimTick
from sim.okx_server import OkxSimServer
from tests.waiting import until

CLOCK = RealClock()
TIMING = FeedTiming(silence_s=2.0, pong_timeout_s=1.0, rest_interval_s=0.05, connect_timeout_s=1.0,
                    backoff_initial_s=0.05, backoff_cap_s=0.2)


async def test_refused_then_live_again() -> None:
    # A bound socket that does not listen: connections to its port are refused, and no one
    # else takes the port until the simulator does.
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    events = EventLog()
    seen: list[EngineEvent] = []
    events.subscribe(seen.append)
    quotes: list[Quote] = []
    feed = OkxFeed(ws_url=f"ws://127.0.0.1:{port}/ws/v5/public", rest_url=f"http://127.0.0.1:{port}",
                   instruments=[("BTC-USDT-SWAP", TICKERS)], sink=quotes.append, clock=CLOCK, timing=TIMING)
    FeedErrorLog(events, CLOCK).watch([feed])
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: len(seen) >= 2, "the socket's and the REST fallback's failures logged")
        causes = {str(e.data["error"]).split(":")[0] for e in seen}
        assert causes == {"ConnectionRefusedError", "ConnectError"}, [e.text for e in seen]
        assert all(e.text.startswith("feed okx (okx) failing: ") and e.level == "warn" for e in seen)
        await until(lambda: feed.health.reconnects >= 3, "three reconnects")
        assert len(seen) == 2  # the same two errors again: counted, not repeated

        holder.close()
        server = OkxSimServer(port=port, symbols=["BTC-USDT-SWAP"], clock=CLOCK)
        async with server:
            server.publish(SimTick("okx", "BTC-USDT-SWAP", 60000.0, 60000.5, 1.0, 1.0, CLOCK.time_ms()))
            await until(lambda: feed.health.state is FeedState.LIVE, "the feed live on the simulator")
            await until(lambda: len(seen) == 3, "the recovery logged")
            back = seen[-1]
            assert back.level == "info" and back.data["event"] == "feed_live"
            assert back.text.startswith("feed okx (okx) live again after ")
            assert int(str(back.data["failures"])) >= 3
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        holder.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
