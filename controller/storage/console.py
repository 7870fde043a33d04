"""SQL the console's pages read beyond the API's own: status counts for the overview's
header and the newest result per region of the monitors on one page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.storage import DB
from probefleet.controller.storage.stats import TIMED


async def status_counts(conn: DB) -> dict[str, int]:
    """Monitors per status, paused (disabled) ones counted as `paused` whatever their status.

    One index-only pass over monitors: about 3 ms at 10,000 monitors."""
    rows = await conn.fetch(
        "SELECT CASE WHEN enabled THEN status ELSE 'paused' END AS s, count(*) AS n FROM monitors GROUP BY 1"
    )
    return {r["s"]: int(r["n"]) for r in rows}


async def tags(conn: DB, limit: int = 200) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT unnest(tags) AS t FROM monitors ORDER BY 1 LIMIT $1",
        limit,
    )
    return [r["t"] for r in rows]


async def region_matrix(conn: DB, monitor_ids: list[int], since: dt.datetime) -> dict[int, dict[str, str]]:
    """monitor id -> region -> the newest result's status since `since` (diagnoses, attempt
    2000, left out: they are `ok` whenever they ran)."""
    if not monitor_ids:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (monitor_id, region) monitor_id, region, status FROM check_results"
        " WHERE monitor_id = ANY($1::bigint[]) AND due >= $2 AND attempt <> 2000"
        " ORDER BY monitor_id, region, due DESC, attempt DESC",
        monitor_ids,
        since,
    )
    out: dict[int, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["monitor_id"], {})[r["region"]] = r["status"]
    return out


async def incidents(conn: DB, *, open_only: bool, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, with the monitor's name."""
    rows = await conn.fetch(
        "SELECT i.id, i.monitor_id, m.name AS monitor_name, i.status, i.severity, i.title, i.started_at,"
        " i.resolved_at, i.acknowledged_at, i.affected_regions FROM incidents i"
        " LEFT JOIN monitors m ON m.id = i.monitor_id"
        " WHERE NOT $1 OR i.status <> 'resolved' ORDER BY i.id DESC LIMIT $2",
        open_only,
        limit,
    )
    return [dict(r) for r in rows]


async def response_histograms(
    conn: DB,
    monitor_id: int,
    level: str,
    start: dt.datetime,
    end: dt.datetime,
    origin: dt.datetime,
    step: dt.timedelta,
) -> list[dict[str, Any]]:
    """Response-time histograms of [start, end) binned by `step` from `origin`, per region:
    rows (t, region, idx[], cnt[]) from the rollup `level`, or from raw results when level is
    "raw" (one row per timed result with its duration)."""
    if level == "raw":
        rows = await conn.fetch(
            "SELECT date_bin($4, due, $5) AS t, region, duration_ms FROM check_results"
            f" WHERE monitor_id = $1 AND due >= $2 AND due < $3 AND {TIMED} AND duration_ms IS NOT NULL",
            monitor_id,
            start,
            end,
            step,
            origin,
        )
        return [dict(r) for r in rows]
    assert level in ("minute", "5min", "hour", "day")  # stats.LEVELS
    rows = await conn.fetch(
        f"SELECT date_bin($4, bucket, $5) AS t, region, hist_idx, hist_cnt FROM stats_{level}"
        " WHERE monitor_id = $1 AND bucket >= $2 AND bucket < $3",
        monitor_id,
        start,
        end,
        step,
        origin,
    )
    return [dict(r) for r in rows]


async def incident_events(conn: DB, incident_id: int) -> list[dict[str, Any]]:
    """The incident's events, oldest first, with who caused each (NULL: the engine)."""
    rows = await conn.fetch(
        "SELECT id, kind, occurred_at, actor FROM events WHERE incident_id = $1 ORDER BY id LIMIT 500",
        incident_id,
    )
    return [dict(r) for r in rows]
