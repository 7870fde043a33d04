"""Status pages: config validation, passwords, access cookies, public states and uptime bars.

Pure functions; SQL lives in controller/storage/status_pages.py, HTTP and the
public HTML in controller/api/status_pages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import aiosmtplib

from probefleet.controller import metrics
from probefleet.controller.config import ControllerConfig
from probefleet.controller.monitors import maintenance
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.notifiers import email
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import status_pages as store
from probefleet.controller.validation import ValidationError

log = logging.getLogger("probefleet.status_pages")

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,253}\.[^@\s<>,;]+$")
INCIDENT_STATES = ("investigating", "identified", "monitoring", "resolved")
# Paths under /status/ that a slug would shadow.
RESERVED_SLUGS = frozenset({"static", "api", "admin", "assets"})
BAR_DAYS = 90

# Every accepted key (aliases from the references) mapped to its canonical field.
_ALIASES = {
    "name": "name",
    "title": "name",
    "slug": "slug",
    "custom_domain": "custom_domain",
    "customDomain": "custom_domain",
    "domain": "custom_domain",
    "description": "description",
    "is_public": "is_public",
    "isPublic": "is_public",
    "public": "is_public",
    "password": "password",
    "sections": "sections",
    "monitors": "monitors",
    "components": "monitors",
    "incident_status": "incident_status",
    "incidentStatus": "incident_status",
    "incident_message": "incident_message",
    "incidentMessage": "incident_message",
}
CONFIG_FIELDS = ("name", "slug", "custom_domain", "description", "is_public", "password", "sections")
INCIDENT_FIELDS = ("incident_status", "incident_message")


def canonical(body: Any) -> dict[str, Any]:
    """The body with aliases folded in; 422 on unknown fields, duplicates or a non-object."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    out: dict[str, Any] = {}
    errors: dict[str, object] = {}
    for key, value in body.items():
        field = _ALIASES.get(key)
        if field is None:
            errors[key] = "unknown field"
        elif field in out:
            errors[key] = f"given twice (as {field!r} too)"
        else:
            out[field] = value
    if "monitors" in out:
        if "sections" in out:
            errors["monitors"] = "give either sections or monitors"
        else:
            out["sections"] = _flat_to_sections(out.pop("monitors"))
    if errors:
        raise ValidationError(errors)
    return out


def _flat_to_sections(items: Any) -> Any:
    """A flat monitors list: each item may name its section; order of first use is kept."""
    if not isinstance(items, list):
        return items
    sections: dict[str, list[Any]] = {}
    for item in items:
        name = item.get("section", "") if isinstance(item, dict) else ""
        entry = {k: v for k, v in item.items() if k != "section"} if isinstance(item, dict) else item
        sections.setdefault(name if isinstance(name, str) else "", []).append(entry)
    return [{"name": k, "monitors": v} for k, v in sections.items()]


def _text(errors: dict[str, object], data: dict[str, Any], field: str, lo: int, hi: int) -> None:
    value = data.get(field)
    if not isinstance(value, str) or not lo <= len(value.strip()) <= hi:
        errors[field] = f"must be a string of {lo} to {hi} characters"
    else:
        data[field] = value.strip()


