"""GET /api/v1/status/{monitor_id}: current state, last result per region, and the last
24 hours' latency percentiles and uptime. The 24 h numbers come from the same reads as
/monitors/{id}/stats (storage/stats.py summary: rollups plus the raw tail, percentiles from
the histogram, maintenance and paused spans left out), so both endpoints give the same
values for the same window."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import now_utc, ok, path_id, require
from probefleet.controller.api.errors import not_found
from probefleet.controller.storage import DB
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import results as result_store
from probefleet.controller.storage import stats as stats_store

WINDOW = dt.timedelta(hours=24)


async def window_metrics(conn: DB, monitor_id: int, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    s = await stats_store.summary(conn, monitor_id, since, until)
    total: stats_store.Checks = s["total"]
    verdicts: stats_store.Verdicts = s["verdicts"]
    times = total.public()["response_times"]
    return {
        "p50_latency_ms": times["p50"],
        "p95_latency_ms": times["p95"],
        "p99_latency_ms": times["p99"],
        "uptime_24h": verdicts.uptime,
        "uptime_pct": verdicts.uptime,  # the same, by the name monitoring dashboards read
        "rounds_24h": verdicts.up + verdicts.degraded + verdicts.down,
        "successful_checks_24h": total.checks - total.failures,
    }


def _region(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "response_time_ms": stats_store.ms(row["response_time_ms"])}


async def monitor_status(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor_id = path_id(request, "monitor_id", what="monitor")
    row = await monitor_store.get(pool, monitor_id)
    if row is None:
        raise not_found("monitor")
    now = now_utc()
    since = now - WINDOW
    unavailable = await monitor_store.unavailable_regions(pool, monitor_id)
    incident = await incident_store.open_for(pool, monitor_id)
    return ok(
        {
            "monitor_id": monitor_id,
            "name": row["name"],
            "status": row["status"],
            "state": row["status"],  # the same, by the name monitoring dashboards read
            "is_ok": row["status"] in ("up", "degraded"),
            "status_changed_at": row["status_changed_at"],
            "last_check": row["last_check"],
            "response_time_ms": stats_store.ms(row["response_time_ms"]),
            "unavailable_regions": unavailable,
            "open_incident_id": incident["id"] if incident else None,
            "regions": [_region(r) for r in await result_store.last_per_region(pool, monitor_id, since)],
            "metrics": await window_metrics(pool, monitor_id, since, now),
        }
    )
