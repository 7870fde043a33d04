"""/api/v1/monitors: create, read, list, update and delete monitors."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from controller import keys, monitors
from controller.api import heartbeats as heartbeats_api
from controller.api.common import ok, path_id, read_json, require
from controller.api.errors import ValidationFailed, not_found
from controller.storage import monitors as store
from controller.storage import results as result_store
from shared import subjects

MAX_PAGE = 100


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A monitor as the API shows it: id, the flat config, then its state."""
    return {
        "id": row["id"],
        **monitors.config_fields(row),
        "status": row["status"],
        "is_ok": row["status"] in ("up", "degraded"),
        "response_time": row["response_time_ms"],
        "last_check": row["last_check"],
        "last_success": row["last_success"],
        "last_failure": row["last_failure"],
        "status_changed_at": row["status_changed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def _changed(request: web.Request, row: dict[str, Any] | None, monitor_id: int) -> None:
    """Tell our scheduler at once, and the other controllers over NATS."""
    scheduler = request.app[keys.SCHEDULER]
    if row is None:
        scheduler.remove(monitor_id)
    else:
        scheduler.upsert(row)
    nc = request.app[keys.NC]
    if nc.is_connected:
        await nc.publish(subjects.monitor_changes(), str(monitor_id).encode())


async def create_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    body = await read_json(request)
    cfg = monitors.parse(body, request.app[keys.CONFIG].region_ids())
    try:
        row = await store.insert(request.app[keys.POOL], cfg)
    except asyncpg.ForeignKeyViolationError:
        raise ValidationFailed({"parent_id": "no such monitor"}) from None
    await _changed(request, row, row["id"])
    data = public(row)
    if row["kind"] == "heartbeat":
        data.update(await heartbeats_api.token_fields(request, row))
    return ok(data, status=201)


async def get_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    row = await store.get(request.app[keys.POOL], path_id(request, what="monitor"))
    if row is None:
        raise not_found("monitor")
    return ok(public(row))


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ValidationFailed({name: f"must be an integer from {lo} to {hi}"})
    return int(raw)


async def list_monitors(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    cursor = request.query.get("cursor", "0")
    if not cursor.isdigit():
        raise ValidationFailed({"cursor": "invalid cursor"})
    kind = request.query.get("type")
    if kind is not None:
        kind = monitors.TYPE_ALIASES.get(kind, kind)
    rows = await store.list_page(request.app[keys.POOL], after_id=int(cursor), limit=limit + 1,
                                 status=request.query.get("status"), kind=kind)  # fmt: skip
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None}
    return ok([public(r) for r in rows], meta=meta)


async def _update(request: web.Request, *, merge: bool) -> web.Response:
    await require(request, "monitors:write")
    monitor_id = path_id(request, what="monitor")
    pool = request.app[keys.POOL]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    current = await store.get(pool, monitor_id)
    if current is None:
        raise not_found("monitor")
    fields = monitors.config_fields(current)
    body = monitors.normalize(body)
    if "type" in body and body["type"] != current["kind"]:
        raise ValidationFailed({"type": "cannot change a monitor's type; create a new monitor"})
    if merge:
        fields.update(body)
    else:
        fields = {"type": current["kind"], **body}
    cfg = monitors.parse(fields, request.app[keys.CONFIG].region_ids())
    if cfg.parent_id == monitor_id:
        raise ValidationFailed({"parent_id": "a monitor cannot be its own parent"})
    try:
        row = await store.update(pool, monitor_id, cfg)
    except asyncpg.ForeignKeyViolationError:
        raise ValidationFailed({"parent_id": "no such monitor"}) from None
    if row is None:
        raise not_found("monitor")
    await _changed(request, row, monitor_id)
    return ok(public(row))


async def patch_monitor(request: web.Request) -> web.Response:
    return await _update(request, merge=True)


async def put_monitor(request: web.Request) -> web.Response:
    return await _update(request, merge=False)


async def delete_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    monitor_id = path_id(request, what="monitor")
    if not await store.delete(request.app[keys.POOL], monitor_id):
        raise not_found("monitor")
    await _changed(request, None, monitor_id)
    return web.Response(status=204)


async def monitor_results(request: web.Request) -> web.Response:
    """Raw per-region results, newest first (the monitor's check log)."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor_id = path_id(request, what="monitor")
    if await store.get(pool, monitor_id) is None:
        raise not_found("monitor")
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await result_store.recent(pool, monitor_id, limit=limit,
                                     region=request.query.get("region"))  # fmt: skip
    return ok(rows)
