"""/api/v1/maintenance-windows: create, list, get, update (PATCH merges, PUT replaces), delete."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api.common import by_id, ok, path_id, read_json, require
from probefleet.controller.api.errors import not_found
from probefleet.controller.monitors import maintenance
from probefleet.controller.storage import incidents as store
from probefleet.controller.validation import ValidationError, convert

WINDOW = "maintenance window"
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALIASES = {
    "monitors": "monitor_ids",
    "monitorIds": "monitor_ids",
    "timezone": "time_zone",
    "tz": "time_zone",
    "timeZone": "time_zone",
    "duration_s": "duration",
    "duration_seconds": "duration",
    "start": "starts_at",
    "end": "ends_at",
    "startsAt": "starts_at",
    "endsAt": "ends_at",
    "startTime": "start_time",
    "days_of_week": "days",
    "is_enabled": "enabled",
}


class WindowBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    monitor_ids: list[Annotated[int, Meta(ge=1)]] = []
    tags: list[Annotated[str, Meta(min_length=1, max_length=64)]] = []
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    days: list[int | str] = []
    start_time: str | None = None
    duration: Annotated[int, Meta(ge=60, le=7 * 86400)] | None = None
    time_zone: str = "UTC"
    enabled: bool = True


def public(row: dict[str, Any]) -> dict[str, Any]:
    w = maintenance.from_row(row)
    return {
        "id": row["id"],
        "name": row["name"],
        "monitor_ids": list(row["monitor_ids"]),
        "tags": list(row["tags"]),
        "recurring": w.recurring,
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "days": [DAY_NAMES[d] for d in row["days"]],
        "start_time": row["start_time"].strftime("%H:%M") if row["start_time"] else None,
        "duration": row["duration_s"],
        "time_zone": row["time_zone"],
        "enabled": row["enabled"],
        "active_now": bool(maintenance.active([w], dt.datetime.now(dt.UTC))),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _day(value: int | str) -> int | None:
    if isinstance(value, int):
        return value if 0 <= value <= 6 else None
    name = value.lower()[:3]
    return DAY_NAMES.index(name) if name in DAY_NAMES else None


def parse(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be a JSON object"})
    data: dict[str, Any] = {ALIASES.get(str(k), str(k)): v for k, v in raw.items()}
    body = convert(data, WindowBody)
    errors: dict[str, object] = {}
    days = [_day(d) for d in body.days]
    start_time = None
    if body.start_time is not None:
        try:
            start_time = dt.time.fromisoformat(body.start_time)
        except ValueError:
            errors["start_time"] = "must be a local time like 02:30"
    for i, d in enumerate(days):
        if d is None:
            errors[f"days[{i}]"] = "must be 0-6 (Monday=0) or a day name"
    if maintenance.zone(body.time_zone) is None:
        errors["time_zone"] = "unknown IANA time zone"
    if not body.monitor_ids and not body.tags:
        errors["monitor_ids"] = "name at least one monitor id or tag"
    times = [t for t in (body.starts_at, body.ends_at) if t is not None]
    if any(t.tzinfo is None for t in times):
        errors["starts_at"] = "times must carry a UTC offset"
    elif body.days:
        if body.start_time is None and "start_time" not in errors:
            errors["start_time"] = "required for a recurring window"
        if body.duration is None:
            errors["duration"] = "required for a recurring window"
    elif body.starts_at is None or body.ends_at is None:
        errors["starts_at"] = "a one-off window needs starts_at and ends_at; a recurring one days"
    if not errors and body.starts_at and body.ends_at and body.ends_at <= body.starts_at:
        errors["ends_at"] = "must be after starts_at"
    if errors:
        raise ValidationError(errors)
    return {
        "name": body.name,
        "monitor_ids": body.monitor_ids,
        "tags": body.tags,
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "days": sorted(set(days)),
        "start_time": start_time,
        "duration_s": body.duration,
        "time_zone": body.time_zone,
        "enabled": body.enabled,
    }


def _editable(row: dict[str, Any]) -> dict[str, Any]:
    out = public(row)
    for k in ("id", "recurring", "active_now", "created_at", "updated_at"):
        out.pop(k)
    return {k: v for k, v in out.items() if v is not None}


async def create_window(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    row = await store.insert_window(request.app[keys.POOL], parse(await read_json(request)))
    return ok(public(row), status=201)


async def list_windows(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    return ok([public(r) for r in await store.list_windows(request.app[keys.POOL])])


async def get_window(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    return ok(public(await by_id(request, WINDOW, store.get_window)))


async def _update(request: web.Request, *, merge: bool) -> web.Response:
    await require(request, "monitors:write")
    window_id = path_id(request, what=WINDOW)
    pool = request.app[keys.POOL]
    body = await read_json(request)
    current = await store.get_window(pool, window_id)
    if current is None:
        raise not_found(WINDOW)
    if merge and isinstance(body, dict):
        body = {**_editable(current), **{ALIASES.get(k, k): v for k, v in body.items()}}
    row = await store.update_window(pool, window_id, parse(body))
    if row is None:
        raise not_found(WINDOW)
    return ok(public(row))


async def patch_window(request: web.Request) -> web.Response:
    return await _update(request, merge=True)


async def put_window(request: web.Request) -> web.Response:
    return await _update(request, merge=False)


async def delete_window(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    await by_id(request, WINDOW, store.delete_window)
    return web.Response(status=204)
