"""Users and their sessions: argon2id password hashes, session cookies with a CSRF secret,
and login attempts limited per account and per address.

A session id is 256 random bits in an HttpOnly, SameSite=Lax cookie (Secure when the
request came over HTTPS); only its SHA-256 is stored. Each session has its own CSRF
secret: every state-changing request made with the cookie must send it back (form field
`csrf` or header X-CSRF-Token), so a page of another site cannot act for the user even
where SameSite is not honoured. Sessions expire SESSION_IDLE after their last use and at
most SESSION_MAX after login.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import argon2
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.scopes import ROLE_SCOPES, ROLES
from probefleet.controller.status_pages.access import AddressLimiter, client_address, source_key
from probefleet.controller.storage import DB
from probefleet.controller.storage import users as store
from probefleet.controller.validation import ValidationError

COOKIE = "pf_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SESSION_IDLE = dt.timedelta(hours=12)
SESSION_MAX = dt.timedelta(days=7)
# last_seen (and the idle expiry) is written at most this often per session.
TOUCH_EVERY = dt.timedelta(minutes=1)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# argon2-cffi's defaults (RFC 9106 "low memory": 64 MiB, 3 passes) take about 50 ms here;
# hashing runs in a thread so a login does not stall the event loop.
_hasher = argon2.PasswordHasher()
# Verified against when the user does not exist, so an unknown name costs the same time.
_DUMMY = _hasher.hash(secrets.token_hex(16))

SESSION = web.RequestKey("console_session", dict)
# Who made the request: "key:<prefix>" or "user:<name>" (the audit log's actor).
ACTOR = web.RequestKey("actor", str)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored or _DUMMY, password) and stored is not None


def check_new_user(username: Any, password: Any, role: Any) -> tuple[str, str, str]:
    """(username, password, role) if acceptable; else a ValidationError naming each field."""
    problems: dict[str, object] = {}
    if not isinstance(username, str) or not 1 <= len(username) <= 64:
        problems["username"] = "1 to 64 characters"
    elif not all(c.isalnum() or c in "._@-" for c in username):
        problems["username"] = "letters, digits and . _ @ - only"
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        problems["password"] = f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"
    if role not in ROLES:
        problems["role"] = f"one of {', '.join(ROLES)}"
    if problems:
        raise ValidationError(problems)
    return username, password, role


async def create_user(pool: DB, username: Any, password: Any, role: Any) -> dict[str, Any]:
    """A new user; ValidationError for bad fields or a name in use."""
    name, pw, r = check_new_user(username, password, role)
    try:
        return await store.create(pool, name, await asyncio.to_thread(hash_password, pw), r)
    except store.UsernameTakenError:
        raise ValidationError({"username": "already taken"}) from None


def scopes_of(role: str) -> list[str]:
    return list(ROLE_SCOPES.get(role, ()))


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


# ---- login ------------------------------------------------------------------------------


@dataclass
class LoginLimiter:
    """Failed-login budget: `per_account` per user name and `per_address` per source address,
    each refilled evenly over `window` seconds. Only failures spend; a success costs
    nothing, so a user who knows the password is never locked out by their own logins."""

    per_account: int = 10
    per_address: int = 30
    window: float = 900.0
    accounts: AddressLimiter = field(init=False)
    addresses: AddressLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = AddressLimiter(burst=self.per_account, every=self.window / self.per_account)
        self.addresses = AddressLimiter(burst=self.per_address, every=self.window / self.per_address)

    def blocked(self, username: str, source: str, now: float | None = None) -> int:
        """Seconds until a login attempt is allowed (0: now), spending nothing."""
        waits = []
        for limiter, key in ((self.accounts, username.lower()), (self.addresses, source)):
            tokens, at = limiter.buckets.get(key, (float(limiter.burst), 0.0))
            now_ = time.monotonic() if now is None else now
            tokens = min(float(limiter.burst), tokens + (now_ - at) / limiter.every)
            if tokens < 1.0:
                waits.append(max(1, int((1.0 - tokens) * limiter.every) + 1))
        return max(waits, default=0)

    def failed(self, username: str, source: str, now: float | None = None) -> None:
        now_ = time.monotonic() if now is None else now
        self.accounts.take(username.lower(), now_)
        self.addresses.take(source, now_)


LIMITER = web.AppKey("login_limiter", LoginLimiter)


def setup(app: web.Application) -> None:
    app[LIMITER] = LoginLimiter()


class LoginRefusedError(Exception):
    """Wrong name or password, or too many attempts (retry_after > 0)."""

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def login(
    request: web.Request, username: str, password: str, now: dt.datetime
) -> tuple[str, dict[str, Any]]:
    """A new session for the user (cookie value, session row); LoginRefusedError otherwise."""
    limiter = request.app[LIMITER]
    source = source_key(client_of(request))
    wait = limiter.blocked(username, source)
    if wait:
        raise LoginRefusedError(f"Too many failed logins. Try again in {wait} seconds.", wait)
    pool = request.app[keys.POOL]
    user = await store.credentials(pool, username) if len(username) <= 64 else None
    good = await verify_password(user["password_hash"] if user else None, password[:MAX_PASSWORD])
    if user is None or not good or user["disabled"]:
        limiter.failed(username, source)
        raise LoginRefusedError("Wrong user name or password.")
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await store.delete_expired_sessions(pool, now)
    await store.create_session(pool, digest(session_id), user["id"], csrf, now, now + SESSION_IDLE)
    return session_id, {
        "user_id": user["id"],
        "username": user["username"],
        "role": user["role"],
        "csrf": csrf,
        "created_at": now,
    }


def client_of(request: web.Request) -> str | None:
    """The client's address: the peer's, or behind a trusted proxy (trusted_proxies) the
    right-most untrusted address of X-Forwarded-For (access.client_address). The header
    from any other peer is ignored, so a client cannot pick the address its logins count
    against."""
    networks = request.app[keys.CONFIG].trusted_networks()
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), networks)


def is_https(request: web.Request) -> bool:
    """Served over HTTPS: the controller's own TLS, or a trusted proxy (trusted_proxies)
    that says so with X-Forwarded-Proto (its first value: the scheme the client used).
    The header from any other address is ignored."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if proto != "https" or not request.remote:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False  # a Unix socket's peer
    return any(peer in net for net in request.app[keys.CONFIG].trusted_networks())


