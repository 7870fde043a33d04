"""websocket against a real aiohttp WebSocket server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe.checkers import CHECKERS, websocket
from probefleet.shared.wire import Reason, Status, WebsocketSpec

from .by_hand import probe_check
from .conftest import start_app


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=["v1.echo"])
    await ws.prepare(request)
    await ws.send_str("welcome")
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"echo: {msg.data}")
    return ws


async def _whoami(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(f"you are {request.remote}")
    await ws.close()
    return ws


async def _silent(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def _closing(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.close()
    return ws


async def _guarded(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer let-me-in":
        raise web.HTTPForbidden()
    return await _echo(request)


@pytest.fixture(scope="module")
async def ws_base() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/echo", _echo)
    app.router.add_get("/silent", _silent)
    app.router.add_get("/whoami", _whoami)
    app.router.add_get("/closing", _closing)
    app.router.add_get("/guarded", _guarded)
    runner, port = await start_app(app)
    yield f"ws://127.0.0.1:{port}"
    await runner.cleanup()


async def run(spec: WebsocketSpec, budget: float = 2.0) -> websocket.Outcome:
    return await CHECKERS["websocket"](spec, timeout=budget, source_address=None)


async def test_it_connects_sends_and_matches_the_reply(ws_base: str) -> None:
    out = await run(
        WebsocketSpec(url=f"{ws_base}/echo", send="ping 42", expect=r"echo: ping \d+", expect_regex=True)
    )
    assert out.status == Status.OK, out
    assert out.status_code == 101
    assert {"connect", "first_message", "total"} <= out.timings.keys()
    assert out.details == {"messages": 2, "reply": "echo: ping 42"}


async def test_a_connection_alone_passes_without_expect(ws_base: str) -> None:
    out = await run(WebsocketSpec(url=f"{ws_base}/silent"))
    assert out.status == Status.OK and "connect" in out.timings


async def test_a_reply_that_never_matches_is_a_response_mismatch(ws_base: str) -> None:
    out = await run(WebsocketSpec(url=f"{ws_base}/echo", send="hi", expect="pong"), budget=0.5)
    assert out.reason == Reason.RESPONSE_MISMATCH
    assert "echo: hi" in out.message


async def test_silence_until_the_deadline_is_no_response(ws_base: str) -> None:
    out = await run(WebsocketSpec(url=f"{ws_base}/silent", expect="x"), budget=0.5)
    assert out.reason == Reason.NO_RESPONSE


async def test_a_server_that_closes_at_once_is_no_response(ws_base: str) -> None:
    out = await run(WebsocketSpec(url=f"{ws_base}/closing", expect="x"))
    assert out.reason == Reason.NO_RESPONSE and "closed" in out.message


async def test_a_refused_handshake_gives_its_status(ws_base: str) -> None:
    refused = await run(WebsocketSpec(url=f"{ws_base}/guarded"))
    assert refused.reason == Reason.STATUS_MISMATCH and refused.status_code == 403
    allowed = await run(
        WebsocketSpec(
            url=f"{ws_base}/guarded", headers={"Authorization": "Bearer let-me-in"}, expect="welcome"
        )
    )
    assert allowed.status == Status.OK, allowed


async def test_an_unreachable_server_is_connection_refused() -> None:
    out = await run(WebsocketSpec(url="ws://127.0.0.1:9/"))
    assert out.reason == Reason.CONNECTION_REFUSED


async def test_the_subprotocol_is_offered(ws_base: str) -> None:
    # The server echoes only after agreeing on v1.echo; the client offers it.
    out = await run(WebsocketSpec(url=f"{ws_base}/echo", subprotocols=["v1.echo"], expect="welcome"))
    assert out.status == Status.OK


def test_the_api_checks_the_url_and_redacts_secret_headers() -> None:
    body = {
        "name": "ws",
        "type": "websocket",
        "url": "wss://feed.example/live",
        "headers": {"X-Api-Key": "k"},
    }
    cfg = monitor_config.parse(body, ["eu"])
    assert isinstance(cfg.spec, WebsocketSpec)
    assert monitor_config.redact({"headers": {"X-Api-Key": "k"}})["headers"] == {"X-Api-Key": "<redacted>"}
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse({**body, "url": "https://feed.example/live"}, ["eu"])
    assert "url" in caught.value.details


async def test_a_slow_first_message_is_degraded(ws_base: str) -> None:
    out = await run(WebsocketSpec(url=f"{ws_base}/echo", expect="welcome", degraded_ms=0.001))
    assert out.status == Status.DEGRADED and out.reason == Reason.SLOW_RESPONSE


async def test_it_connects_from_the_probe_source_address(ws_base: str) -> None:
    spec = WebsocketSpec(url=f"{ws_base}/whoami", expect="you are 127.0.0.12")
    out = await CHECKERS["websocket"](spec, timeout=2.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(ws_base: str, tmp_path: Path) -> None:
    fields = {"url": f"{ws_base}/echo", "send": "ping 7", "expect": "echo: ping 7"}
    code, result = await probe_check("websocket", fields, tmp_path)
    assert code == 0 and result["status"] == "ok", result
    assert result["details"]["reply"] == "echo: ping 7"
    code, result = await probe_check("websocket", fields | {"expect": "pong"}, tmp_path, "--timeout", "0.5")
    assert code == 1 and result["reason"] == "response_mismatch", result
