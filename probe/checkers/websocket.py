"""WebSocket check: the opening handshake, an optional message sent, and the first
message that contains (or matches) the expected text.

It goes through the http checker's session (probe/checkers/http.py), so a probe's source
address and TLS settings apply as for http. Timings: `connect` (the opening handshake
done), `first_message` (from the start to the first message received), `total`.
"""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time

import aiohttp

from probefleet.probe.checkers import base, http
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.checkers.tcp import matches
from probefleet.shared.redact import redact_text
from probefleet.shared.wire import Reason, WebsocketSpec

_MAX_MESSAGE = 1 << 20


async def check(spec: WebsocketSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    received: list[str] = []
    session = http.session_for(source_address, spec.verify_tls, spec.ca_pem)
    try:
        async with asyncio.timeout(timeout):
            async with session.ws_connect(
                spec.url,
                headers=spec.headers,
                protocols=spec.subprotocols,
                max_msg_size=_MAX_MESSAGE,
                autoping=True,
            ) as ws:
                timings["connect"] = base.elapsed_ms(start)
                if spec.send is not None:
                    await ws.send_str(spec.send)
                if spec.expect is not None:
                    outcome = await _await_reply(ws, spec, received, timings, start)
                    if outcome is not None:
                        return outcome
    except aiohttp.WSServerHandshakeError as exc:
        message = f"the server refused the WebSocket handshake: HTTP {exc.status}"
        return base.failed(
            Reason.STATUS_MISMATCH, message, status_code=exc.status, timings=_total(timings, start)
        )
    except TimeoutError as exc:
        if spec.expect is not None and "connect" in timings:
            return _no_match(received, spec, timings, start)
        return base.from_exception(exc, timings=_total(timings, start))
    except Exception as exc:
        out = base.from_exception(exc, timings=_total(timings, start))
        out.message = redact_text(out.message, spec.secret_params)
        return out
    details: dict[str, object] = {"messages": len(received)}
    if received:
        details["reply"] = received[-1][:200]
    return base.passed(
        timings.get("first_message", timings["connect"]),
        spec.degraded_ms,
        timings=_total(timings, start),
        status_code=101,
        details=details,
    )


async def _await_reply(
    ws: aiohttp.ClientWebSocketResponse,
    spec: WebsocketSpec,
    received: list[str],
    timings: dict[str, float],
    start: float,
) -> Outcome | None:
    """Read messages until one matches (None), or the server closes (an outcome)."""
    assert spec.expect is not None
    async for msg in ws:
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            break
        text = msg.data if isinstance(msg.data, str) else msg.data.decode("utf-8", "replace")
        timings.setdefault("first_message", base.elapsed_ms(start))
        received.append(text)
        if matches(text.encode(), spec.expect, spec.expect_regex):
            return None
    return _no_match(received, spec, timings, start, closed=True)


def _no_match(
    received: list[str], spec: WebsocketSpec, timings: dict[str, float], start: float, closed: bool = False
) -> Outcome:
    if not received:
        message = "the server closed the connection without a message" if closed else "no message"
        return base.failed(Reason.NO_RESPONSE, message, status_code=101, timings=_total(timings, start))
    shown = received[-1][:100]
    message = f"{len(received)} message(s), the last {shown!r}, none matches {spec.expect!r}"
    return base.failed(Reason.RESPONSE_MISMATCH, message, status_code=101, timings=_total(timings, start))


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}