def validate(data: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """Check each given field (all required ones when `full`); 422 lists every bad field."""
    errors: dict[str, object] = {}
    if full:
        for field in ("name", "slug"):
            if field not in data:
                errors[field] = "required field"
    if "name" in data:
        _text(errors, data, "name", 1, 200)
    if "slug" in data:
        slug = data["slug"]
        if not isinstance(slug, str) or not SLUG.match(slug):
            errors["slug"] = "lower-case letters, digits and dashes, 1 to 64, no dash at either end"
        elif slug in RESERVED_SLUGS:
            errors["slug"] = "reserved"
    if "description" in data:
        if data["description"] is None:
            data["description"] = ""
        _text(errors, data, "description", 0, 2000)
    if data.get("custom_domain") is not None:
        domain = data["custom_domain"]
        if not isinstance(domain, str) or not HOSTNAME.match(domain.lower().rstrip(".")):
            errors["custom_domain"] = "must be a host name such as status.example.com"
        else:
            data["custom_domain"] = domain.lower().rstrip(".")
    if "is_public" in data and not isinstance(data["is_public"], bool):
        errors["is_public"] = "must be true or false"
    password = data.get("password")
    if password is not None and (not isinstance(password, str) or not 8 <= len(password) <= 200):
        errors["password"] = "must be a string of 8 to 200 characters (null removes it)"
    if "sections" in data:
        data["sections"] = _sections(errors, data["sections"])
    _incident(errors, data)
    if errors:
        raise ValidationError(errors)
    return data


def _sections(errors: dict[str, object], raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 50:
        errors["sections"] = "must be a list of at most 50 sections"
        return []
    seen: set[int] = set()
    out = []
    for i, section in enumerate(raw):
        where = f"sections[{i}]"
        if not isinstance(section, dict) or set(section) - {"name", "monitors"}:
            errors[where] = "must be an object with name and monitors"
            continue
        name = section.get("name", "")
        if not isinstance(name, str) or len(name) > 200:
            errors[f"{where}.name"] = "must be a string of at most 200 characters"
            name = ""
        items = section.get("monitors", [])
        if not isinstance(items, list) or len(items) > 500:
            errors[f"{where}.monitors"] = "must be a list of at most 500 monitors"
            continue
        monitors = []
        for j, item in enumerate(items):
            entry = _component(errors, f"{where}.monitors[{j}]", item, seen)
            if entry is not None:
                monitors.append(entry)
        out.append({"name": name.strip(), "monitors": monitors})
    return out


def _component(errors: dict[str, object], where: str, item: Any, seen: set[int]) -> dict[str, Any] | None:
    if isinstance(item, int) and not isinstance(item, bool):
        item = {"monitor_id": item}
    if not isinstance(item, dict):
        errors[where] = "must be a monitor id or an object with monitor_id and display_name"
        return None
    unknown = set(item) - {"monitor_id", "monitorId", "id", "display_name", "displayName", "name"}
    if unknown:
        errors[f"{where}.{sorted(unknown)[0]}"] = "unknown field"
        return None
    mid = item.get("monitor_id", item.get("monitorId", item.get("id")))
    if not isinstance(mid, int) or isinstance(mid, bool) or mid <= 0:
        errors[f"{where}.monitor_id"] = "required: a monitor id"
        return None
    if mid in seen:
        errors[f"{where}.monitor_id"] = "this monitor is already on the page"
        return None
    seen.add(mid)
    display = item.get("display_name", item.get("displayName", item.get("name")))
    if display is not None and (not isinstance(display, str) or not 1 <= len(display.strip()) <= 200):
        errors[f"{where}.display_name"] = "must be a string of 1 to 200 characters"
        return None
    return {"monitor_id": mid, "display_name": display.strip() if display else None}


def _incident(errors: dict[str, object], data: dict[str, Any]) -> None:
    status = data.get("incident_status")
    if status is not None and status not in INCIDENT_STATES:
        errors["incident_status"] = f"must be one of {', '.join(INCIDENT_STATES)}"
    message = data.get("incident_message")
    if message is not None and (not isinstance(message, str) or not 1 <= len(message.strip()) <= 5000):
        errors["incident_message"] = "must be a string of 1 to 5000 characters"
    if (status is None) != (message is None) and ("incident_status" in data or "incident_message" in data):
        errors["incident_status" if status is None else "incident_message"] = (
            "incident_status and incident_message go together"
        )


def validate_post(body: Any, *, update: bool) -> dict[str, Any]:
    """A new post {title, status, message} or an update {status, message}."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    allowed = {"status", "message", "body"} | (set() if update else {"title", "name"})
    errors: dict[str, object] = {k: "unknown field" for k in body if k not in allowed}
    status = body.get("status", "investigating")
    if status not in INCIDENT_STATES:
        errors["status"] = f"must be one of {', '.join(INCIDENT_STATES)}"
    message = body.get("message", body.get("body"))
    if not isinstance(message, str) or not 1 <= len(message.strip()) <= 5000:
        errors["message"] = "required: a string of 1 to 5000 characters"
    title = body.get("title", body.get("name"))
    if not update and (not isinstance(title, str) or not 1 <= len(title.strip()) <= 200):
        errors["title"] = "required: a string of 1 to 200 characters"
    if errors:
        raise ValidationError(errors)
    out = {"status": status, "message": str(message).strip()}
    if not update:
        out["title"] = str(title).strip()
    return out


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
    if not expiry.isdigit() or int(expiry) < (now or time.time()):
        return False
    want = hmac.new(secret.encode(), f"{page_id}:{expiry}:{password_hash}".encode(), "sha256").hexdigest()
    return hmac.compare_digest(mac, want)


# --- public states ----------------------------------------------------------------------


def component_state(monitor_status: str, in_maintenance: bool) -> str:
    """What a visitor sees for one monitor state."""
    if in_maintenance:
        return "maintenance"
    return {"up": "operational", "degraded": "degraded", "down": "outage"}.get(monitor_status, "unknown")


def overall_state(states: list[str]) -> str:
    if not states:
        return "operational"
    down = states.count("outage")
    if down and down == len(states):
        return "major_outage"
    if down:
        return "partial_outage"
    if "degraded" in states:
        return "degraded"
    if "maintenance" in states:
        return "maintenance"
    if all(s == "unknown" for s in states):
        return "unknown"
    return "operational"


DayCounts = dict[dt.date, tuple[int, int, int]]


def day_bars(days: DayCounts, today: dt.date, n: int = BAR_DAYS) -> list[dict[str, Any]]:
    """One bar per day, oldest first: uptime % and the worst state; null when nothing ran.

    `days` maps a date to (up rounds, degraded rounds, down rounds).
    """
    bars: list[dict[str, Any]] = []
    for i in range(n - 1, -1, -1):
        day = today - dt.timedelta(days=i)
        up, degraded, down = days.get(day, (0, 0, 0))
        total = up + degraded + down
        if total == 0:
            bars.append({"date": day.isoformat(), "uptime": None, "state": "none"})
            continue
        state = "outage" if down else "degraded" if degraded else "operational"
        bars.append(
            {"date": day.isoformat(), "uptime": round(100 * (up + degraded) / total, 3), "state": state}
        )
    return bars


def uptime_of(days: DayCounts) -> float | None:
    up = sum(u + d for u, d, _ in days.values())
    total = sum(u + d + x for u, d, x in days.values())
    return round(100 * up / total, 3) if total else None


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


@dataclass
class PageCache:
    """Per-controller state of the public pages: the cookie secret and short-lived caches.

    Rendered pages live for `ttl` seconds (live changes reach browsers through SSE anyway),
    uptime bars, which change once a day at most, for `bars_ttl`. An expired entry is still
    served while one task rebuilds it, so a burst of visitors never waits on the database
    together (and never rebuilds the same page many times at once).
    """

    secret: str
    ttl: float = 1.0
    bars_ttl: float = 60.0
    # Anonymous subscribe requests per source address.
    subscribe_limiter: AddressLimiter = field(default_factory=AddressLimiter)
    entries: dict[tuple[str, int], tuple[float, Any]] = field(default_factory=dict)
    building: dict[tuple[str, int], asyncio.Task[Any]] = field(default_factory=dict)

    async def fetch(self, kind: str, page_id: int, ttl: float, build: Callable[[], Awaitable[Any]]) -> Any:
        key, now = (kind, page_id), time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self.building.get(key)
        if task is None:
            task = self.building[key] = asyncio.create_task(self._build(key, ttl, build))
        if hit is not None:
            return hit[1]
        return await asyncio.shield(task)

    async def _build(self, key: tuple[str, int], ttl: float, build: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await build()
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[key] = (time.monotonic() + ttl, value)
            return value
        finally:
            self.building.pop(key, None)

    def forget(self, page_id: int) -> None:
        for key in [k for k in self.entries if k[1] == page_id]:
            del self.entries[key]


# --- subscribers: fan-out and delivery --------------------------------------------------

NOTICE_LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 5
# A visitor may ask for the confirmation mail again after this long, not sooner, so a
# subscribe form submitted in a loop cannot flood somebody's inbox.
RESEND_AFTER = dt.timedelta(minutes=10)


async def fan_out_once(pool: Any) -> int:
    """Turn new monitor state events into one notice per confirmed subscriber of each page
    showing the monitor. The cursor row lock makes this exactly-once across controllers."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await store.advance_events(conn)
        for r in rows:
            state = component_state(r["kind"].removeprefix("monitor."), False)
            await store.enqueue(
                conn,
                [r["subscriber_id"]],
                "state",
                {
                    "component": r["display_name"],
                    "state": state,
                    "event_id": r["event_id"],
                    "occurred_at": r["occurred_at"].isoformat().replace("+00:00", "Z"),
                },
            )
    return len(rows)


def notice_text(notice: dict[str, Any], base_url: str) -> tuple[str, str]:
    """(subject, plain text) of one notice."""
    page, p = notice["page_name"], notice["payload"]
    link = f"{base_url.rstrip('/')}/status/{notice['slug']}"
    stop = f"{base_url.rstrip('/')}/status/{notice['slug']}/unsubscribe?token={notice['token']}"
    match notice["kind"]:
        case "confirm":
            confirm = f"{base_url.rstrip('/')}/status/{notice['slug']}/confirm?token={notice['token']}"
            return (
                f"Confirm your subscription to {page}",
                f"Confirm that you want status updates from {page}:\n{confirm}\n\n"
                "If you did not ask for this, ignore this message.",
            )
        case "state":
            subject = f"[{page}] {p['component']}: {p['state']}"
            text = f"{p['component']} is now {p['state']} ({p['occurred_at']})."
            return subject, f"{text}\n\n{link}\n\nUnsubscribe: {stop}"
        case _:
            subject = f"[{page}] {p.get('title') or 'Incident update'}: {p['status']}"
            return subject, f"{p['status'].title()}: {p['message']}\n\n{link}\n\nUnsubscribe: {stop}"


async def deliver_one(pool: Any, now: dt.datetime, send: Any) -> bool:
    """Claim one due notice, send it with `send(notice)`, record the outcome; False when idle."""
    notice = await store.claim_notice(pool, now, NOTICE_LEASE)
    if notice is None:
        return False
    try:
        await send(notice)
    except Exception as e:
        retry = None
        if notice["attempts"] < MAX_ATTEMPTS:
            retry = now + dt.timedelta(seconds=30 * 2 ** notice["attempts"])
        await store.finish_notice(pool, notice["id"], error=str(e)[:500] or type(e).__name__, retry_at=retry)
        metrics.STATUS_NOTICES.labels("retry" if retry else "failed").inc()
        return True
    await store.finish_notice(pool, notice["id"], error=None, retry_at=None)
    metrics.STATUS_NOTICES.labels("sent").inc()
    return True


Sender = Callable[[dict[str, Any]], Awaitable[None]]


def webhook_session(cfg: ControllerConfig) -> aiohttp.ClientSession:
    """The session make_sender needs: it connects only to public addresses unless
    cfg.subscriber_webhooks_allow_private."""
    return destinations.session(allow_private=cfg.subscriber_webhooks_allow_private)


def make_sender(cfg: ControllerConfig, session: aiohttp.ClientSession) -> Sender:
    """send(notice): a JSON POST for webhook subscribers, a mail through cfg.smtp_* for email.

    `session` comes from webhook_session(cfg): it refuses non-public addresses, names and IP
    literals alike (controller/destinations.py). Redirects are not followed (a redirect could
    point anywhere)."""
    base = cfg.public_url or f"http://{cfg.host}:{cfg.port}"

    async def send(notice: dict[str, Any]) -> None:
        subject, text = notice_text(notice, base)
        if notice["channel"] == "webhook":
            body = {
                "type": f"status_page.{notice['kind']}",
                "page": {"name": notice["page_name"], "slug": notice["slug"]},
                "subject": subject,
                "data": notice["payload"],
            }
            try:
                async with session.post(notice["address"], json=body, allow_redirects=False) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"webhook answered {r.status}")
            except aiohttp.ClientConnectorError as e:
                if isinstance(e.os_error, destinations.RefusedError):
                    raise destinations.DestinationError(str(e.os_error)) from None
                raise
            return
        if not cfg.smtp_host:
            raise RuntimeError("smtp_host is not configured")
        await send_mail(cfg, notice["address"], subject, text)

    return send


async def send_mail(cfg: ControllerConfig, to: str, subject: str, text: str) -> None:
    """One plain-text mail; TLS settings and error mapping are the email notifier's."""
    conf = email.EmailConfig(
        host=cfg.smtp_host,
        from_=cfg.smtp_from,
        to=[to],
        port=cfg.smtp_port,
        security=cfg.smtp_security,
        username=cfg.smtp_username,
        password=cfg.smtp_password,
        verify=cfg.smtp_verify,
    )
    mail = EmailMessage()
    mail["Subject"], mail["From"], mail["To"] = subject, cfg.smtp_from, to
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid("probefleet")
    mail.set_content(text)
    try:
        await aiosmtplib.send(
            mail,
            hostname=conf.host,
            port=conf.port,
            username=conf.username,
            password=conf.password,
            use_tls=conf.security == "tls",
            start_tls=conf.security == "starttls",
            tls_context=email.tls_context(conf),
            timeout=conf.timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise email.error_for_smtp(exc) from None


async def run_subscribers(
    pool: Any, send: Callable[[dict[str, Any]], Awaitable[None]], stop: asyncio.Event, interval: float = 1.0
) -> None:
    while not stop.is_set():
        busy = False
        try:
            await fan_out_once(pool)
            busy = await deliver_one(pool, dt.datetime.now(dt.UTC), send)
        except Exception as e:
            log.warning("status page subscribers step failed error=%s", e)
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


# --- shared cookie secret ---------------------------------------------------------------

SECRET_NAME = "status_page_cookie"


async def cookie_secret(pool: Any, configured: str) -> str:
    """`status_page_secret` when set; else one random secret stored once in the database and
    read by every controller, so a cookie signed by one is good on all of them."""
    if configured:
        return configured
    return await store.shared_secret(pool, SECRET_NAME, secrets.token_hex(32))


# --- scheduled maintenance --------------------------------------------------------------

MAINTENANCE_DAYS = 7


def upcoming(
    window: maintenance.Window, now: dt.datetime, horizon: dt.timedelta = dt.timedelta(days=MAINTENANCE_DAYS)
) -> list[maintenance.Occurrence]:
    """Occurrences of `window` that have not ended and start before now + horizon, clipped to
    the window's own starts_at/ends_at (as maintenance.occurrence applies them)."""
    end = now + horizon
    if not window.enabled:
        return []
    if not window.recurring:
        if window.starts_at and window.ends_at and window.ends_at > now and window.starts_at < end:
            return [
                maintenance.Occurrence(
                    window_id=window.id, starts_at=window.starts_at, ends_at=window.ends_at
                )
            ]
        return []
    assert window.start_time is not None and window.duration_s is not None
    tz = maintenance.zone(window.time_zone) or dt.UTC
    length = dt.timedelta(seconds=window.duration_s)
    day, last = now.astimezone(tz).date() - dt.timedelta(days=length.days + 1), end.astimezone(tz).date()
    out = []
    while day <= last:
        if day.weekday() in window.days:
            start = dt.datetime.combine(day, window.start_time, tzinfo=tz).astimezone(dt.UTC)
            stop = min(start + length, window.ends_at or start + length)
            start = max(start, window.starts_at or start)
            if start < stop and stop > now and start < end:
                out.append(maintenance.Occurrence(window_id=window.id, starts_at=start, ends_at=stop))
        day += dt.timedelta(days=1)
    return out


def scheduled(rows: list[dict[str, Any]], now: dt.datetime, limit: int = 20) -> list[dict[str, Any]]:
    """The next occurrences of every window (rows from store.maintenance_windows), soonest first."""
    found = [
        {"name": row["name"], "starts_at": occ.starts_at, "ends_at": occ.ends_at, "monitor_ids": row["shown"]}
        for row in rows
        for occ in upcoming(maintenance.from_row(row), now)
    ]
    return sorted(found, key=lambda w: (w["starts_at"], w["name"]))[:limit]


# --- live incident posts ----------------------------------------------------------------


def post_out(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": p["id"],
        "title": p["title"],
        "status": p["status"],
        "created_at": p["created_at"],
        "updated_at": p["updated_at"],
        "resolved_at": p["resolved_at"],
        "updates": [
            {"id": u["id"], "status": u["status"], "message": u["message"], "created_at": u["created_at"]}
            for u in p["updates"]
        ],
    }


def page_incident(page: dict[str, Any]) -> dict[str, Any] | None:
    """The page-level incident banner of the public model."""
    if page["incident_status"] is None:
        return None
    updated = page["incident_updated_at"]
    return {
        "status": page["incident_status"],
        "message": page["incident_message"],
        "updated_at": updated.isoformat().replace("+00:00", "Z") if updated else None,
    }


def post_payload(page: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """The outbox payload of a post event: the page, the whole post (its newest update
    first) and the page's banner. `post` and `banner` are exactly what the public page
    shows; `status_page` is for API clients only, never sent to visitors."""
    return {
        "status_page": {"id": page["id"], "name": page["name"], "slug": page["slug"]},
        "post": post_out(post),
        "banner": page_incident(page),
    }


async def emit_post(conn: Any, page_id: int, post_id: int, *, created: bool) -> None:
    """Write `status_page.post.created` (or `.updated`: a new update) into the events outbox;
    call in the transaction that wrote the post."""
    kind = "status_page.post.created" if created else "status_page.post.updated"
    page = await store.get_page(conn, page_id)
    found = await store.posts(conn, page_id, post_id=post_id)
    assert page is not None and found, "call after writing the post, in the same transaction"
    post = found[0]
    await event_store.insert(
        conn,
        kind,
        monitor_id=None,
        incident_id=None,
        occurred_at=post["updated_at"],
        payload=post_payload(page, post),
    )
