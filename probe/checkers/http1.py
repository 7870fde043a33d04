"""The plain HTTP check's own path: one GET on the probe's own keep-alive HTTP/1.1
connections, the answer parsed by aiohttp's C parser (llhttp: chunked, gzip and deflate,
Connection: close, HTTP/1.0, bodies up to the connection's end).

aiohttp's ClientSession.request builds a ClientRequest, a ClientResponse, a timer, merged
header dicts and a writer per request; a monitor's plain GET needs none of that. Measured
in-process (the probe_throughput worker: Agent.handle_job and the result's encoding, 64
checks in flight against a keep-alive target, shared 2-core machine), the session took
about 116 us of CPU per check and this path about 37 (median of three alternating runs).

http.check sends here only a GET with no body, credentials or headers of its own, to an
http or https URL without user info; every other request, and a URL whose answer was a
redirect to follow (remembered), goes through the session. Phases are marked into the
check's trace as the session's are (http._mark): dns (a lookup not in the 60 s cache), the
connect, the TLS handshake (the same timed SSL context), first_byte.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from typing import Any

import aiohttp
import yarl
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader

# What aiohttp sends by default, so a target sees the same request either way.
_FIXED = b"\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nUser-Agent: " + SERVER_SOFTWARE.encode()
_IDLE_MAX = 15.0  # aiohttp's keep-alive: a pooled connection idle longer is closed
_DNS_TTL = 60.0  # as the session's connector (ttl_dns_cache)
_MAX_KEYS = 2048


class BadResponse(aiohttp.ClientPayloadError):
    """The server's answer is not HTTP (protocol_error, as the session reports it)."""


