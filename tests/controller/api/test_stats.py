"""Stats, analytics and SLA endpoints on a real controller: shapes, numbers that match
the raw rows, CSV, and 422s with field details for bad parameters."""

from __future__ import annotations

import csv
import datetime as dt
import io

import aiohttp
import asyncpg

from probefleet.controller import keys
from probefleet.controller.stats import rollups
from probefleet.controller.storage import api_keys
from tests.controller.conftest import Running

REGIONS = ["us-east", "eu-west", "ap-south"]


async def seed(pool: asyncpg.Pool, now: dt.datetime) -> int:
    """A paused monitor (the scheduler leaves it alone) with 2 h of rounds and results."""
    mid = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, enabled, status)"
        " VALUES ('api', 'http', '{}', 30, 5, $1, false, 'paused') RETURNING id",
        REGIONS,
    )
    start = now - dt.timedelta(hours=2)
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, regions, answered, deadline, closed_at, verdict)"
        " SELECT $1, d, $4, $4, d, d, CASE WHEN extract(minute FROM d)::int % 10 = 0 THEN 'down'"
        " ELSE 'up' END FROM generate_series($2::timestamptz, $3, interval '30 s') d",
        mid,
        start,
        now - dt.timedelta(minutes=1),
        REGIONS,
    )
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, probe_id, status, started_at, duration_ms)"
        " SELECT $1, d, r, 'p', CASE WHEN r = 'ap-south' AND extract(second FROM d)::int = 0"
        " THEN 'fail' ELSE 'ok' END, d, 100 + extract(epoch FROM d)::int % 97"
        " FROM generate_series($2::timestamptz, $3, interval '30 s') d, unnest($4::text[]) r",
        mid,
        start,
        now - dt.timedelta(minutes=1),
        REGIONS,
    )
    await rollups.rewind(pool, start)
    return int(mid)


async def test_it_reports_monitor_stats(controller: Running, api: aiohttp.ClientSession) -> None:
    pool = controller.app[keys.POOL]
    mid = await seed(pool, dt.datetime.now(dt.UTC))
    async with api.get(f"/api/v1/monitors/{mid}/stats", params={"period": "24h", "granularity": "1h"}) as r:
        assert r.status == 200, await r.text()
        data = (await r.json())["data"]
    raw = await pool.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'fail') AS failed,"
        " min(duration_ms) FILTER (WHERE status = 'ok') AS mn FROM check_results WHERE monitor_id = $1",
        mid,
    )
    rounds = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE verdict = 'up') AS up, count(*) AS n FROM rounds"
        " WHERE monitor_id = $1",
        mid,
    )
    assert data["checks"] == {
        "total": raw["n"],
        "successful": raw["n"] - raw["failed"],
        "failed": raw["failed"],
        "degraded": 0,
    }
    assert data["uptime"]["period"] == round(100 * rounds["up"] / rounds["n"], 4)
    assert data["uptime"]["24h"] == data["uptime"]["90d"] == data["uptime"]["period"]
    assert set(data["response_times"]) == {"avg", "min", "max", "p50", "p95", "p99"}
    assert data["response_times"]["min"] == raw["mn"]
    assert [g["region"] for g in data["regions"]] == sorted(REGIONS)
    assert {g["region"]: g["uptime"] for g in data["regions"]}["us-east"] == 100.0
    assert data["incidents"] == {"count": 0, "total_downtime": 0, "mttr": None}
    assert data["granularity"] == "1h" and len(data["series"]) in (24, 25)
    assert sum(p["checks"] for p in data["series"]) == raw["n"]


def decimals(value: float | None) -> int:
    return 0 if value is None else len(repr(float(value)).split(".")[1].rstrip("0"))


