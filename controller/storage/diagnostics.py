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
