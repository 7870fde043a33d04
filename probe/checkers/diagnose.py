"""Diagnostics for a monitor that just went down (not a monitor kind: the controller sends
it, controller/engine/diagnostics.py): a traceroute to the target, a DNS resolution with
its answer and the resolver used, and for TLS targets the presented certificate chain, run
in parallel within the spec's budget. The outcome is ok whenever the diagnosis ran: it
describes the path to the target, it does not judge the target.

The traceroute sends UDP datagrams with rising TTLs (one socket per TTL, all at once, the
unanswered ones once more) and reads the ICMP time-exceeded and port-unreachable answers
from each socket's error queue (Linux IP_RECVERR), as tracepath does. That needs no
privilege: it works alike for a probe running as root and as nobody, where an ICMP
traceroute needs a raw socket (icmplib's traceroute is privileged: an unprivileged ping
socket receives the routers' time-exceeded answers only through the same error queue,
which icmplib does not read)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Awaitable
from typing import Any

import aiodns

from probefleet.probe import x509
from probefleet.probe.checkers import base, dns
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import DiagnoseSpec, Status, TlsSpec

MAX_HOPS = 30
_BASE_PORT = 33434
_PAYLOAD = b"probefleet diagnose"
# linux/in.h, linux/in6.h, linux/errqueue.h
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# Resend a TTL's datagram once when it has had no answer for this long.
_RESEND_AFTER = 1.0


def _hop_kind(origin: int, icmp_type: int, code: int) -> str | None:
    """time_exceeded (a router on the way), reached (the target's port unreachable),
    unreachable (another destination-unreachable code), or None (not an ICMP answer)."""
    if origin == _ORIGIN_ICMP:
        if icmp_type == 11:
            return "time_exceeded"
        if icmp_type == 3:
            return "reached" if code == 3 else "unreachable"
    elif origin == _ORIGIN_ICMP6:
        if icmp_type == 3:
            return "time_exceeded"
        if icmp_type == 1:
            return "reached" if code == 4 else "unreachable"
    return None


def _offender(data: bytes) -> str | None:
    """The address of the node that sent the ICMP answer (SO_EE_OFFENDER)."""
    rest = data[_EXTENDED_ERR.size :]
    if len(rest) < 8:
        return None
    family = struct.unpack_from("=H", rest)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, rest[4:8])
    if family == socket.AF_INET6 and len(rest) >= 24:
        return socket.inet_ntop(socket.AF_INET6, rest[8:24])
    return None


def _read_error(sock: socket.socket) -> tuple[str, str | None, int] | None:
    """(kind, offender, ICMP code) of the ICMP answer queued on `sock`, if any."""
    try:
        _, ancillary, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except (BlockingIOError, InterruptedError):
        return None
    for level, kind, data in ancillary:
        if (level, kind) not in ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)):
            continue
        if len(data) < _EXTENDED_ERR.size:
            continue
        _, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
        hop = _hop_kind(origin, icmp_type, code)
        if hop is not None:
            return hop, _offender(data), code
    return None


def trace(
    address: str, *, max_hops: int, wait: float, source_address: str | None = None
) -> dict[str, object]:
    """A UDP traceroute to `address` within `wait` seconds (blocking: run it in a thread)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    level, ttl_option, recverr = (
        (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, _IPV6_RECVERR)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, socket.IP_TTL, _IP_RECVERR)
    )
    max_hops = max(1, min(max_hops, MAX_HOPS))
    start = time.perf_counter()
    end = start + wait
    socks: dict[int, socket.socket] = {}  # ttl -> socket
    sent: dict[int, float] = {}
    answers: dict[int, dict[str, object]] = {}
    resent: set[int] = set()
    poller = select.poll()
    try:
        for ttl in range(1, max_hops + 1):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks[ttl] = sock
            sock.setblocking(False)
            sock.setsockopt(level, recverr, 1)
            sock.setsockopt(level, ttl_option, ttl)
            if source_address:
                sock.bind((source_address, 0))
            sock.connect((address, _BASE_PORT + ttl))
            poller.register(sock.fileno(), select.POLLERR | select.POLLIN)
        by_fd = {s.fileno(): ttl for ttl, s in socks.items()}

        def send(ttl: int) -> None:
            sent[ttl] = time.perf_counter()
            try:
                socks[ttl].send(_PAYLOAD)
            except OSError as exc:  # a local route error, or the previous datagram's answer
                if (got := _read_error(socks[ttl])) is not None:
                    record(ttl, got)
                elif ttl not in answers:
                    answers[ttl] = {"ttl": ttl, "address": None, "kind": "error", "error": str(exc)[:100]}

        def record(ttl: int, got: tuple[str, str | None, int]) -> None:
            if ttl in answers:
                return
            kind, offender, code = got
            hop: dict[str, object] = {
                "ttl": ttl,
                "address": offender,
                "kind": kind,
                "rtt_ms": round((time.perf_counter() - sent[ttl]) * 1000, 3),
            }
            if kind == "unreachable":
                hop["code"] = code
            answers[ttl] = hop
            with contextlib.suppress(KeyError, ValueError):
                poller.unregister(socks[ttl].fileno())

        def last() -> int | None:
            """The first TTL that got to the target (or was refused on the way)."""
            ends = [t for t, h in answers.items() if h["kind"] in ("reached", "unreachable")]
            return min(ends) if ends else None

        def done() -> bool:
            stop = last() or max_hops
            return all(t in answers for t in range(1, stop + 1))

        for ttl in socks:
            send(ttl)
        while not done():
            now = time.perf_counter()
            if now >= end:
                break
            for ttl in range(1, (last() or max_hops) + 1):
                if ttl not in answers and ttl not in resent and now - sent[ttl] >= _RESEND_AFTER:
                    resent.add(ttl)
                    send(ttl)
            for fd, _ in poller.poll(max(1, int(min(end - now, _RESEND_AFTER / 4) * 1000))):
                ttl = by_fd[fd]
                if (got := _read_error(socks[ttl])) is not None:
                    record(ttl, got)
                else:
                    with contextlib.suppress(OSError):
                        socks[ttl].recv(512)  # a UDP service answered at the target itself
                        record(ttl, ("reached", address, 0))
    finally:
        for sock in socks.values():
            sock.close()
    stop = last()
    upto = stop if stop is not None else max((t for t in answers if answers[t]["kind"] != "error"), default=0)
    hops = [answers.get(t) or {"ttl": t, "address": None, "kind": "no_answer"} for t in range(1, upto + 1)]
    reached = stop is not None and answers[stop]["kind"] == "reached"
    return {
        "method": "udp",
        "address": address,
        "reached": reached,
        "hops": hops,
        "duration_ms": base.elapsed_ms(start),
    }


