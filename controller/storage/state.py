"""SQL for the controller's state gauges (controller/state_metrics.py): counts over the
whole fleet. The monitors count is one pass over the monitors table (a narrow
GROUP BY, no sort); the others read partial indexes (open incidents, due deliveries,
heartbeat deadlines) or the outbox's tail past the dispatcher's watermark."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from probefleet.controller.storage import DB


@dataclass
class FleetState:
    monitors: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status)
    incidents_open: dict[str, int] = field(default_factory=dict)  # severity
    heartbeats_overdue: int = 0
    deliveries_queued: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel kind, status)
    outbox_pending: int = 0
    outbox_oldest: dt.datetime | None = None


async def read(conn: DB, now: dt.datetime) -> FleetState:
    state = FleetState()
    for row in await conn.fetch("SELECT kind, status, count(*) AS n FROM monitors GROUP BY 1, 2"):
        state.monitors[(row["kind"], row["status"])] = row["n"]
    # incidents_one_open (a partial unique index) holds exactly the open ones.
    for row in await conn.fetch(
        "SELECT severity, count(*) AS n FROM incidents WHERE status <> 'resolved' GROUP BY 1"
    ):
        state.incidents_open[row["severity"]] = row["n"]
    # A deadline stays set until the deadline checker turns it into a verdict: a passed one
    # is a heartbeat the checker has not handled yet.
    state.heartbeats_overdue = await conn.fetchval(
        "SELECT count(*) FROM heartbeats WHERE deadline IS NOT NULL AND deadline < $1", now
    )
    for row in await conn.fetch(
        "SELECT c.kind, d.status, count(*) AS n FROM deliveries d"
        " JOIN notification_channels c ON c.id = d.channel_id"
        " WHERE d.status IN ('pending', 'failed', 'sending') GROUP BY 1, 2"
    ):
        state.deliveries_queued[(row["kind"], row["status"])] = row["n"]
    # Events past the dispatcher's fan-out watermark have no deliveries yet.
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(occurred_at) AS oldest FROM events"
        " WHERE id > COALESCE((SELECT last_event_id FROM dispatcher_cursor WHERE name = 'fanout'), 0)"
    )
    assert row is not None  # an aggregate always returns one row
    state.outbox_pending, state.outbox_oldest = row["n"], row["oldest"]
    return state
