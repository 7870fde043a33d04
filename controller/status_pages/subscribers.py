"""Subscribers of a status page: subscribing (a confirmation mail first for email, live at
once for webhooks), and the notices they receive: one per confirmed subscriber for every
post, post update and state change of a component of the page.

Monitor state events reach subscribers through `fan_out_once` (a cursor row locked while it
moves, so two controllers never fan out one event twice); `deliver_one` claims one due
notice with compare-and-set, sends it (email through the email notifier's SMTP sender,
webhooks through a destinations-checked session) and retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg

from probefleet.controller import metrics
from probefleet.controller.config import ControllerConfig
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.notifiers import email
from probefleet.controller.status_pages.model import component_state
from probefleet.controller.storage import DB
from probefleet.controller.storage import status_pages as store

log = logging.getLogger("probefleet.status_pages")

Sender = Callable[[dict[str, Any]], Awaitable[None]]

NOTICE_LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 5
# A visitor may ask for the confirmation mail again after this long, not sooner, so a
# subscribe form submitted in a loop cannot flood somebody's inbox.
RESEND_AFTER = dt.timedelta(minutes=10)


async def subscribe(pool: asyncpg.Pool, page_id: int, kind: str, address: str) -> dict[str, Any]:
    """Email subscribers get a confirmation link first (at most one queued, and none again
    within RESEND_AFTER); webhooks are live at once."""
    async with pool.acquire() as conn, conn.transaction():
        sub = await store.add_subscriber(conn, page_id, kind, address, confirmed=kind == "webhook")
        if sub["confirmed_at"] is None:
            await store.enqueue_confirmation(conn, sub["id"], RESEND_AFTER)
    return {"kind": kind, "confirmed": sub["confirmed_at"] is not None}


async def fan_out_once(pool: asyncpg.Pool) -> int:
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


async def deliver_one(pool: DB, now: dt.datetime, send: Sender) -> bool:
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
    pool: asyncpg.Pool, send: Sender, stop: asyncio.Event, interval: float = 1.0
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
