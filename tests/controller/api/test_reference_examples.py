"""Every request example of the five reference documents (tests/testdata/reference_examples.json),
run as documented against a real controller with only the host changed.

Placeholders (ids, tokens, keys, template variables) are replaced by objects made through
the API first. Each example must not answer 404, 405 or 5xx; a write must have its
effect, checked by a follow-up read (CHECKS). Writes whose reference shows no body are
sent bodiless too (a clear 400/422 is the right answer), then with `sample_body`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.api import routes
from probefleet.controller.config import Region
from tests.controller.conftest import REGIONS, Running, start_controller

DATA = json.loads((Path(__file__).parents[3] / "tests" / "testdata" / "reference_examples.json").read_text())
EXAMPLES: list[dict[str, Any]] = DATA["examples"]
# Reference 003 names its regions like AWS: the operator configures them (deployment, not client).
EXTRA_REGIONS = ["us-east-1", "eu-west-1"]
_pages = itertools.count(1)


@pytest.fixture
async def ref_controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(
        database, nats_url, regions=[Region(id=r) for r in REGIONS + EXTRA_REGIONS]
    )
    yield running
    await running.stop()


class World:
    """The objects examples refer to, made on first use through the API (admin key)."""

    def __init__(self, c: Running, api: aiohttp.ClientSession) -> None:
        self.c, self.api = c, api
        self.made: dict[str, Any] = {"key": c.admin_key}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.api.post(path, json=body)
        assert r.status == 201, f"setup {path}: {r.status} {await r.text()}"
        data: dict[str, Any] = (await r.json())["data"]
        return data

    async def get(self, name: str) -> Any:
        if name.startswith("text:"):
            return name[5:]
        if name not in self.made:
            self.made[name] = await self._make(name)
        return self.made[name]

    async def _make(self, name: str) -> Any:
        match name:
            case "monitor" | "monitor2" | "monitor3":
                m = await self.post(
                    "/api/v1/monitors",
                    {"name": f"target {name}", "url": "http://127.0.0.1:9/", "locations": ["us-east"]},
                )
                return m["id"]
            case "heartbeat" | "heartbeat.token":
                hb = await self.post("/api/v1/heartbeats", {"name": "backup", "run_interval": 3600})
                self.made["heartbeat"], self.made["heartbeat.token"] = hb["id"], hb["token"]
                return self.made[name]
            case "page" | "page.slug":
                slug = f"acme-{next(_pages)}"
                page = await self.post("/api/v1/status-pages", {"name": "Acme", "slug": slug})
                self.made["page"], self.made["page.slug"] = page["id"], page["slug"]
                return self.made[name]
            case "channel" | "channel2" | "channel3":
                ch = await self.post(
                    "/api/v1/notification-channels",
                    {"name": name, "kind": "webhook", "config": {"url": f"http://127.0.0.1:9/{name}"}},
                )
                return ch["id"]
            case "rule":
                channel = await self.get("channel")
                return (await self.post("/api/v1/notification-rules", {"channel_ids": [channel]}))["id"]
            case "policy":  # one per database: examples name it "oncall_senior"
                _, rules = await self.read("/api/v1/notification-rules")
                if named := [r["id"] for r in rules if r["name"] == "oncall_senior"]:
                    return named[0]
                rule = await self.post(
                    "/api/v1/notification-rules",
                    {"name": "oncall_senior", "policy": True, "channel_ids": [await self.get("channel")]},
                )
                return rule["id"]
            case "incident":
                inc = await self.post(
                    "/api/v1/incidents", {"monitor_id": await self.get("monitor"), "title": "checkout slow"}
                )
                return inc["id"]
            case "event":
                incident = await self.get("incident")
                r = await self.api.get("/api/v1/events", params={"incident_id": str(incident)})
                return (await r.json())["data"][0]["id"]
            case "api_key" | "api_key.secret":
                k = await self.post("/api/v1/api-keys", {"name": "to revoke"})
                self.made["api_key"], self.made["api_key.secret"] = k["id"], k["key"]
                return self.made[name]
        raise AssertionError(f"unknown placeholder object {name}")

    async def read(self, path: str) -> tuple[int, Any]:
        r = await self.api.get(path)
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body.get("data") if isinstance(body, dict) else body

    async def sql(self, query: str, *args: Any) -> None:
        await self.c.app[keys.POOL].execute(query, *args)


class Answer:
    def __init__(self, status: int, content_type: str, text: str) -> None:
        self.status, self.content_type, self.text = status, content_type, text
        self.json: Any = json.loads(text) if content_type == "application/json" and text else None

    @property
    def data(self) -> Any:
        return self.json["data"]


# ---- placeholders ----------------------------------------------------------------------


async def substitute(value: Any, subs: dict[str, Any]) -> Any:
    """A JSON value with placeholders replaced (a whole leaf keeps the object's type)."""
    if isinstance(value, dict):
        return {k: await substitute(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [await substitute(v, subs) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value) in subs:
        return subs[str(value)]
    if isinstance(value, str):
        for literal, real in subs.items():
            if not literal.isdigit():
                value = value.replace(literal, str(real))
    return value


def local_url(base: str, url: str, subs: dict[str, Any]) -> str:
    """The example's URL with our host, placeholders replaced in path segments and query values."""
    path = re.sub(r"^[a-z]+://[^/]+", "", url)
    path, _, query = path.partition("?")
    segments = [str(subs.get(s, s)) for s in path.split("/")]
    pairs = [p.partition("=") for p in query.split("&")] if query else []
    query = "&".join(f"{k}={subs.get(v, v)}" for k, _, v in pairs)
    return base + "/".join(segments) + (f"?{query}" if query else "")


async def resolved(ex: dict[str, Any], world: World) -> dict[str, Any]:
    return {literal: await world.get(obj) for literal, obj in ex.get("substitute", {}).items()}


async def send(c: Running, ex: dict[str, Any], subs: dict[str, Any], body: Any) -> Answer:
    headers = {k: str(await substitute(v, subs)) for k, v in ex["headers"].items()}
    if cookies := ex.get("cookies"):
        headers["Cookie"] = "; ".join([f"{k}={await substitute(v, subs)}" for k, v in cookies.items()])
    data = json.dumps(await substitute(body, subs)).encode() if body is not None else None
    url = local_url(c.base, ex["url"], subs)
    async with aiohttp.ClientSession() as s, s.request(ex["method"], url, headers=headers, data=data) as r:
        return Answer(r.status, r.content_type, await r.text())


async def send_ws(c: Running, ex: dict[str, Any], subs: dict[str, Any]) -> Answer:
    url = local_url(c.base.replace("http://", "ws://"), ex["url"], subs)
    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(url) as ws:
                await ws.send_str(json.dumps(await substitute(ex["first_frame"], subs)))
                for _ in range(3):  # a welcome frame may come first
                    msg = await ws.receive(timeout=5)
                    if json.loads(msg.data)["type"] in ("subscribed", "error"):
                        break
                return Answer(101, "application/json", msg.data)
        except aiohttp.WSServerHandshakeError as e:
            return Answer(e.status, "", "")


# ---- preconditions and effects ---------------------------------------------------------

Step = Callable[[World, Answer], Awaitable[None]]


async def _paused(w: World, a: Answer) -> None:
    mid = await w.get("monitor")
    await w.sql("UPDATE monitors SET enabled = false, status = 'paused' WHERE id = $1", mid)


async def _project_123(w: World, a: Answer) -> None:
    """Two down monitors of project 123 with different uptimes, one of another project."""
    for name, project, good in (("monitor", "123", 90), ("monitor2", "123", 99), ("monitor3", "7", 50)):
        mid = await w.get(name)
        await w.sql("UPDATE monitors SET status = 'down', project = $2 WHERE id = $1", mid, project)
        await w.sql(
            "INSERT INTO monitor_uptimes (monitor_id, good_24h, counted_24h, good_7d, counted_7d,"
            " good_30d, counted_30d, computed_at) VALUES ($1, $2, 100, $2, 100, $2, 100, now())",
            mid,
            good,
        )


async def _one_up(w: World, a: Answer) -> None:
    await w.get("monitor2")
    await w.sql("UPDATE monitors SET status = 'up' WHERE id = $1", await w.get("monitor"))


async def _policy(w: World, a: Answer) -> None:
    await w.get("policy")


async def _incident(w: World, a: Answer) -> None:
    await w.get("incident")


BEFORE: dict[str, Step] = {
    "001-L223": _paused,
    "003-L194": _paused,
    "000-L213": _project_123,
    "001-L53": _one_up,
    "004-L55": _policy,
    "004-L41": _policy,
    "003-L272": _incident,
    "003-L273": _incident,
    "003-L274": _incident,
    "000-L40": _incident,
}


async def monitor(w: World, name: str = "monitor") -> dict[str, Any]:
    status, data = await w.read(f"/api/v1/monitors/{await w.get(name)}")
    assert status == 200, data
    return dict(data)


async def created(w: World, a: Answer) -> dict[str, Any]:
    assert a.status == 201, a.text
    status, data = await w.read(f"/api/v1/monitors/{a.data['id']}")
    assert status == 200
    return dict(data)


async def pings(w: World) -> list[dict[str, Any]]:
    status, data = await w.read(f"/api/v1/heartbeats/{await w.get('heartbeat')}/pings")
    assert status == 200
    return list(data)


async def gone(w: World, path: str) -> None:
    status, _ = await w.read(path)
    assert status == 404, f"{path} still answers {status}"


def ok(a: Answer) -> None:
    assert 200 <= a.status < 300, f"{a.status} {a.text[:300]}"


async def c_000_l5(w: World, a: Answer) -> None:
    m = await created(w, a)
    chans = [await w.get(n) for n in ("channel", "channel2", "channel3")]
    assert (m["type"], m["url"], m["check_interval"], m["notifications"]) == (
        "http",
        "https://example.com",
        300,
        chans,
    )


async def c_000_l16(w: World, a: Answer) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["check_interval"], m["is_enabled"], m["url"]) == (600, True, "http://127.0.0.1:9/")


async def c_ping(w: World, a: Answer, kind: str = "success") -> None:
    ok(a)
    assert [p["kind"] for p in await pings(w)] == [kind]


async def c_000_l24(w: World, a: Answer) -> None:
    assert a.status == 201, a.text
    _, hb = await w.read(f"/api/v1/heartbeats/{a.data['id']}")
    assert (hb["name"], hb["run_interval"], hb["grace_period"]) == ("Daily Backup Job", 86400, 3600)


async def c_000_l32(w: World, a: Answer) -> None:
    ok(a)
    _, page = await w.read(f"/api/v1/status-pages/{await w.get('page')}")
    assert page["incident_status"] == "investigating"
    assert page["incident_message"] == "We are investigating reports of slow response times."


async def c_000_l40(w: World, a: Answer) -> None:
    ok(a)
    assert a.content_type == "text/csv"
    lines = a.text.splitlines()
    assert lines[0].startswith("id,monitor_id,") and lines[1].startswith(f"{await w.get('incident')},")


async def c_000_l61(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["type"], m["url"]) == ("http", "https://staging-9fceb02.example.com")
    assert m["name"] == "Staging Environment - Build 9fceb02"


async def c_000_l80(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["name"], m["url"], m["check_interval"]) == (
        "shop - production",
        "https://shop.example.com",
        300,
    )


async def c_000_l192(w: World, a: Answer) -> None:
    ok(a)
    for name in ("monitor", "monitor2", "monitor3"):
        assert (await monitor(w, name))["check_interval"] == 600


async def c_000_l202(w: World, a: Answer) -> None:
    assert a.json["type"] == "subscribed", a.text
    assert sorted(a.json["topics"]) == ["incident.updates", "monitor.status"]


async def c_000_l213(w: World, a: Answer) -> None:
    ok(a)
    assert [m["id"] for m in a.data] == [await w.get("monitor2"), await w.get("monitor")]


async def c_001_l53(w: World, a: Answer) -> None:
    ok(a)
    assert [m["id"] for m in a.data] == [await w.get("monitor")]


async def c_001_l126(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["expected_status"], m["timeout"], m["retry_count"], m["locations"], m["check_interval"]) == (
        [200, 201],
        30,
        3,
        ["us-east", "eu-west"],
        300,
    )


async def c_001_l167(w: World, a: Answer) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["name"], m["check_interval"], m["timeout"], m["url"]) == (
        "Updated Monitor Name",
        600,
        45,
        "http://127.0.0.1:9/",
    )


async def c_deleted(w: World, a: Answer) -> None:
    assert a.status == 204, a.text
    await gone(w, f"/api/v1/monitors/{await w.get('monitor')}")


async def c_paused(w: World, a: Answer, reason: str | None = None) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["status"], m["paused_reason"]) == ("paused", reason)


