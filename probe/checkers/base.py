"""What every checker returns, the one map from library exceptions to reasons, helpers."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import socket
import ssl
import time
from collections.abc import Awaitable
from typing import Any, Protocol

import aiodns
import aiohttp
import icmplib
import msgspec

from probefleet.shared.wire import Reason, Status

# The W3C traceparent of the running check's span when OpenTelemetry export is on
# (probe/otel.py); the HTTP checker sends it so the target's traces join the check.
TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)


class Outcome(msgspec.Struct, kw_only=True):
    """A checker's verdict on one target; the agent wraps it into a CheckResult."""

    status: Status
    reason: Reason | None = None
    message: str = ""
    timings: dict[str, float] = {}
    status_code: int | None = None
    details: dict[str, object] = {}


class _Timers:
    """The deadlines of the running `timeout` blocks of one event loop, on one timer.

    asyncio.timeout arms a timer per block (under uvloop a libuv handle, closed again on the
    next loop turn), and the probe runs two per check (the agent's guard and the checker's
    own) that rarely fire. Here a block is one dict entry, and one timer waits for the
    earliest deadline among the running blocks: re-armed when a block with an earlier one
    starts, and when it fires, for the next one still running. Measured with 10,000
    `handle_job` calls on HTTP jobs against a keep-alive target, alternating runs on a
    shared 2-core machine: the agent's guard took 3-4 us off a check's 132 us of CPU, the
    HTTP checker's own a further 8 (median of five runs, 131.8 -> 123.0 us)."""

    # Timers may run up to about a millisecond early (agent._HOLD_PAD): a deadline that
    # close fires, rather than the timer being armed again and again for it.
    _EARLY = 0.002

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # key: (loop time to fire at, the block's task, its cancel requests at the start)
        self._running: dict[int, tuple[float, asyncio.Task[Any], int]] = {}
        self._fired: set[int] = set()
        self._keys = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def start(self, when: float) -> int:
        """Cancel the current task at loop time `when` unless `end`ed first; the key."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() should be used inside a task")
        self._keys += 1
        self._running[self._keys] = (when, task, task.cancelling())
        if when < self._timer_at:
            self._arm(when)
        return self._keys

    def end(self, key: int) -> bool:
        """Drop `key`. True when it fired and nobody else cancelled its task since it
        started (its cancel is taken back, as asyncio.timeout takes back its own)."""
        _, task, cancelling = self._running.pop(key)
        if key not in self._fired:
            return False
        self._fired.discard(key)
        return task.uncancel() <= cancelling

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        now = self.loop.time()
        following = float("inf")
        for key, (when, task, _) in self._running.items():
            if key in self._fired:
                continue
            if when <= now + self._EARLY:
                self._fired.add(key)
                task.cancel()
            else:
                following = min(following, when)
        if following < float("inf"):
            self._arm(following)


_timers: dict[int, _Timers] = {}


class timeout:
    """`async with timeout(seconds):` as asyncio.timeout: the block's task is cancelled after
    `seconds` and the block raises TimeoutError; a cancel from elsewhere propagates. The
    deadlines of all blocks share one timer per event loop (_Timers)."""

    __slots__ = ("_delay", "_key", "_timers")

    def __init__(self, delay: float) -> None:
        self._delay = delay

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        timers = _timers.get(id(loop))
        if timers is None or timers.loop is not loop:
            timers = _timers[id(loop)] = _Timers(loop)
        self._timers = timers
        self._key = timers.start(loop.time() + self._delay)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._timers.end(self._key) and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class Checker(Protocol):
    def __call__(self, spec: Any, *, timeout: float, source_address: str | None) -> Awaitable[Outcome]: ...


def failed(reason: Reason, message: str, **fields: Any) -> Outcome:
    return Outcome(status=Status.FAIL, reason=reason, message=message, **fields)


def passed(elapsed_ms: float, degraded_ms: float | None, **fields: Any) -> Outcome:
    """ok, or degraded/slow_response when the check took longer than `degraded_ms`."""
    if degraded_ms is not None and elapsed_ms > degraded_ms:
        message = f"took {elapsed_ms:.0f} ms, over {degraded_ms:.0f} ms"
        return Outcome(status=Status.DEGRADED, reason=Reason.SLOW_RESPONSE, message=message, **fields)
    return Outcome(status=Status.OK, **fields)


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def local_addr(source_address: str | None) -> tuple[str, int] | None:
    return (source_address, 0) if source_address else None


def bind_error(source_address: str) -> OSError | None:
    """Why a socket cannot be bound to `source_address` on this host, or None: for clients
    that would otherwise report a missing address as something else (c-ares: a timeout)."""
    family = socket.AF_INET6 if ":" in source_address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((source_address, 0))
    except OSError as exc:
        return exc
    return None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies `reader` to `writer` until EOF or an error, then closes `writer`: one
    direction of the relays that give a source address to clients that cannot bind one
    (grpc, browser)."""
    try:
        while data := await reader.read(64 << 10):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def tls_context(*, verify: bool, ca_pem: str | None, check_hostname: bool = True) -> ssl.SSLContext:
    """Client context: system trust store plus `ca_pem`, or no verification at all."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    ctx.check_hostname = check_hostname
    return ctx


# OpenSSL X509_V_ERR_* codes that have a reason of their own.
_CERT_EXPIRED = 10
_HOSTNAME_MISMATCH = {62, 64}  # host name, IP address
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
_ARES_REASONS = {
    aiodns.error.ARES_ETIMEOUT: Reason.TIMEOUT,
    aiodns.error.ARES_ECONNREFUSED: Reason.CONNECTION_REFUSED,
}
_ICMP_SYSCTL_HINT = (
    "ICMP sockets are not allowed: run the probe as root (or with CAP_NET_RAW), or allow "
    "unprivileged ping with `sysctl -w net.ipv4.ping_group_range='0 2147483647'`"
)


def _cert_reason(exc: ssl.SSLCertVerificationError) -> Reason:
    if exc.verify_code == _CERT_EXPIRED:
        return Reason.CERT_EXPIRED
    if exc.verify_code in _HOSTNAME_MISMATCH:
        return Reason.HOSTNAME_MISMATCH
    return Reason.CERT_INVALID


def _os_reason(exc: OSError) -> Reason:
    if isinstance(exc, ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or exc.errno in _RESET_ERRNOS:
        return Reason.CONNECTION_RESET
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Reason.NETWORK_UNREACHABLE
    if isinstance(exc, PermissionError):
        return Reason.PERMISSION_DENIED
    return Reason.INTERNAL_ERROR


def reason_for(exc: BaseException) -> Reason:
    """The one mapping from library exceptions to reasons, most specific first."""
    match exc:
        case aiohttp.TooManyRedirects():
            return Reason.TOO_MANY_REDIRECTS
        case aiohttp.ClientConnectorCertificateError():
            cert_error = exc.certificate_error
            if isinstance(cert_error, ssl.SSLCertVerificationError):
                return _cert_reason(cert_error)
            return Reason.CERT_INVALID
        case ssl.SSLCertVerificationError():
            return _cert_reason(exc)
        case aiohttp.ClientConnectorSSLError() | aiohttp.ClientSSLError() | ssl.SSLError():
            return Reason.TLS_ERROR
        case aiodns.error.DNSError():
            return _ARES_REASONS.get(exc.args[0] if exc.args else None, Reason.DNS_ERROR)
        case aiohttp.ClientConnectorDNSError() | icmplib.NameLookupError():
            return Reason.DNS_ERROR
        case socket.gaierror():
            return Reason.DNS_ERROR
        case aiohttp.ClientConnectorError():
            return _os_reason(exc.os_error)
        case TimeoutError() | icmplib.TimeoutExceeded():
            return Reason.TIMEOUT
        case aiohttp.ServerDisconnectedError():
            return Reason.CONNECTION_RESET
        case icmplib.SocketPermissionError():
            return Reason.PERMISSION_DENIED
        case icmplib.SocketAddressError():  # the probe's source address is not on this host
            return Reason.NETWORK_UNREACHABLE
        case aiohttp.InvalidURL() | aiohttp.NonHttpUrlClientError() | UnicodeError():
            return Reason.INVALID_TARGET
        case aiohttp.ClientResponseError() | aiohttp.ClientPayloadError():
            return Reason.PROTOCOL_ERROR
        case aiohttp.ClientOSError() | OSError():
            return _os_reason(exc)
        case asyncio.IncompleteReadError():
            return Reason.CONNECTION_RESET
    return Reason.INTERNAL_ERROR


def message_for(exc: BaseException) -> str:
    if isinstance(exc, icmplib.SocketPermissionError):
        return _ICMP_SYSCTL_HINT
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:300]


def from_exception(exc: BaseException, **fields: Any) -> Outcome:
    return failed(reason_for(exc), message_for(exc), **fields)
