"""Subscribers and their notices, which the notification dispatcher delivers: confirmation
mails, posts and state changes by email (aiosmtpd on loopback) and webhook (a receiver on
loopback); the destination check again at send time; the confirmation resend throttle;
each notice exactly once with two controllers; and the migration that hands the notices of
the old second outbox to the dispatcher."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from probefleet.controller import keys
from probefleet.controller.config import ControllerConfig
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.dispatcher import Dispatcher
from probefleet.controller.status_pages import access, posts, subscribers
from probefleet.controller.storage import db
from probefleet.controller.storage import status_pages as store
from tests.controller.conftest import start_controller
from tests.controller.status_pages.helpers import (
    Receiver,
    create_monitor,
    create_page,
    read_mail,
    set_status,
)
from tests.helpers import eventually


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


async def _settled(pool: asyncpg.Pool) -> bool:
    """Every event fanned out and no notice left to send: each notice was recorded by its
    last claimant (which records only after the receiver answered), so no send is still on
    its way and none can follow."""
    return bool(
        await pool.fetchval(
            "SELECT (SELECT last_event_id FROM dispatcher_cursor WHERE name = 'fanout')"
            " >= (SELECT coalesce(max(id), 0) FROM events) AND NOT EXISTS (SELECT FROM deliveries"
            " WHERE subscriber_id IS NOT NULL AND status IN ('pending', 'sending', 'failed'))"
        )
    )


def _link(envelope: Any, what: str) -> str:
    found = re.search(rf"http://status\.test(/status/\S+/{what}\?token=\S+)", read_mail(envelope)["body"])
    assert found, read_mail(envelope)["body"]
    return found.group(1)


async def test_subscribers_confirm_by_email_and_hear_of_posts_and_state_changes(
    database: str, nats_url: str, smtp: list[Any], receiver: Receiver
) -> None:
    port = smtp.pop(0)
    running = await start_controller(
        database,
        nats_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        public_url="http://status.test",
        subscriber_webhooks_allow_private=True,
    )
    try:
        async with aiohttp.ClientSession(
            base_url=running.base, headers={"Authorization": f"Bearer {running.admin_key}"}
        ) as api:
            mid = await create_monitor(api, "svc")
            page = await create_page(
                api, name="Subs", slug="subs", monitors=[{"monitor_id": mid, "display_name": "Shop"}]
            )
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"email": "Ann@Example.test"})
            assert r.status == 202 and (await r.json())["data"] == {"kind": "email", "confirmed": False}
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"webhook_url": receiver.url()})
            assert (await r.json())["data"]["confirmed"] is True
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"email": "nope"})
            assert r.status == 422 and "email" in (await r.json())["error"]["details"]
            await eventually(lambda: smtp, timeout=10, what="the confirmation mail")
            assert smtp[0].rcpt_tos == ["ann@example.test"]
            r = await api.get(_link(smtp[0], "confirm"))
            assert r.status == 200 and "Subscribed" in await r.text()
            await api.post(
                f"/api/v1/status-pages/{page['id']}/posts",
                json={"title": "Outage", "message": "Shop is down", "status": "investigating"},
            )
            await set_status(running.app, mid, "down")
            await eventually(
                lambda: len(smtp) >= 3 and len(receiver.got) >= 2, timeout=15, what="two mails and two hooks"
            )
            subjects = sorted(read_mail(e)["subject"] for e in smtp[1:])
            assert subjects == ["[Subs] Outage: investigating", "[Subs] Shop: outage"]
            assert sorted(h["type"] for h in receiver.got) == ["status_page.post", "status_page.state"]
            assert all("very-internal-path" not in str(h) for h in receiver.got)
            assert all("/status/subs/unsubscribe?token=" in read_mail(e)["body"] for e in smtp[1:])
            subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
            assert [s["confirmed"] for s in subs] == [True, True]
            assert "token" not in subs[0]
    finally:
        await running.stop()


async def test_the_dispatcher_checks_the_address_again_right_before_sending(
    pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """Subscribers stored while their names were public (then DNS changed): nothing is sent,
    the notice is dead with the reason, and with the setting that allows private addresses
    the next one arrives."""
    async with pool.acquire() as conn, conn.transaction():
        page_id = await store.insert_page(conn, {"name": "P", "slug": "p"})
        for host in ("localhost", "127.0.0.1"):
            await store.add_subscriber(conn, page_id, "webhook", receiver.url(host), confirmed=True)

    async def post(title: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await posts.publish(conn, page_id, title, "investigating", "m")

    async def send(cfg: ControllerConfig) -> None:
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        async with destinations.session(allow_private=cfg.subscriber_webhooks_allow_private) as session:
            dispatcher = Dispatcher(
                pool=pool, session=session, subscribers=subscribers.from_config(cfg, session)
            )
            assert await dispatcher.process_batch(now) == 2

    await post("Refused")
    await send(ControllerConfig())
    rows = await pool.fetch("SELECT status, last_error FROM deliveries WHERE kind = 'post' ORDER BY id")
    assert [r["status"] for r in rows] == ["dead", "dead"]
    assert all(
        "destination refused" in r["last_error"] and "private, loopback" in r["last_error"] for r in rows
    )
    assert receiver.got == []
    await post("Allowed")
    await send(ControllerConfig(subscriber_webhooks_allow_private=True))
    assert [(g["type"], g["subject"]) for g in receiver.got] == [
        ("status_page.post", "[P] Allowed: investigating")
    ] * 2


async def test_an_address_gets_one_confirmation_until_the_resend_delay(
    database: str, nats_url: str, smtp: list[Any]
) -> None:
    running = await start_controller(
        database, nats_url, smtp_host="127.0.0.1", smtp_port=smtp[0], smtp_security="none"
    )
    running.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=100)
    pool = running.app[keys.POOL]

    async def subscribe(times: int) -> int:
        async with aiohttp.ClientSession(base_url=running.base) as anon:
            answers = await asyncio.gather(
                *[
                    anon.post("/api/v1/status-pages/mail/subscribe", json={"email": "victim@example.test"})
                    for _ in range(times)
                ]
            )
        assert {r.status for r in answers} == {202}
        count: int = await pool.fetchval(
            "SELECT count(*) FROM deliveries d JOIN status_page_subscribers s ON s.id = d.subscriber_id"
            " WHERE s.address = 'victim@example.test' AND d.kind = 'confirm'"
        )
        return count

    try:
        async with aiohttp.ClientSession(
            base_url=running.base, headers={"Authorization": f"Bearer {running.admin_key}"}
        ) as api:
            await create_page(api, name="Mail", slug="mail")
        assert await subscribe(8) == 1, "one queued confirmation, however many requests"
        await pool.execute("UPDATE deliveries SET status = 'delivered' WHERE kind = 'confirm'")
        assert await subscribe(3) == 1, "sent a moment ago: no resend yet"
        await pool.execute(
            "UPDATE deliveries SET created_at = now() - $1::interval WHERE kind = 'confirm'",
            subscribers.RESEND_AFTER + dt.timedelta(seconds=1),
        )
        assert await subscribe(3) == 2, "after the resend delay: exactly one more"
    finally:
        await running.stop()


async def test_two_controllers_deliver_each_subscriber_notice_once(
    database: str, nats_url: str, smtp: list[Any], receiver: Receiver
) -> None:
    """Both dispatchers fan out the same state events and race for every claim: each
    subscriber gets the confirmation, the post and both state changes once."""
    mail = {"smtp_host": "127.0.0.1", "smtp_port": smtp.pop(0), "smtp_security": "none"}
    settings = {"public_url": "http://status.test", "subscriber_webhooks_allow_private": True, **mail}
    a = await start_controller(database, nats_url, **settings)
    b = await start_controller(database, nats_url, **settings)
    try:
        headers = {"Authorization": f"Bearer {a.admin_key}"}
        async with (
            aiohttp.ClientSession(base_url=a.base, headers=headers) as api,
            aiohttp.ClientSession(base_url=b.base) as on_b,
        ):
            mid = await create_monitor(api, "svc")
            page = await create_page(
                api, name="Twice", slug="twice", monitors=[{"monitor_id": mid, "display_name": "Shop"}]
            )
            r = await on_b.post("/api/v1/status-pages/twice/subscribe", json={"email": "ann@example.test"})
            assert r.status == 202
            r = await on_b.post("/api/v1/status-pages/twice/subscribe", json={"webhook_url": receiver.url()})
            assert r.status == 202
            await eventually(lambda: smtp, timeout=10, what="the confirmation mail")
            assert (await on_b.get(_link(smtp[0], "confirm"))).status == 200
            r = await api.post(
                f"/api/v1/status-pages/{page['id']}/posts", json={"title": "Outage", "message": "x"}
            )
            assert r.status == 201
            await set_status(a.app, mid, "down")
            await set_status(b.app, mid, "up")
            await eventually(
                lambda: len(smtp) >= 4 and len(receiver.got) >= 3, timeout=15, what="every notice once"
            )
            await eventually(lambda: _settled(a.app[keys.POOL]), what="nothing left for either dispatcher")
        mails = Counter(read_mail(e)["subject"] for e in smtp)
        assert mails == {
            "Confirm your subscription to Twice": 1,
            "[Twice] Outage: investigating": 1,
            "[Twice] Shop: outage": 1,
            "[Twice] Shop: operational": 1,
        }
        hooks = Counter((h["type"], h["subject"]) for h in receiver.got)
        assert hooks == {
            ("status_page.post", "[Twice] Outage: investigating"): 1,
            ("status_page.state", "[Twice] Shop: outage"): 1,
            ("status_page.state", "[Twice] Shop: operational"): 1,
        }
        rows = await a.app[keys.POOL].fetch(
            "SELECT kind, status, attempts FROM deliveries WHERE subscriber_id IS NOT NULL"
        )
        assert len(rows) == 7 and {r["status"] for r in rows} == {"delivered"}
    finally:
        await b.stop()
        await a.stop()


# --- the migration from the second outbox -----------------------------------------------

STATE = (
    "INSERT INTO events (kind, monitor_id, occurred_at, payload) VALUES ($1, $2, now(), '{}') RETURNING id"
)


@pytest.mark.parametrize("old_fan_out", ["behind", "ahead"], ids=lambda v: f"old-fan-out-{v}")
async def test_the_migration_hands_every_notice_to_the_dispatcher(
    database: str, smtp: list[Any], receiver: Receiver, old_fan_out: str
) -> None:
    """Notices of the old outbox move over (sent ones stay sent), and a state event is
    notified once whichever fan-out, the old or the dispatcher's, had got further."""
    await db.migrate(database, upto="0012")
    conn = await asyncpg.connect(database)
    try:
        mid = await conn.fetchval(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            " VALUES ('svc', 'http', '{}', 60, 10, '{}') RETURNING id"
        )
        page_id = await conn.fetchval(
            "INSERT INTO status_pages (name, slug) VALUES ('Old', 'old') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO status_page_components (page_id, monitor_id, section_pos, position, display_name)"
            " VALUES ($1, $2, 0, 0, 'Shop')",
            page_id,
            mid,
        )
        add = (
            "INSERT INTO status_page_subscribers (page_id, kind, address, token, confirmed_at)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id"
        )
        hook = await conn.fetchval(add, page_id, "webhook", receiver.url(), "t" * 30, dt.datetime.now(dt.UTC))
        ann = await conn.fetchval(add, page_id, "email", "ann@example.test", "u" * 30, None)
        down, up = (
            await conn.fetchval(STATE, "monitor.down", mid),
            await conn.fetchval(STATE, "monitor.up", mid),
        )
        # behind: the old fan-out stopped before both events, the dispatcher's passed them;
        # ahead: the old one wrote both notices (the first already sent), the dispatcher's is
        # before them.
        old_cursor, watermark = (down - 1, up) if old_fan_out == "behind" else (up, down - 1)
        await conn.execute("UPDATE status_page_cursor SET last_event_id = $1", old_cursor)
        await conn.execute("UPDATE dispatcher_cursor SET last_event_id = $1", watermark)
        notice = (
            "INSERT INTO status_page_notices (subscriber_id, kind, payload, state, attempts, last_error,"
            " sent_at) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)"
        )
        post = '{"post_id": 1, "title": "Old post", "status": "investigating", "message": "m"}'
        await conn.execute(notice, hook, "post", post, "sent", 1, None, dt.datetime.now(dt.UTC))
        await conn.execute(notice, hook, "post", post.replace("Old", "Gave up on"), "failed", 5, "boom", None)
        await conn.execute(notice, hook, "post", post.replace("Old", "Pending"), "pending", 2, "503", None)
        await conn.execute(notice, ann, "confirm", "{}", "pending", 0, None, None)
        if old_fan_out == "ahead":
            for event_id, state, sent in ((down, "outage", "sent"), (up, "operational", "pending")):
                payload = (
                    f'{{"component": "Shop", "state": "{state}", "event_id": {event_id}, "occurred_at": "x"}}'
                )
                at = dt.datetime.now(dt.UTC) if sent == "sent" else None
                await conn.execute(notice, hook, "state", payload, sent, int(sent == "sent"), None, at)
    finally:
        await conn.close()

    await db.migrate(database)
    pool = await db.create_pool(database, max_size=4)
    try:
        assert await pool.fetchval("SELECT to_regclass('status_page_notices') IS NULL")
        cfg = ControllerConfig(
            smtp_host="127.0.0.1",
            smtp_port=smtp.pop(0),
            smtp_security="none",
            public_url="http://status.test",
        )
        async with destinations.session(allow_private=True) as session:
            dispatcher = Dispatcher(
                pool=pool, session=session, subscribers=subscribers.from_config(cfg, session)
            )
            later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            while await dispatcher.step(later):
                pass
        got = Counter((h["type"], h["subject"]) for h in receiver.got)
        assert got == {
            ("status_page.post", "[Old] Pending post: investigating"): 1,
            # behind: both state notices written by the migration; ahead: the down one was sent before
            **({("status_page.state", "[Old] Shop: outage"): 1} if old_fan_out == "behind" else {}),
            ("status_page.state", "[Old] Shop: operational"): 1,
        }
        assert [read_mail(e)["subject"] for e in smtp] == ["Confirm your subscription to Old"]
        rows = await pool.fetch("SELECT kind, status, attempts, last_error FROM deliveries ORDER BY id")
        statuses = Counter((r["kind"], r["status"]) for r in rows)
        assert statuses == {
            ("post", "delivered"): 2,
            ("post", "dead"): 1,
            ("confirm", "delivered"): 1,
            ("state", "delivered"): 2,
        }
        assert next(r for r in rows if r["status"] == "dead")["last_error"] == "boom"
    finally:
        await pool.close()