async def test_status_and_stats_give_one_set_of_numbers(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """The same monitor and window: the same uptime and percentiles from /status/{id} and
    /monitors/{id}/stats, with part of the window rolled up; every response time to 0.01 ms
    although the stored float4 durations carry noise."""
    pool = controller.app[keys.POOL]
    now = dt.datetime.now(dt.UTC)
    mid = await seed(pool, now)
    await pool.execute(
        "UPDATE check_results SET duration_ms = duration_ms + 0.0723456 + (extract(second FROM due)::int % 7)"
        " WHERE monitor_id = $1",
        mid,
    )
    await pool.execute(
        "UPDATE rounds SET verdict = 'degraded' WHERE monitor_id = $1"
        " AND extract(minute FROM due)::int % 10 = 5",
        mid,
    )
    await rollups.rewind(pool, now - dt.timedelta(hours=2))
    for _ in range(1000):  # roll up the first hour; the rest stays raw until the controller's loop
        if not await rollups.tick(pool, now - dt.timedelta(hours=1), lag=0):
            break
    noisy = await pool.fetchval("SELECT duration_ms FROM check_results WHERE monitor_id = $1 LIMIT 1", mid)
    assert decimals(noisy) > 2
    async with api.get(f"/api/v1/status/{mid}") as r:
        status = (await r.json())["data"]
    async with api.get(f"/api/v1/monitors/{mid}/stats", params={"period": "24h"}) as r:
        stats = (await r.json())["data"]
    metrics, times = status["metrics"], stats["response_times"]
    assert metrics["uptime_24h"] == stats["uptime_percentage"] == stats["uptime"]["24h"]
    assert metrics["uptime_24h"] is not None and 0 < metrics["uptime_24h"] < 100
    assert (metrics["p50_latency_ms"], metrics["p95_latency_ms"], metrics["p99_latency_ms"]) == (
        times["p50"],
        times["p95"],
        times["p99"],
    )
    assert (
        metrics["rounds_24h"] == stats["rounds"]["up"] + stats["rounds"]["degraded"] + stats["rounds"]["down"]
    )
    assert metrics["successful_checks_24h"] == stats["checks"]["successful"]
    # The monitor's cached uptimes, refreshed as after its last round.
    await pool.execute(
        "UPDATE monitors SET last_round = $2 WHERE id = $1", mid, now - dt.timedelta(minutes=1)
    )
    await rollups.refresh_uptimes(pool, dt.datetime.now(dt.UTC), min_age=0)
    async with api.get(f"/api/v1/monitors/{mid}") as r:
        monitor = (await r.json())["data"]
    assert monitor["uptime_24h"] == metrics["uptime_24h"]
    async with api.get(f"/api/v1/monitors/{mid}/logs", params={"limit": 50}) as r:
        logs = (await r.json())["data"]
    shown = [*times.values(), *(x["response_time_ms"] for x in status["regions"]), monitor["response_time"]]
    shown += [x["response_time"] for x in logs] + [g["response_times"]["avg"] for g in stats["regions"]]
    assert logs and all(decimals(v) <= 2 for v in shown), shown


async def test_it_rejects_bad_parameters(controller: Running, api: aiohttp.ClientSession) -> None:
    mid = await seed(controller.app[keys.POOL], dt.datetime.now(dt.UTC))
    cases = [
        (f"/api/v1/monitors/{mid}/stats", {"period": "2d"}, "period"),
        (f"/api/v1/monitors/{mid}/stats", {"granularity": "10m"}, "granularity"),
        (f"/api/v1/monitors/{mid}/stats", {"period": "90d", "granularity": "5m"}, "granularity"),
        (f"/api/v1/analytics/{mid}", {"from": "yesterday"}, "from"),
        (f"/api/v1/analytics/{mid}", {"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "from"),
        (f"/api/v1/analytics/{mid}", {"from": "2020-01-01", "to": "2030-01-01"}, "to"),
        ("/api/v1/reports/sla", {"format": "xml"}, "format"),
    ]
    for path, params, field in cases:
        async with api.get(path, params=params) as r:
            body = await r.json()
            assert r.status == 422, (path, params, body)
            assert body["error"]["code"] == "validation_error"
            assert field in body["error"]["details"], (params, body)
    for path in ("/api/v1/monitors/999999/stats", "/api/v1/analytics/999999", "/api/v1/analytics/x"):
        async with api.get(path) as r:
            assert r.status == 404


async def test_it_needs_the_monitors_read_scope(controller: Running) -> None:
    key, _ = await api_keys.create(controller.app[keys.POOL], "narrow", ["incidents:read"])
    async with aiohttp.ClientSession(base_url=controller.base) as s:
        async with s.get("/api/v1/reports/sla") as r:
            assert r.status == 401
        async with s.get("/api/v1/reports/sla", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 403


async def test_it_gives_analytics_over_any_range(controller: Running, api: aiohttp.ClientSession) -> None:
    pool = controller.app[keys.POOL]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mid = await seed(pool, now)
    start, end = now - dt.timedelta(minutes=93), now - dt.timedelta(minutes=11)
    params = {"from": start.isoformat(), "to": end.isoformat().replace("+00:00", "Z")}
    async with api.get(f"/api/v1/analytics/{mid}", params=params) as r:
        assert r.status == 200, await r.text()
        data = (await r.json())["data"]
    n = await pool.fetchval(
        "SELECT count(*) FROM check_results WHERE monitor_id = $1 AND due >= $2 AND due < $3", mid, start, end
    )
    assert data["checks"]["total"] == n
    assert data["granularity"] == "5m"
    assert sum(p["checks"] for p in data["series"]) == n
    assert data["series"][0]["timestamp"] <= start.isoformat().replace("+00:00", "Z")


async def test_it_reports_sla_as_json_and_csv(controller: Running, api: aiohttp.ClientSession) -> None:
    pool = controller.app[keys.POOL]
    now = dt.datetime.now(dt.UTC)
    mid = await seed(pool, now)
    for started, minutes in ((now - dt.timedelta(minutes=100), 10), (now - dt.timedelta(minutes=40), 20)):
        await pool.execute(
            "INSERT INTO incidents (monitor_id, status, title, started_at, resolved_at)"
            " VALUES ($1, 'resolved', 'down', $2, $3)",
            mid,
            started,
            started + dt.timedelta(minutes=minutes),
        )
    params = {"from": (now - dt.timedelta(hours=3)).isoformat(), "to": now.isoformat()}
    async with api.get("/api/v1/reports/sla", params=params) as r:
        assert r.status == 200, await r.text()
        item = next(m for m in (await r.json())["data"]["monitors"] if m["monitor_id"] == mid)
    assert item["incidents"] == 2
    assert item["downtime_s"] == 1800.0
    assert item["mttr_s"] == 900.0
    assert item["mtbf_s"] == (3 * 3600 - 1800) / 2
    assert item["uptime"] is not None and item["uptime"] < 100
    async with api.get("/api/v1/reports/sla", params={**params, "format": "csv"}) as r:
        assert r.status == 200 and r.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    row = next(x for x in rows if x["monitor_id"] == str(mid))
    assert float(row["downtime_s"]) == 1800.0 and row["incidents"] == "2"
