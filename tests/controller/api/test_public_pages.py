"""The anonymous site of status pages: the public JSON shows only what the page exposes, a
private page reveals nothing without its password, custom domains and badges, posts over
SSE and their replay, and subscribing: refused webhook destinations, the per-address limit,
the 409 of a server that cannot send mail.

No test sends traffic anywhere but loopback: refused destinations are refused before any
connection is made (IP literals are checked as such; `localhost` resolves from /etc/hosts)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.notifications import destinations
from probefleet.controller.status_pages import access
from tests.controller.conftest import Running, start_controller
from tests.controller.status_pages.helpers import (
    SECRET_URL,
    backfill_rollups,
    create_monitor,
    create_page,
    next_post,
    read_frames,
    set_status,
)


@pytest.fixture
async def mailing(database: str, nats_url: str, smtp: list[Any]) -> AsyncIterator[Running]:
    """A controller that sends mail (to the smtp fixture): email subscribers need SMTP."""
    running = await start_controller(
        database, nats_url, smtp_host="127.0.0.1", smtp_port=smtp[0], smtp_security="none"
    )
    yield running
    await running.stop()


async def test_public_json_shows_only_what_the_page_exposes(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    shown, hidden = await create_monitor(api, "shown-internal-name"), await create_monitor(api, "hidden")
    page = await create_page(
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
    await set_status(controller.app, shown, "up")
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
    assert set(comp) == {"id", "name", "description", "status", "uptime_90d", "days"}
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
    mid = await create_monitor(api, "private-thing")
    await create_page(
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
    mid = await create_monitor(api, "svc")
    page = await create_page(
        api, name="Domain Co", slug="dom", custom_domain="status.example.test", monitors=[mid]
    )
    await set_status(controller.app, mid, "down")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/", headers={"Host": "status.example.test"})
        text = await r.text()
        assert r.status == 200 and "Domain Co" in text and 'data-state="major_outage"' in text
        # Any other host's root is the console, which sends a visitor to its login page.
        r = await anon.get("/", headers={"Host": "other.example.test"}, allow_redirects=False)
        assert r.status in (302, 303) and r.headers["Location"].startswith("/login")
        assert "Domain Co" not in await r.text()
        r = await anon.get("/status/dom/badge.svg")
        svg = await r.text()
        assert r.headers["Content-Type"].startswith("image/svg+xml") and "major outage" in svg
        comp = page["sections"][0]["monitors"][0]["component_id"]
        r = await anon.get(f"/status/dom/badge.svg?component={comp}&type=uptime")
        assert "no data" in await r.text()
        r = await anon.get(f"/api/v1/monitors/{mid}/badge.svg")
        assert r.status == 200 and ">down<" in await r.text()
        other = await create_monitor(api, "unlisted")
        assert (await anon.get(f"/api/v1/monitors/{other}/badge.svg")).status == 404
        r = await anon.get(f"/api/v1/monitors/{other}/badge.svg?api_key={controller.admin_key}")
        assert r.status == 200
        assert (await anon.get("/status-assets/status.js")).status == 200


async def test_new_posts_and_updates_arrive_over_sse(controller: Running, api: aiohttp.ClientSession) -> None:
    page = await create_page(api, name="Live", slug="live")
    other = await create_page(api, name="Other", slug="other")
    async with (
        aiohttp.ClientSession(base_url=controller.base) as anon,
        anon.get("/status/live/events") as stream,
    ):
        frames = read_frames(stream)
        await api.post(
            f"/api/v1/status-pages/{other['id']}/posts", json={"title": "Not yours", "message": "x"}
        )
        r = await api.post(
            f"/api/v1/status-pages/{page['id']}/posts",
            json={"title": "Checkout <errors>", "status": "investigating", "message": "Looking"},
        )
        post = (await r.json())["data"]
        got = (await next_post(frames)).data
        assert got["post"] == post["id"] and got["status"] == "investigating"
        assert "Checkout &lt;errors&gt;" in got["html"] and f'id="p-{post["id"]}"' in got["html"]
        assert got["banner"] == ""
        await api.post(
            f"/api/v1/status-pages/{page['id']}/posts/{post['id']}/updates",
            json={"status": "identified", "message": "Bad deploy"},
        )
        got = (await next_post(frames)).data
        assert got["post"] == post["id"] and got["status"] == "identified"
        assert got["html"].index("Bad deploy") < got["html"].index("Looking")
        await api.put(
            f"/api/v1/status-pages/{page['id']}",
            json={"incident_status": "monitoring", "incident_message": "Fix rolled out"},
        )
        got = (await next_post(frames)).data
        assert got["post"] == post["id"] and 'data-status="monitoring"' in got["banner"]
        assert "Fix rolled out" in got["banner"]


async def test_a_reconnecting_visitor_gets_the_posts_it_missed(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """Post frames carry their outbox id, so Last-Event-ID resumes them like state changes;
    a frame holds the post and banner as the page shows them and nothing of the page's config."""
    mid = await create_monitor(api, "Private monitor name")
    core = {"name": "Core", "monitors": [{"monitor_id": mid, "display_name": "API"}]}
    page = await create_page(api, name="Resume", slug="resume-sse", sections=[core])
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        async with anon.get("/status/resume-sse/events") as stream:
            frames = read_frames(stream)
            body = {"title": "T", "message": "one"}
            r = await api.post(f"/api/v1/status-pages/{page['id']}/posts", json=body)
            post = (await r.json())["data"]
            seen = await next_post(frames)
            assert seen.id is not None and seen.id.isdigit()
        # While the visitor is away: an update, another page's post, a state change.
        await api.post(
            f"/api/v1/status-page-posts/{post['id']}/updates", json={"status": "resolved", "message": "Fixed"}
        )
        other = await create_page(api, name="Other", slug="other-sse")
        await api.post(f"/api/v1/status-pages/{other['id']}/posts", json={"title": "No", "message": "x"})
        await set_status(controller.app, mid, "down")
        async with anon.get("/status/resume-sse/events", headers={"Last-Event-ID": seen.id}) as stream:
            frames = read_frames(stream)
            missed = [await anext(frames), await anext(frames)]
    assert [f.event for f in missed] == ["post", "component"]
    assert missed[0].data["post"] == post["id"] and missed[0].data["status"] == "resolved"
    assert int(seen.id) < int(missed[0].id or 0) < int(missed[1].id or 0)
    assert set(missed[0].data) == {"post", "status", "html", "banner"}
    assert missed[1].data == {
        "component": page["sections"][0]["monitors"][0]["component_id"],
        "state": "outage",
    }
    text = json.dumps([f.data for f in missed])
    for secret in ("Private monitor name", "resume-sse", SECRET_URL):
        assert secret not in text


