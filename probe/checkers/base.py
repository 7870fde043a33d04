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