async def c_resumed(w: World, a: Answer) -> None:
    ok(a)
    assert (await monitor(w))["status"] == "pending"


async def c_run_now(w: World, a: Answer) -> None:
    """No probe runs in this test: every region is reported unavailable, the monitor unchanged."""
    ok(a)
    assert a.data["monitor_id"] == await w.get("monitor")
    assert [(r["region"], r["status"]) for r in a.data["regions"]] == [("us-east", "unavailable")]
    assert (await monitor(w))["status"] == "pending"


async def c_001_l349(w: World, a: Answer) -> None:
    ok(a)
    _, s = await w.read(f"/api/v1/monitors/{await w.get('monitor')}/alerts")
    assert (s["email_enabled"], s["email_recipients"], s["alert_threshold"]) == (
        True,
        ["oncall@example.com"],
        2,
    )


async def c_001_l373(w: World, a: Answer) -> None:
    ok(a)
    for name in ("monitor", "monitor2", "monitor3"):
        m = await monitor(w, name)
        assert (m["status"], m["paused_reason"]) == ("paused", "Scheduled maintenance window")


async def c_002_l110(w: World, a: Answer) -> None:
    assert a.status == 201, a.text
    _, listed = await w.read("/api/v1/api-keys")
    assert a.data["id"] in [k["id"] for k in listed]


