"""WebSocket push at /api/v1/ws and the hub behind it, with real aiohttp clients."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from probefleet.controller import keys, metrics
from probefleet.controller.notifications.realtime import Client, Hub
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import events as event_store
from tests.controller.conftest import Running

BOUND = 5.0  # generous bound for "arrives": a failure, never a speed measure


async def _event(running: Running, kind: str, monitor_id: int | None = None, size: int = 0) -> int:
    async with running.app[keys.POOL].acquire() as conn:
        return await event_store.insert(
            conn,
            kind,
            monitor_id=monitor_id,
            incident_id=None,
            occurred_at=dt.datetime.now(dt.UTC),
            payload={"monitor": {"id": monitor_id, "status": kind[8:]}, "pad": "x" * size},
        )


async def _next(ws: aiohttp.ClientWebSocketResponse, type_: str = "event") -> dict[str, Any]:
    async with asyncio.timeout(BOUND):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == type_:
                return dict(msg)


async def test_it_pushes_an_outbox_event_to_a_subscriber(controller: Running) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{controller.base}/api/v1/ws") as ws:
        await ws.send_json(
            {"auth": controller.admin_key, "subscribe": ["monitor.status", "incident.updates"]}
        )
        assert (await _next(ws, "welcome"))["topics"]
        ack = await _next(ws, "subscribed")
        assert ack["topics"] == ["incident.updates", "monitor.status"]
        event_id = await _event(controller, "monitor.down", 7)
        got = await _next(ws)
        assert got["id"] == event_id and got["kind"] == "monitor.down" and got["topic"] == "monitor.status"
        assert got["monitor_id"] == 7 and got["payload"]["monitor"]["status"] == "down"
        await ws.send_json({"type": "ping"})
        assert await _next(ws, "pong") == {"type": "pong"}


async def test_it_filters_by_topic_and_monitor(controller: Running) -> None:
    url = f"{controller.base}/api/v1/ws?api_key={controller.admin_key}"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_json({"subscribe": ["monitor.status"], "monitor_ids": [2]})
        await _next(ws, "subscribed")
        await _event(controller, "monitor.down", 1)
        await _event(controller, "incident.opened", 2)
        wanted = await _event(controller, "monitor.up", 2)
        assert (await _next(ws))["id"] == wanted


async def test_it_resumes_from_the_last_event_id(controller: Running) -> None:
    first = await _event(controller, "monitor.down", 3)
    missed = [await _event(controller, "monitor.up", 3), await _event(controller, "monitor.down", 3)]
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.ws_connect(f"{controller.base}/api/v1/ws") as ws,
    ):
        await ws.send_json({"subscribe": "monitor.status", "last_event_id": first})
        ack = await _next(ws, "subscribed")
        assert ack["replayed"] == 2
        assert [(await _next(ws))["id"] for _ in missed] == missed
        live = await _event(controller, "monitor.up", 3)
        assert (await _next(ws))["id"] == live


async def test_it_refuses_bad_keys_and_missing_scopes(controller: Running) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{controller.base}/api/v1/ws") as ws:
            await ws.send_json({"auth": "pf_not_a_real_key_at_all"})
            assert (await _next(ws, "error"))["code"] == "unauthorized"
            msg = await ws.receive()
            assert msg.type == WSMsgType.CLOSE and msg.data == 4401
        key, _ = await api_keys.create(controller.app[keys.POOL], "mon", ["monitors:read"])
        async with s.ws_connect(f"{controller.base}/api/v1/ws?api_key={key}") as ws:
            await ws.send_json({"subscribe": ["incident.updates"]})
            assert (await _next(ws, "error"))["code"] == "forbidden"
            await ws.send_json({"subscribe": ["nonsense"]})
            assert (await _next(ws, "error"))["code"] == "validation_error"
            await ws.send_str("{not json")
            assert (await _next(ws, "error"))["code"] == "bad_request"
            await ws.send_json({"subscribe": ["monitor.status"]})
            await _next(ws, "subscribed")


async def test_a_slow_client_is_dropped_and_others_keep_receiving(controller: Running) -> None:
    hub = controller.app[keys.HUB]
    hub.queue_size = 16
    dropped = metrics.REALTIME_DROPPED.labels("ws")._value.get()
    url = f"{controller.base}/api/v1/ws?api_key={controller.admin_key}"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as slow, s.ws_connect(url) as fast:
        for ws in (slow, fast):
            await ws.send_json({"subscribe": ["*"]})
            await _next(ws, "subscribed")
        # The slow client never reads: the socket buffers fill, then its queue, then it is cut off.
        async with asyncio.timeout(30):
            while metrics.REALTIME_DROPPED.labels("ws")._value.get() == dropped:
                for _ in range(10):
                    await _event(controller, "monitor.down", 9, size=250_000)
                for _ in range(10):
                    await fast.receive_json()
        # The slow socket is gone, the fast one stays (beside the controller's own diagnostics
        # listener, engine/diagnostics.py).
        assert sorted(c.kind for c in hub.clients if c.kind != "diagnostics") == ["ws"]
        last = await _event(controller, "monitor.up", 9)
        async with asyncio.timeout(BOUND):
            while (await fast.receive_json())["id"] != last:
                pass


async def test_the_hub_waits_for_late_commits_into_id_holes(controller: Running) -> None:
    """A transaction that took a smaller id but committed later is still delivered."""
    pool = controller.app[keys.POOL]
    hub = Hub(pool)
    await hub.start()
    client = Client(kind="test", topics=frozenset({"*"}))
    hub.attach(client)
    try:
        async with pool.acquire() as slow_conn:
            tx = slow_conn.transaction()
            await tx.start()
            early = await event_store.insert(
                slow_conn,
                "monitor.down",
                monitor_id=1,
                incident_id=None,
                occurred_at=dt.datetime.now(dt.UTC),
                payload={},
            )
            late = await _event(controller, "monitor.up", 1)
            await hub.poll_once(now=0.0)
            await tx.commit()
        await hub.poll_once(now=1.0)
        got = [client.queue.get_nowait(), client.queue.get_nowait()]
        assert [e.id for e in got if e] == [late, early]
    finally:
        hub.detach(client)


async def _until(client: Client, event_id: int) -> bool:
    """Whether `client` is handed `event_id` (events of others before it are passed over)."""
    while (ev := await client.next()) is not None:
        if ev.id == event_id:
            return True
    return False


async def test_the_hub_polls_slowly_for_its_own_followers_and_at_once_for_a_client(
    controller: Running,
) -> None:
    """With only the controller's own followers attached (diagnostics) the hub reads the
    outbox every idle_interval, and still hands them every event; a WebSocket or SSE client
    attaching wakes it, and it reads every interval while one is attached. The idle period
    here is far longer than the bound: the second event can only arrive through the wake."""
    pool = controller.app[keys.POOL]
    hub = Hub(pool, interval=0.05, idle_interval=600.0)
    await hub.start()
    follower = Client(kind="diagnostics", topics=frozenset({"*"}))
    hub.attach(follower)
    assert not hub.watched()
    first = await _event(controller, "monitor.down", 3)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        async with asyncio.timeout(BOUND):
            assert (await follower.next()) is not None and hub.last_id >= first
        browser = Client(kind="ws", topics=frozenset({"*"}))
        hub.attach(browser)
        assert hub.watched()
        second = await _event(controller, "monitor.up", 3)
        async with asyncio.timeout(BOUND):
            assert await _until(browser, second) and await _until(follower, second)
        hub.detach(browser)
        assert not hub.watched()
    finally:
        stop.set()
        await task


# --- status-page posts ------------------------------------------------------------------


async def _post(api: aiohttp.ClientSession, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    r = await api.request(method, path, json=body)
    assert r.status in (200, 201), await r.text()
    return (await r.json())["data"]


async def test_status_page_posts_reach_websocket_subscribers(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    page = await _post(
        api,
        "/api/v1/status-pages",
        {"name": "Acme", "slug": "acme-ws", "is_public": False, "password": "correct horse"},
    )
    url = f"{controller.base}/api/v1/ws?api_key={controller.admin_key}"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        # A monitor filter narrows monitor events, never status-page events.
        await ws.send_json({"subscribe": ["status_page.posts"], "monitor_ids": [1]})
        assert (await _next(ws, "subscribed"))["topics"] == ["status_page.posts"]
        await _event(controller, "monitor.down", 1)  # another topic
        body = {"title": "Checkout errors", "status": "investigating", "message": "Looking"}
        post = await _post(api, f"/api/v1/status-pages/{page['id']}/posts", body)
        got = await _next(ws)
        assert got["kind"] == "status_page.post.created" and got["topic"] == "status_page.posts"
        assert got["monitor_id"] is None and got["incident_id"] is None
        payload = got["payload"]
        assert payload["status_page"] == {"id": page["id"], "name": "Acme", "slug": "acme-ws"}
        assert payload["post"]["id"] == post["id"] and payload["post"]["title"] == "Checkout errors"
        assert [u["message"] for u in payload["post"]["updates"]] == ["Looking"]
        assert payload["banner"] is None
        await _post(
            api,
            f"/api/v1/status-page-posts/{post['id']}/updates",
            {"status": "identified", "message": "Bad deploy"},
        )
        got = await _next(ws)
        assert got["kind"] == "status_page.post.updated" and got["payload"]["post"]["status"] == "identified"
        assert [u["message"] for u in got["payload"]["post"]["updates"]] == ["Bad deploy", "Looking"]
        # The page-level incident of reference 000 updates the open post and sets the banner.
        body = {"incident_status": "monitoring", "incident_message": "Fix rolled out"}
        await _post(api, f"/api/v1/status-pages/{page['id']}", body, "PUT")
        got = await _next(ws)
        assert got["kind"] == "status_page.post.updated" and got["payload"]["post"]["id"] == post["id"]
        assert got["payload"]["banner"]["status"] == "monitoring"
        assert got["payload"]["banner"]["message"] == "Fix rolled out"


async def test_status_page_posts_are_replayed_on_resume(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    page = await _post(api, "/api/v1/status-pages", {"name": "Resume", "slug": "resume-ws"})
    before = await _event(controller, "monitor.down", 4)
    post = await _post(api, f"/api/v1/status-pages/{page['id']}/posts", {"title": "T", "message": "first"})
    update = {"status": "resolved", "message": "ok"}
    await _post(api, f"/api/v1/status-page-posts/{post['id']}/updates", update)
    url = f"{controller.base}/api/v1/ws?api_key={controller.admin_key}"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_json({"subscribe": ["status_page.posts"], "last_event_id": before})
        assert (await _next(ws, "subscribed"))["replayed"] == 2
        missed = [await _next(ws), await _next(ws)]
        assert [e["kind"] for e in missed] == ["status_page.post.created", "status_page.post.updated"]
        assert missed[0]["id"] < missed[1]["id"] and missed[1]["payload"]["post"]["status"] == "resolved"
        live = await _post(api, f"/api/v1/status-pages/{page['id']}/posts", {"title": "Live", "message": "m"})
        got = await _next(ws)
        assert got["kind"] == "status_page.post.created" and got["payload"]["post"]["id"] == live["id"]


async def test_status_page_posts_need_the_status_pages_read_scope(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    pool = controller.app[keys.POOL]
    monitors_only, _ = await api_keys.create(pool, "mon", ["monitors:read", "incidents:read"])
    pages, _ = await api_keys.create(pool, "pages", ["status_pages:read"])
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{controller.base}/api/v1/ws?api_key={monitors_only}") as ws:
            await ws.send_json({"subscribe": ["status_page.posts"]})
            assert (await _next(ws, "error"))["code"] == "forbidden"
            # "*" is every topic the key may read.
            await ws.send_json({"subscribe": "*"})
            ack = await _next(ws, "subscribed")
            assert ack["topics"] == ["incident.updates", "monitor.status", "system"]
        async with s.ws_connect(f"{controller.base}/api/v1/ws?api_key={pages}") as ws:
            await ws.send_json({"subscribe": ["*"]})
            assert (await _next(ws, "subscribed"))["topics"] == ["status_page.posts"]
    # The events API does not show them to that key either (they may be of private pages).
    body = {"name": "Hidden", "slug": "hidden-ws", "is_public": False}
    page = await _post(api, "/api/v1/status-pages", body)
    post = await _post(api, f"/api/v1/status-pages/{page['id']}/posts", {"title": "T", "message": "m"})
    event_id = await pool.fetchval("SELECT max(id) FROM events WHERE kind = 'status_page.post.created'")
    headers = {"Authorization": f"Bearer {monitors_only}"}
    async with aiohttp.ClientSession(base_url=controller.base, headers=headers) as other:
        r = await other.get("/api/v1/events", params={"cursor": str(event_id - 1)})
        assert r.status == 200 and (await r.json())["data"] == []
        assert (await other.get(f"/api/v1/events/{event_id}")).status == 404
    r = await api.get(f"/api/v1/events/{event_id}")
    assert r.status == 200 and (await r.json())["data"]["payload"]["post"]["id"] == post["id"]


async def test_stopping_the_controller_closes_an_idle_socket_at_once(controller: Running) -> None:
    """A browser left on a console page keeps its socket open and sends nothing: the
    controller's shutdown closes it (1001, going away) instead of waiting for it, whether
    it subscribed or only authenticated."""
    async with aiohttp.ClientSession() as s:
        subscribed = await s.ws_connect(f"{controller.base}/api/v1/ws")
        await subscribed.send_json({"auth": controller.admin_key, "subscribe": ["monitor.status"]})
        await _next(subscribed, "welcome")
        await _next(subscribed, "subscribed")
        idle = await s.ws_connect(f"{controller.base}/api/v1/ws")
        await idle.send_json({"auth": controller.admin_key})
        await _next(idle, "welcome")
        stopping = asyncio.create_task(controller.stop())
        for ws in (subscribed, idle):
            async with asyncio.timeout(BOUND):
                msg = await ws.receive()
                while msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    msg = await ws.receive()
            assert ws.close_code == 1001, (msg, ws.close_code)
        async with asyncio.timeout(BOUND):
            await stopping
