"""Destinations users choose (channel URLs, webhook subscribers): only public unicast
addresses are destinations unless a setting allows private ones."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from probefleet.controller.notifications import destinations

# One address in every entry of the IANA special-purpose registries
# (iana-ipv4-special-registry, iana-ipv6-special-registry), plus multicast, the deprecated
# site-local and 6to4 relay prefixes, and IPv6 forms that carry a non-public IPv4 address.
REFUSED = [
    ("0.0.0.0/8 this network", "0.1.2.3"),
    ("0.0.0.0/32 this host", "0.0.0.0"),
    ("10.0.0.0/8 private", "10.1.2.3"),
    ("100.64.0.0/10 shared (CGNAT)", "100.64.0.1"),
    ("127.0.0.0/8 loopback", "127.0.0.1"),
    ("169.254.0.0/16 link-local (metadata)", "169.254.169.254"),
    ("172.16.0.0/12 private", "172.16.0.9"),
    ("192.0.0.0/24 IETF protocol assignments", "192.0.0.100"),
    ("192.0.0.0/29 DS-Lite", "192.0.0.1"),
    ("192.0.0.8/32 IPv4 dummy", "192.0.0.8"),
    ("192.0.0.9/32 PCP anycast", "192.0.0.9"),
    ("192.0.0.10/32 TURN anycast", "192.0.0.10"),
    ("192.0.0.170/32 NAT64 discovery", "192.0.0.170"),
    ("192.0.0.171/32 DNS64 discovery", "192.0.0.171"),
    ("192.0.2.0/24 TEST-NET-1", "192.0.2.1"),
    ("192.31.196.0/24 AS112-v4", "192.31.196.1"),
    ("192.52.193.0/24 AMT", "192.52.193.1"),
    ("192.88.99.0/24 6to4 relay anycast", "192.88.99.1"),
    ("192.168.0.0/16 private", "192.168.1.1"),
    ("192.175.48.0/24 AS112 direct delegation", "192.175.48.1"),
    ("198.18.0.0/15 benchmarking", "198.19.0.1"),
    ("198.51.100.0/24 TEST-NET-2", "198.51.100.1"),
    ("203.0.113.0/24 TEST-NET-3", "203.0.113.1"),
    ("224.0.0.0/4 multicast", "224.0.0.1"),
    ("240.0.0.0/4 reserved", "240.0.0.1"),
    ("255.255.255.255/32 limited broadcast", "255.255.255.255"),
    ("::1/128 loopback", "::1"),
    ("::/128 unspecified", "::"),
    ("::ffff:0:0/96 IPv4-mapped loopback", "::ffff:127.0.0.1"),
    ("::ffff:0:0/96 IPv4-mapped private", "::ffff:10.0.0.1"),
    ("::/96 IPv4-compatible loopback", "::127.0.0.1"),
    ("::/96 IPv4-compatible public", "::8.8.8.8"),
    ("64:ff9b::/96 NAT64 of loopback", "64:ff9b::7f00:1"),
    ("64:ff9b::/96 NAT64 of metadata", "64:ff9b::a9fe:a9fe"),
    ("64:ff9b:1::/48 local-use NAT64", "64:ff9b:1::808:808"),
    ("100::/64 discard-only", "100::1"),
    ("100:0:0:1::/64 dummy prefix", "100:0:0:1::1"),
    ("2001::/23 IETF protocol assignments", "2001:2:0:ffff::1"),
    ("2001::/32 Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
    ("2001::/32 Teredo of loopback client", "2001:0:808:808::80ff:fffe"),
    ("2001:1::1/128 port control anycast", "2001:1::1"),
    ("2001:1::2/128 TURN anycast", "2001:1::2"),
    ("2001:1::3/128 DNS-SD SRP anycast", "2001:1::3"),
    ("2001:2::/48 benchmarking", "2001:2::1"),
    ("2001:3::/32 AMT", "2001:3::1"),
    ("2001:4:112::/48 AS112-v6", "2001:4:112::1"),
    ("2001:10::/28 deprecated ORCHID", "2001:10::1"),
    ("2001:20::/28 ORCHIDv2", "2001:20::1"),
    ("2001:30::/28 drone remote ID", "2001:30::1"),
    ("2001:db8::/32 documentation", "2001:db8::1"),
    ("2002::/16 6to4 of loopback", "2002:7f00:1::1"),
    ("2002::/16 6to4 of private", "2002:a00:1::1"),
    ("2002::/16 6to4 of public", "2002:808:808::1"),
    ("2620:4f:8000::/48 AS112 direct delegation", "2620:4f:8000::1"),
    ("3fff::/20 documentation", "3fff::1"),
    ("5f00::/16 segment routing SIDs", "5f00::1"),
    ("fc00::/7 unique local", "fd00::1"),
    ("fe80::/10 link-local", "fe80::1%eth0"),
    ("fec0::/10 deprecated site-local", "fec0::1"),
    ("ff00::/8 multicast", "ff02::1"),
]

ALLOWED = [
    ("public IPv4", "93.184.216.34"),
    ("public IPv4 (DNS)", "1.1.1.1"),
    ("public IPv6", "2606:2800:220:1:248:1893:25c8:1946"),
    ("public IPv6 (DNS)", "2606:4700:4700::1111"),
    ("IPv4-mapped public", "::ffff:8.8.8.8"),
    ("NAT64 of public", "64:ff9b::808:808"),
]


@pytest.mark.parametrize("address", [a for _, a in REFUSED], ids=[i for i, _ in REFUSED])
def test_it_refuses_every_special_purpose_address(address: str) -> None:
    assert destinations.forbidden(address)


@pytest.mark.parametrize("address", [a for _, a in ALLOWED], ids=[i for i, _ in ALLOWED])
def test_it_allows_public_unicast_addresses(address: str) -> None:
    assert not destinations.forbidden(address)


@pytest.mark.parametrize("host", ["2002:7f00:1::1", "fec0::1", "64:ff9b::7f00:1", "::ffff:127.0.0.1"])
async def test_it_refuses_the_same_addresses_at_creation_and_at_each_connection(host: str) -> None:
    url = f"http://[{host}]:9/hook"
    with pytest.raises(destinations.DestinationError):
        await destinations.check(url, allow_private=False)
    async with destinations.session(allow_private=False) as session:
        with pytest.raises(destinations.DestinationError):
            await session.post(url, json={})


async def test_the_session_resolver_refuses_names_by_the_same_table() -> None:
    resolver = destinations.PublicOnlyResolver()
    with pytest.raises(destinations.RefusedError):
        await resolver.resolve("localhost", 80, socket.AF_INET)


async def test_it_accepts_a_name_that_does_not_resolve_now_with_a_warning() -> None:
    warning = await destinations.check("https://hooks.nonexistent.invalid/x", allow_private=False)
    assert warning == (
        "host hooks.nonexistent.invalid does not resolve now; it is checked again at every delivery"
    )
    assert await destinations.check("https://93.184.216.34/x", allow_private=False) is None


async def test_a_name_that_does_not_resolve_fails_at_delivery_without_traffic() -> None:
    async with destinations.session(allow_private=False) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with asyncio.timeout(5):
                await session.post("http://hooks.nonexistent.invalid/x", json={})
