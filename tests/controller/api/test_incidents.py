"""/api/v1/incidents, /events, /status and /maintenance-windows: happy paths and bad requests."""

from __future__ import annotations

import datetime as dt

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.engine import results as engine_results
from probefleet.controller.stats import rollups
from probefleet.controller.storage import results as result_store
from probefleet.probe import evidence as probe_evidence
from probefleet.shared import wire
from tests.controller.conftest import Running

MONITOR = {"name": "site", "url": "http://127.0.0.1:9/x", "check_interval": 3600}


async def _monitor(api: aiohttp.ClientSession, **fields: object) -> int:
    r = await api.post("/api/v1/monitors", json={**MONITOR, **fields})
    assert r.status == 201, await r.text()
    return int((await r.json())["data"]["id"])


async def test_it_triggers_acknowledges_and_resolves_an_incident(api: aiohttp.ClientSession) -> None:
    mid = await _monitor(api)
    r = await api.post(
        "/api/v1/incidents",
        json={"monitorId": mid, "title": "DB slow", "severity": "HIGH", "externalTicketId": "JIRA-42"},
    )
    assert r.status == 201, await r.text()
    inc = (await r.json())["data"]
    assert inc["status"] == "active" and inc["severity"] == "high" and inc["external_ticket_id"] == "JIRA-42"
    r = await api.post("/api/v1/incidents", json={"monitor_id": mid, "title": "again"})
    assert r.status == 409
    r = await api.patch(
        f"/api/v1/incidents/{inc['id']}",
        json={"state": "acknowledged", "assignee": "maya", "notes": "looking"},
    )
    body = (await r.json())["data"]
    assert body["status"] == "acknowledged" and body["assignee"] == "maya" and body["notes"] == "looking"
    r = await api.patch(f"/api/v1/incidents/{inc['id']}", json={"status": "resolved"})
    body = (await r.json())["data"]
    assert body["status"] == "resolved" and body["is_resolved"] and body["mttr"] is not None
    r = await api.patch(f"/api/v1/incidents/{inc['id']}", json={"status": "acknowledged"})
    assert r.status == 409
    r = await api.get(f"/api/v1/incidents/{inc['id']}/timeline")
    timeline = (await r.json())["data"]
    assert [e["kind"] for e in timeline["entries"]] == ["opened", "acknowledged", "resolved"]
    assert [e["kind"] for e in timeline["events"]] == [
        "incident.opened",
        "incident.acknowledged",
        "incident.resolved",
    ]
    r = await api.get("/api/v1/events", params={"incident_id": str(inc["id"])})
    events = (await r.json())["data"]
    assert events[1]["payload"]["assignee"] == "maya"
    assert events[0]["payload"]["incident"]["title"] == "DB slow"


async def _incident(api: aiohttp.ClientSession) -> dict[str, object]:
    r = await api.post("/api/v1/incidents", json={"monitor_id": await _monitor(api)})
    assert r.status == 201
    return dict((await r.json())["data"])


async def test_it_changes_an_incident_posted_with_its_id(api: aiohttp.ClientSession) -> None:
    """Reference 004 sends every incident change to POST /incidents."""
    inc = await _incident(api)
    r = await api.post(
        "/api/v1/incidents",
        json={"incident_id": inc["id"], "state": "acknowledged", "assignee": "maya", "notes": "replicas"},
    )
    body = (await r.json())["data"]
    assert r.status == 200 and body["id"] == inc["id"]
    assert (body["status"], body["assignee"]) == ("acknowledged", "maya")
    r = await api.post("/api/v1/incidents", json={"incidentId": inc["id"], "status": "resolved"})
    assert r.status == 200 and (await r.json())["data"]["status"] == "resolved"
    for bad, details in (
        ({"incident_id": 999999, "state": "resolved"}, {"incident_id": "no such incident"}),
        ({"incident_id": "inc_1"}, {"incident_id": "must be an incident id"}),
        ({"incident_id": inc["id"], "colour": "red"}, {"colour": "unknown field"}),
    ):
        r = await api.post("/api/v1/incidents", json=bad)
        assert r.status == 422 and (await r.json())["error"]["details"] == details


