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


# The IANA special-purpose registries' entries that `ipaddress` does not already call
# non-global (Python 3.11 marks several of them global, and 6to4/site-local not at all):
# https://www.iana.org/assignments/iana-ipv4-special-registry and iana-ipv6-special-registry.
# Some are "globally reachable" (anycast, AS112) but none is a place for a webhook.
SPECIAL_PURPOSE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "::/96",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "100:0:0:1::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "2620:4f:8000::/48",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped and -compatible, 6to4,
    Teredo (server and client) and NAT64 well-known prefix. A packet to it may reach them."""
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _special(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
        or any(ip in net for net in SPECIAL_PURPOSE if net.version == ip.version)
    )


def forbidden(address: str) -> bool:
    """True unless `address` is a globally routable unicast address outside every
    special-purpose range, and so is every IPv4 address it embeds."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded(ip)
        if any(_special(v4) for v4 in embedded):
            return True
        if ip.ipv4_mapped is not None or ip in NAT64:
            # A NAT64 or mapped address of a public IPv4 address is that public address.
            return False
    return _special(ip)


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


def _never_resolves(host: str) -> bool:
    """RFC 6761 6.4: names under .invalid never resolve, and resolver libraries should say
    so at once rather than ask a server."""
    return host.rstrip(".").lower().rpartition(".")[2] == "invalid"


def unresolved(host: str) -> str:
    return f"host {host} does not resolve now; it is checked again at every delivery"


async def check(url: str, *, allow_private: bool) -> str | None:
    """Refuse the URL (DestinationError) if its host is, or resolves to, a non-public
    address. A name that does not resolve now is no reason to refuse: a resolver hiccup or
    split-horizon DNS must not block configuration, and every connection checks the
    addresses again. Returns a warning saying so then, else None."""
    host, port = split(url)
    if allow_private:
        return None
    if _literal(host):
        addresses = [host]
    elif _never_resolves(host):
        return unresolved(host)
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return unresolved(host)
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(forbidden(a) for a in addresses):
        raise DestinationError(f"host {host} {REFUSED}")
    return None


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
        if _never_resolves(host):
            raise OSError(socket.EAI_NONAME, f"host {host} does not resolve")
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