async def c_002_l127(w: World, a: Answer) -> None:
    assert a.status == 204, a.text
    secret = await w.get("api_key.secret")
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{w.c.base}/api/v1/monitors", headers={"Authorization": f"Bearer {secret}"})
        assert r.status == 401


# The DowntimeEvent schema of reference 002, field by field: its name -> ours.
DOWNTIME_EVENT = {
    "id": "id",
    "monitorId": "monitor_id",
    "startedAt": "started_at",
    "endedAt": "ended_at",
    "durationSeconds": "duration_seconds",
    "resolved": "resolved",
}


def downtime_event(event: dict[str, Any]) -> None:
    assert set(DOWNTIME_EVENT.values()) <= set(event), event
    if event["resolved"]:
        started, ended = (dt.datetime.fromisoformat(event[k]) for k in ("started_at", "ended_at"))
        assert event["duration_seconds"] == round((ended - started).total_seconds())
    else:
        assert event["ended_at"] is None and event["duration_seconds"] is None


async def c_002_events(w: World, a: Answer) -> None:
    ok(a)
    events = a.data if isinstance(a.data, list) else [a.data]
    if not events:  # the list ran before any downtime: make one, read the list again
        await w.get("event")
        _, events = await w.read("/api/v1/events")
    assert events
    for event in events:
        downtime_event(event)