async def test_it_lists_incidents_by_start_and_end_date(api: aiohttp.ClientSession) -> None:
    """Reference 000: start_date and end_date (a date as end covers its whole day)."""
    inc = await _incident(api)
    today = dt.datetime.now(dt.UTC).date()

    async def ids(**params: str) -> list[int]:
        return [i["id"] for i in (await (await api.get("/api/v1/incidents", params=params)).json())["data"]]

    assert await ids(start_date="2024-01-01") == [inc["id"]] == await ids(end_date=today.isoformat())
    assert await ids(end_date=(today - dt.timedelta(days=1)).isoformat()) == []
    r = await api.get("/api/v1/incidents", params={"format": "csv", "start_date": "2024-01-01"})
    assert r.content_type == "text/csv" and (await r.text()).splitlines()[1].startswith(f"{inc['id']},")


async def test_it_lists_with_filters_pages_and_csv(api: aiohttp.ClientSession) -> None:
    ids = []
    for i in range(3):
        mid = await _monitor(api, name=f"m{i}")
        r = await api.post("/api/v1/incidents", json={"monitor_id": mid, "severity": "low"})
        ids.append((await r.json())["data"]["id"])
    await api.patch(f"/api/v1/incidents/{ids[0]}", json={"status": "resolved"})
    r = await api.get("/api/v1/incidents", params={"status": "active"})
    assert sorted(i["id"] for i in (await r.json())["data"]) == sorted(ids[1:])
    r = await api.get("/api/v1/incidents", params={"status": "resolved"})
    assert [i["id"] for i in (await r.json())["data"]] == [ids[0]]
    seen, cursor = [], None
    while True:
        body = await (
            await api.get(
                "/api/v1/incidents", params={"limit": "2", **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        seen += [i["id"] for i in body["data"]]
        if not body["meta"]["has_more"]:
            break
        cursor = body["meta"]["next_cursor"]
    assert seen == list(reversed(ids))
    body = await (await api.get("/api/v1/incidents", params={"limit": "1", "offset": "1"})).json()
    assert [i["id"] for i in body["data"]] == [ids[1]]
    r = await api.get("/api/v1/incidents", params={"format": "csv"})
    assert r.content_type == "text/csv"
    lines = (await r.text()).strip().splitlines()
    assert lines[0].startswith("id,monitor_id") and len(lines) == 4
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    body = await (await api.get("/api/v1/incidents", params={"from": future})).json()
    assert [i["id"] for i in body["data"]] == sorted(ids[1:], reverse=True)  # still open


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("get", "/api/v1/incidents?status=open", None, 422, "status"),
        ("get", "/api/v1/incidents?limit=0", None, 422, "limit"),
        ("get", "/api/v1/incidents?from=yesterday", None, 422, "from"),
        ("get", "/api/v1/incidents?cursor=zz", None, 422, "cursor"),
        ("post", "/api/v1/incidents", {"severity": "high"}, 422, "title"),
        ("post", "/api/v1/incidents", {"title": "x", "severity": "apocalyptic"}, 422, "severity"),
        ("post", "/api/v1/incidents", {"title": "x", "monitor_id": 999}, 422, "monitor_id"),
        ("post", "/api/v1/incidents", {"title": "x", "colour": "red"}, 422, "colour"),
        ("patch", "/api/v1/incidents/1", {"status": "closed"}, 422, "status"),
        ("get", "/api/v1/incidents/999", None, 404, None),
        ("get", "/api/v1/events/999", None, 404, None),
        ("get", "/api/v1/status/999", None, 404, None),
        ("post", "/api/v1/maintenance-windows", {"name": "w"}, 422, "monitor_ids"),
        (
            "post",
            "/api/v1/maintenance-windows",
            {"name": "w", "tags": ["db"], "days": ["mon"], "duration": 3600},
            422,
            "start_time",
        ),
        (
            "post",
            "/api/v1/maintenance-windows",
            {
                "name": "w",
                "tags": ["db"],
                "days": ["mon"],
                "start_time": "02:00",
                "duration": 3600,
                "time_zone": "Mars/Olympus",
            },
            422,
            "time_zone",
        ),
        (
            "post",
            "/api/v1/maintenance-windows",
            {"name": "w", "tags": ["db"], "days": ["funday"], "start_time": "02:00", "duration": 3600},
            422,
            "days[0]",
        ),
        (
            "post",
            "/api/v1/maintenance-windows",
            {
                "name": "w",
                "tags": ["db"],
                "starts_at": "2025-01-02T00:00:00Z",
                "ends_at": "2025-01-01T00:00:00Z",
            },
            422,
            "ends_at",
        ),
        ("post", "/api/v1/maintenance-windows", {"name": "w", "tags": ["db"], "hue": "red"}, 422, "hue"),
        ("get", "/api/v1/maintenance-windows/999", None, 404, None),
        ("patch", "/api/v1/maintenance-windows/999", {"duration": 3600}, 404, None),
        ("put", "/api/v1/maintenance-windows/abc", {"name": "w"}, 404, None),
        ("delete", "/api/v1/maintenance-windows/999", None, 404, None),
        ("delete", "/api/v1/maintenance-windows/abc", None, 404, None),
    ],
    ids=[
        "bad-status",
        "bad-limit",
        "bad-from",
        "bad-cursor",
        "no-title",
        "bad-severity",
        "no-monitor",
        "unknown-field",
        "bad-patch-status",
        "no-incident",
        "no-event",
        "no-status",
        "window-no-target",
        "window-no-start",
        "window-bad-zone",
        "window-bad-day",
        "window-backwards",
        "window-unknown-field",
        "get-no-window",
        "patch-no-window",
        "put-bad-window-id",
        "delete-no-window",
        "delete-bad-window-id",
    ],
)
async def test_it_rejects_bad_requests(
    api: aiohttp.ClientSession, method: str, path: str, body: object, status: int, field: str | None
) -> None:
    if path.startswith("/api/v1/incidents/1"):
        r = await api.post("/api/v1/incidents", json={"title": "standalone"})
        assert (await r.json())["data"]["id"] == 1
    r = await getattr(api, method)(path, json=body)
    assert r.status == status
    error = (await r.json())["error"]
    if field:
        assert field in error["details"], error


async def test_it_resolves_through_an_event(api: aiohttp.ClientSession) -> None:
    mid = await _monitor(api)
    inc = (await (await api.post("/api/v1/incidents", json={"monitor_id": mid})).json())["data"]
    event = (await (await api.get("/api/v1/events")).json())["data"][-1]
    assert event["kind"] == "incident.opened" and event["incident_id"] == inc["id"]
    r = await api.patch(f"/api/v1/events/{event['id']}", json={"status": "resolved"})
    assert r.status == 200
    r = await api.get(f"/api/v1/incidents/{inc['id']}")
    assert (await r.json())["data"]["status"] == "resolved"


async def test_it_reports_status_with_percentiles_and_uptime(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    mid = await _monitor(api, locations=["us-east", "eu-west"])
    pool = controller.app[keys.POOL]
    now = dt.datetime.now(dt.UTC).timestamp()
    for i, fail in enumerate([False, False, False, True]):
        due = now - 600 + i * 60
        await result_store.insert_rounds(
            pool, [(mid, result_store.ts(due), 0, ["us-east", "eu-west"], result_store.ts(due + 5))]
        )
        results = [
            wire.CheckResult(
                monitor_id=mid,
                due=due,
                region=r,
                probe_id=f"p-{r}",
                started_at=due,
                status=wire.Status.FAIL if fail else wire.Status.OK,
                duration_ms=float(10 * (i + 1) + j),
                reason=wire.Reason.TIMEOUT if fail else None,
            )
            for j, r in enumerate(["us-east", "eu-west"])
        ]
        from probefleet.controller.engine import results as results_mod

        await results_mod.ingest(pool, results)
    # Rounds written in the past: the rollups recount from there (as after any backfill).
    await rollups.rewind(pool, dt.datetime.fromtimestamp(now - 600, dt.UTC))
    r = await api.get(f"/api/v1/status/{mid}")
    body = (await r.json())["data"]
    assert body["status"] == "down" and body["open_incident_id"] is not None
    assert {x["region"] for x in body["regions"]} == {"us-east", "eu-west"}
    assert all(x["status"] == "fail" for x in body["regions"])
    m = body["metrics"]
    assert m["uptime_24h"] == 75.0 and m["rounds_24h"] == 4
    # Nearest-rank percentiles of the ok results 10, 11, 20, 21, 30, 31, read from the
    # statistics histogram (within 2 %), as /monitors/{id}/stats gives them.
    assert m["p50_latency_ms"] == pytest.approx(20, rel=0.02) and m["p99_latency_ms"] == pytest.approx(
        31, rel=0.02
    )


async def test_it_manages_maintenance_windows(api: aiohttp.ClientSession) -> None:
    r = await api.post(
        "/api/v1/maintenance-windows",
        json={
            "name": "sunday",
            "tags": ["db"],
            "days": ["sun", 5],
            "startTime": "02:00",
            "duration": 7200,
            "timezone": "Europe/Paris",
        },
    )
    assert r.status == 201, await r.text()
    w = (await r.json())["data"]
    assert w["recurring"] and w["days"] == ["sat", "sun"] and w["time_zone"] == "Europe/Paris"
    r = await api.patch(f"/api/v1/maintenance-windows/{w['id']}", json={"duration": 3600})
    assert (await r.json())["data"]["duration"] == 3600
    r = await api.get("/api/v1/maintenance-windows")
    assert [x["id"] for x in (await r.json())["data"]] == [w["id"]]
    assert (await api.delete(f"/api/v1/maintenance-windows/{w['id']}")).status == 204
    assert (await api.get(f"/api/v1/maintenance-windows/{w['id']}")).status == 404


async def test_it_accepts_a_parent_on_monitors(api: aiohttp.ClientSession) -> None:
    parent = await _monitor(api, name="router")
    r = await api.post("/api/v1/monitors", json={**MONITOR, "parent_id": parent})
    assert (await r.json())["data"]["parent_id"] == parent
    r = await api.post("/api/v1/monitors", json={**MONITOR, "parent_id": 9999})
    assert r.status == 422 and "parent_id" in (await r.json())["error"]["details"]
    r = await api.patch(f"/api/v1/monitors/{parent}", json={"parent_id": parent})
    assert r.status == 422


async def test_an_incident_explains_itself_with_a_region_phase_matrix_and_evidence(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    mid = await _monitor(api, locations=["us-east", "eu-west"])
    pool = controller.app[keys.POOL]
    now = dt.datetime.now(dt.UTC).timestamp()
    refused = {"reason": "connection_refused", "message": "refused", "ips": ["127.0.0.1"]}
    answered = {
        "reason": "status_mismatch",
        "status_line": "HTTP/1.1 503 Service Unavailable",
        "body": "down",
    }
    for i in range(2):
        due = now - 300 + i * 60
        await result_store.insert_rounds(
            pool, [(mid, result_store.ts(due), 0, ["us-east", "eu-west"], result_store.ts(due + 5))]
        )
        await engine_results.ingest(
            pool,
            [
                wire.CheckResult(
                    monitor_id=mid,
                    due=due,
                    region="us-east",
                    probe_id="p-us",
                    started_at=due,
                    status=wire.Status.FAIL,
                    reason=wire.Reason.CONNECTION_REFUSED,
                    message="refused",
                    timings={"connect": 1.5},
                    details={"evidence": refused},
                ),
                wire.CheckResult(
                    monitor_id=mid,
                    due=due,
                    region="eu-west",
                    probe_id="p-eu",
                    started_at=due,
                    status=wire.Status.FAIL,
                    reason=wire.Reason.STATUS_MISMATCH,
                    message="status 503",
                    status_code=503,
                    details={"evidence": answered},
                ),
            ],
        )
    r = await api.get("/api/v1/incidents", params={"monitor_id": str(mid)})
    (listed,) = (await r.json())["data"]
    r = await api.get(f"/api/v1/incidents/{listed['id']}")
    assert r.status == 200, await r.text()
    body = (await r.json())["data"]
    assert body["matrix"]["phases"] == ["connect", "response"]
    assert body["matrix"]["regions"] == {"eu-west": {"response": 2}, "us-east": {"connect": 2}}
    first = body["first_failure"]
    assert first["region"] == "eu-west" and first["phase"] == "response"  # regions in name order
    assert (
        first["evidence"]["status_line"] == "HTTP/1.1 503 Service Unavailable" and first["status_code"] == 503
    )
    assert [e["kind"] for e in body["timeline"]][:1] == ["opened"]
    r = await api.get(f"/api/v1/incidents/{listed['id']}/evidence")
    page = await r.json()
    assert page["meta"]["truncated"] is False
    assert [(x["region"], x["phase"]) for x in page["data"]] == [
        ("eu-west", "response"),
        ("us-east", "connect"),
    ] * 2
    assert page["data"][1]["evidence"] == refused and page["data"][1]["timings"] == {"connect": 1.5}
    assert (await api.get("/api/v1/incidents/999999/evidence")).status == 404


async def test_the_evidence_shows_a_body_the_probe_compressed_as_text(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    """A body over 1 KiB is stored as the probe sent it (gzip); the API decodes it.
    A body stored as text (before probes compressed) reads as it was; one that does not
    decode says so instead of failing the request."""
    mid = await _monitor(api, locations=["us-east", "eu-west"])
    pool = controller.app[keys.POOL]
    page = b"<html><h1>503 Service Unavailable</h1>" + b"<p>upstream reset</p>" * 500 + b"\xff"
    packed = probe_evidence.http_response(
        wire.HttpSpec(url="http://127.0.0.1:9/x"),
        (wire.Reason.STATUS_MISMATCH, "status 503"),
        ips=["127.0.0.1"],
        status_line="HTTP/1.1 503 Service Unavailable",
        headers=[("Content-Type", "text/html")],
        body=page,
    )
    assert isinstance(packed["body_gzip"], bytes) and "body" not in packed
    old_text = {"reason": "status_mismatch", "body": "<p>down</p>", "body_truncated": False}
    broken = {**packed, "body_gzip": b"\0" + bytes(packed["body_gzip"])[1:]}
    now = dt.datetime.now(dt.UTC).timestamp()
    for i, (eu, us) in enumerate(((packed, old_text), (broken, old_text))):
        due = now - 300 + i * 60
        await result_store.insert_rounds(
            pool, [(mid, result_store.ts(due), 0, ["us-east", "eu-west"], result_store.ts(due + 5))]
        )
        await engine_results.ingest(
            pool,
            [
                wire.CheckResult(
                    monitor_id=mid,
                    due=due,
                    region=region,
                    probe_id=f"p-{region}",
                    started_at=due,
                    status=wire.Status.FAIL,
                    reason=wire.Reason.STATUS_MISMATCH,
                    message="status 503",
                    status_code=503,
                    details={"evidence": evidence},
                )
                for region, evidence in (("eu-west", eu), ("us-east", us))
            ],
        )
    r = await api.get("/api/v1/incidents", params={"monitor_id": str(mid)})
    (listed,) = (await r.json())["data"]
    text = page.decode("utf-8", "replace")
    r = await api.get(f"/api/v1/incidents/{listed['id']}")
    first = (await r.json())["data"]["first_failure"]["evidence"]
    assert first["body"] == text and first["body_truncated"] is False
    assert not {"body_gzip", "body_gzip_b64", "body_bytes"} & first.keys()
    r = await api.get(f"/api/v1/incidents/{listed['id']}/evidence")
    assert r.status == 200, await r.text()
    shown = [x["evidence"] for x in (await r.json())["data"]]
    assert shown[0] == first and shown[0]["headers"] == [["Content-Type", "text/html"]]
    assert shown[1] == old_text and shown[3] == old_text
    assert shown[2]["body_error"] == "the stored body does not decode" and "body" not in shown[2]
    assert not {"body_gzip", "body_gzip_b64", "body_bytes"} & shown[2].keys()
