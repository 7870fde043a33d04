"""UDP check: send a payload, expect a reply matching a pattern; silence fails."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.checkers.tcp import matches
from probefleet.shared.wire import Reason, UdpSpec


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port-unreachable surfaces here as ConnectionRefusedError.
        if not self.future.done():
            self.future.set_exception(exc)


async def check(spec: UdpSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    transport: asyncio.DatagramTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_datagram_endpoint(
                _Reply,
                remote_addr=(spec.host, spec.port),
                local_addr=base.local_addr(source_address),
            )
            transport.sendto(spec.send.encode())
            reply = await protocol.future
    except TimeoutError:
        timings = {"total": base.elapsed_ms(start)}
        return base.failed(Reason.NO_RESPONSE, f"no reply within {timeout:g} s", timings=timings)
    except Exception as exc:
        return base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
    finally:
        if transport is not None:
            transport.close()
    total = base.elapsed_ms(start)
    timings = {"total": total}
    details: dict[str, object] = {"size": len(reply)}
    if spec.expect is not None and not matches(reply, spec.expect, spec.expect_regex):
        shown = reply[:100].decode("utf-8", "replace")
        message = f"reply {shown!r} does not match {spec.expect!r}"
        return base.failed(Reason.RESPONSE_MISMATCH, message, timings=timings, details=details)
    return base.passed(total, spec.degraded_ms, timings=timings, details=details)
