"""SQL for incidents, their timeline, maintenance windows and periods.

Opening relies on the unique partial index `incidents_one_open`: a second controller's
insert for the same monitor does nothing (ON CONFLICT DO NOTHING), so an outage has
exactly one incident. Every status change is compare-and-set on the current status.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.storage import DB, Tx
from probefleet.shared.evidence import from_stored

Row = dict[str, Any]

COLUMNS = (
    "i.id, i.monitor_id, m.name AS monitor_name, i.status, i.severity, i.title, i.manual,"
    " i.suppressed, i.cause_monitor_id, i.started_at, i.acknowledged_at, i.resolved_at,"
    " i.root_cause, i.root_reason, i.affected_regions, i.checks_failed, i.checks_total,"
    " i.assignee, i.notes, i.external_ticket_id, i.created_at, i.updated_at"
)
_FROM = "FROM incidents i LEFT JOIN monitors m ON m.id = i.monitor_id"


async def open_incident(
    conn: Tx,
    *,
    monitor_id: int | None,
    title: str,
    severity: str,
    started_at: dt.datetime,
    root_cause: str | None = None,
    root_reason: str | None = None,
    affected_regions: list[str] = [],  # noqa: B006
    checks_failed: int = 0,
    checks_total: int = 0,
    manual: bool = False,
    suppressed: bool = False,
    cause_monitor_id: int | None = None,
    external_ticket_id: str | None = None,
    notes: str | None = None,
) -> int | None:
    """Insert an incident; None when the monitor already has an open one."""
    incident_id: int | None = await conn.fetchval(
        "INSERT INTO incidents (monitor_id, title, severity, started_at, root_cause, root_reason,"
        " affected_regions, checks_failed, checks_total, manual, suppressed, cause_monitor_id,"
        " external_ticket_id, notes) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
        " ON CONFLICT (monitor_id) WHERE status <> 'resolved' DO NOTHING RETURNING id",
        monitor_id,
        title,
        severity,
        started_at,
        root_cause,
        root_reason,
        affected_regions,
        checks_failed,
        checks_total,
        manual,
        suppressed,
        cause_monitor_id,
        external_ticket_id,
        notes,
    )
    return incident_id


async def get(conn: DB, incident_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} {_FROM} WHERE i.id = $1", incident_id)
    return dict(row) if row else None


async def open_for(conn: DB, monitor_id: int) -> Row | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} {_FROM} WHERE i.monitor_id = $1 AND i.status <> 'resolved'", monitor_id
    )
    return dict(row) if row else None


async def add_checks(conn: Tx, incident_id: int, failing: list[str], answered: int) -> None:
    await conn.execute(
        "UPDATE incidents SET checks_failed = checks_failed + $2, checks_total = checks_total + $3,"
        " affected_regions = ARRAY(SELECT DISTINCT unnest(affected_regions || $4::text[]) ORDER BY 1)"
        " WHERE id = $1 AND status <> 'resolved'",
        incident_id,
        len(failing),
        answered,
        failing,
    )


async def resolve(conn: Tx, incident_id: int, now: dt.datetime) -> Row | None:
    """Resolve if still open (compare-and-set); the updated row or None."""
    ok = await conn.fetchval(
        "UPDATE incidents SET status = 'resolved', resolved_at = $2, updated_at = $2"
        " WHERE id = $1 AND status <> 'resolved' RETURNING id",
        incident_id,
        now,
    )
    return await get(conn, incident_id) if ok else None


async def acknowledge(
    conn: Tx, incident_id: int, now: dt.datetime, assignee: str | None, notes: str | None
) -> Row | None:
    ok = await conn.fetchval(
        "UPDATE incidents SET status = 'acknowledged', acknowledged_at = COALESCE(acknowledged_at, $2),"
        " assignee = COALESCE($3, assignee), notes = COALESCE($4, notes), updated_at = $2"
        " WHERE id = $1 AND status = 'active' RETURNING id",
        incident_id,
        now,
        assignee,
        notes,
    )
    return await get(conn, incident_id) if ok else None


async def update_fields(conn: Tx, incident_id: int, now: dt.datetime, fields: dict[str, Any]) -> bool:
    """Set editable fields (assignee, notes, severity, title, external_ticket_id)."""
    allowed = ("assignee", "notes", "severity", "title", "external_ticket_id")
    sets = [(k, v) for k, v in fields.items() if k in allowed]
    if not sets:
        return True
    assignments = ", ".join(f"{k} = ${i + 3}" for i, (k, _) in enumerate(sets))
    ok = await conn.fetchval(
        f"UPDATE incidents SET {assignments}, updated_at = $2 WHERE id = $1 RETURNING id",
        incident_id,
        now,
        *[v for _, v in sets],
    )
    return ok is not None


FAILED_COLUMNS = (
    "due, attempt, region, probe_id, reason, message, status_code, duration_ms, timings,"
    " evidence AS stored_evidence, CASE WHEN evidence IS NULL THEN details->'evidence' END AS evidence"
)


def _failure(r: Any) -> Row:
    """A failed result with its evidence as a dict: from check_results.evidence (msgpack,
    migration 0023), else from details->'evidence' where results stored before it kept it."""
    row = dict(r)
    stored = row.pop("stored_evidence")
    if stored is not None:
        row["evidence"] = from_stored(stored)
    return row


async def failed_results(
    conn: DB, monitor_id: int, start: dt.datetime, end: dt.datetime, limit: int
) -> list[Row]:
    """The monitor's failed results between start and end (due times), oldest first."""
    rows = await conn.fetch(
        f"SELECT {FAILED_COLUMNS} FROM check_results WHERE monitor_id = $1 AND due >= $2 AND due <= $3"
        " AND status = 'fail' ORDER BY due, attempt, region LIMIT $4",
        monitor_id,
        start,
        end,
        limit,
    )
    return [_failure(r) for r in rows]


