"""Status pages: CRUD and validation, incident posts, the public JSON and HTML, private
pages, custom domains, badges and subscribers, against a real controller."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from email import message_from_bytes, policy
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.engine.incidents import emit
from probefleet.controller.stats import rollups
from probefleet.controller.status_pages import access
from probefleet.controller.storage import stats
from tests.controller.conftest import Running, start_controller

SECRET_URL = "http://127.0.0.1:9/very-internal-path"


async def _monitor(api: aiohttp.ClientSession, name: str, url: str = SECRET_URL) -> int:
    r = await api.post("/api/v1/monitors", json={"name": name, "url": url, "locations": ["us-east"]})
    assert r.status == 201, await r.text()
    return int((await r.json())["data"]["id"])


async def _page(api: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/status-pages", json=body)
    assert r.status == 201, await r.text()
    return dict((await r.json())["data"])


async def _set_status(app: web.Application, monitor_id: int, status: str) -> None:
    """What the incidents engine does: the state change and its outbox row, one transaction."""
    async with app[keys.POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE monitors SET status = $2, status_changed_at = now() WHERE id = $1"
            " RETURNING id, name, kind, spec, locations, status",
            monitor_id,
            status,
        )
        await emit(conn, f"monitor.{status}", dt.datetime.now(dt.UTC), monitor=dict(row), previous="up")


async def backfill_rollups(pool: Any, since: dt.datetime) -> None:
    """Roll up rounds a test backdated below the rollup watermarks, as the rollup steps would
    have had they arrived on time: recompute each level's buckets from `since` to its mark."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", rollups.LOCK)
        marks = await stats.watermarks(conn)
        for level, source in (("minute", None), ("hour", "minute"), ("day", "hour")):
            start = stats.floor_to(since, stats.LEVELS[level])
            if level not in marks or start >= marks[level]:
                continue
            await rollups.ensure_partitions(conn, level, start, marks[level])
            if source is None:
                await stats.rollup_raw(conn, start, marks[level])
            else:
                await stats.rollup_level(conn, source, level, start, marks[level])


