"""/api/v1/heartbeats and /api/v1/heartbeat/{token} on a real controller, NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import aiohttp
import asyncpg

from probefleet.controller.api.heartbeats import make_ping_cursor, ping_cursor
from tests.controller.conftest import Running, start_controller

JOB = {"name": "nightly backup", "run_interval": 86400, "grace_period": 3600}


async def create(api: aiohttp.ClientSession, **fields: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/heartbeats", json={**JOB, **fields})
    assert r.status == 201, await r.text()
    data: dict[str, Any] = (await r.json())["data"]
    return data


async def history(api: aiohttp.ClientSession, hid: int) -> list[dict[str, Any]]:
    r = await api.get(f"/api/v1/heartbeats/{hid}/pings")
    assert r.status == 200
    return list(reversed((await r.json())["data"]))


async def test_it_creates_reads_patches_and_deletes_a_heartbeat(api: aiohttp.ClientSession) -> None:
    hb = await create(api)
    assert hb["run_interval"] == 86400 and hb["grace_period"] == 3600 and hb["status"] == "pending"
    token = hb["token"]
    assert len(token) >= 32 and hb["ping_url"].endswith(f"/api/v1/heartbeat/{token}")
    r = await api.get(f"/api/v1/heartbeats/{hb['id']}")
    shown = (await r.json())["data"]
    assert "token" not in shown and token not in await r.text() and shown["next_deadline"]
    r = await api.get("/api/v1/heartbeats")
    assert [h["id"] for h in (await r.json())["data"]] == [hb["id"]]
    r = await api.patch(f"/api/v1/heartbeats/{hb['id']}", json={"cron": "0 3 * * *", "tz": "Europe/Berlin"})
    patched = (await r.json())["data"]
    assert r.status == 200 and patched["cron"] == "0 3 * * *" and patched["run_interval"] is None
    r = await api.get(f"/api/v1/monitors/{hb['id']}")
    assert (await r.json())["data"]["type"] == "heartbeat"
    r = await api.delete(f"/api/v1/heartbeats/{hb['id']}")
    assert r.status == 204
    async with aiohttp.ClientSession(base_url=str(api._base_url)) as anon:
        assert (await anon.get(f"/api/v1/heartbeat/{token}")).status == 404


async def test_it_creates_heartbeat_and_cron_monitors_through_the_monitors_api(
    api: aiohttp.ClientSession,
) -> None:
    r = await api.post("/api/v1/monitors", json={"name": "hb", "type": "heartbeat", "interval": 300})
    body = (await r.json())["data"]
    assert r.status == 201 and body["run_interval"] == 300 and body["token"] and body["locations"] == []
    r = await api.post(
        "/api/v1/monitors",
        json={
            "name": "c",
            "type": "cron",
            "cron": "*/5 * * * *",
            "timezone": "America/New_York",
            "grace": 60,
        },
    )
    body = (await r.json())["data"]
    assert r.status == 201 and body["type"] == "heartbeat" and body["tz"] == "America/New_York"
    assert body["grace_period"] == 60
    async with aiohttp.ClientSession(base_url=str(api._base_url)) as anon:
        assert (await anon.post(f"/api/v1/heartbeat/{body['token']}")).status == 200
    r = await api.post("/api/v1/monitors", json={"name": "c", "type": "cron", "cron": "every day"})
    assert r.status == 422 and "cron" in (await r.json())["error"]["details"]


async def test_every_signal(api: aiohttp.ClientSession, controller: Running) -> None:
    hb = await create(api, run_interval=3600, grace_period=600)
    url = f"/api/v1/heartbeat/{hb['token']}"
    async with aiohttp.ClientSession(base_url=controller.base, headers={"User-Agent": "cronjob/1"}) as anon:
        assert (await anon.get(url)).status == 200
        assert (await anon.head(url)).status == 200
        assert (await anon.post(f"{url}/start?rid=run-1")).status == 200
        assert (await anon.post(f"{url}/log", json={"message": "halfway"})).status == 200
        assert (await anon.post(f"{url}?rid=run-1", data=b"done")).status == 200
        r = await anon.post(f"{url}/fail", json={"error": "disk full"})
        assert r.status == 200 and (await r.json())["data"]["kind"] == "fail"
        status = (await (await api.get(f"/api/v1/heartbeats/{hb['id']}")).json())["data"]["status"]
        assert status == "down"
        assert (await anon.post(f"{url}/0")).status == 200
        assert (await anon.get(f"{url}/3")).status == 200
        assert (await anon.post(url)).status == 200
    pings = await history(api, hb["id"])
    assert [(p["kind"], p["method"], p["exit_code"]) for p in pings] == [
        ("success", "GET", None),
        ("success", "HEAD", None),
        ("start", "POST", None),
        ("log", "POST", None),
        ("success", "POST", None),
        ("fail", "POST", None),
        ("success", "POST", 0),
        ("fail", "GET", 3),
        ("success", "POST", None),
    ]
    assert pings[4]["rid"] == "run-1" and pings[4]["duration_ms"] > 0 and pings[4]["body"] == "done"
    assert "halfway" in pings[3]["body"] and pings[0]["user_agent"] == "cronjob/1"
    assert pings[0]["source"] == "127.0.0.1"
    r = await api.get(f"/api/v1/events?monitor_id={hb['id']}")
    kinds = [e["kind"] for e in (await r.json())["data"]]
    assert kinds.count("monitor.down") == 2 and kinds.count("monitor.up") == 2


async def test_it_pings_through_the_authenticated_forms(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    hb = await create(api)
    assert (await api.get(f"/api/v1/heartbeats/{hb['id']}/ping")).status == 200
    assert (await api.post(f"/api/v1/monitors/{hb['id']}/heartbeat")).status == 200
    assert len(await history(api, hb["id"])) == 2
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.post(f"/api/v1/monitors/{hb['id']}/heartbeat")).status == 401
    r = await api.post("/api/v1/monitors", json={"name": "web", "url": "http://127.0.0.1:9/"})
    other = (await r.json())["data"]["id"]
    assert (await api.post(f"/api/v1/monitors/{other}/heartbeat")).status == 404


async def test_bad_input(api: aiohttp.ClientSession, controller: Running) -> None:
    hb = await create(api)
    url = f"/api/v1/heartbeat/{hb['token']}"
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for unknown in ("A" * 32, "short", "x" * 300):
            r = await anon.get(f"/api/v1/heartbeat/{unknown}")
            assert r.status == 404
            assert (await r.json())["error"] == {
                "code": "not_found",
                "message": "heartbeat not found",
                "details": {},
            }
        r = await anon.post(url, data=b"x" * (100 * 1024 + 1))
        assert r.status == 413

        async def chunks() -> Any:
            for _ in range(30):
                yield b"y" * 4096

        assert (await anon.post(url, data=chunks())).status == 413  # chunked, no Content-Length
        for bad in ("256", "-1", "abc", "1.5", "0000"):
            r = await anon.post(f"{url}/{bad}")
            assert r.status == 400, bad
        for rid in ("a" * 65, "bad id", "x/y"):
            r = await anon.post(url, params={"rid": rid})
            assert r.status == 400 and "rid" in (await r.json())["error"]["details"]
    assert await history(api, hb["id"]) == []
    r = await api.post("/api/v1/heartbeats", json={"name": "x", "run_interval": 60, "tz": "Nowhere/City"})
    assert r.status == 422 and "tz" in (await r.json())["error"]["details"]
    r = await api.post("/api/v1/heartbeats", json={"name": "x", "run_interval": 60, "url": "http://a/"})
    assert r.status == 422 and (await r.json())["error"]["details"] == {"url": "unknown field"}


async def test_the_ping_history_pages_with_its_cursor(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    hb = await create(api)
    pings = f"/api/v1/heartbeats/{hb['id']}/pings"
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for i in range(5):
            r = await anon.post(f"/api/v1/heartbeat/{hb['token']}/log", data=str(i).encode())
            assert r.status == 200
    bodies: list[str] = []
    cursor = None
    for _ in range(5):
        r = await api.get(pings, params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        body = await r.json()
        assert r.status == 200, body
        bodies += [p["body"] for p in body["data"]]
        cursor = body["meta"]["next_cursor"]
        assert body["meta"]["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert bodies == ["4", "3", "2", "1", "0"]
    for bad in ("12", "abc", "1_x", "_1", "1" * 18 + "_1"):  # "12": a plain id, the format before 0011
        r = await api.get(pings, params={"cursor": bad})
        assert r.status == 422 and "cursor" in (await r.json())["error"]["details"], bad


def test_a_ping_cursor_keeps_the_exact_microsecond() -> None:
    at = dt.datetime(2024, 6, 1, 12, 0, 0, 123_457, tzinfo=dt.UTC)
    assert ping_cursor(make_ping_cursor({"at": at, "id": 42})) == (at, 42)


async def test_it_rotates_the_token(api: aiohttp.ClientSession, controller: Running) -> None:
    hb = await create(api)
    r = await api.post(f"/api/v1/heartbeats/{hb['id']}/token")
    new = (await r.json())["data"]["token"]
    assert new != hb["token"]
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.get(f"/api/v1/heartbeat/{hb['token']}")).status == 404
        assert (await anon.get(f"/api/v1/heartbeat/{new}")).status == 200


async def test_a_controller_restart_while_pings_arrive_loses_none(database: str, nats_url: str) -> None:
    first = await start_controller(database, nats_url)
    headers = {"Authorization": f"Bearer {first.admin_key}"}
    async with aiohttp.ClientSession(base_url=first.base, headers=headers) as api:
        token = (await create(api))["token"]
    base = [first.base]
    acked: list[int] = []
    failed = 0
    done, progress = asyncio.Event(), asyncio.Event()

    async def reached(count: int) -> None:
        while len(acked) < count:
            progress.clear()
            await progress.wait()

    async def client() -> None:
        nonlocal failed
        n = 0
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                n += 1
                sent = asyncio.gather(
                    *(
                        session.post(f"{base[0]}/api/v1/heartbeat/{token}", data=str(n * 100 + i).encode())
                        for i in range(20)
                    ),
                    return_exceptions=True,
                )
                for i, r in enumerate(await sent):
                    if isinstance(r, aiohttp.ClientResponse) and r.status == 200:
                        acked.append(n * 100 + i)
                    else:
                        failed += 1
                    if isinstance(r, aiohttp.ClientResponse):
                        r.release()
                progress.set()
                if any(not isinstance(r, aiohttp.ClientResponse) for r in await sent):
                    await asyncio.sleep(0.01)  # controller restarting

    task = asyncio.create_task(client())
    await reached(200)
    await first.stop()
    second = await start_controller(database, nats_url)
    base[0] = second.base
    before = len(acked)
    await reached(before + 200)
    done.set()
    await task
    await second.stop()
    conn = await asyncpg.connect(database)
    try:
        stored = {int(r["body"]) for r in await conn.fetch("SELECT body FROM heartbeat_pings")}
    finally:
        with contextlib.suppress(Exception):
            await conn.close()
    assert set(acked) <= stored  # every acknowledged ping is stored
    assert len(acked) >= 400 and failed > 0  # and the client did hit the restart


async def test_check_interval_and_run_interval_are_one_value(api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/monitors", json={"name": "hb", "type": "heartbeat", "run_interval": 300})
    body = (await r.json())["data"]
    assert body["check_interval"] == 300 and body["run_interval"] == 300
    r = await api.patch(f"/api/v1/monitors/{body['id']}", json={"check_interval": 600})
    body = (await r.json())["data"]
    assert r.status == 200 and body["check_interval"] == 600 and body["run_interval"] == 600
    weekly = 7 * 86400  # above check_interval's own maximum: still editable afterwards
    r = await api.patch(f"/api/v1/heartbeats/{body['id']}", json={"run_interval": weekly})
    assert r.status == 200
    r = await api.patch(f"/api/v1/monitors/{body['id']}", json={"name": "weekly"})
    body = (await r.json())["data"]
    assert r.status == 200, body
    assert body["check_interval"] == weekly and body["run_interval"] == weekly and body["name"] == "weekly"


async def test_a_ping_resumes_a_paused_heartbeat(api: aiohttp.ClientSession) -> None:
    hb = await create(api)
    r = await api.post(f"/api/v1/monitors/{hb['id']}/pause", json={"reason": "migrating"})
    assert (await r.json())["data"]["status"] == "paused"
    async with aiohttp.ClientSession(base_url=str(api._base_url)) as anon:
        assert (await anon.get(f"/api/v1/heartbeat/{hb['token']}/log")).status == 200
        shown = (await (await api.get(f"/api/v1/heartbeats/{hb['id']}")).json())["data"]
        assert shown["status"] == "paused" and not shown["is_enabled"]
        assert (await anon.get(f"/api/v1/heartbeat/{hb['token']}")).status == 200
    shown = (await (await api.get(f"/api/v1/monitors/{hb['id']}")).json())["data"]
    assert shown["status"] == "up" and shown["is_enabled"] and shown["paused_reason"] is None


async def test_a_nul_in_a_ping_body_is_stored_as_a_replacement_character(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    # PostgreSQL text cannot hold NUL: it becomes U+FFFD, as a byte that is not UTF-8 does,
    # and the rest of the body is kept (a job's log must not cost it its success ping).
    hb = await create(api)
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post(f"/api/v1/heartbeat/{hb['token']}/log", data=b"before\x00after \xff end")
        assert r.status == 200, await r.text()
    [ping] = await history(api, hb["id"])
    assert ping["body"] == "before\ufffdafter \ufffd end"