async def failures_by_region(conn: DB, monitor_id: int, start: dt.datetime, end: dt.datetime) -> list[Row]:
    """(region, reason, failures) over the monitor's failed results between start and end."""
    rows = await conn.fetch(
        "SELECT region, reason, count(*) AS failures FROM check_results WHERE monitor_id = $1"
        " AND due >= $2 AND due <= $3 AND status = 'fail' GROUP BY region, reason ORDER BY region, reason",
        monitor_id,
        start,
        end,
    )
    return [dict(r) for r in rows]


async def last_check(conn: DB, monitor_id: int) -> dt.datetime | None:
    """When a round of the monitor last had an answer (monitors.last_check)."""
    value: dt.datetime | None = await conn.fetchval(
        "SELECT last_check FROM monitors WHERE id = $1", monitor_id
    )
    return value


async def suppress(conn: Tx, incident_id: int, cause_monitor_id: int, now: dt.datetime) -> bool:
    """Mark an open incident as caused by a down parent after the fact (compare-and-set on
    suppressed): its recovery then writes no monitor.up nor incident.resolved event."""
    done = await conn.fetchval(
        "UPDATE incidents SET suppressed = true, cause_monitor_id = $2, updated_at = $3"
        " WHERE id = $1 AND NOT suppressed RETURNING id",
        incident_id,
        cause_monitor_id,
        now,
    )
    return done is not None


async def add_timeline(
    conn: Tx,
    incident_id: int,
    at: dt.datetime,
    kind: str,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO incident_timeline (incident_id, at, kind, message, data) VALUES ($1,$2,$3,$4,$5)",
        incident_id,
        at,
        kind,
        message,
        data or {},
    )


async def timeline(conn: DB, incident_id: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT id, at, kind, message, data FROM incident_timeline WHERE incident_id = $1 ORDER BY id",
        incident_id,
    )
    return [dict(r) for r in rows]


