"""SQL for the diagnose results of an incident (controller/engine/diagnostics.py): stored in
check_results with attempt DIAGNOSTIC_ATTEMPT, read back by monitor, attempt and time; and
the incident's one `incident.diagnosed` event that notifies them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.storage import DB, events

# A diagnosis is sent within seconds of the incident opening and runs within 10 s: one sent
# just before a short incident was resolved still belongs to it.
LATE = dt.timedelta(seconds=30)


async def for_monitor(
    conn: DB, monitor_id: int, attempt: int, start: dt.datetime, end: dt.datetime, limit: int = 50
) -> list[dict[str, Any]]:
    """The monitor's results of `attempt` due in [start, end + LATE], oldest first."""
    rows = await conn.fetch(
        "SELECT due, region, probe_id, status, message, started_at, duration_ms, details"
        " FROM check_results WHERE monitor_id = $1 AND attempt = $2 AND due >= $3 AND due <= $4"
        " ORDER BY due, region LIMIT $5",
        monitor_id,
        attempt,
        start,
        end + LATE,
        limit,
    )
    return [dict(r) for r in rows]


async def emit_diagnosed(
    pool: DB, incident_id: int, monitor_id: int, now: dt.datetime, payload: dict[str, Any]
) -> int | None:
    """Write the incident's one `incident.diagnosed` event; None when it has one already
    (two controllers, or a replayed incident.opened): the outbox then delivers it once
    per channel. Serialized per incident by a transaction-scoped advisory lock."""
    async with pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('probefleet.diagnosed:' || $1::bigint))", incident_id
        )
        if await conn.fetchval(
            "SELECT 1 FROM events WHERE incident_id = $1 AND kind = 'incident.diagnosed' LIMIT 1", incident_id
        ):
            return None
        return await events.insert(
            conn,
            "incident.diagnosed",
            monitor_id=monitor_id,
            incident_id=incident_id,
            occurred_at=now,
            payload=payload,
        )


async def undiagnosed(
    conn: DB,
    attempt: int,
    after_id: int,
    since: dt.datetime,
    until: dt.datetime,
    late: dt.timedelta,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """incident.opened events after `after_id` that occurred in [since, until] with
    diagnose results (`attempt`) of their monitor due within `late` after them, and no
    incident.diagnosed event: the reports a controller that stopped while waiting did not
    write. Read through the (kind, id) index."""
    rows = await conn.fetch(
        "SELECT e.id, e.incident_id, e.monitor_id, e.occurred_at, e.payload FROM events e"
        " WHERE e.kind = 'incident.opened' AND e.id > $1"
        " AND e.occurred_at BETWEEN $2 AND $3 AND e.incident_id IS NOT NULL AND e.monitor_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM events d WHERE d.incident_id = e.incident_id"
        "   AND d.kind = 'incident.diagnosed')"
        " AND EXISTS (SELECT 1 FROM check_results r WHERE r.monitor_id = e.monitor_id AND r.attempt = $4"
        "   AND r.due >= e.occurred_at - interval '1 second' AND r.due <= e.occurred_at + $5::interval)"
        " ORDER BY e.id LIMIT $6",
        after_id,
        since,
        until,
        attempt,
        late,
        limit,
    )
    return [dict(r) for r in rows]


async def opened_before(conn: DB, after_id: int, since: dt.datetime) -> int:
    """The highest id of an incident.opened event after `after_id` that occurred before
    `since` (`after_id` when none): the sweep need not read below it again."""
    value = await conn.fetchval(
        "SELECT max(id) FROM events WHERE kind = 'incident.opened' AND id > $1 AND occurred_at < $2",
        after_id,
        since,
    )
    return int(value) if value is not None else after_id
