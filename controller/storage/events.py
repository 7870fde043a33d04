"""SQL for the events outbox. Rows are written in the transaction of the change they
record and never modified afterwards, except the downtime-event view's `resolve`
(which writes a new incident.resolved event rather than touching old rows)."""

from __future__ import annotations

import contextvars
import datetime as dt
from typing import Any

import asyncpg

from probefleet.controller.storage import DB, Tx

COLUMNS = "id, kind, monitor_id, incident_id, occurred_at, payload"
# Who is being served ('key:<prefix>' or 'user:<name>'), set by the API once it knows; an
# event inserted in that request's task records it in `actor` (NULL for the engine's own).
ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_actor", default=None)


async def insert(
    conn: Tx,
    kind: str,
    *,
    monitor_id: int | None,
    incident_id: int | None,
    occurred_at: dt.datetime,
    payload: dict[str, Any],
) -> int:
    event_id: int = await conn.fetchval(
        "INSERT INTO events (kind, monitor_id, incident_id, occurred_at, payload, actor)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        kind,
        monitor_id,
        incident_id,
        occurred_at,
        payload,
        ACTOR.get(),
    )
    return event_id


async def get(conn: DB, event_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM events WHERE id = $1", event_id)
    return dict(row) if row else None


async def list_page(
    conn: DB,
    *,
    after_id: int = 0,
    limit: int = 50,
    monitor_id: int | None = None,
    incident_id: int | None = None,
    kinds: list[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    hide: str | None = None,
) -> list[dict[str, Any]]:
    """Events after `after_id` by id; `hide` leaves out kinds starting with it."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM events WHERE id > $1"
        " AND ($2::bigint IS NULL OR monitor_id = $2) AND ($3::bigint IS NULL OR incident_id = $3)"
        " AND ($4::text[] IS NULL OR kind = ANY($4))"
        " AND ($5::timestamptz IS NULL OR occurred_at >= $5)"
        " AND ($6::timestamptz IS NULL OR occurred_at < $6)"
        " AND ($8::text IS NULL OR NOT starts_with(kind, $8)) ORDER BY id LIMIT $7",
        after_id,
        monitor_id,
        incident_id,
        kinds,
        since,
        until,
        limit,
        hide,
    )
    return [dict(r) for r in rows]


async def downtimes(conn: DB, incident_ids: list[int]) -> dict[int, tuple[dt.datetime, dt.datetime | None]]:
    """Incident id -> (started, resolved or None): the downtime each event belongs to."""
    rows = await conn.fetch(
        "SELECT id, started_at, resolved_at FROM incidents WHERE id = ANY($1::bigint[])", incident_ids
    )
    return {r["id"]: (r["started_at"], r["resolved_at"]) for r in rows}


# ---- the real-time hub's tail of the outbox --------------------------------------------


async def last_id(conn: DB) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM events"))


async def after(conn: DB, after_id: int, limit: int) -> list[asyncpg.Record]:
    """Events after `after_id` by id, as records (the hub converts each once)."""
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
    )


async def after_or_in(conn: DB, after_id: int, ids: list[int], limit: int) -> list[asyncpg.Record]:
    """Events after `after_id` or with one of `ids` (holes that may have filled), by id."""
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM events WHERE id > $1 OR id = ANY($2::bigint[]) ORDER BY id LIMIT $3",
        after_id,
        ids,
        limit,
    )