async def list_page(
    conn: DB,
    *,
    monitor_id: int | None = None,
    status: str = "all",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    before: tuple[dt.datetime, int] | None = None,
) -> list[Row]:
    """Newest first; `before` is a keyset cursor (started_at, id)."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} {_FROM} WHERE ($1::bigint IS NULL OR i.monitor_id = $1)"
        " AND ($2 = 'all' OR ($2 = 'active' AND i.status <> 'resolved')"
        "      OR ($2 = 'resolved' AND i.status = 'resolved'))"
        " AND ($3::timestamptz IS NULL OR COALESCE(i.resolved_at, 'infinity') >= $3)"
        " AND ($4::timestamptz IS NULL OR i.started_at < $4)"
        " AND ($5::timestamptz IS NULL OR (i.started_at, i.id) < ($5, $6::bigint))"
        " ORDER BY i.started_at DESC, i.id DESC LIMIT $7 OFFSET $8",
        monitor_id,
        status,
        since,
        until,
        before[0] if before else None,
        before[1] if before else 0,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def mttr_seconds(conn: DB, monitor_id: int | None = None) -> float | None:
    value = await conn.fetchval(
        "SELECT avg(extract(epoch FROM resolved_at - started_at)) FROM incidents"
        " WHERE resolved_at IS NOT NULL AND ($1::bigint IS NULL OR monitor_id = $1)",
        monitor_id,
    )
    return float(value) if value is not None else None


# ------------------------------------------------------------ maintenance

WINDOW_COLUMNS = (
    "id, name, monitor_ids, tags, starts_at, ends_at, days, start_time, duration_s, time_zone,"
    " enabled, created_at, updated_at"
)


async def windows_for(conn: DB, monitor_id: int, tags: list[str]) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE enabled"
        " AND ($1 = ANY(monitor_ids) OR tags && $2::text[])",
        monitor_id,
        tags,
    )
    return [dict(r) for r in rows]


async def record_period(
    conn: Tx, monitor_id: int, window_id: int, starts_at: dt.datetime, ends_at: dt.datetime
) -> None:
    await conn.execute(
        "INSERT INTO maintenance_periods (monitor_id, window_id, starts_at, ends_at)"
        " VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
        monitor_id,
        window_id,
        starts_at,
        ends_at,
    )


# A window's stored fields, in the order insert_window and update_window number them.
WINDOW_FIELDS = (
    "name",
    "monitor_ids",
    "tags",
    "starts_at",
    "ends_at",
    "days",
    "start_time",
    "duration_s",
    "time_zone",
    "enabled",
)


async def insert_window(conn: DB, w: dict[str, Any]) -> Row:
    row = await conn.fetchrow(
        f"INSERT INTO maintenance_windows (name, monitor_ids, tags, starts_at, ends_at, days,"
        f" start_time, duration_s, time_zone, enabled) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
        f" RETURNING {WINDOW_COLUMNS}",
        *(w[f] for f in WINDOW_FIELDS),
    )
    assert row is not None
    return dict(row)


async def update_window(conn: DB, window_id: int, w: dict[str, Any]) -> Row | None:
    row = await conn.fetchrow(
        f"UPDATE maintenance_windows SET name=$2, monitor_ids=$3, tags=$4, starts_at=$5,"
        f" ends_at=$6, days=$7, start_time=$8, duration_s=$9, time_zone=$10, enabled=$11,"
        f" updated_at=now() WHERE id=$1 RETURNING {WINDOW_COLUMNS}",
        window_id,
        *(w[f] for f in WINDOW_FIELDS),
    )
    return dict(row) if row else None


async def get_window(conn: DB, window_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id=$1", window_id)
    return dict(row) if row else None


async def list_windows(conn: DB) -> list[Row]:
    rows = await conn.fetch(f"SELECT {WINDOW_COLUMNS} FROM maintenance_windows ORDER BY id")
    return [dict(r) for r in rows]


async def delete_window(conn: DB, window_id: int) -> bool:
    deleted = await conn.fetchval("DELETE FROM maintenance_windows WHERE id=$1 RETURNING id", window_id)
    return deleted is not None