async def test_it_refuses_webhooks_to_non_public_addresses_with_a_422(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    controller.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=100)
    page = await create_page(api, name="Hooks", slug="hooks")
    refused = [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://localhost:9/hook",
        "https://0.0.0.0/",
        "http://[2002:7f00:1::1]:9/hook",
        "http://[fec0::1]:9/hook",
        "http://[64:ff9b::7f00:1]:9/hook",
    ]
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for url in refused:
            r = await anon.post("/api/v1/status-pages/hooks/subscribe", json={"webhook_url": url})
            body = await r.json()
            assert r.status == 422, (url, body)
            assert "private, loopback, link-local" in body["error"]["details"]["webhook_url"], url
        # Anonymous visitors get no benefit of the doubt for a name that does not resolve.
        url = "http://hooks.nonexistent.invalid/hook"
        r = await anon.post("/api/v1/status-pages/hooks/subscribe", json={"webhook_url": url})
        body = await r.json()
        assert r.status == 422, body
        assert body["error"]["details"]["webhook_url"] == "host hooks.nonexistent.invalid does not resolve"
        r = await anon.post("/api/v1/status-pages/hooks/subscribe", json={"url": "ftp://example.test/x"})
        assert r.status == 422
    subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
    assert subs == []
    # A public literal passes the check without any lookup or connection.
    await destinations.check("http://93.184.216.34/hook", allow_private=False)