async def test_it_creates_reads_lists_updates_and_deletes_a_page(api: aiohttp.ClientSession) -> None:
    a, b = await _monitor(api, "api"), await _monitor(api, "web")
    page = await _page(
        api,
        name="Acme",
        slug="acme",
        password="correct horse",
        sections=[{"name": "Core", "monitors": [{"monitor_id": a, "display_name": "API"}, b]}],
    )
    assert page["slug"] == "acme" and page["has_password"] is True and page["url"] == "/status/acme"
    assert "password" not in page and "password_hash" not in page
    assert [(m["monitor_id"], m["display_name"]) for m in page["sections"][0]["monitors"]] == [
        (a, "API"),
        (b, "web"),
    ]
    r = await api.get(f"/api/v1/status-pages/{page['id']}")
    assert (await r.json())["data"]["name"] == "Acme"
    r = await api.get("/api/v1/status-pages")
    assert [p["id"] for p in (await r.json())["data"]] == [page["id"]]
    r = await api.patch(
        f"/api/v1/status-pages/{page['id']}", json={"isPublic": False, "customDomain": "Status.Acme.test"}
    )
    body = (await r.json())["data"]
    assert r.status == 200 and body["is_public"] is False and body["custom_domain"] == "status.acme.test"
    assert body["sections"][0]["monitors"][0]["display_name"] == "API"
    r = await api.put(
        f"/api/v1/status-pages/{page['id']}",
        json={"name": "Acme 2", "slug": "acme2", "monitors": [{"id": b, "section": "Web"}]},
    )
    body = (await r.json())["data"]
    assert body["slug"] == "acme2" and body["is_public"] is True and body["custom_domain"] is None
    assert body["sections"] == [
        {
            "name": "Web",
            "monitors": [
                {
                    "monitor_id": b,
                    "display_name": "web",
                    "component_id": body["sections"][0]["monitors"][0]["component_id"],
                }
            ],
        }
    ]
    assert body["has_password"] is True, "PUT keeps a password it was not given"
    r = await api.delete(f"/api/v1/status-pages/{page['id']}")
    assert r.status == 204
    r = await api.get(f"/api/v1/status-pages/{page['id']}")
    assert r.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "x"}, "name"),
        ({"name": "x", "slug": "Bad Slug"}, "slug"),
        ({"name": "x", "slug": "-x"}, "slug"),
        ({"name": "x", "slug": "static"}, "slug"),
        ({"name": "x", "slug": "x", "colour": "red"}, "colour"),
        ({"name": "x", "slug": "x", "password": "short"}, "password"),
        ({"name": "x", "slug": "x", "custom_domain": "not a host"}, "custom_domain"),
        ({"name": "x", "slug": "x", "is_public": "yes"}, "is_public"),
        (
            {"name": "x", "slug": "x", "sections": [{"name": "A", "monitors": [999999]}]},
            "sections[0].monitors[0].monitor_id",
        ),
        (
            {"name": "x", "slug": "x", "sections": [{"monitors": [{"monitor_id": "1"}]}]},
            "sections[0].monitors[0].monitor_id",
        ),
        (
            {"name": "x", "slug": "x", "incident_status": "panicking", "incident_message": "m"},
            "incident_status",
        ),
    ],
    ids=[
        "no-name",
        "slug-case",
        "slug-dash",
        "slug-reserved",
        "unknown",
        "password",
        "domain",
        "is-public",
        "no-monitor",
        "monitor-id-type",
        "incident-status",
    ],
)
async def test_it_rejects_bad_pages_with_field_details(
    api: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    r = await api.post("/api/v1/status-pages", json=body)
    assert r.status == 422, await r.text()
    assert field in (await r.json())["error"]["details"]


async def test_it_refuses_a_taken_slug_and_bad_json(api: aiohttp.ClientSession) -> None:
    await _page(api, name="A", slug="taken")
    r = await api.post("/api/v1/status-pages", json={"name": "B", "slug": "taken"})
    assert r.status == 409 and (await r.json())["error"]["details"] == {"slug": "already in use"}
    r = await api.post("/api/v1/status-pages", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = await api.patch("/api/v1/status-pages/123456", json={"name": "x"})
    assert r.status == 404


async def test_it_needs_a_key_with_the_status_pages_scope(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/v1/status-pages")
        assert r.status == 401


async def test_it_posts_incidents_and_updates(api: aiohttp.ClientSession) -> None:
    page = await _page(api, name="A", slug="posts")
    r = await api.put(
        f"/api/v1/status-pages/{page['id']}",
        json={"incident_status": "investigating", "incident_message": "Slow responses"},
    )
    body = (await r.json())["data"]
    assert r.status == 200 and body["incident_status"] == "investigating" and body["name"] == "A"
    r = await api.put(
        f"/api/v1/status-pages/{page['id']}",
        json={"incident_status": "identified", "incident_message": "A bad deploy"},
    )
    posts = (await (await api.get(f"/api/v1/status-pages/{page['id']}/posts")).json())["data"]
    assert len(posts) == 1 and posts[0]["status"] == "identified"
    assert [u["message"] for u in posts[0]["updates"]] == ["A bad deploy", "Slow responses"]
    # Times in UTC RFC 3339, as the post's own created_at (whatever the database's zone).
    assert all(u["created_at"].endswith("Z") for u in posts[0]["updates"])
    assert posts[0]["created_at"].endswith("Z")
    r = await api.post(
        f"/api/v1/status-pages/{page['id']}/posts",
        json={"title": "DB failover", "status": "monitoring", "message": "Switched"},
    )
    post = (await r.json())["data"]
    assert r.status == 201 and post["status"] == "monitoring"
    r = await api.post(
        f"/api/v1/status-pages/{page['id']}/posts/{post['id']}/updates",
        json={"status": "resolved", "message": "All good"},
    )
    post = (await r.json())["data"]
    assert post["status"] == "resolved" and post["resolved_at"] is not None and len(post["updates"]) == 2
    r = await api.post(f"/api/v1/status-pages/{page['id']}/posts", json={"title": "x", "status": "meh"})
    assert r.status == 422 and set((await r.json())["error"]["details"]) == {"status", "message"}
    r = await api.post("/api/v1/status-page-posts/999999/updates", json={"message": "x"})
    assert r.status == 404


async def test_public_json_shows_only_what_the_page_exposes(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    shown, hidden = await _monitor(api, "shown-internal-name"), await _monitor(api, "hidden")
    page = await _page(
        api,
        name="Public",
        slug="pub",
        description="Our services",
        sections=[{"name": "Edge", "monitors": [{"monitor_id": shown, "display_name": "Website"}]}],
    )
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    pool = controller.app[keys.POOL]
    await pool.executemany(
        "INSERT INTO rounds (monitor_id, due, regions, deadline, closed_at, verdict)"
        " VALUES ($1, $2, '{us-east}', $2, $2, $3)",
        [
            (shown, today - dt.timedelta(days=2) + dt.timedelta(minutes=i), "up" if i else "down")
            for i in range(4)
        ]
        + [(shown, today + dt.timedelta(minutes=1), "up")],
    )
    await backfill_rollups(pool, today - dt.timedelta(days=3))
    await _set_status(controller.app, shown, "up")
    await api.put(
        f"/api/v1/status-pages/{page['id']}",
        json={"incident_status": "monitoring", "incident_message": "Watching"},
    )
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/v1/status-pages/pub/public")
        raw = await r.text()
        data = (await r.json())["data"]
    assert r.status == 200
    assert set(data) == {
        "name",
        "slug",
        "description",
        "status",
        "incident",
        "sections",
        "posts",
        "maintenance",
        "updated_at",
    }
    assert data["status"] == "operational" and data["incident"]["status"] == "monitoring"
    (section,) = data["sections"]
    (comp,) = section["components"]
    assert section["name"] == "Edge" and comp["name"] == "Website" and comp["status"] == "operational"
    assert set(comp) == {"id", "name", "status", "uptime_90d", "days"}
    assert len(comp["days"]) == 90 and comp["days"][-1] == {
        "date": today.date().isoformat(),
        "uptime": 100.0,
        "state": "operational",
    }
    assert comp["days"][-3]["uptime"] == 75.0 and comp["days"][-3]["state"] == "outage"
    assert comp["uptime_90d"] == 80.0
    assert data["posts"][0]["updates"][0]["message"] == "Watching"
    for leak in ("very-internal-path", "127.0.0.1", "shown-internal-name", "hidden", "monitor_id", "us-east"):
        assert leak not in raw, leak
    assert f'"id":{shown}' not in raw.replace(" ", "") or comp["id"] == shown
    del hidden


async def test_a_private_page_reveals_nothing_without_its_password(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    mid = await _monitor(api, "private-thing")
    await _page(
        api,
        name="Secret Corp",
        slug="secret",
        is_public=False,
        password="open sesame",
        monitors=[{"monitor_id": mid, "display_name": "Vault"}],
    )
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1).
    async with aiohttp.ClientSession(
        base_url=controller.base, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as anon:
        for path in ("/api/v1/status-pages/{}/public", "/status/{}/badge.svg", "/status/{}/events"):
            private, missing = await anon.get(path.format("secret")), await anon.get(path.format("nosuch"))
            assert (
                (private.status, await private.read())
                == (missing.status, await missing.read())
                == (404, b'{"error":{"code":"not_found","message":"status page not found","details":{}}}')
            )
        private, missing = await anon.get("/status/secret"), await anon.get("/status/nosuch")
        private_html, missing_html = await private.text(), await missing.text()
        assert private.status == missing.status == 401
        assert private_html.replace("secret", "X") == missing_html.replace("nosuch", "X")
        assert "Secret Corp" not in private_html and "Vault" not in private_html
        r = await anon.post("/status/secret", data={"password": "wrong one"}, allow_redirects=False)
        assert r.status == 401 and "Wrong password" in await r.text()
        r = await anon.post("/status/nosuch", data={"password": "open sesame"}, allow_redirects=False)
        assert r.status == 401
        r = await anon.post("/status/secret", data={"password": "open sesame"}, allow_redirects=False)
        assert r.status == 303 and "pf_status_secret" in r.cookies
        r = await anon.get("/status/secret")
        assert r.status == 200 and "Vault" in await r.text()
        r = await anon.get("/api/v1/status-pages/secret/public")
        assert r.status == 200
    async with aiohttp.ClientSession(
        base_url=controller.base, cookies={"pf_status_secret": "9999999999.abc"}
    ) as forged:
        assert (await forged.get("/status/secret")).status == 401


async def test_it_serves_html_by_custom_domain_and_badges(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    mid = await _monitor(api, "svc")
    page = await _page(api, name="Domain Co", slug="dom", custom_domain="status.example.test", monitors=[mid])
    await _set_status(controller.app, mid, "down")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/", headers={"Host": "status.example.test"})
        text = await r.text()
        assert r.status == 200 and "Domain Co" in text and 'data-state="major_outage"' in text
        assert (await anon.get("/", headers={"Host": "other.example.test"})).status == 404
        r = await anon.get("/status/dom/badge.svg")
        svg = await r.text()
        assert r.headers["Content-Type"].startswith("image/svg+xml") and "major outage" in svg
        comp = page["sections"][0]["monitors"][0]["component_id"]
        r = await anon.get(f"/status/dom/badge.svg?component={comp}&type=uptime")
        assert "no data" in await r.text()
        r = await anon.get(f"/api/v1/monitors/{mid}/badge.svg")
        assert r.status == 200 and ">down<" in await r.text()
        other = await _monitor(api, "unlisted")
        assert (await anon.get(f"/api/v1/monitors/{other}/badge.svg")).status == 404
        r = await anon.get(f"/api/v1/monitors/{other}/badge.svg?api_key={controller.admin_key}")
        assert r.status == 200
        assert (await anon.get("/status-assets/status.js")).status == 200


def _mail(envelope: Any) -> dict[str, str]:
    mail = message_from_bytes(envelope.content, policy=policy.default)
    return {"subject": str(mail["Subject"]), "body": mail.get_content()}  # type: ignore[attr-defined]


async def test_subscribers_confirm_by_email_and_hear_of_posts_and_state_changes(
    database: str, nats_url: str, smtp: list[Any]
) -> None:
    hooks: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
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
            mid = await _monitor(api, "svc")
            page = await _page(
                api, name="Subs", slug="subs", monitors=[{"monitor_id": mid, "display_name": "Shop"}]
            )
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"email": "Ann@Example.test"})
            assert r.status == 202 and (await r.json())["data"] == {"kind": "email", "confirmed": False}
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"webhook_url": hook_url})
            assert (await r.json())["data"]["confirmed"] is True
            r = await api.post("/api/v1/status-pages/subs/subscribe", json={"email": "nope"})
            assert r.status == 422 and "email" in (await r.json())["error"]["details"]
            async with asyncio.timeout(10):
                while not smtp:  # noqa: ASYNC110 (aiosmtpd fills a list)
                    await asyncio.sleep(0.05)
            text = _mail(smtp[0])["body"]
            link = re.search(r"http://status\.test(/status/subs/confirm\?token=\S+)", text)
            assert link and smtp[0].rcpt_tos == ["ann@example.test"]
            r = await api.get(link.group(1))
            assert r.status == 200 and "Subscribed" in await r.text()
            await api.post(
                f"/api/v1/status-pages/{page['id']}/posts",
                json={"title": "Outage", "message": "Shop is down", "status": "investigating"},
            )
            await _set_status(running.app, mid, "down")
            async with asyncio.timeout(15):
                while len(smtp) < 3 or len(hooks) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            subjects = sorted(_mail(e)["subject"] for e in smtp[1:])
            assert subjects == ["[Subs] Outage: investigating", "[Subs] Shop: outage"]
            assert sorted(h["type"] for h in hooks) == ["status_page.post", "status_page.state"]
            assert all("very-internal-path" not in str(h) for h in hooks)
            subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
            assert [s["confirmed"] for s in subs] == [True, True]
            assert "token" not in subs[0]
    finally:
        await running.stop()
        await runner.cleanup()


async def test_it_refuses_email_subscribers_with_a_409_when_it_cannot_send_mail(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    assert not controller.app[keys.CONFIG].smtp_host
    page = await _page(api, name="Quiet", slug="quiet")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post("/api/v1/status-pages/quiet/subscribe", json={"email": "ann@example.test"})
        assert r.status == 409 and (await r.json())["error"] == {
            "code": "email_unavailable",
            "message": "this server cannot send email: smtp_host is not configured",
            "details": {},
        }
        r = await anon.post("/status/quiet/subscribe", data={"email": "ann@example.test"})
        text = await r.text()
        assert r.status == 409 and "Email subscriptions are not available on this server." in text
        assert "Check your inbox" not in text and "<h1>Quiet</h1>" in text
        # A bad address is still a 422 first: the client has that to fix either way.
        r = await anon.post("/api/v1/status-pages/quiet/subscribe", json={"email": "nope"})
        assert r.status == 422
    subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
    assert subs == []


def test_passwords_are_scrypt_and_cookies_expire() -> None:
    stored = access.hash_password("open sesame")
    assert stored.startswith("scrypt$") and "open sesame" not in stored
    assert access.check_password("open sesame", stored) and not access.check_password("open sesamE", stored)
    assert not access.check_password("anything", None)
    cookie = access.sign_access("k", 1, stored, now=1000.0)
    assert access.access_ok("k", 1, stored, cookie, now=1001.0)
    assert not access.access_ok("k", 2, stored, cookie, now=1001.0)
    assert not access.access_ok("k", 1, stored, cookie, now=1000.0 + access.COOKIE_TTL + 1)
    assert not access.access_ok("k", 1, access.hash_password("new one!"), cookie, now=1001.0)