async def c_002_l177(w: World, a: Answer) -> None:
    ok(a)
    _, inc = await w.read(f"/api/v1/incidents/{await w.get('incident')}")
    assert inc["status"] == "resolved"
    downtime_event(a.data)
    assert a.data["resolved"] is True and a.data["ended_at"] == inc["resolved_at"]


async def c_002_l257(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["type"], m["url"], m["check_interval"], m["is_enabled"], m["method"]) == (
        "http",
        "https://example.com/health",
        60,
        True,
        "HEAD",
    )


async def c_002_l293(w: World, a: Answer) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["check_interval"], m["is_enabled"], m["url"]) == (120, False, "http://127.0.0.1:9/")


async def c_002_l583(w: World, a: Answer) -> None:
    ok(a)
    assert a.data["plan"] == "self-hosted" and a.data["status"] == "active"
    _, monitors = await w.read("/api/v1/monitors")
    assert a.data["usage"]["monitors"] == len(monitors) and a.data["limits"]["monitors"] is None


async def c_no_billing(w: World, a: Answer) -> None:
    assert a.status == 409 and a.json["error"]["code"] == "conflict", a.text
    assert "self-hosted probefleet has no billing" in a.json["error"]["message"]


async def c_003_l128(w: World, a: Answer) -> None:
    m = await created(w, a)
    fields = ("type", "method", "expected_status", "locations", "check_interval", "timeout")
    shown = tuple(m[k] for k in fields)
    assert shown == ("http", "GET", [200], ["us-east-1", "eu-west-1"], 300, 30)


async def c_003_l170(w: World, a: Answer) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["check_interval"], m["timeout"], m["url"], m["name"]) == (
        600,
        20,
        "http://127.0.0.1:9/",
        "target monitor",
    )


async def c_003_l231(w: World, a: Answer) -> None:
    await c_ping(w, a, "fail")
    _, hb = await w.read(f"/api/v1/heartbeats/{await w.get('heartbeat')}")
    assert hb["status"] == "down"
    assert "disk full" in (await pings(w))[0]["body"]


async def c_003_l254(w: World, a: Answer) -> None:
    await c_ping(w, a, "log")
    assert "1.2GB" in (await pings(w))[0]["body"]


async def c_003_l273(w: World, a: Answer) -> None:
    ok(a)
    assert [i["id"] for i in a.data] == [await w.get("incident")]


