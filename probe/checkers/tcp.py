"""TCP check: connect, optional TLS, optional send-then-expect (text or regex)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
import time

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, TcpSpec

_MAX_READ = 64 << 10


def matches(data: bytes, expect: str, regex: bool) -> bool:
    text = data.decode("utf-8", "replace")
    return re.search(expect, text) is not None if regex else expect in text


async def _read_until(reader: asyncio.StreamReader, data: bytearray, expect: str, regex: bool) -> None:
    """Read into `data` until `expect` matches, EOF, or the buffer limit."""
    while len(data) < _MAX_READ and not matches(bytes(data), expect, regex):
        chunk = await reader.read(_MAX_READ - len(data))
        if not chunk:
            return
        data += chunk


async def check(spec: TcpSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    received = bytearray()
    ssl_ctx = base.tls_context(verify=spec.verify_tls, ca_pem=spec.ca_pem) if spec.tls else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                spec.host,
                spec.port,
                ssl=ssl_ctx,
                server_hostname=spec.host if ssl_ctx else None,
                local_addr=base.local_addr(source_address),
            )
            timings["connect"] = base.elapsed_ms(start)
            try:
                if spec.send is not None:
                    writer.write(spec.send.encode())
                    await writer.drain()
                if spec.expect is not None:
                    await _read_until(reader, received, spec.expect, spec.expect_regex)
            finally:
                writer.close()
    except TimeoutError as exc:
        if spec.expect is not None and "connect" in timings:
            return _no_match(received, spec, timings, start)
        return base.from_exception(exc, timings=_total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=_total(timings, start))
    if spec.expect is not None and not matches(bytes(received), spec.expect, spec.expect_regex):
        return _no_match(received, spec, timings, start)
    return base.passed(timings["connect"], spec.degraded_ms, timings=_total(timings, start))


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}


def _no_match(received: bytearray, spec: TcpSpec, timings: dict[str, float], start: float) -> Outcome:
    if not received:
        return base.failed(Reason.NO_RESPONSE, "no reply", timings=_total(timings, start))
    shown = bytes(received[:100]).decode("utf-8", "replace")
    message = f"reply {shown!r} does not match {spec.expect!r}"
    return base.failed(Reason.RESPONSE_MISMATCH, message, timings=_total(timings, start))
