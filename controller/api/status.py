"""GET /api/v1/status/{monitor_id}: current state, last result per region, latency
percentiles and rolling 24 h uptime (reference 004), straight from rounds and
check_results; maintenance periods are left out of uptime."""

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

WINDOW = dt.timedelta(hours=24)


async def last_per_region(conn: DB, monitor_id: int, since: dt.datetime) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (region) region, due AS checked_at, attempt, probe_id, status, reason,"
        " message, duration_ms AS response_time_ms, status_code FROM check_results"
        " WHERE monitor_id = $1 AND due >= $2 ORDER BY region, due DESC, attempt DESC",
        monitor_id,
        since,
    )
    return [dict(r) for r in rows]


async def window_metrics(conn: DB, monitor_id: int, since: dt.datetime) -> dict[str, Any]:
    lat = await conn.fetchrow(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p,"
        " count(*) AS n FROM check_results WHERE monitor_id = $1 AND due >= $2 AND status <> 'fail'",
        monitor_id,
        since,
    )
    # Scheduled rounds only (attempt 0): confirmation re-checks would over-weight outages.
    up = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE verdict IN ('up', 'degraded')) AS up,"
        " count(*) FILTER (WHERE verdict = 'down') AS down FROM rounds r"
        " WHERE monitor_id = $1 AND due >= $2 AND attempt = 0 AND verdict IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM maintenance_periods p WHERE p.monitor_id = r.monitor_id"
        "   AND r.due >= p.starts_at AND r.due < p.ends_at)",
        monitor_id,
        since,
    )
    assert lat is not None and up is not None
    p = lat["p"] or [None, None, None]
    counted = up["up"] + up["down"]
    return {
        "p50_latency_ms": p[0],
        "p95_latency_ms": p[1],
        "p99_latency_ms": p[2],
        "uptime_24h": round(100.0 * up["up"] / counted, 3) if counted else None,
        "rounds_24h": counted,
        "successful_checks_24h": lat["n"],
    }


async def monitor_status(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor_id = path_id(request, "monitor_id", what="monitor")
    row = await monitor_store.get(pool, monitor_id)
    if row is None:
        raise not_found("monitor")
    now = now_utc()
    since = now - WINDOW
    state = await pool.fetchrow("SELECT unavailable_regions FROM monitors WHERE id = $1", monitor_id)
    incident = await incident_store.open_for(pool, monitor_id)
    return ok(
        {
            "monitor_id": monitor_id,
            "name": row["name"],
            "status": row["status"],
            "is_ok": row["status"] in ("up", "degraded"),
            "status_changed_at": row["status_changed_at"],
            "last_check": row["last_check"],
            "response_time_ms": row["response_time_ms"],
            "unavailable_regions": list(state["unavailable_regions"]) if state else [],
            "open_incident_id": incident["id"] if incident else None,
            "regions": await last_per_region(pool, monitor_id, since),
            "metrics": await window_metrics(pool, monitor_id, since),
        }
    )