async def c_003_l500(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["type"], m["url"], m["check_interval"], m["expected_status"]) == (
        "http",
        "https://api.example.com",
        300,
        [200],
    )


async def c_003_l646(w: World, a: Answer) -> None:
    ok(a)
    first = [m["id"] for m in a.data]
    r = await w.api.get("/api/v1/monitors", params={"limit": "100", "offset": "1"})
    assert len(first) > 1 and [m["id"] for m in (await r.json())["data"]] == first[1:]


async def c_003_l686(w: World, a: Answer) -> None:
    m = await created(w, a)
    assert (m["name"], m["url"], m["locations"]) == (
        "checkout - Production",
        "https://checkout.example.com/health",
        ["us-east-1", "eu-west-1"],
    )


async def c_004_l35(w: World, a: Answer) -> None:
    assert a.status == 201, a.text
    _, inc = await w.read(f"/api/v1/incidents/{a.data['id']}")
    mid = await w.get("monitor")
    assert (inc["monitor_id"], inc["external_ticket_id"], inc["manual"]) == (mid, "PD-4411", True)


async def c_004_l41(w: World, a: Answer) -> None:
    ok(a)
    m = await monitor(w)
    assert (m["check_interval"], m["escalation_policy"]) == (60, await w.get("policy"))


async def c_004_l55(w: World, a: Answer) -> None:
    m = await created(w, a)
    policy = await w.get("policy")
    assert (m["check_interval"], m["expected_status"], m["escalation_policy"]) == (30, [200], policy)
    [channel_id] = m["notifications"]
    _, channel = await w.read(f"/api/v1/notification-channels/{channel_id}")
    assert channel["kind"] == "slack"
    pool = w.c.app[keys.POOL]
    config = await pool.fetchval("SELECT config FROM notification_channels WHERE id = $1", channel_id)
    config = json.loads(config) if isinstance(config, str) else config
    assert config["url"] == "https://hooks.slack.com/services/T0A1B2C3D/B0X9Y8Z7W/abc123"


async def c_004_l103(w: World, a: Answer) -> None:
    ok(a)
    _, inc = await w.read(f"/api/v1/incidents/{await w.get('incident')}")
    assert (inc["status"], inc["assignee"]) == ("acknowledged", "maya.rodriguez@acmecorp.com")
    assert inc["notes"].startswith("Investigating Redis")


async def c_004_status(w: World, a: Answer) -> None:
    # The names the document's sample reads: data['state'], metrics p95_latency_ms, uptime_pct.
    ok(a)
    data = a.data
    assert data["state"] == data["status"] and data["monitor_id"] == await w.get("monitor")
    metrics = data["metrics"]
    assert "p95_latency_ms" in metrics and metrics["uptime_pct"] == metrics["uptime_24h"]


async def c_json(w: World, a: Answer) -> None:
    ok(a)
    assert a.json is not None, a.text


CHECKS: dict[str, Step] = {
    "000-L5": c_000_l5,
    "000-L16": c_000_l16,
    "000-L23": c_ping,
    "000-L24": c_000_l24,
    "000-L32": c_000_l32,
    "000-L40": c_000_l40,
    "000-L61": c_000_l61,
    "000-L80": c_000_l80,
    "000-L192": c_000_l192,
    "000-L202": c_000_l202,
    "000-L213": c_000_l213,
    "001-L53": c_001_l53,
    "001-L126": c_001_l126,
    "001-L167": c_001_l167,
    "001-L187": c_deleted,
    "001-L207": lambda w, a: c_paused(w, a, "Scheduled maintenance"),
    "001-L223": c_resumed,
    "001-L237": c_run_now,
    "001-L349": c_001_l349,
    "001-L373": c_001_l373,
    "002-L110": c_002_l110,
    "002-L127": c_002_l127,
    "002-L177": c_002_l177,
    "002-L143": c_002_events,
    "002-L160": c_002_events,
    "002-L197": c_ping,
    "002-L214": c_ping,
    "002-L257": c_002_l257,
    "002-L293": c_002_l293,
    "002-L310": c_deleted,
    "002-L327": c_run_now,
    "002-L344": c_ping,
    "002-L583": c_002_l583,
    "002-L596": c_no_billing,
    "002-L609": c_no_billing,
    "002-L622": c_no_billing,
    "002-L424": lambda w, a: gone(w, f"/api/v1/notification-channels/{w.made['channel']}"),
    "002-L470": lambda w, a: gone(w, f"/api/v1/notification-rules/{w.made['rule']}"),
    "002-L550": lambda w, a: gone(w, f"/api/v1/status-pages/{w.made['page']}"),
    "003-L128": c_003_l128,
    "003-L170": c_003_l170,
    "003-L179": c_deleted,
    "003-L193": c_paused,
    "003-L194": c_resumed,
    "003-L212": c_ping,
    "003-L213": c_ping,
    "003-L214": c_ping,
    "003-L231": c_003_l231,
    "003-L246": lambda w, a: c_ping(w, a, "start"),
    "003-L254": c_003_l254,
    "003-L273": c_003_l273,
    "003-L500": c_003_l500,
    "003-L646": c_003_l646,
    "003-L686": c_003_l686,
    "003-L734": c_ping,
    "004-L35": c_004_l35,
    "004-L41": c_004_l41,
    "004-L55": c_004_l55,
    "004-L103": c_004_l103,
    "004-L29": c_004_status,
    "004-L79": c_004_status,
}


