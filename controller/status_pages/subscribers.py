"""Subscribers of a status page and what they receive: subscribing (a confirmation mail
first for email, live at once for webhooks), and the notices of posts, post updates and
state changes of the page's components (all of them, or those the subscriber chose).

A notice is a delivery of the notification dispatcher, to a subscriber instead of a
channel: `Subscribers` is the dispatcher's destination for them. Its `notices` turns a
batch of outbox events into one state notice per confirmed subscriber of each page showing
the monitor (the dispatcher fans out, with its unique key and watermark, so two controllers
write each notice once); posts write theirs in their own transaction (status_pages/posts.py)
and subscribing its confirmation (`subscribe`). The dispatcher claims, retries and records
them; `Subscribers.send` sends one: email through the email notifier's SMTP sender,
webhooks through a destinations-checked session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import msgspec

from probefleet.controller.config import ControllerConfig
from probefleet.controller.notifications.notifiers import email
from probefleet.controller.notifications.notifiers.base import NotifierError, post_json
from probefleet.controller.status_pages.model import component_state
from probefleet.controller.storage import DB
from probefleet.controller.storage import notifications as notices_store
from probefleet.controller.storage import status_pages as store
from probefleet.controller.storage.notifications import NewNotice

# A visitor may ask for the confirmation mail again after this long, not sooner, so a
# subscribe form submitted in a loop cannot flood somebody's inbox.
RESEND_AFTER = dt.timedelta(minutes=10)
STATE_EVENTS = frozenset({"monitor.down", "monitor.up", "monitor.degraded"})


async def subscribe(
    pool: asyncpg.Pool, page_id: int, kind: str, address: str, component_ids: list[int] | None = None
) -> dict[str, Any]:
    """Email subscribers get a confirmation link first (at most one queued, and none again
    within RESEND_AFTER); webhooks are live at once. `component_ids` narrows the state
    notices to those components (None: all); posts reach every subscriber of the page."""
    async with pool.acquire() as conn, conn.transaction():
        sub = await store.add_subscriber(
            conn, page_id, kind, address, confirmed=kind == "webhook", component_ids=component_ids
        )
        if sub["confirmed_at"] is None:
            await notices_store.insert_confirmation(conn, sub["id"], RESEND_AFTER)
    return {"kind": kind, "confirmed": sub["confirmed_at"] is not None}


def notice_text(notice: dict[str, Any], base_url: str) -> tuple[str, str]:
    """(subject, plain text) of one notice: `kind` (confirm, state or post), `payload`, and
    the subscriber's `page_name`, `slug` and `token`."""
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


@dataclass
class Subscribers:
    """Subscribers as a destination of the dispatcher (its `Subscribers` protocol).

    `session` refuses non-public addresses, names and IP literals alike unless
    subscriber_webhooks_allow_private (notifications/destinations.py); redirects are never
    followed. `smtp` is None when the server has no SMTP: a mail then fails, transiently."""

    base_url: str
    session: aiohttp.ClientSession
    smtp: email.EmailConfig | None = None

    async def notices(self, conn: DB, events: list[dict[str, Any]]) -> list[NewNotice]:
        """One state notice per confirmed subscriber of each page showing the monitor of a
        state event; nothing for other events."""
        wanted = [e for e in events if e["kind"] in STATE_EVENTS and e["monitor_id"] is not None]
        by_id = {e["id"]: e for e in wanted}
        rows = await store.state_audience(conn, [(e["id"], e["monitor_id"]) for e in wanted])
        out = []
        for r in rows:
            event = by_id[r["event_id"]]
            at: dt.datetime = event["occurred_at"]
            payload = {
                "component": r["display_name"],
                "state": component_state(event["kind"].removeprefix("monitor."), False),
                "event_id": event["id"],
                "occurred_at": at.isoformat().replace("+00:00", "Z"),
            }
            out.append(NewNotice(event["id"], r["subscriber_id"], "state", payload, at))
        return out

    async def targets(self, conn: DB, ids: list[int]) -> dict[int, Any]:
        return await store.subscribers_by_id(conn, ids)

    async def send(self, target: dict[str, Any], delivery: dict[str, Any]) -> None:
        notice = {**target, "kind": delivery["kind"], "payload": delivery["payload"]}
        subject, text = notice_text(notice, self.base_url)
        if target["kind"] == "webhook":
            body = {
                "type": f"status_page.{delivery['kind']}",
                "page": {"name": target["page_name"], "slug": target["slug"]},
                "subject": subject,
                "data": delivery["payload"],
            }
            await post_json(self.session, "webhook", target["address"], body)
            return
        if self.smtp is None:
            raise NotifierError("email: smtp_host is not configured")
        config = msgspec.structs.replace(self.smtp, to=[target["address"]])
        await email.deliver(config, email.plain_message(config, subject, text))


def from_config(cfg: ControllerConfig, session: aiohttp.ClientSession) -> Subscribers:
    """The destination for this controller: links to cfg.public_url, mail through cfg.smtp_*."""
    smtp = None
    if cfg.smtp_host:
        smtp = email.EmailConfig(
            host=cfg.smtp_host,
            from_=cfg.smtp_from,
            to=[cfg.smtp_from],
            port=cfg.smtp_port,
            security=cfg.smtp_security,
            username=cfg.smtp_username,
            password=cfg.smtp_password,
            verify=cfg.smtp_verify,
        )
    return Subscribers(base_url=cfg.public_url or f"http://{cfg.host}:{cfg.port}", session=session, smtp=smtp)
