"""The admin API of status pages (/api/v1/status-pages): CRUD and validation by field path,
the scope it needs, incident posts; and a committed change of a page ending its open
streams on every controller (a stream was checked against the page, public or unlocked,
once, when it connected, and the browser's reconnect is checked against the page as it is
now). Another page's streams stay open; a change of the incident banner alone ends nothing
(it arrives as a post frame)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.notifications.realtime import Client
from probefleet.shared.devstack import NatsServer
from tests.controller.conftest import Running, start_controller
from tests.controller.status_pages.helpers import (
    BOUND,
    create_monitor,
    create_page,
    next_post,
    read_frames,
    set_status,
)


async def test_it_creates_reads_lists_updates_and_deletes_a_page(api: aiohttp.ClientSession) -> None:
    a, b = await create_monitor(api, "api"), await create_monitor(api, "web")
    page = await create_page(
        api,
        name="Acme",
        slug="acme",
        password="correct horse",
        sections=[
            {
                "name": "Core",
                "monitors": [{"monitor_id": a, "display_name": "API", "description": " REST "}, b],
            }
        ],
    )
    assert page["slug"] == "acme" and page["has_password"] is True and page["url"] == "/status/acme"
    assert "password" not in page and "password_hash" not in page
    assert [
        (m["monitor_id"], m["display_name"], m["description"]) for m in page["sections"][0]["monitors"]
    ] == [
        (a, "API", "REST"),
        (b, "web", ""),
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
    assert body["sections"][0]["monitors"][0]["description"] == "REST"
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
                    "description": "",
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
            {
                "name": "x",
                "slug": "x",
                "sections": [{"monitors": [{"monitor_id": 1, "description": "d" * 501}]}],
            },
            "sections[0].monitors[0].description",
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
        "description",
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
    await create_page(api, name="A", slug="taken")
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
    page = await create_page(api, name="A", slug="posts")
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


async def _open(session: aiohttp.ClientSession, path: str, **kw: Any) -> aiohttp.ClientResponse:
    """A page's event stream, once attached to the hub (its first line is written after)."""
    response = await session.get(path, **kw)
    assert response.status == 200, await response.text()
    async with asyncio.timeout(BOUND):
        assert await response.content.readline() == b"retry: 2000\n"
    return response


async def _ends(response: aiohttp.ClientResponse) -> None:
    async with asyncio.timeout(BOUND):
        async for _ in response.content:
            pass
    response.release()


async def _status(session: aiohttp.ClientSession, path: str, **kw: Any) -> int:
    async with session.get(path, **kw) as r:
        return r.status


def _core(monitor_id: int, name: str) -> list[dict[str, Any]]:
    return [{"name": "Core", "monitors": [{"monitor_id": monitor_id, "display_name": name}]}]


@pytest.fixture
async def pair(database: str, nats_url: str) -> AsyncIterator[tuple[Running, Running]]:
    """Two controllers on one database and one NATS."""
    a = await start_controller(database, nats_url)
    b = await start_controller(database, nats_url)
    yield a, b
    await b.stop()
    await a.stop()


async def test_a_page_made_private_ends_its_streams_on_every_controller(
    pair: tuple[Running, Running],
) -> None:
    a, b = pair
    headers = {"Authorization": f"Bearer {a.admin_key}"}
    async with (
        aiohttp.ClientSession(base_url=a.base, headers=headers) as api,
        aiohttp.ClientSession(base_url=a.base) as on_a,
        aiohttp.ClientSession(base_url=b.base) as on_b,
    ):
        mid = await create_monitor(api, "Checkout backend")
        page = await create_page(api, name="Acme", slug="acme", sections=_core(mid, "Checkout"))
        other = await create_page(api, name="Other", slug="other", sections=_core(mid, "Checkout"))
        streams = [await _open(on_a, "/status/acme/events"), await _open(on_b, "/status/acme/events")]
        others = [await _open(on_a, "/status/other/events"), await _open(on_b, "/status/other/events")]

        r = await api.patch(
            f"/api/v1/status-pages/{page['id']}", json={"is_public": False, "password": "open sesame"}
        )
        assert r.status == 200, await r.text()
        for stream in streams:
            await _ends(stream)
        assert await _status(on_a, "/status/acme/events") == 404
        assert await _status(on_b, "/status/acme/events", headers={"Last-Event-ID": "1"}) == 404

        # The other page's streams are still open and still live.
        r = await api.post(
            f"/api/v1/status-pages/{other['id']}/posts", json={"title": "Still here", "message": "x"}
        )
        post = (await r.json())["data"]
        for stream in others:
            assert (await next_post(read_frames(stream))).data["post"] == post["id"]
            stream.close()


