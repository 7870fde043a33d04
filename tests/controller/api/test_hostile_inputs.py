"""Hostile input to every route of routes(), with an admin key and anonymously: Unicode
digits and 2^63 in path ids, NUL, deep nesting and 2^70 in JSON bodies, integers beyond
64 bits, NUL and far-off dates in query parameters. None may answer 5xx, and every error
is the JSON envelope (HTML on the /status/* pages)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller.api.routes import alias_paths, routes
from tests.controller.conftest import Running, start_controller

UNICODE_DIGIT = "%C2%B9"  # "¹": str.isdigit() says yes, int() says no
TOO_BIG = str(2**63)
NUL = "a%00b"
EVERY_PARAM = (UNICODE_DIGIT, NUL)  # into every path parameter, id or not (a signal, a slug)
DEEP = "[" * 100_000 + "]" * 100_000
BODIES = {
    "nul": '{"name": "a\\u0000b", "email": "a\\u0000@example.test", "url": "http://x/\\u0000"}',
    "nul key": '{"na\\u0000me": "x"}',
    "deep": DEEP,
    "deep object": '{"name": ' + "[" * 40 + "]" * 40 + "}",
    "year 1": '{"name": "x", "monitor_ids": [1], "starts_at": "0001-01-01T00:00:00+01:00",'
    ' "ends_at": "0001-01-01T01:00:00+01:00", "expires_at": "0001-01-01T00:00:00+01:00"}',
    "year 9999": '{"name": "x", "monitor_ids": [1], "starts_at": "9999-12-31T22:00:00-01:00",'
    ' "ends_at": "9999-12-31T23:00:00-01:00", "expires_at": "9999-12-31T23:59:59-01:00"}',
    "2^70": '{"name": "x", "monitor_id": 1180591620717411303424, "interval": 1180591620717411303424}',
}
YEAR_1 = "0001-01-01T00:00:00+01:00"


def keyset(fields: list[Any]) -> str:
    """A cursor of the form list_monitors hands out (base64 of [sort, desc, value, last id])."""
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


QUERIES = {
    "cursor 10^23": {"cursor": str(10**23)},
    "monitor_id 2^63": {"monitor_id": TOO_BIG, "monitorId": TOO_BIG},
    "unicode limit": {"limit": "\u00b9", "offset": "\u0663"},
    "year 1 with a zone": {
        "from": "0001-01-01T00:00:00+01:00",
        "start_date": "0001-01-01T00:00:00+01:00",
        "created_after": "0001-01-01T00:00:00+01:00",
    },
    "year 9999": {"to": "9999-12-31", "end_date": "9999-12-31", "from": "9999-12-31T23:59:59-01:00"},
    "unix seconds far off": {"from": "99999999999", "to": "1"},
    "unicode page": {"page": "\u00b9", "per_page": "\u00b2", "days": "\u00b3", "hours": "\u00b9"},
    "unicode cursor": {"cursor": "\u00b9_\u00b9"},
    "unicode id cursor": {"cursor": "\u00b9"},
    "far cursor": {"cursor": f"{10**16}_{2**63}"},
    "keyset cursor 2^70": {"cursor": keyset(["id", False, 2**70, 2**70])},
    "keyset cursor year 1": {"sort": "created_at", "cursor": keyset(["created_at", False, YEAR_1, 1])},
    "keyset cursor nul": {"sort": "name", "cursor": keyset(["name", False, "a\u0000", 1])},
    "nul": {k: "a\x00" for k in ("search", "q", "name", "tag", "tags", "status", "kind", "region", "sort")},
}
ID_PARAM = re.compile(r"\{(id|\w+_id)\}")
OTHER_PARAM = re.compile(r"\{(\w+)\}")
# Routes that stream until the client leaves: only their refusals are tried here.
STREAMS = {"/status/{slug}/events", "/api/v1/ws"}


@pytest.fixture
async def running(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url, rate_limit_requests=1_000_000)
    yield running
    await running.stop()


async def created(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(path, json=body)
    assert r.status == 201, f"{path}: {await r.text()}"
    data: dict[str, Any] = (await r.json())["data"]
    return data


async def fixtures(api: aiohttp.ClientSession) -> dict[str, str]:
    """Real rows for every path parameter, keyed by the path before it, so a hostile body or
    query reaches the handler's parsing instead of stopping at a 404."""
    monitor = await created(
        api, "/api/v1/monitors", {"name": "m", "url": "http://127.0.0.1:9/", "interval": 60}
    )
    page = await created(api, "/api/v1/status-pages", {"name": "P", "slug": "hostile", "isPublic": True})
    post = await created(api, f"/api/v1/status-pages/{page['id']}/posts", {"title": "t", "message": "m"})
    beat = await created(api, "/api/v1/heartbeats", {"name": "hb", "run_interval": 3600, "grace_period": 60})
    incident = await created(api, "/api/v1/incidents", {"monitor_id": monitor["id"]})
    channel = await created(
        api,
        "/api/v1/notification-channels",
        {"name": "c", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
    )
    rule = await created(api, "/api/v1/notification-rules", {"name": "r", "channels": [channel["id"]]})
    window = {"name": "w", "monitor_ids": [monitor["id"]], "starts_at": "2030-01-01T00:00:00Z"}
    window = await created(api, "/api/v1/maintenance-windows", {**window, "ends_at": "2030-01-01T01:00:00Z"})
    event = (await (await api.get("/api/v1/events")).json())["data"][-1]
    return {
        "/api/v1/monitors/": str(monitor["id"]),
        "/api/v1/status/": str(monitor["id"]),
        "/api/v1/analytics/": str(monitor["id"]),
        "/api/v1/status-pages/": str(page["id"]),
        "/posts/": str(post["id"]),
        "/api/v1/status-page-posts/": str(post["id"]),
        "/api/v1/heartbeats/": str(beat["id"]),
        "/api/v1/incidents/": str(incident["id"]),
        "/api/v1/events/": str(event["id"]),
        "/api/v1/notification-channels/": str(channel["id"]),
        "/api/v1/notification-rules/": str(rule["id"]),
        "/api/v1/maintenance-windows/": str(window["id"]),
        "slug": "hostile",
        "token": beat["token"],
        "signal": "fail",
        "name": "x.css",
    }


def fill(path: str, values: dict[str, str], hostile: str | None = None) -> str:
    """`path` with each {id}-like parameter set to `hostile` (or the real id of the resource
    the path names), other parameters real; NUL goes into every parameter."""

    def one(m: re.Match[str]) -> str:
        if hostile in EVERY_PARAM or (hostile is not None and ID_PARAM.fullmatch(m.group(0))):
            return hostile
        if ID_PARAM.fullmatch(m.group(0)):
            before = path[: m.start()]
            return next((v for k, v in values.items() if before.endswith(k)), "1")
        return values.get(m.group(1), "x")

    return OTHER_PARAM.sub(one, path)


async def check(session: aiohttp.ClientSession, method: str, url: str, what: str, **kw: Any) -> str | None:
    """What is wrong with the answer, or None."""
    async with session.request(method, url, allow_redirects=False, **kw) as r:
        text = await r.text(errors="replace")
        if r.status >= 500:
            return f"{method} {url} [{what}] -> {r.status}: {text[:300]}"
        if r.status < 400:
            return None
        if r.content_type == "text/html" and not url.startswith("/api/v1/"):
            # Pages (status pages, the console's forms) answer with a page, never a traceback.
            if "Traceback" in text:
                return f"{method} {url} [{what}] -> {r.status} with a traceback: {text[:200]}"
            return None
        if r.content_type != "application/json":
            return f"{method} {url} [{what}] -> {r.status} {r.content_type}: {text[:200]}"
        error = (await r.json()).get("error")
        if not isinstance(error, dict) or not {"code", "message"} <= set(error):
            return f"{method} {url} [{what}] -> {r.status} without the envelope: {text[:200]}"
        return None


async def test_no_hostile_input_gets_a_5xx_or_a_bare_error(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.admin_key}"}
    async with (
        aiohttp.ClientSession(base_url=running.base, headers=headers) as admin,
        aiohttp.ClientSession(base_url=running.base) as anon,
    ):
        values = await fixtures(admin)
        cases: list[tuple[aiohttp.ClientSession, str, str, str, dict[str, Any]]] = []
        defs = [d for d in routes() if d.path not in alias_paths()]
        for d in defs:
            for session in (admin, anon):
                hostiles = [TOO_BIG, "-1", "0x1"] if ID_PARAM.search(d.path) else []
                if "{" in d.path:
                    for hostile in [*hostiles, *EVERY_PARAM]:
                        cases.append((session, d.method, fill(d.path, values, hostile), f"id {hostile}", {}))
                if d.method in ("POST", "PUT", "PATCH"):
                    json_headers = {"Content-Type": "application/json"}
                    for what, body in BODIES.items():
                        kw = {"data": body.encode(), "headers": json_headers}
                        cases.append((session, d.method, fill(d.path, values), what, kw))
                    form = {"data": {k: "a\x00@example.test" for k in ("email", "password", "url", "name")}}
                    cases.append((session, d.method, fill(d.path, values), "nul form", form))
                if d.method == "GET" and d.path not in STREAMS:
                    for what, query in QUERIES.items():
                        cases.append((session, "GET", fill(d.path, values), what, {"params": query}))
        assert len(defs) > 80 and len(cases) > 1000
        gate = asyncio.Semaphore(8)

        async def run(case: tuple[aiohttp.ClientSession, str, str, str, dict[str, Any]]) -> str | None:
            session, method, url, what, kw = case
            async with gate:
                return await check(session, method, url, what, **kw)

        problems = [p for p in await asyncio.gather(*(run(c) for c in cases)) if p]
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"


async def test_it_names_the_field_with_nul_and_the_limits(running: Running) -> None:
    headers = {"Authorization": f"Bearer {running.admin_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url=running.base, headers=headers) as admin:
        r = await admin.post("/api/v1/monitors", data='{"name": "a\\u0000", "tags": ["ok", "b\\u0000"]}')
        error = (await r.json())["error"]
        assert r.status == 422 and set(error["details"]) == {"name", "tags[1]"}
        r = await admin.post("/api/v1/api-keys", data=DEEP)
        assert r.status == 400 and "nested" in (await r.json())["error"]["message"]
        r = await admin.post("/api/v1/incidents", data='{"monitor_id": 9223372036854775808}')
        assert r.status == 422 and "monitor_id" in (await r.json())["error"]["details"]
        r = await admin.get("/api/v1/events", params={"cursor": str(10**23)})
        assert r.status == 422 and "cursor" in (await r.json())["error"]["details"]
        r = await admin.get("/api/v1/monitors/%C2%B9/badge.svg")
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        r = await admin.get("/api/v1/incidents", params={"from": "0001-01-01T00:00:00+01:00"})
        assert r.status == 422 and "from" in (await r.json())["error"]["details"]
        r = await admin.get("/api/v1/incidents", params={"from": "2024-01-01T00:00:00Z", "to": "2024-01-02"})
        assert r.status == 200
        values = await fixtures(admin)
        for starts, ends in (
            ("0001-01-01T00:00:00+01:00", "0001-01-01T02:00:00+01:00"),
            ("9999-12-31T22:00:00-01:00", "9999-12-31T23:00:00-01:00"),
        ):
            monitor_ids = [int(values["/api/v1/monitors/"])]
            window = {"name": "w", "monitor_ids": monitor_ids, "starts_at": starts, "ends_at": ends}
            r = await admin.post("/api/v1/maintenance-windows", json=window)
            assert r.status == 422 and "starts_at" in (await r.json())["error"]["details"], starts
        r = await admin.get(f"/api/v1/heartbeat/{values['token']}/{UNICODE_DIGIT}")
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
        page = {"name": "S", "slug": "locked", "isPublic": False, "password": "open sesame"}
        assert (await admin.post("/api/v1/status-pages", json=page)).status == 201
    cookies = {"pf_status_locked": "\u00b9.x"}
    async with aiohttp.ClientSession(base_url=running.base, cookies=cookies) as anon:
        r = await anon.get("/status/locked")
        assert r.status == 401 and r.content_type == "text/html"
        r = await anon.post("/api/v1/status-pages/hostile/subscribe", json={"email": "a\u0000@example.test"})
        assert r.status == 422 and "email" in (await r.json())["error"]["details"]
