"""/api/v1/events: the events outbox read as downtime events (a monitor went down, was
resolved), oldest first by id with a cursor; PATCH resolves the incident an event belongs to."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import now_utc, ok, parse_int, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.api.incidents import change_incident, int_param, parse_time
from probefleet.controller.storage import DB
from probefleet.controller.storage import events as store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.validation import ValidationError


def _hidden(key: dict[str, Any]) -> str | None:
    """Status-page post events (they may be of private pages) need status_pages:read too."""
    return None if {"admin", "status_pages:read"} & set(key["scopes"]) else "status_page."


async def with_downtime(conn: DB, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event with the downtime (its incident) it belongs to: `started_at`, `ended_at`,
    `duration_seconds` (once ended) and `resolved`; all None for an event of no incident."""
    spans = await store.downtimes(conn, sorted({r["incident_id"] for r in rows if r["incident_id"]}))
    out = []
    for r in rows:
        started, ended = spans.get(r["incident_id"], (None, None)) if r["incident_id"] else (None, None)
        out.append(
            {
                **r,
                "started_at": started,
                "ended_at": ended,
                "duration_seconds": round((ended - started).total_seconds()) if started and ended else None,
                "resolved": ended is not None if started else None,
            }
        )
    return out


async def list_events(request: web.Request) -> web.Response:
    key = await require(request, "incidents:read")
    cursor = parse_int(request.query.get("cursor", "0"))
    if cursor is None:
        raise ValidationError({"cursor": "invalid cursor"})
    limit = int_param(request, "limit", 50, 1, 100) or 50
    kinds = [k for k in request.query.get("kind", "").split(",") if k] or None
    rows = await store.list_page(
        request.app[keys.POOL],
        after_id=cursor,
        limit=limit + 1,
        kinds=kinds,
        monitor_id=int_param(request, "monitor_id", None, 1, 2**62, alias="monitorId"),
        incident_id=int_param(request, "incident_id", None, 1, 2**62, alias="incidentId"),
        since=parse_time(request, "from"),
        until=parse_time(request, "to"),
        hide=_hidden(key),
    )
    more = len(rows) > limit
    rows = await with_downtime(request.app[keys.POOL], rows[:limit])
    return ok(rows, meta={"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None})


async def get_event(request: web.Request) -> web.Response:
    hide = _hidden(await require(request, "incidents:read"))
    row = await store.get(request.app[keys.POOL], path_id(request, what="event"))
    if row is None or (hide is not None and row["kind"].startswith(hide)):
        raise not_found("event")
    (row,) = await with_downtime(request.app[keys.POOL], [row])
    return ok(row)


async def patch_event(request: web.Request) -> web.Response:
    """Resolve the downtime this event belongs to (its incident); events stay immutable."""
    await require(request, "incidents:write")
    event_id = path_id(request, what="event")
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict) or body.get("status", "resolved") != "resolved":
        raise ValidationError({"status": "only 'resolved' is supported"})
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        event = await store.get(conn, event_id)
        if event is None:
            raise not_found("event")
        if event["incident_id"] is None:
            raise ApiError(409, "conflict", "this event belongs to no incident")
        incident = await incident_store.get(conn, event["incident_id"])
        if incident is None:
            raise ApiError(409, "conflict", "the event's incident was deleted")
        monitor = await monitor_store.get(conn, incident["monitor_id"]) if incident["monitor_id"] else None
        await change_incident(conn, incident, monitor, "resolved", {}, now_utc())
        (event,) = await with_downtime(conn, [event])
    return ok(event)
