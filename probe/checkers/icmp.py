"""ICMP echo check: count, interval, loss threshold; min/avg/max round trip and jitter."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import os
import socket
import time

import icmplib

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import IcmpSpec, Reason


def _modes(privileged: bool | None) -> list[bool]:
    if privileged is not None:
        return [privileged]
    # Raw sockets need root or CAP_NET_RAW; unprivileged ones need ping_group_range.
    return [True, False] if os.geteuid() == 0 else [False, True]


def available() -> bool:
    """Whether this process may send ICMP echo at all: a raw socket (root or CAP_NET_RAW)
    or an unprivileged ICMP socket (the group is inside net.ipv4.ping_group_range)."""
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
        except OSError:
            continue
        return True
    return False


async def _ping(spec: IcmpSpec, budget: float, source: str | None, modes: list[bool]) -> icmplib.Host:
    # icmplib waits for each reply in turn: share 90 % of the budget between them so
    # that total loss reports packet_loss, not timeout.
    spare = budget * 0.9 - spec.interval * max(0, spec.count - 1)
    per_reply = max(0.01, spare / max(1, spec.count))
    kwargs = {"source": source} if source else {}
    for i, privileged in enumerate(modes):
        try:
            return await icmplib.async_ping(
                spec.host,
                count=spec.count,
                interval=spec.interval,
                timeout=per_reply,
                privileged=privileged,
                **kwargs,
            )
        except icmplib.SocketPermissionError:
            if i == len(modes) - 1:
                raise
    raise AssertionError("unreachable")


async def check(
    spec: IcmpSpec,
    *,
    timeout: float,
    source_address: str | None,
    privileged: bool | None = None,
) -> Outcome:
    """`privileged` forces one socket kind; by default raw first when root."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            host = await _ping(spec, timeout, source_address, _modes(privileged))
    except Exception as exc:
        return base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
    timings = {"total": base.elapsed_ms(start)}
    details: dict[str, object] = {
        "address": host.address,
        "sent": host.packets_sent,
        "received": host.packets_received,
        "packet_loss": host.packet_loss,
    }
    if host.packets_received:
        timings |= {
            "rtt_min": host.min_rtt,
            "rtt_avg": host.avg_rtt,
            "rtt_max": host.max_rtt,
            "jitter": host.jitter,
        }
    if host.packets_received == 0 or host.packet_loss > spec.max_packet_loss:
        message = f"{host.packet_loss:.0%} packet loss ({host.packets_received}/{host.packets_sent})"
        return base.failed(Reason.PACKET_LOSS, message, timings=timings, details=details)
    return base.passed(host.avg_rtt, spec.degraded_ms, timings=timings, details=details)
