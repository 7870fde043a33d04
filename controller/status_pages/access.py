"""Who may see a status page and how often a visitor may ask for something: scrypt
passwords (checked on their own small thread pool), the signed access cookie a right
password grants (and its shared secret), the visibility rule, the limits on password
attempts (per address and page, per page) and on anonymous subscribe requests.

A private page answers exactly like a page that does not exist until the visitor holds a
valid cookie; a new password revokes every cookie given for the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from probefleet.controller.storage import DB
from probefleet.controller.storage import status_pages as store

# --- passwords and access cookies -------------------------------------------------------

_SCRYPT = (2**14, 8, 1)


def hash_password(password: str) -> str:
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


# Checked against when the page is unknown or has no password, so timing reveals nothing.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_password(password: str, stored: str | None) -> bool:
    _, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
    got = hashlib.scrypt(
        password.encode()[:200], salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(got.hex(), digest) and stored is not None


# scrypt at these parameters takes about 40 ms and 16 MB per check. On the loop's default
# executor a burst of password posts would queue getaddrinfo (aiohttp's resolver, the
# destinations check) behind it; two threads bound both the CPU and the memory it takes.
_SCRYPT_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrypt")


async def verify_password(password: str, stored: str | None) -> bool:
    """check_password off the event loop, on the scrypt pool (never the default executor)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_SCRYPT_POOL, check_password, password, stored)


COOKIE_TTL = 7 * 86400


def cookie_name(slug: str) -> str:
    return f"pf_status_{slug}"


def sign_access(secret: str, page_id: int, password_hash: str, now: float | None = None) -> str:
    """`<expiry>.<hmac>`; binding the password hash makes a password change revoke old cookies."""
    expiry = int((now or time.time()) + COOKIE_TTL)
    mac = hmac.new(secret.encode(), f"{page_id}:{expiry}:{password_hash}".encode(), "sha256").hexdigest()
    return f"{expiry}.{mac}"


def access_ok(
    secret: str, page_id: int, password_hash: str | None, cookie: str | None, now: float | None = None
) -> bool:
    if not cookie or not password_hash or "." not in cookie:
        return False
    expiry, _, mac = cookie.partition(".")
    if not (expiry.isascii() and expiry.isdigit()) or int(expiry) < (now or time.time()):
        return False
    want = hmac.new(secret.encode(), f"{page_id}:{expiry}:{password_hash}".encode(), "sha256").hexdigest()
    return hmac.compare_digest(mac, want)


def visible(page: dict[str, Any], secret: str, cookies: dict[str, str]) -> bool:
    """Whether a visitor with these cookies may see the page: public, or unlocked."""
    if page["is_public"]:
        return True
    return access_ok(secret, page["id"], page["password_hash"], cookies.get(cookie_name(page["slug"])))


SECRET_NAME = "status_page_cookie"


async def cookie_secret(pool: DB | None, configured: str) -> str:
    """`status_page_secret` when set; else one random secret stored once in the database and
    read by every controller, so a cookie signed by one is good on all of them."""
    if configured:
        return configured
    assert pool is not None
    return await store.shared_secret(pool, SECRET_NAME, secrets.token_hex(32))


# --- anonymous subscribe requests -------------------------------------------------------


@dataclass
class AddressLimiter:
    """Token buckets per source address: `burst` requests, refilled one per `every` seconds."""

    burst: int = 10
    every: float = 60.0
    max_keys: int = 100_000
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> int:
        """Spend one token: 0 when allowed, else the seconds until one request is."""
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.every)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) * self.every))
        if key not in self.buckets and len(self.buckets) >= self.max_keys:
            full = [k for k, (t, a) in self.buckets.items() if t + (now - a) / self.every >= self.burst]
            for k in full or list(self.buckets):
                del self.buckets[k]
        self.buckets[key] = (tokens - 1.0, now)
        return 0


@dataclass
class UnlockLimiter:
    """Password attempts on private pages: `per_address` per source address and page, and
    `per_page` per page from all addresses together (a botnet), each refilled evenly over
    `window` seconds. Keyed by the slug or domain asked for, so a page that does not exist is
    limited exactly like one that does."""

    per_address: int = 10
    per_page: int = 100
    window: float = 300.0
    addresses: AddressLimiter = field(init=False)
    pages: AddressLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.addresses = AddressLimiter(burst=self.per_address, every=self.window / self.per_address)
        self.pages = AddressLimiter(burst=self.per_page, every=self.window / self.per_page)

    def take(self, page: str, source: str, now: float | None = None) -> int:
        """Spend one attempt: 0 when allowed, else the seconds until one is. A refused
        attempt spends nothing of the page's budget."""
        wait = self.addresses.take(f"{page}\n{source}", now)
        return wait or self.pages.take(page, now)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def client_address(remote: str | None, forwarded_for: list[str], trusted: list[Network]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    right-most address of X-Forwarded-For (`forwarded_for`: each header's value) that is not
    a trusted proxy's, since each proxy appends the address it was called from and only the
    entries the trusted proxies added can be believed. Entries left of an untrusted or
    unreadable one are whatever the client wrote, so they are never used."""
    peer = _address(remote or "")
    if peer is None or not any(peer in net for net in trusted):
        return remote
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        found = _address(hop)
        if found is None:
            break
        address = found
        if not any(found in net for net in trusted):
            break
    return str(address)


def source_key(remote: str | None) -> str:
    """The rate-limit key of a client address: the address, or its /64 for IPv6 (one host
    usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return remote or "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)
