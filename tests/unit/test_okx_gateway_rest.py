"""The OKX gateway's REST edge cases, against a scripted transport (no sockets): answers that
cannot be read, Retry-After, auth failures on a query, a socket that closes mid-send."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

from core.clock import ManualClock
from core.models import Order, OrderPurpose, OrderState
from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import OkxGateway, OkxGatewayConfig
from exchanges.venue import ErrorKind, InstrumentSpec, VenueError

BTC = "BTC-USDT-SWAP"
SPEC = InstrumentSpec("okx", BTC, Decimal("0.1"), Decimal(1), Decimal(1), contract_value=Decimal("0.01"))
Handler = Callable[[httpx.Request], httpx.Response]


def _gateway(handler: Handler, **config: object) -> OkxGateway:
    client = httpx.AsyncClient(base_url="http://venue.test", transport=httpx.MockTransport(handler))
    cfg = OkxGatewayConfig(rest_url="http://venue.test", stream=False, **config)  # type: ignore[arg-type]
    return OkxGateway(OkxCredentials("k", "s3cretvalue", "p4ssphrase"), ManualClock(), cfg, specs={BTC: SPEC},
                      client=client)


def _order(cid: str = "c1") -> Order:
    return Order(cid, "g", "okx", BTC, "buy", Decimal(1), Decimal(97000), OrderPurpose.ENTRY, 0)


async def test_an_unreadable_answer_to_an_order_is_unknown() -> None:
    gw = _gateway(lambda request: httpx.Response(200, content=b'{"code":"0","data":[{"sCode": 5}]}'))
    update = await gw.place(_order())
    assert update.state is OrderState.UNKNOWN and update.reason.startswith("unreadable answer")


async def test_a_non_json_5xx_is_unknown_on_entry() -> None:
    gw = _gateway(lambda request: httpx.Response(502, content=b"<html>bad gateway</html>"))
    update = await gw.place(_order())
    assert update.state is OrderState.UNKNOWN and update.reason.startswith("http502")


async def test_retry_after_is_honoured_before_the_next_request() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.25"}, content=b'{"code":"50011","msg":"Too Many"}')
        if request.method == "POST":
            return httpx.Response(200, json={"code": "0", "msg": "", "data": [
                {"ordId": "9", "clOrdId": "c1", "sCode": "0", "sMsg": ""}]})
        return httpx.Response(200, json={"code": "0", "msg": "", "data": [
            {"instId": BTC, "ordId": "9", "clOrdId": "c1", "state": "canceled", "ordType": "ioc", "accFillSz": "0"}]})

    gw = _gateway(handler, rate_limit_wait_s=5.0)
    update = await gw.place(_order())
    assert update.state is OrderState.EXPIRED
    assert seen[1] - seen[0] >= 0.25  # waited what the venue asked, not the 5 s default
    assert seen[1] - seen[0] < 5.0


async def test_auth_failure_on_a_query_halts_the_venue() -> None:
    gw = _gateway(lambda request: httpx.Response(401, json={"msg": "Invalid Sign", "code": "50113"}))
    with pytest.raises(VenueError) as info:
        await gw.query(_order())
    assert info.value.kind is ErrorKind.AUTH
    assert gw.halted is not None and gw.halted.code == "50113"
    assert (await gw.place(_order("c2"))).reason.startswith("okx halted")
    assert "s3cretvalue" not in str(info.value) and "p4ssphrase" not in str(info.value)


async def test_reads_are_tried_again_on_a_transient_failure() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, json={"code": "50001", "msg": "Service temporarily unavailable"})
        return httpx.Response(200, json={"code": "0", "msg": "", "data": [{"totalEq": "5", "details": []}]})

    gw = _gateway(handler)
    assert (await gw.balance()).total_equity == Decimal(5)
    assert calls == ["/api/v5/account/balance"] * 3


async def test_a_socket_that_closes_while_sending_reports_a_connection_error() -> None:
    gw = _gateway(lambda request: httpx.Response(500))

    class ClosingSocket:
        protocol = SimpleNamespace(state=State.CLOSING)  # the frame fast path steps aside

        async def send(self, message: bytes, *, text: bool = False) -> None:
            raise ConnectionClosedError(None, None)

    gw.stream._ws = ClosingSocket()  # type: ignore[assignment]
    gw.stream.ready.set()
    with pytest.raises(ConnectionError, match="closed while sending"):
        await gw.stream.order_op("order", {"instId": BTC}, 1.0)
    assert json.dumps(gw.stream._pending) == "{}"  # nothing left waiting