async def run_example(c: Running, api: aiohttp.ClientSession, ex: dict[str, Any]) -> None:
    world = World(c, api)
    subs = await resolved(ex, world)
    if before := BEFORE.get(ex["id"]):
        await before(world, Answer(0, "", ""))
    if ex["kind"] == "websocket":
        answer = await send_ws(c, ex, subs)
    else:
        answer = await send(c, ex, subs, ex.get("body"))
    assert answer.status not in (404, 405) and answer.status < 500, f"{answer.status} {answer.text[:300]}"
    if ex.get("body_documented") is False and answer.status >= 400:
        # No body in the example where one is needed: a clear client error, then the sample.
        assert answer.status in (400, 422) and answer.json["error"]["message"], answer.text
        if "sample_body" not in ex:
            return
        answer = await send(c, ex, subs, ex["sample_body"])
        assert answer.status not in (404, 405) and answer.status < 500, f"{answer.status} {answer.text[:300]}"
    await CHECKS.get(ex["id"], c_json)(world, answer)


@pytest.mark.parametrize("ref", ["000", "001", "002", "003", "004"])
async def test_it_runs_every_example_of_the_reference(ref: str, ref_controller: Running) -> None:
    failures = []
    headers = {"Authorization": f"Bearer {ref_controller.admin_key}"}
    async with aiohttp.ClientSession(base_url=ref_controller.base, headers=headers) as api:
        for ex in (e for e in EXAMPLES if e["ref"] == ref):
            try:
                await run_example(ref_controller, api, ex)
            except (AssertionError, aiohttp.ClientError, KeyError, TypeError) as e:
                failures.append(f"{ex['id']} {ex['method']} {ex['url']}: {e}")
    assert not failures, "\n" + "\n".join(failures)


def test_every_check_names_an_example() -> None:
    ids = {e["id"] for e in EXAMPLES}
    assert len(ids) == len(EXAMPLES)
    assert set(CHECKS) <= ids and set(BEFORE) <= ids


def test_every_v1_route_answers_under_each_alias_prefix() -> None:
    defs = routes.routes()
    have = {(d.method, d.path, d.handler) for d in defs}
    v1 = [d for d in defs if d.path.startswith("/api/v1/")]
    for d in v1:
        assert not d.path.removeprefix("/api/v1/").startswith("{"), "an alias would shadow other paths"
        for prefix in ("/api/", "/v1/"):
            assert (d.method, prefix + d.path.removeprefix("/api/v1/"), d.handler) in have
    assert len(defs) == len(set((d.method, d.path) for d in defs))


@pytest.mark.parametrize(
    ("cookie", "extra", "status"),
    [
        ("session_cookie", {}, 200),
        ("session", {}, 200),
        ("other", {}, 401),
        ("session_cookie", {"Origin": "https://evil.example"}, 401),
        ("session", {"Sec-Fetch-Site": "cross-site"}, 401),
        ("session", {"Sec-Fetch-Site": "same-origin"}, 200),
    ],
    ids=["ref-001", "ref-002", "unknown-cookie", "browser-origin", "cross-site", "same-origin"],
)
async def test_it_takes_the_key_from_a_session_cookie_unless_a_page_sent_it(
    controller: Running, cookie: str, extra: dict[str, str], status: int
) -> None:
    headers = {"Cookie": f"{cookie}={controller.admin_key}", **extra}
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{controller.base}/api/v1/monitors", headers=headers)
        assert r.status == status, await r.text()