def set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        secure=is_https(request),
        samesite="Lax",
        path="/",
        max_age=int(SESSION_MAX.total_seconds()),
    )


async def logout(request: web.Request, response: web.StreamResponse) -> None:
    if cookie := request.cookies.get(COOKIE):
        await store.delete_session(request.app[keys.POOL], digest(cookie))
    response.del_cookie(COOKIE, path="/")


async def session_of(request: web.Request, now: dt.datetime) -> dict[str, Any] | None:
    """The request's live session (cached on the request), refreshed at most every TOUCH_EVERY."""
    if SESSION in request:
        return request[SESSION]
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 100:
        return None
    pool = request.app[keys.POOL]
    row = await store.session(pool, digest(cookie), now)
    if row is None:
        return None
    if now - row["created_at"] > SESSION_MAX:
        await store.delete_session(pool, row["id_hash"])
        return None
    if now - row["last_seen"] > TOUCH_EVERY:
        await store.touch_session(pool, row["id_hash"], now, now + SESSION_IDLE)
    request[SESSION] = row
    request[ACTOR] = f"user:{row['username']}"
    return row


def csrf_ok(request: web.Request, session: dict[str, Any], form: Any = None) -> bool:
    """Whether the request carries the session's CSRF secret (header, or the form's field)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and form is not None:
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent.encode(), str(session["csrf"]).encode())