def trace_tcp(
    address: str, port: int, *, max_hops: int, wait: float, source_address: str | None = None
) -> dict[str, object]:
    """A TCP traceroute to `address`:`port` within `wait` seconds (blocking: run it in a
    thread): a non-blocking connect per TTL, all at once. A router's time-exceeded answer to
    the SYN ends that connect and is read from the socket's error queue (IP_RECVERR, as for
    UDP); the target ends it with a SYN-ACK (`port: open`) or a RST (`port: closed`). The
    kernel resends an unanswered SYN by itself (after 1 s, then 3 s)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    level, ttl_option, recverr = (
        (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, _IPV6_RECVERR)
        if family == socket.AF_INET6
        else (socket.IPPROTO_IP, socket.IP_TTL, _IP_RECVERR)
    )
    max_hops = max(1, min(max_hops, MAX_HOPS))
    start = time.perf_counter()
    end = start + wait
    socks: dict[int, socket.socket] = {}  # ttl -> socket
    sent: dict[int, float] = {}
    answers: dict[int, dict[str, object]] = {}
    poller = select.poll()

    def record(ttl: int, hop: dict[str, object]) -> None:
        answers[ttl] = {"ttl": ttl, **hop, "rtt_ms": round((time.perf_counter() - sent[ttl]) * 1000, 3)}
        with contextlib.suppress(KeyError, ValueError):
            poller.unregister(socks[ttl].fileno())

    def settle(ttl: int) -> None:
        """What ended the connect of `ttl`: an ICMP answer, the target's RST or SYN-ACK."""
        sock = socks[ttl]
        if (got := _read_error(sock)) is not None:
            kind, offender, code = got
            # The target's TCP answers with a RST, not ICMP: an ICMP port unreachable
            # is a firewall's reject, on the target or before it.
            hop: dict[str, object] = {"address": offender, "kind": kind}
            if kind != "time_exceeded":
                hop.update(kind="unreachable", code=code)
            record(ttl, hop)
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            record(ttl, {"address": address, "kind": "reached", "port": "open"})
        elif err == errno.ECONNREFUSED:
            record(ttl, {"address": address, "kind": "reached", "port": "closed"})
        elif err not in (errno.EINPROGRESS, errno.EALREADY):
            record(ttl, {"address": None, "kind": "error", "error": os.strerror(err)[:100]})

    def last() -> int | None:
        ends = [t for t, h in answers.items() if h["kind"] in ("reached", "unreachable")]
        return min(ends) if ends else None

    def done() -> bool:
        stop = last() or max_hops
        return all(t in answers for t in range(1, stop + 1))

    try:
        for ttl in range(1, max_hops + 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks[ttl] = sock
            sock.setblocking(False)
            sock.setsockopt(level, recverr, 1)
            sock.setsockopt(level, ttl_option, ttl)
            # Closing a connected socket resets it: the target keeps no connection of ours.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if source_address:
                sock.bind((source_address, 0))
            sent[ttl] = time.perf_counter()
            err = sock.connect_ex((address, port))
            if err in (0, errno.EINPROGRESS):
                poller.register(sock.fileno(), select.POLLOUT | select.POLLERR)
                if err == 0:
                    settle(ttl)
            elif err == errno.ECONNREFUSED and _read_error(sock) is None:  # refused at once (loopback)
                record(ttl, {"address": address, "kind": "reached", "port": "closed"})
            else:  # a local route error
                record(ttl, {"address": None, "kind": "error", "error": os.strerror(err)[:100]})
            if last() is not None:  # the target answered already: no higher TTL needed
                break
        by_fd = {s.fileno(): ttl for ttl, s in socks.items()}
        while not done():
            now = time.perf_counter()
            if now >= end:
                break
            for fd, mask in poller.poll(max(1, int(min(end - now, 0.25) * 1000))):
                ttl = by_fd[fd]
                settle(ttl)
                if ttl not in answers and mask & (select.POLLERR | select.POLLHUP):
                    # Ended with nothing to read (no ICMP, no error): not polled again.
                    with contextlib.suppress(KeyError, ValueError):
                        poller.unregister(fd)
    finally:
        for sock in socks.values():
            sock.close()
    stop = last()
    upto = stop if stop is not None else max((t for t in answers if answers[t]["kind"] != "error"), default=0)
    hops = [answers.get(t) or {"ttl": t, "address": None, "kind": "no_answer"} for t in range(1, upto + 1)]
    reached = stop is not None and answers[stop]["kind"] == "reached"
    out: dict[str, object] = {"method": "tcp", "address": address, "port": port, "reached": reached}
    if reached:
        out["port_state"] = answers[stop]["port"]  # type: ignore[index]
    return out | {"hops": hops, "duration_ms": base.elapsed_ms(start)}


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(spec: DiagnoseSpec, source_address: str | None) -> dict[str, object]:
    """The A and AAAA answers for the target's name and the resolver that gave them."""
    if _is_address(spec.host):
        return {"skipped": "the target is an address", "addresses": [spec.host]}
    if source_address and (unbound := base.bind_error(source_address)) is not None:
        return {"error": base.message_for(unbound)}
    resolver = dns._resolver(spec.resolver, source_address)
    out: dict[str, object] = {
        "name": spec.host,
        "resolver": spec.resolver or ",".join(resolver.nameservers) or "system",
    }
    if not spec.resolver:
        out["resolver_source"] = "system"
    answers: dict[str, object] = {}
    addresses: list[str] = []
    for record_type, result in zip(
        ("A", "AAAA"),
        await asyncio.gather(
            resolver.query_dns(spec.host, "A"), resolver.query_dns(spec.host, "AAAA"), return_exceptions=True
        ),
        strict=True,
    ):
        if isinstance(result, aiodns.error.DNSError):
            code = result.args[0] if result.args else None
            answers[record_type] = {"rcode": dns._RCODES.get(code), "error": base.message_for(result)}
        elif isinstance(result, BaseException):
            answers[record_type] = {"error": base.message_for(result)}
        else:
            records = dns._records(result.answer)
            answers[record_type] = {"rcode": "NOERROR", "answer": records}
            addresses += [str(r["data"]) for r in records if r["type"] == record_type]
    out["answers"] = answers
    out["addresses"] = addresses
    return out


async def certificate_chain(
    spec: DiagnoseSpec, budget: float, source_address: str | None
) -> dict[str, object]:
    """The chain the server presents, with the verification error when it does not verify."""
    try:
        from probefleet.probe.checkers import tls
    except ImportError as exc:  # cryptography is not installed on this probe
        return {"error": f"cannot read certificates here: {exc}"[:200]}
    tls_spec = TlsSpec(
        host=spec.host,
        port=spec.port or 443,
        server_name=spec.server_name,
        ca_pem=spec.ca_pem,
        check_ocsp=False,
    )
    presented = x509.Presented()
    try:
        der, version = await tls._handshake(tls_spec, budget, source_address, presented)
    except ssl.SSLError as exc:
        out: dict[str, object] = {"verified": False, "verify_error": base.message_for(exc)}
        if presented.certs:
            return out | {"chain": tls._chain(presented, b""), "tls_version": presented.version}
        return out | await tls._presented(tls_spec, budget / 2, source_address)
    return {"verified": True, "chain": tls._chain(presented, der), "tls_version": version}


async def _timed(part: Awaitable[dict[str, object]], budget: float) -> dict[str, object]:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(max(budget, 0.001)):
            out = await part
    except TimeoutError:
        out = {"error": "timed out"}
    except Exception as exc:
        out = {"error": base.message_for(exc), "reason": str(base.reason_for(exc))}
    return {**out, "duration_ms": base.elapsed_ms(start)}


async def _route(
    spec: DiagnoseSpec, dns_part: asyncio.Task[dict[str, object]], end: float, source: str | None
) -> dict[str, object]:
    if _is_address(spec.host):
        address = spec.host
    else:
        answer = await dns_part
        addresses = answer.get("addresses") or []
        if isinstance(addresses, list) and addresses:
            address = str(addresses[0])
        else:  # no DNS answer: the host's other sources (/etc/hosts) may still name one
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(spec.host, None, type=socket.SOCK_DGRAM)
            except OSError:
                return {"error": "the name has no address to trace"}
            address = str(infos[0][4][0])
    wait = end - time.perf_counter()
    udp = asyncio.to_thread(trace, address, max_hops=spec.max_hops, wait=wait, source_address=source)
    if not (spec.tcp and spec.port):
        return await udp
    # A TCP target is traced both ways at once, within the same budget: the TCP trace
    # (the monitor's own traffic) is the traceroute, the UDP one rides in it as `udp`, so
    # a path that lets one through and not the other shows (a firewall, or the service).
    tcp = asyncio.to_thread(
        trace_tcp, address, spec.port, max_hops=spec.max_hops, wait=wait, source_address=source
    )
    by_tcp, by_udp = await asyncio.gather(tcp, udp, return_exceptions=True)
    if isinstance(by_tcp, BaseException):
        raise by_tcp
    if isinstance(by_udp, BaseException):
        by_udp = {"method": "udp", "error": base.message_for(by_udp)}
    return {**by_tcp, "udp": by_udp}


def _summary(details: dict[str, Any]) -> str:
    parts = []
    route = details.get("traceroute") or {}
    if "hops" in route:
        hops = len(route["hops"])
        state = "reached" if route.get("reached") else "did not reach"
        closed = " (port closed)" if route.get("port_state") == "closed" else ""
        parts.append(
            f"{route.get('method', 'udp')} traceroute {state} {route['address']}"
            f" in {hops} hop{'s' if hops != 1 else ''}{closed}"
        )
        udp = route.get("udp") or {}
        if "hops" in udp and bool(udp.get("reached")) != bool(route.get("reached")):
            n = len(udp["hops"])
            state = "reached it" if udp.get("reached") else "did not reach it"
            parts.append(f"udp traceroute {state} in {n} hop{'s' if n != 1 else ''}")
    elif "error" in route:
        parts.append(f"traceroute: {route['error']}")
    answer = details.get("dns") or {}
    if "addresses" in answer and "skipped" not in answer:
        parts.append(f"DNS {', '.join(answer['addresses'][:3]) or 'no address'} via {answer.get('resolver')}")
    elif "error" in answer:
        parts.append(f"DNS: {answer['error']}")
    chain = details.get("tls")
    if chain:
        if chain.get("verified"):
            parts.append("TLS chain ok")
        elif "verify_error" in chain:
            parts.append(f"TLS chain not verified: {chain['verify_error']}")
        elif "error" in chain:
            parts.append(f"TLS: {chain['error']}")
    return ", ".join(parts)[:300]


async def check(spec: DiagnoseSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    budget = max(0.1, min(spec.budget, timeout)) * 0.95  # room to report
    end = start + budget
    dns_part = asyncio.ensure_future(_timed(resolve(spec, source_address), min(budget / 2, 5.0)))
    parts: dict[str, Awaitable[dict[str, object]]] = {
        "dns": dns_part,
        "traceroute": _timed(_route(spec, dns_part, end - 0.05, source_address), budget),
    }
    if spec.tls:
        parts["tls"] = _timed(certificate_chain(spec, budget * 0.9, source_address), budget)
    results = await asyncio.gather(*parts.values())
    details: dict[str, object] = {"target": spec.url or spec.host, **dict(zip(parts, results, strict=True))}
    if spec.port:
        details["port"] = spec.port
    timings = {name: float(out.get("duration_ms", 0.0)) for name, out in zip(parts, results, strict=True)}  # type: ignore[arg-type]
    timings["total"] = base.elapsed_ms(start)
    return Outcome(status=Status.OK, message=_summary(details), timings=timings, details=details)
