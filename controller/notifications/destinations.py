"""Outbound HTTP destinations that users choose (status-page webhook subscribers,
notification channel URLs): refuse any that resolve to a non-public address, so nobody
can make the controller send requests into its own network (SSRF).

The check runs when the URL is given (a clear 422) and again for every request: the
session's resolver checks the addresses it returns and the connector connects only to
those, so a DNS answer that changes between the two checks (rebinding) gains nothing.
An IP-literal host never reaches a resolver; the session checks it as the request starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

RESOLVE_TIMEOUT = 5.0
REFUSED = "resolves to a private, loopback, link-local, multicast or reserved address"


class DestinationError(ValueError):
    """The URL may not be used as a destination; the message says why."""


class RefusedError(OSError):
    """Raised by PublicOnlyResolver; aiohttp wraps it in ClientConnectorError."""


def forbidden(address: str) -> bool:
    """True unless `address` is a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def split(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or DestinationError."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationError("must be an http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError("must be an http or https URL")
    return parts.hostname, port


async def check(url: str, *, allow_private: bool) -> None:
    """Resolve the URL's host and refuse it if any address is not public."""
    host, port = split(url)
    if allow_private:
        return
    if _literal(host):
        addresses = [host]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise DestinationError(f"host {host} does not resolve") from None
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(forbidden(a) for a in addresses):
        raise DestinationError(f"host {host} {REFUSED}")


def check_literal(url: str) -> None:
    """Right before sending: an IP-literal host never reaches the resolver, so check it here."""
    host, _ = split(url)
    if _literal(host) and forbidden(host):
        raise DestinationError(f"host {host} {REFUSED}")


class PublicOnlyResolver(ThreadedResolver):
    """The system resolver (as `check` uses), refusing a name if any of its addresses is not public."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if any(forbidden(r["host"]) for r in results):
            raise RefusedError(f"destination refused: host {host} {REFUSED}")
        return results


async def _refuse_literal(
    _session: aiohttp.ClientSession, _ctx: object, params: aiohttp.TraceRequestStartParams
) -> None:
    check_literal(str(params.url))


def session(*, allow_private: bool, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
    """A session whose connections go only to public addresses (unless `allow_private`).

    A name with a non-public address fails with ClientConnectorError whose os_error is a
    RefusedError; an IP-literal host raises DestinationError from the request. Literals are
    checked in the request's URL only, so callers must not follow redirects."""
    timeout = timeout or aiohttp.ClientTimeout(total=10)
    if allow_private:
        return aiohttp.ClientSession(timeout=timeout)
    literals = aiohttp.TraceConfig()
    literals.on_request_start.append(_refuse_literal)
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver())
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[literals])
