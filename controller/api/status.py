"""GET /api/v1/status/{monitor_id}: current state, last result per region, latency
percentiles and rolling 24 h uptime, straight from rounds and
check_results (storage/results.py); maintenance periods are left out of uptime."""

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

WINDOW = dt.timedelta(hours=24)


async def window_metrics(conn: DB, monitor_id: int, since: dt.datetime) -> dict[str, Any]:
    lat = await result_store.latency_since(conn, monitor_id, since)
    up = await result_store.verdicts_since(conn, monitor_id, since)
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
    unavailable = await monitor_store.unavailable_regions(pool, monitor_id)
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
            "unavailable_regions": unavailable,
            "open_incident_id": incident["id"] if incident else None,
            "regions": await result_store.last_per_region(pool, monitor_id, since),
            "metrics": await window_metrics(pool, monitor_id, since),
        }
    )
