"""A status page's open SSE streams end when the page changes, on every controller: a
stream was checked against the page (public, or unlocked) once, when it connected, and the
browser's reconnect is checked against the page as it is now. Another page's streams stay
open; a change of the incident banner alone ends nothing (it arrives as a post frame)."""

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
from tests.controller.test_status_pages import _monitor, _page, _set_status
from tests.controller.test_status_pages_more import _frames, _next_post

BOUND = 10.0  # generous bound for "ends" or "arrives": a failure, never a speed measure


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
        mid = await _monitor(api, "Checkout backend")
        page = await _page(api, name="Acme", slug="acme", sections=_core(mid, "Checkout"))
        other = await _page(api, name="Other", slug="other", sections=_core(mid, "Checkout"))
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
            assert (await _next_post(_frames(stream))).data["post"] == post["id"]
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
        old, new = await _monitor(api, "Old backend"), await _monitor(api, "New backend")
        page = await _page(api, name="Acme", slug="acme", sections=_core(old, "Old"))
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
        await _set_status(a.app, old, "down")  # no longer on the page: no frame
        await _set_status(a.app, new, "down")
        async with asyncio.timeout(BOUND):
            got = await anext(_frames(stream))
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
    page = await _page(api, name="Acme", slug="acme", is_public=False, password="open sesame")
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
    page = await _page(api, name="Acme", slug="acme")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        stream = await _open(anon, "/status/acme/events")
        frames = _frames(stream)
        await api.put(
            f"/api/v1/status-pages/{page['id']}",
            json={"incident_status": "investigating", "incident_message": "Slow"},
        )
        first = (await _next_post(frames)).data
        r = await api.post(f"/api/v1/status-pages/{page['id']}/posts", json={"title": "Two", "message": "x"})
        second = (await r.json())["data"]
        assert (await _next_post(frames)).data["post"] == second["id"] != first["post"]
        stream.close()


async def test_a_client_checked_before_a_change_is_refused(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """The connect race: a stream checked against the page, then attached after the change
    was announced, would never be ended; the hub refuses it."""
    hub = controller.app[keys.HUB]
    page, other = await _page(api, name="Acme", slug="acme"), await _page(api, name="Other", slug="other")

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
    await _page(api, name="Acme", slug="acme")
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        stream = await _open(anon, "/status/acme/events")
        port = nats_server.port
        nats_server.stop()
        nats_server.start(port=port)
        await _ends(stream)
        stream = await _open(anon, "/status/acme/events")
        stream.close()