async def test_anonymous_subscribe_requests_are_limited_per_source_address(mailing: Running) -> None:
    controller = mailing
    controller.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=3, every=60)
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession(base_url=controller.base, headers=headers) as api:
        await create_page(api, name="Limits", slug="limits")
    path = "/api/v1/status-pages/limits/subscribe"
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for i in range(3):
            r = await anon.post(path, json={"email": f"a{i}@example.test"})
            assert r.status == 202, await r.text()
        r = await anon.post(path, json={"email": "a9@example.test"})
        body = await r.json()
        assert r.status == 429 and body["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and body["error"]["details"]["retry_after"] >= 1
        r = await anon.post("/status/limits/subscribe", data={"email": "a9@example.test"})
        assert r.status == 429 and "Retry-After" in r.headers and "Too many" in await r.text()
    # Another source address has its own bucket.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(base_url=controller.base, connector=other) as anon:
        r = await anon.post(path, json={"email": "b@example.test"})
        assert r.status == 202, await r.text()


async def test_it_refuses_email_subscribers_with_a_409_when_it_cannot_send_mail(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    assert not controller.app[keys.CONFIG].smtp_host
    page = await create_page(api, name="Quiet", slug="quiet")
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


async def test_password_attempts_are_limited_per_address_and_per_page(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """10 attempts per address and page, 100 per page (here 4 and 6): then 429 with
    Retry-After and the form saying so; an unknown slug is limited the same way, and another
    page keeps its own budget. The right password is refused too while limited."""
    controller.app[keys.STATUS_PAGES].unlock_limiter = access.UnlockLimiter(per_address=4, per_page=6)
    await create_page(api, name="Locked", slug="locked", is_public=False, password="open sesame")
    await create_page(api, name="Other", slug="other-locked", is_public=False, password="open sesame")
    wrong = {"password": "wrong"}
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for _ in range(4):
            assert (await anon.post("/status/locked", data=wrong, allow_redirects=False)).status == 401
        for slug in ("locked", "nosuch-locked"):
            if slug == "nosuch-locked":
                for _ in range(4):
                    await anon.post(f"/status/{slug}", data=wrong)
            r = await anon.post(f"/status/{slug}", data={"password": "open sesame"}, allow_redirects=False)
            text = await r.text()
            assert r.status == 429, text
            assert 1 <= int(r.headers["Retry-After"]) <= 300
            assert "Too many attempts. Please try again in" in text and '<form method="post"' in text
        r = await anon.post("/status/other-locked", data={"password": "open sesame"}, allow_redirects=False)
        assert r.status == 303
    # Another address: its own 4, but the page's 6 are spent after two more.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(base_url=controller.base, connector=other) as anon:
        statuses = [(await anon.post("/status/locked", data=wrong)).status for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_scrypt_runs_on_its_own_pool_so_dns_is_not_starved() -> None:
    """A burst of password checks leaves the default executor (getaddrinfo's) free."""
    loop = asyncio.get_running_loop()
    checks = [asyncio.ensure_future(access.verify_password("guess", None)) for _ in range(20)]
    started = loop.time()
    await loop.getaddrinfo("localhost", 80)
    assert loop.time() - started < 0.5
    assert await asyncio.gather(*checks) == [False] * 20


HARDENED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def test_every_public_answer_carries_the_security_headers(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    mid = await create_monitor(api, "hdr")
    await create_page(api, name="Headers", slug="hdr", custom_domain="hdr.example.test", monitors=[mid])
    await create_page(api, name="Priv", slug="hdr-private", is_public=False, password="password-8")
    requests = [
        ("get", "/status/hdr", {}, 200),
        ("get", "/status/hdr-private", {}, 401),
        ("post", "/status/hdr-private", {"data": {"password": "wrong"}}, 401),
        ("post", "/status/hdr-private", {"data": {"password": "password-8"}, "allow_redirects": False}, 303),
        ("get", "/status/hdr/badge.svg", {}, 200),
        ("get", "/status/nosuch/badge.svg", {}, 404),
        ("get", f"/api/v1/monitors/{mid}/badge.svg", {}, 200),
        ("get", "/status-assets/status.js", {}, 200),
        ("get", "/status-assets/status.css", {}, 200),
        ("get", "/status-assets/nosuch.js", {}, 404),
        ("get", "/", {"headers": {"Host": "hdr.example.test"}}, 200),
        ("get", "/", {"headers": {"Host": "nothing.example.test"}, "allow_redirects": False}, 303),
        ("get", "/login", {"headers": {"Host": "nothing.example.test"}}, 200),
        ("get", "/api/v1/status-pages/hdr/public", {}, 200),
        ("post", "/api/v1/status-pages/hdr/subscribe", {"json": {"webhook_url": "http://10.0.0.1/"}}, 422),
        ("get", "/status/hdr/confirm?token=x", {}, 404),
        ("get", "/status/hdr/unsubscribe?token=x", {}, 200),
        ("get", "/status/hdr/no/such/page", {}, 404),
        ("delete", "/status/hdr", {}, 405),
    ]
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for method, path, kwargs, status in requests:
            r = await getattr(anon, method)(path, **kwargs)
            assert r.status == status, (path, await r.text())
            for name, value in HARDENED.items():
                assert r.headers.get(name) == value, (path, name)
            csp = r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
            assert "unsafe-inline" not in csp
        async with anon.get("/status/hdr/events") as r:
            assert r.status == 200 and r.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/status/mp-locked", "mp-locked"),
        ("/status/mp/subscribe", "mp"),
        ("/status/mp/unsubscribe?token=abc", "mp"),
    ],
    ids=["password form", "subscribe form", "unsubscribe form"],
)
async def test_a_form_without_a_multipart_boundary_is_a_400_page(
    controller: Running, api: aiohttp.ClientSession, path: str, page: str
) -> None:
    await create_page(api, name="Multipart", slug=page, is_public=page == "mp", password="password-8")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for content_type in ("multipart/form-data", "multipart/form-data; boundary="):
            r = await anon.post(path, data=b"password=pw", headers={"Content-Type": content_type})
            text = await r.text()
            assert r.status == 400, text
            assert r.headers["Content-Type"].startswith("text/html") and "could not be read" in text
            assert r.headers["X-Frame-Options"] == "DENY"