class _Conn(BaseProtocol):
    """One connection: the parser, the answer being waited for, whether it was lost."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.parser = HttpResponseParser(
            self, loop, 2**16, max_line_size=8190, max_field_size=8190, read_until_eof=True
        )
        self.answer: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self.payload: StreamReader | None = None
        self.got_bytes = False
        self.lost = False
        self.idle_since = time.monotonic()
        self.peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else None

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            messages, _, _ = self.parser.feed_data(data)
        except HttpProcessingError as exc:
            self._fail(BadResponse(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        for message, payload in messages:
            if 100 <= message.code < 200 and message.code != 101:
                continue  # an interim answer; the final one follows (aiohttp's rule)
            self.payload = payload
            if self.answer is not None and not self.answer.done():
                self.answer.set_result((message, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        try:
            self.parser.feed_eof()  # ends a body read to the connection's end
        except Exception as underlying:
            if self.payload is not None and not self.payload.is_eof():
                self.payload.set_exception(
                    aiohttp.ClientPayloadError(f"response payload not completed: {underlying!r}")
                )
        if self.payload is not None and not self.payload.is_eof():
            self.payload.set_exception(aiohttp.ClientPayloadError("connection closed before the body ended"))
        if isinstance(exc, OSError):
            self._fail(exc)
        else:
            self._fail(aiohttp.ServerDisconnectedError())
        super().connection_lost(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    def usable(self, now: float) -> bool:
        return (
            not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
            and (now - self.idle_since <= _IDLE_MAX)
        )


PoolKey = tuple[int, str, str, int, str | None, bool, str | None]
_pools: dict[PoolKey, collections.deque[_Conn]] = {}
_dns: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}
# URLs whose answer was a redirect to follow: the session follows them from then on.
redirected: set[str] = set()


class Answer:
    """What the server answered: status, reason, version, headers, the body read, the peer."""

    __slots__ = ("body", "headers", "peer", "reason", "status", "version")

    def __init__(self, message: RawResponseMessage, body: bytes, peer: str | None) -> None:
        self.status: int = message.code
        self.reason: str = message.reason
        self.version = message.version
        self.headers = message.headers
        self.body = body
        self.peer = peer


def takes(spec: Any, url: yarl.URL | str, method: str) -> bool:
    """Whether the plain path runs this check."""
    return (
        method == "GET"
        and isinstance(url, yarl.URL)
        and not _legacy_ipv4(url.raw_host or "")
        and spec.body is None
        and spec.graphql_query is None
        and not spec.headers
        and spec.basic_auth is None
        and spec.bearer_token is None
        and url.scheme in ("http", "https")
        and bool(url.raw_host)
        and url.raw_user is None
        and url.raw_password is None
        and spec.url not in redirected
    )


def _legacy_ipv4(host: str) -> bool:
    """127.1 or 2130706433: the session refuses these (invalid_target); so does not this path."""
    if not host.replace(".", "").isdigit():
        return False
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return True
    return False


async def get(
    url: yarl.URL,
    *,
    traceparent: str | None,
    source_address: str | None,
    verify_tls: bool,
    ca_pem: str | None,
    ssl_context: Any,
    mark: Any,
    read_max: int,
) -> Answer:
    """One GET of `url` on a pooled connection or a new one (the caller bounds it in time)."""
    loop = asyncio.get_running_loop()
    host, port = str(url.raw_host), int(url.port or (443 if url.scheme == "https" else 80))
    key: PoolKey = (id(loop), url.scheme, host, port, source_address, verify_tls, ca_pem)
    request = b"GET " + url.raw_path_qs.encode() + b" HTTP/1.1\r\nHost: "
    request += str(url.host_port_subcomponent).encode() + _FIXED
    if traceparent is not None:
        request += b"\r\ntraceparent: " + traceparent.encode()
    request += b"\r\n\r\n"
    ctx = ssl_context(verify_tls, ca_pem) if url.scheme == "https" else None
    pool = _pools.get(key)
    now = time.monotonic()
    conn: _Conn | None = None
    while pool:
        candidate = pool.pop()
        if candidate.usable(now):
            conn = candidate
            break
        _close(candidate)
    reused = conn is not None
    if conn is None:
        conn = await _connect(loop, host, port, source_address, ctx, mark)
    try:
        try:
            message, payload = await _exchange(conn, request, loop)
        except (aiohttp.ServerDisconnectedError, ConnectionResetError):
            if not reused or conn.got_bytes:
                raise
            # The server closed the pooled connection as the request went out (its keep-alive
            # timeout): once more on a new one, as aiohttp does for idempotent methods.
            conn = await _connect(loop, host, port, source_address, ctx, mark)
            message, payload = await _exchange(conn, request, loop)
        mark("first_byte")
        body = await payload.read(read_max)
    except BaseException:
        _close(conn)
        raise
    answer = Answer(message, body, conn.peer)
    if payload.is_eof() and not message.should_close and conn.usable(now):
        conn.answer, conn.payload, conn.got_bytes = None, None, False
        conn.idle_since = time.monotonic()
        if len(_pools) >= _MAX_KEYS and key not in _pools:
            _close_pools(lambda _k: True)
        pool = _pools.setdefault(key, collections.deque())
        # Taken from the right: connections idle at the left past _IDLE_MAX are closed here.
        while pool and not pool[0].usable(now):
            _close(pool.popleft())
        pool.append(conn)
    else:
        _close(conn)
    return answer


def _close(conn: _Conn) -> None:
    if conn.transport is not None:
        conn.transport.close()


async def _exchange(
    conn: _Conn, request: bytes, loop: asyncio.AbstractEventLoop
) -> tuple[RawResponseMessage, StreamReader]:
    conn.answer = loop.create_future()
    assert conn.transport is not None
    conn.transport.write(request)
    return await conn.answer


async def _connect(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    source_address: str | None,
    tls: ssl.SSLContext | None,
    mark: Any,
) -> _Conn:
    """A new connection: each address the name resolves to in turn (as aiohttp), TLS on it
    for https."""
    mark("conn_start")
    addrs = await _resolve(loop, host, port, mark)
    local = (source_address, 0) if source_address else None
    last: OSError | None = None
    for family, address in addrs:
        try:
            _, conn = await loop.create_connection(
                lambda: _Conn(loop),
                address,
                port,
                family=family,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                local_addr=local,
            )
        except ssl.SSLError:
            raise
        except OSError as exc:
            last = exc
            continue
        mark("conn_end")
        return conn
    assert last is not None
    raise last


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int, mark: Any) -> list[tuple[int, str]]:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
        return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))]
    except OSError:
        pass
    cached = _dns.get((host, port))
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    mark("dns_start")
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    mark("dns_end")
    addrs = [(int(info[0]), str(info[4][0])) for info in infos]
    if len(_dns) >= _MAX_KEYS:
        _dns.clear()
    _dns[(host, port)] = (time.monotonic() + _DNS_TTL, addrs)
    return addrs


def _close_pools(which: Any) -> None:
    for key in [k for k in _pools if which(k)]:
        for conn in _pools.pop(key):
            if conn.transport is not None:
                conn.transport.close()


def close(loop_id: int) -> None:
    """Close this event loop's pooled connections."""
    _close_pools(lambda k: k[0] == loop_id)
    _dns.clear()
