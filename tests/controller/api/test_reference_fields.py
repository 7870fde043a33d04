"""The field lists and schemas of the reference services for resources other than
monitors (tests/controller/monitors/test_config.py has the monitors'): each documented
field is accepted and mapped onto ours, or answered under our name, against a real
controller. The tables give the document's name and ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.controller.conftest import Running, start_controller


@pytest.fixture
async def api(database: str, nats_url: str) -> AsyncIterator[tuple[Running, aiohttp.ClientSession]]:
    running = await start_controller(database, nats_url)
    headers = {"Authorization": f"Bearer {running.admin_key}"}
    async with aiohttp.ClientSession(base_url=running.base, headers=headers) as session:
        yield running, session
    await running.stop()


async def call(s: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with s.request(method, path, json=body) as r:
        payload = await r.json() if r.content_type == "application/json" else None
        return r.status, (payload or {}).get("data", payload)


# Reference 003's incident object (list and get): its name -> ours.
INCIDENT_FIELDS = {
    "id": "id",
    "monitorId": "monitor_id",
    "monitorName": "monitor_name",
    "startedAt": "started_at",
    "resolvedAt": "resolved_at",
    "duration": "duration",
    "isResolved": "is_resolved",
    "severity": "severity",
    "status": "status",
    "rootCause": "root_cause",
    "rootCauseCategory": "root_cause_category",
    "affectedRegions": "affected_regions",
    "checksFailed": "checks_failed",
    "checksTotal": "checks_total",
    "mttr": "mttr",
}
# Reference 003's status page list item.
PAGE_FIELDS = {
    "id": "id",
    "name": "name",
    "slug": "slug",
    "customDomain": "custom_domain",
    "isPublic": "is_public",
    "monitorCount": "monitor_count",
}
# Reference 003's worker region.
REGION_FIELDS = {
    "id": "id",
    "city": "city",
    "country": "country",
    "countryCode": "country_code",
    "latitude": "latitude",
    "longitude": "longitude",
    "isActive": "is_active",
}


async def test_incident_fields_and_query_parameters(api: tuple[Running, aiohttp.ClientSession]) -> None:
    _, s = api
    _, m = await call(s, "POST", "/api/v1/monitors", {"name": "Production API", "url": "https://example.com"})
    # Reference 004's trigger, acknowledge and resolve payload: incident_id, state, assignee, notes.
    status, inc = await call(s, "POST", "/api/v1/incidents", {"monitor_id": m["id"], "title": "slow"})
    assert status == 201
    body = {"incident_id": inc["id"], "state": "acknowledged", "assignee": "maya", "notes": "scaling"}
    status, acked = await call(s, "POST", "/api/v1/incidents", body)
    assert status == 200 and (acked["status"], acked["assignee"], acked["notes"]) == (
        "acknowledged",
        "maya",
        "scaling",
    )
    status, _ = await call(s, "POST", "/api/v1/incidents", {"incident_id": inc["id"], "state": "resolved"})
    assert status == 200
    # Reference 003's query parameters: monitorId, status, limit, offset.
    status, listed = await call(
        s, "GET", f"/api/v1/incidents?monitorId={m['id']}&status=resolved&limit=1&offset=0"
    )
    assert status == 200 and [i["id"] for i in listed] == [inc["id"]]
    _, one = await call(s, "GET", f"/api/v1/incidents/{inc['id']}")
    for theirs, ours in INCIDENT_FIELDS.items():
        assert ours in listed[0] and ours in one, theirs
    assert one["is_resolved"] and one["mttr"] is not None and one["monitor_name"] == "Production API"


async def test_status_page_fields(api: tuple[Running, aiohttp.ClientSession]) -> None:
    _, s = api
    ids = [
        (await call(s, "POST", "/api/v1/monitors", {"name": f"m{i}", "url": "https://example.com"}))[1]["id"]
        for i in range(2)
    ]
    body = {"name": "Public Status", "slug": "status", "customDomain": "status.example.com", "isPublic": True}
    status, page = await call(s, "POST", "/api/v1/status-pages", {**body, "monitors": ids})
    assert status == 201, page
    _, listed = await call(s, "GET", "/api/v1/status-pages")
    for theirs, ours in PAGE_FIELDS.items():
        assert ours in listed[0], theirs
    assert (listed[0]["custom_domain"], listed[0]["is_public"], listed[0]["monitor_count"]) == (
        "status.example.com",
        True,
        2,
    )
    # Reference 000's incident banner of a page: incident_status and incident_message.
    banner = {"incident_status": "investigating", "incident_message": "Slow responses."}
    status, changed = await call(s, "PUT", f"/api/v1/status-pages/{page['id']}", banner)
    assert status == 200 and (changed["incident_status"], changed["incident_message"]) == tuple(
        banner.values()
    )


async def test_heartbeat_and_worker_region_fields(api: tuple[Running, aiohttp.ClientSession]) -> None:
    _, s = api
    # Reference 000's heartbeat: name, run_interval, grace_period.
    body = {"name": "Daily Backup Job", "run_interval": 86400, "grace_period": 3600}
    status, hb = await call(s, "POST", "/api/v1/heartbeats", body)
    assert status == 201 and (hb["name"], hb["run_interval"], hb["grace_period"]) == tuple(body.values())
    # Reference 002's MonitorCreate of a HEARTBEAT: name, type and target only.
    status, m = await call(
        s, "POST", "/api/v1/monitors", {"name": "cron", "type": "HEARTBEAT", "target": "x"}
    )
    assert status == 201 and m["type"] == "heartbeat" and m["run_interval"] == 60, m
    _, regions = await call(s, "GET", "/api/v1/worker-regions")
    assert regions
    for theirs, ours in REGION_FIELDS.items():
        assert ours in regions[0], theirs


# Reference 001's stats answer: the paths its response lists, all answered under the same names.
STATS_PATHS = [
    ("uptime", "24h"),
    ("uptime", "7d"),
    ("uptime", "30d"),
    ("response_times", "avg"),
    ("response_times", "min"),
    ("response_times", "max"),
    ("response_times", "p95"),
    ("incidents", "count"),
    ("incidents", "total_downtime"),
    ("checks", "total"),
    ("checks", "successful"),
    ("checks", "failed"),
]
# Reference 001's alert settings body.
ALERTS = {
    "email_enabled": True,
    "email_recipients": ["ops@example.com"],
    "slack_enabled": False,
    "alert_on_recovery": True,
    "alert_threshold": 2,
}


async def test_stats_alerts_history_and_bulk_fields(api: tuple[Running, aiohttp.ClientSession]) -> None:
    _, s = api
    made = [
        (await call(s, "POST", "/api/v1/monitors", {"name": f"w{i}", "url": "https://example.com"}))[1]
        for i in range(3)
    ]
    first = made[0]["id"]
    status, stats = await call(s, "GET", f"/api/v1/monitors/{first}/stats?period=7d&granularity=1h")
    assert status == 200 and stats["period"] == "7d" and stats["granularity"] == "1h"
    for outer, inner in STATS_PATHS:
        assert inner in stats[outer], (outer, inner)
    status, alerts = await call(s, "PUT", f"/api/v1/monitors/{first}/alerts", ALERTS)
    assert status == 200 and {k: alerts[k] for k in ALERTS} == ALERTS
    status, history = await call(
        s,
        "GET",
        f"/api/v1/monitors/{first}/history?from=2024-01-01T00:00:00Z&to=2099-01-01T00:00:00Z&limit=50",
    )
    assert status == 200 and history == []
    # Bulk: action, monitor_ids, reason; pause, resume, update, delete.
    ids = [m["id"] for m in made]
    status, _ = await call(
        s, "POST", "/api/v1/monitors/bulk", {"action": "pause", "monitor_ids": ids, "reason": "window"}
    )
    assert status == 200
    _, paused = await call(s, "GET", f"/api/v1/monitors/{first}")
    assert not paused["is_enabled"] and paused["paused_reason"] == "window"
    update = {"action": "update", "monitor_ids": ids, "updates": {"check_interval": 120}}
    status, _ = await call(s, "POST", "/api/v1/monitors/bulk", update)
    assert status == 200
    assert (await call(s, "GET", f"/api/v1/monitors/{ids[2]}"))[1]["check_interval"] == 120
    for action in ("resume", "delete"):
        status, _ = await call(s, "POST", "/api/v1/monitors/bulk", {"action": action, "monitor_ids": ids[:1]})
        assert status == 200, action
    status, _ = await call(s, "GET", f"/api/v1/monitors/{first}")
    assert status == 404