async def test_changed_components_end_the_streams_and_the_reconnect_gets_the_new_ones(
    pair: tuple[Running, Running],
) -> None:
    a, b = pair
    b.app[keys.STATUS_PAGES].ttl = 3600.0  # b's cached renderings go only because they are dropped
    headers = {"Authorization": f"Bearer {a.admin_key}"}
    async with (
        aiohttp.ClientSession(base_url=a.base, headers=headers) as api,
        aiohttp.ClientSession(base_url=b.base) as on_b,
    ):
        old, new = await create_monitor(api, "Old backend"), await create_monitor(api, "New backend")
        page = await create_page(api, name="Acme", slug="acme", sections=_core(old, "Old"))
        async with on_b.get("/api/v1/status-pages/acme/public") as r:
            assert [c["name"] for c in (await r.json())["data"]["sections"][0]["components"]] == ["Old"]
        stream = await _open(on_b, "/status/acme/events")

        body = {"name": "Acme", "slug": "acme", "sections": _core(new, "New")}
        r = await api.put(f"/api/v1/status-pages/{page['id']}", json=body)
        assert r.status == 200, await r.text()
        component = (await r.json())["data"]["sections"][0]["monitors"][0]["component_id"]
        await _ends(stream)
        async with on_b.get("/api/v1/status-pages/acme/public") as r:
            assert [c["name"] for c in (await r.json())["data"]["sections"][0]["components"]] == ["New"]

        stream = await _open(on_b, "/status/acme/events")
        await set_status(a.app, old, "down")  # no longer on the page: no frame
        await set_status(a.app, new, "down")
        async with asyncio.timeout(BOUND):
            got = await anext(read_frames(stream))
        assert (got.event, got.data) == ("component", {"component": component, "state": "outage"})
        stream.close()


async def _unlock(session: aiohttp.ClientSession, slug: str, password: str) -> None:
    r = await session.post(f"/status/{slug}", data={"password": password}, allow_redirects=False)
    assert r.status == 303


@pytest.mark.parametrize(
    "change",
    [{"password": "another secret"}, {"slug": "acme-2"}, None],
    ids=["password-changed", "slug-changed", "deleted"],
)
async def test_a_change_ends_the_stream_and_the_reconnect_is_refused(
    controller: Running, api: aiohttp.ClientSession, change: dict[str, Any] | None
) -> None:
    """The visitor holds the cookie of the old password, at the old slug."""
    page = await create_page(api, name="Acme", slug="acme", is_public=False, password="open sesame")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=controller.base, cookie_jar=jar) as visitor:
        await _unlock(visitor, "acme", "open sesame")
        stream = await _open(visitor, "/status/acme/events")
        if change is None:
            assert (await api.delete(f"/api/v1/status-pages/{page['id']}")).status == 204
        else:
            assert (await api.patch(f"/api/v1/status-pages/{page['id']}", json=change)).status == 200
        await _ends(stream)
        assert await _status(visitor, "/status/acme/events") == 404


async def test_the_incident_banner_alone_ends_no_stream(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    page = await create_page(api, name="Acme", slug="acme")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        stream = await _open(anon, "/status/acme/events")
        frames = read_frames(stream)
        await api.put(
            f"/api/v1/status-pages/{page['id']}",
            json={"incident_status": "investigating", "incident_message": "Slow"},
        )
        first = (await next_post(frames)).data
        r = await api.post(f"/api/v1/status-pages/{page['id']}/posts", json={"title": "Two", "message": "x"})
        second = (await r.json())["data"]
        assert (await next_post(frames)).data["post"] == second["id"] != first["post"]
        stream.close()


async def test_a_client_checked_before_a_change_is_refused(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """The connect race: a stream checked against the page, then attached after the change
    was announced, would never be ended; the hub refuses it."""
    hub = controller.app[keys.HUB]
    page, other = (
        await create_page(api, name="Acme", slug="acme"),
        await create_page(api, name="Other", slug="other"),
    )

    def client(page_id: int) -> Client:
        return Client(kind="sse", topics=frozenset({"monitor.status"}), page_id=page_id)

    checked_at = hub.page_changes
    assert hub.close_page(page["id"]) == 0
    refused, kept, fresh = client(page["id"]), client(other["id"]), client(page["id"])
    assert not hub.attach(refused, checked_at=checked_at)
    assert hub.attach(kept, checked_at=checked_at)
    assert hub.attach(fresh, checked_at=hub.page_changes)
    assert refused not in hub.clients and {kept, fresh} <= hub.clients
    checked_at = hub.page_changes
    assert hub.close_page(None) == 2  # every page
    assert not hub.attach(client(other["id"]), checked_at=checked_at)
    assert not {kept, fresh} & hub.clients
    assert await kept.next() is None and await fresh.next() is None


async def test_a_controller_reconnecting_to_nats_ends_its_page_streams(
    controller: Running, api: aiohttp.ClientSession, nats_server: NatsServer
) -> None:
    """Changes announced while it was cut off never reached it: its streams are checked again."""
    await create_page(api, name="Acme", slug="acme")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        stream = await _open(anon, "/status/acme/events")
        port = nats_server.port
        nats_server.stop()
        nats_server.start(port=port)
        await _ends(stream)
        stream = await _open(anon, "/status/acme/events")
        stream.close()
