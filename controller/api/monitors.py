"""/api/v1/monitors: CRUD, config, pause/resume, run now, bulk, lists, logs, history, alerts."""

from __future__ import annotations

import base64
import datetime as dt
import math
import operator
import weakref
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api import heartbeats as heartbeats_api
from probefleet.controller.api.common import (
    check_time,
    json_default,
    json_problems,
    json_response,
    now_utc,
    ok,
    parse_int,
    path_id,
    read_json,
    require,
)
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.api.notifications import private_allowed, resolve_references
from probefleet.controller.cluster.fleet import kind_of
from probefleet.controller.engine import consensus, diagnostics, incidents, ondemand
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.storage import monitors as store
from probefleet.controller.storage import results as result_store
from probefleet.controller.storage import stats as stats_store
from probefleet.controller.storage import uptime_cache
from probefleet.controller.validation import ValidationError, from_msgspec
from probefleet.shared import subjects

MAX_PAGE = 100
MAX_BULK = 1000
# Status names of the reference services, mapped onto ours.
STATUS_ALIASES = {
    "online": "up",
    "offline": "down",
    "warning": "degraded",
    "active": "up",
    "inactive": "paused",
    "failing": "down",
}
STATUSES = ("up", "down", "degraded", "unknown", "pending", "paused")


# The stored columns that monitors.config_fields reads: the shown config is a function of
# these alone (and of shared/redact.py's fixed rule).
_CONFIG_COLUMNS = (
    "name",
    "kind",
    "timeout_s",
    "interval_s",
    "locations",
    "consensus",
    "quorum",
    "retry_count",
    "recovery_count",
    "enabled",
    "tags",
    "parent_id",
    "incident_on_degraded",
    "notifications",
    "project",
    "escalation_policy_id",
    "spec",
)
_config_values = operator.itemgetter(*_CONFIG_COLUMNS)
_ABSENT = object()
SHOWN_CONFIGS_MAX = 4096
# A monitor row: a dict, or the asyncpg.Record a list reads (both read with [] and .get).
RowLike = Any


def _absent(obj: Any) -> Any:
    if obj is _ABSENT:
        return "\x00absent"  # no stored text holds NUL (PostgreSQL refuses it)
    raise TypeError(type(obj).__name__)


_inputs = msgspec.json.Encoder(enc_hook=_absent).encode


class ShownConfigs:
    """The JSON of the redacted flat config of recently shown monitors, so a list page read
    again (a console or a client polling it) neither rebuilds and redacts each monitor's
    config nor encodes it again (together about half of a list's CPU in the controller).
    An entry is used only while the monitor's stored config columns encode to the same
    bytes as those it was built from, so an edit shows at once on every controller; at
    most `max_entries` monitors are held (the oldest entry is dropped)."""

    def __init__(self, max_entries: int = SHOWN_CONFIGS_MAX) -> None:
        self.max_entries = max_entries
        self.entries: dict[int, tuple[bytes, bytes]] = {}
        # monitor id -> (the application whose database it was read from, weakly; the
        # config_version, migration 0027, its entry is known to match there)
        self.versions: dict[int, tuple[weakref.ref[Any], int]] = {}

    def get(self, row: RowLike, scope: Any = None) -> bytes:
        """The JSON members (no braces) of the config as the API shows it. TypeError for a
        value JSON cannot hold, as encoding any response holding it would. A row with
        `config_version` read by `scope` (the application: versions are numbers of its
        database) makes the entry known to match that version (`by_version`)."""
        try:
            values = _config_values(row)
        except KeyError:  # a row without some column: not the same as one holding null
            values = [row.get(c, _ABSENT) for c in _CONFIG_COLUMNS]
        inputs = _inputs(values)
        monitor_id = row["id"]
        version = row.get("config_version") if scope is not None else None
        held = self.entries.get(monitor_id)
        if held is not None and held[0] == inputs:
            if version is not None:
                self._known(monitor_id, scope, version)
            return held[1]
        encoded = _encode(monitors.redact(monitors.config_fields(row)))[1:-1]
        if held is None and len(self.entries) >= self.max_entries:
            oldest = next(iter(self.entries))
            del self.entries[oldest]
            self.versions.pop(oldest, None)
        self.entries[monitor_id] = (inputs, encoded)
        if version is None:
            self.versions.pop(monitor_id, None)
        else:
            self._known(monitor_id, scope, version)
        return encoded

    def _known(self, monitor_id: int, scope: Any, version: int) -> None:
        known = self.versions.get(monitor_id)
        if known is None or known[1] != version or known[0]() is not scope:
            self.versions[monitor_id] = (weakref.ref(scope), version)

    def by_version(self, scope: Any, monitor_id: int, version: int) -> bytes | None:
        """The entry of a monitor whose stored config is at `version` in `scope`'s
        database (the row of a list read without its configured columns), or None when
        not known to match it."""
        known = self.versions.get(monitor_id)
        if known is None or known[1] != version or known[0]() is not scope:
            return None
        return self.entries[monitor_id][1]


SHOWN = ShownConfigs()
_encode = msgspec.json.Encoder(enc_hook=json_default).encode


def _state(row: RowLike, uptime: dict[str, float | None] | None) -> dict[str, Any]:
    """The part of `public` after the config: status, uptimes, times, flapping."""
    status = row["status"]
    ups = uptime if uptime is not None else uptime_cache.fields(row)
    # Flapping (Nagios' percent state change, controller/notifications/dispatcher.py): the
    # percent shown is the one that started it, as the monitor.flapping event carries.
    flapping = bool(row.get("flapping"))
    percent = row.get("flap_percent")
    return {
        "status": status,
        "is_ok": status == "up" or status == "degraded",
        "uptime_24h": ups.get("uptime_24h"),
        "uptime_7d": ups.get("uptime_7d"),
        "uptime_30d": ups.get("uptime_30d"),
        "response_time": stats_store.ms(row["response_time_ms"]),
        "last_check": row["last_check"],
        "last_success": row["last_success"],
        "last_failure": row["last_failure"],
        "status_changed_at": row["status_changed_at"],
        "flapping": flapping,
        "flap_percent": round(percent, 1) if flapping and percent is not None else None,
        "paused_reason": row.get("paused_reason"),
        "paused_at": row.get("paused_at"),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def public(row: dict[str, Any], uptime: dict[str, float | None] | None = None) -> dict[str, Any]:
    """A monitor as the API shows it: id, the flat config, then its state. Uptimes come
    from `uptime` or else from the row's cached counts (storage/uptime_cache.py)."""
    out: dict[str, Any] = {"id": row["id"]}
    out.update(monitors.redact(monitors.config_fields(row)))
    out.update(_state(row, uptime))
    return out


def public_json(row: RowLike, config: bytes | None = None) -> msgspec.Raw:
    """`public(row)` already encoded, as JSON responses embed it: the config's JSON comes
    from SHOWN (or `config`, already found there), so a monitor shown again costs only the
    encoding of its state."""
    state = _encode(_state(row, None))
    if config is None:
        config = SHOWN.get(row)
    return msgspec.Raw(b'{"id":%d,%b,%b' % (row["id"], config, state[1:]))


async def _listed(app: web.Application, rows: list[asyncpg.Record]) -> list[msgspec.Raw]:
    """A list's rows, read without their configured columns (store.list_records
    config=False), as `public_json` gives them: the config of a monitor whose version
    SHOWN holds comes from there, the others' columns are read in one more query.
    Versions count per database, so SHOWN keeps them per application (tests run many,
    each on a database cloned from one template, whose sequences start alike)."""
    configs = [SHOWN.by_version(app, r["id"], r["config_version"]) for r in rows]
    missing = [r["id"] for r, c in zip(rows, configs, strict=True) if c is None]
    if missing:
        # Read after the page: an edit in between shows its newer config (and version).
        fresh = {r["id"]: SHOWN.get(r, app) for r in await store.configs(app[keys.POOL], missing)}
        # A monitor deleted in between has no row left: it is left out, as a list read
        # a moment later would.
        return [
            public_json(r, c if c is not None else fresh[r["id"]])
            for r, c in zip(rows, configs, strict=True)
            if c is not None or r["id"] in fresh
        ]
    return [public_json(r, c) for r, c in zip(rows, configs, strict=True)]


async def _public_many(request: web.Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows returned by a write, which lack the cached uptimes and the flap state: a query
    for each."""
    pool, ids = request.app[keys.POOL], [r["id"] for r in rows]
    ups = await uptime_cache.read(pool, ids)
    flaps = await store.flaps(pool, ids)
    return [public({**r, **flaps.get(r["id"], {})}, ups.get(r["id"], {})) for r in rows]


async def _one(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    return (await _public_many(request, [row]))[0]


async def _changed(request: web.Request, row: dict[str, Any] | None, monitor_id: int) -> None:
    """Tell our scheduler at once, and the other controllers over NATS."""
    scheduler = request.app[keys.SCHEDULER]
    if row is None:
        scheduler.remove(monitor_id, deleted=True)
    else:
        scheduler.upsert(row)
    nc = request.app[keys.NC]
    if nc.is_connected:
        await nc.publish(subjects.monitor_changes(), str(monitor_id).encode())


def fleet_warnings(request: web.Request, cfg: monitors.MonitorConfig) -> dict[str, Any] | None:
    """`{"warnings": [...]}` naming the monitor's regions whose live probes cannot run its
    kind (their rounds there are skipped with no_capable_probe), or None."""
    if cfg.spec is None:
        return None
    kind = kind_of(cfg.spec)
    regions = request.app[keys.FLEET].incapable(cfg.locations, kind)
    warnings = [
        f"no live probe in region {r} can run {kind} checks: skipped there (no_capable_probe)"
        for r in regions
    ]
    return {"warnings": warnings} if warnings else None


async def _current(request: web.Request, *, with_uptimes: bool = False) -> tuple[int, dict[str, Any]]:
    monitor_id = path_id(request, what="monitor")
    row = await store.get(request.app[keys.POOL], monitor_id, with_uptimes=with_uptimes)
    if row is None:
        raise not_found("monitor")
    return monitor_id, row


# ---- create, read, update, delete ------------------------------------------------------


async def create_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    body = await read_json(request)
    cfg = monitors.parse(body, request.app[keys.REGIONS].ids())
    pool = request.app[keys.POOL]
    row, token = await heartbeats_api.insert_monitor(pool, cfg, allow_private=private_allowed(request))
    await _changed(request, row, row["id"])
    data = public(row)
    if token is not None:
        data.update(heartbeats_api.token_fields(request, token))
    return ok(data, status=201, meta=fleet_warnings(request, cfg))


async def get_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    _, row = await _current(request, with_uptimes=True)
    return ok(public_json(row))


def merged_config(current: dict[str, Any], body: object, *, regions: list[str]) -> monitors.MonitorConfig:
    """The config after merging `body` into `current` (PATCH, PUT, bulk update)."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    body = monitors.restore_secrets(monitors.normalize(body), monitors.config_fields(current))
    if "type" in body and body["type"] != current["kind"]:
        raise ValidationError({"type": "cannot change a monitor's type; create a new monitor"})
    fields = {**monitors.config_fields(current), **body}
    if current["kind"] == "heartbeat":
        fields = heartbeat.merge_fields(monitors.config_fields(current), body)
    cfg = monitors.parse(fields, regions)
    if cfg.parent_id == current["id"]:
        raise ValidationError({"parent_id": "a monitor cannot be its own parent"})
    return cfg


async def _update(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    monitor_id, current = await _current(request)
    body = await read_json(request)
    cfg = merged_config(current, body, regions=request.app[keys.REGIONS].ids())
    pool = request.app[keys.POOL]
    row = await heartbeats_api.update_monitor(pool, monitor_id, cfg, allow_private=private_allowed(request))
    if row is None:
        raise not_found("monitor")
    await _changed(request, row, monitor_id)
    return ok(await _one(request, row), meta=fleet_warnings(request, cfg))


async def patch_monitor(request: web.Request) -> web.Response:
    return await _update(request)


async def put_monitor(request: web.Request) -> web.Response:
    """PUT changes the given fields like PATCH: clients send partial PUTs ("only provided
    fields will be updated"), and none expects a replace."""
    return await _update(request)


async def put_config(request: web.Request) -> web.Response:
    """PUT /monitors/{id}/config: change some settings, keep the rest and
    the schedule (the monitor keeps its phase; no round is lost)."""
    return await _update(request)


async def delete_monitor(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    monitor_id = path_id(request, what="monitor")
    if not await store.delete(request.app[keys.POOL], monitor_id):
        raise not_found("monitor")
    await _changed(request, None, monitor_id)
    return web.Response(status=204)


# ---- pause and resume ------------------------------------------------------------------


class PauseRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] | None = None


async def _optional_body(request: web.Request, struct: type[PauseRequest]) -> PauseRequest:
    if not (await request.read()).strip():
        return struct()
    try:
        return msgspec.convert(await read_json(request), struct)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None


async def pause_or_resume(
    conn: Any, row: dict[str, Any], paused: bool, reason: str | None, now: dt.datetime
) -> dict[str, Any]:
    """Pause or resume one monitor and write its event in the same transaction; a monitor
    already in that state is returned unchanged (idempotent)."""
    changed = await store.set_paused(conn, row["id"], paused, reason)
    if changed is None:
        return row
    previous = changed.pop("previous_status")
    await incidents.emit(
        conn,
        "monitor.paused" if paused else "monitor.resumed",
        now,
        monitor=changed,
        status=changed["status"],
        previous=previous,
        extra={"reason": reason} if reason else None,
    )
    return changed


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    await require(request, "monitors:write")
    monitor_id, current = await _current(request)
    body = await _optional_body(request, PauseRequest)
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        row = await pause_or_resume(conn, current, paused, body.reason, now_utc())
    await _changed(request, row, monitor_id)
    return ok(await _one(request, row))


async def pause_monitor(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume_monitor(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


# ---- run now ---------------------------------------------------------------------------


async def check_monitor(request: web.Request) -> web.Response:
    """POST /monitors/{id}/check and /test: run now in every selected region; the
    per-region results (real probe results) come back in the response."""
    await require(request, "monitors:write")
    monitor_id, row = await _current(request)
    spec = monitors.decode_spec(row["kind"], row["spec"])
    if spec is None:
        raise ApiError(409, "conflict", "a heartbeat monitor is checked by its pings, not by probes")
    cfg = request.app[keys.CONFIG]
    rule = consensus.Rule(mode=row["consensus"], quorum=row["quorum"])
    result = await ondemand.run(
        request.app[keys.NC],
        request.app[keys.FLEET],
        monitor_id=monitor_id,
        spec=spec,
        check_timeout=float(row["timeout_s"]),
        locations=list(row["locations"]),
        rule=rule,
        grace=cfg.round_grace,
    )
    return ok({"monitor_id": monitor_id, **result})


# ---- lists -----------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if (value := parse_int(raw, lo, hi)) is None:
        raise ValidationError({name: f"must be an integer from {lo} to {hi}"})
    return value


def parse_time(raw: str, name: str, *, end: bool = False) -> dt.datetime:
    """ISO 8601 with a zone (naive means UTC) or a date; an end date covers its whole day."""
    try:
        if len(raw) == 10:
            day = dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(), dt.UTC)
            check_time(day, name)
            return day + dt.timedelta(days=1) if end else day
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ValidationError({name: "must be an ISO 8601 date or time"}) from None
    check_time(t, name)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValidationError({name: "must be true or false"})


def _filters(request: web.Request) -> store.Filters:
    q = request.query
    f = store.Filters()
    if status := q.get("status"):
        wanted = [STATUS_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in status.split(",")]
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            raise ValidationError(
                {
                    "status": f"unknown status {bad[0]!r}; use one of "
                    f"{', '.join(STATUSES)} or online/offline/warning"
                }
            )
        f.statuses = wanted
    if kind := q.get("type"):
        kind = kind.lower()
        f.kind = monitors.TYPE_ALIASES.get(kind, kind)
        if f.kind not in monitors.KINDS:
            raise ValidationError({"type": f"unknown type; use one of {', '.join(monitors.KINDS)}"})
    f.search = q.get("search") or q.get("q") or None
    if tag := q.get("tag") or q.get("tags"):
        f.tags = [t.strip() for t in tag.split(",") if t.strip()]
    f.project = q.get("project") or q.get("project_id") or None
    if created := q.get("created_after"):
        f.created_after = parse_time(created, "created_after")
    enabled = _bool_param(request, "is_enabled")
    paused = _bool_param(request, "is_paused")
    f.enabled = enabled if enabled is not None else (None if paused is None else not paused)
    return f


def _sort(request: web.Request) -> tuple[str, bool]:
    raw = request.query.get("sort") or "id:asc"
    field, _, direction = raw.partition(":")
    if raw.startswith("-"):
        field, direction = raw[1:], "desc"
    direction = direction.lower() or "asc"
    if field not in store.SORTS or direction not in ("asc", "desc"):
        raise ValidationError({"sort": f"use field:asc|desc with field one of {', '.join(store.SORTS)}"})
    return field, direction == "desc"


def encode_cursor(sort: str, desc: bool, row: RowLike) -> str:
    value = store.sort_value(sort, row)
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    raw = msgspec.json.encode([sort, desc, value, row["id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, desc: bool) -> tuple[Any, int]:
    bad = ValidationError({"cursor": "invalid cursor; pass meta.next_cursor unchanged"})
    if cursor.isascii() and cursor.isdigit():  # the plain last id of earlier versions
        if sort != "id" or len(cursor) > 18:
            raise bad
        return int(cursor), int(cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        s, d, value, last_id = msgspec.json.decode(raw)
    except (ValueError, TypeError, msgspec.DecodeError):
        raise bad from None
    if json_problems([value, last_id]):  # a NUL or a number no column holds: not ours
        raise bad
    if s != sort or d != desc or not isinstance(last_id, int):
        raise ValidationError({"cursor": "cursor was made for another sort; start again without it"})
    column = store.SORTS[sort]
    try:
        if column in ("created_at", "updated_at"):
            value = dt.datetime.fromisoformat(value)
            check_time(value, "cursor")  # a ValueError: caught below
        elif column in ("id", "interval_s"):
            value = int(value)
        elif sort in store.UPTIME_SORTS:
            value = float(value)
        elif not isinstance(value, str):
            raise bad
    except (ValueError, TypeError):
        raise bad from None
    return value, last_id


async def list_monitors(request: web.Request) -> web.Response:
    """Three page styles: `page` (with totals), `offset` (with has_more) or
    `cursor` (keyset on the sort key and id, so pages stay stable while monitors are added
    or removed)."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    if "per_page" in request.query:
        limit = _int_param(request, "per_page", 50, 1, MAX_PAGE)
    f = _filters(request)
    sort, desc = _sort(request)
    if "page" in request.query:
        page = _int_param(request, "page", 1, 1, 10_000_000)
        rows = await store.list_records(
            pool, f, sort=sort, desc=desc, offset=(page - 1) * limit, limit=limit, config=False
        )
        total = await store.count_filtered(pool, f)
        pages = math.ceil(total / limit)
        pagination = {
            "page": page,
            "limit": limit,
            "total": total,
            "pages": pages,
            "has_next": page < pages,
            "has_previous": page > 1,
        }
        listed = await _listed(request.app, rows)
        body = {
            "data": listed,
            "pagination": pagination,
            "meta": {"timestamp": now_utc(), "count": len(listed), "total": total},
        }
        return json_response(body)
    if "offset" in request.query:
        offset = _int_param(request, "offset", 0, 0, 10_000_000)
        rows = await store.list_records(
            pool, f, sort=sort, desc=desc, offset=offset, limit=limit + 1, config=False
        )
        more = len(rows) > limit
        listed = await _listed(request.app, rows[:limit])
        meta: dict[str, Any] = {
            "count": len(listed),
            "has_more": more,
            "hasMore": more,
            "offset": offset,
            "next_offset": offset + limit if more else None,
        }
        return ok(listed, meta=meta)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor, sort, desc) if cursor and cursor != "0" else None
    rows = await store.list_records(pool, f, sort=sort, desc=desc, after=after, limit=limit + 1, config=False)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(sort, desc, rows[-1]) if more else None
    listed = await _listed(request.app, rows)
    meta = {"count": len(listed), "has_more": more, "next_cursor": nxt, "hasMore": more, "nextCursor": nxt}
    return ok(listed, meta=meta)


# ---- bulk ------------------------------------------------------------------------------


class BulkAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /monitors/bulk. `updates` (alias `settings`) is required for update."""

    action: Literal["pause", "resume", "delete", "update"]
    monitor_ids: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(min_length=1, max_length=MAX_BULK)]
    reason: Annotated[str, Meta(max_length=500)] | None = None
    updates: dict[str, Any] | None = None


class BulkUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /monitors/bulk: the same fields changed on many monitors, in one transaction."""

    monitor_ids: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(min_length=1, max_length=MAX_BULK)]
    updates: dict[str, Any]


BULK_ALIASES = {
    "ids": "monitor_ids",
    "monitorIds": "monitor_ids",
    "monitors": "monitor_ids",
    "settings": "updates",
    "data": "updates",
}


def _bulk_body(body: object, struct: type[Any]) -> Any:
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    try:
        return msgspec.convert({BULK_ALIASES.get(k, k): v for k, v in body.items()}, struct)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None


async def _bulk(
    request: web.Request, action: str, ids: list[int], reason: str | None, updates: dict[str, Any] | None
) -> web.Response:
    """All or nothing: every id is checked inside one transaction; any error rolls back."""
    ids = list(dict.fromkeys(ids))
    regions = request.app[keys.REGIONS].ids()
    now = now_utc()
    changed: list[dict[str, Any]] = []
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        rows = await store.get_many_for_update(conn, ids)
        errors: dict[str, object] = {
            f"monitor_ids[{i}]": "no such monitor" for i, mid in enumerate(ids) if mid not in rows
        }
        configs: dict[int, monitors.MonitorConfig] = {}
        if action == "update":
            for i, mid in enumerate(ids):
                if mid not in rows:
                    continue
                try:
                    cfg = merged_config(rows[mid], updates, regions=regions)
                    configs[mid] = await resolve_references(conn, cfg, allow_private=private_allowed(request))
                except ValidationError as e:
                    errors[f"monitor_ids[{i}]"] = {"monitor_id": mid, **e.details}
        if errors:
            raise ValidationError(errors, "bulk action rejected; nothing was changed")
        if action == "delete":
            await store.delete_many(conn, ids)
        for mid in ids:
            if action in ("pause", "resume"):
                changed.append(await pause_or_resume(conn, rows[mid], action == "pause", reason, now))
            elif action == "update":
                try:
                    row = await store.update(conn, mid, configs[mid])
                except asyncpg.ForeignKeyViolationError:
                    raise ValidationError({"updates.parent_id": "no such monitor"}) from None
                assert row is not None
                changed.append(row)
    for mid in ids:
        row = next((r for r in changed if r["id"] == mid), None)
        await _changed(request, row, mid)
    data = {
        "action": action,
        "monitor_ids": ids,
        "count": len(ids),
        "monitors": await _public_many(request, changed) if changed else [],
    }
    return ok(data)


async def bulk_action(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    req: BulkAction = _bulk_body(await read_json(request), BulkAction)
    if req.action == "update" and not req.updates:
        raise ValidationError({"updates": "required for the update action"})
    return await _bulk(request, req.action, req.monitor_ids, req.reason, req.updates)


async def bulk_update(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    req: BulkUpdate = _bulk_body(await read_json(request), BulkUpdate)
    return await _bulk(request, "update", req.monitor_ids, None, req.updates)


# ---- logs and history ------------------------------------------------------------------


def _span(request: web.Request) -> tuple[dt.datetime | None, dt.datetime | None]:
    q = request.query
    start = q.get("start_date") or q.get("from") or q.get("since") or q.get("start")
    end = q.get("end_date") or q.get("to") or q.get("until") or q.get("end")
    since = parse_time(start, "start_date") if start else None
    until = parse_time(end, "end_date", end=True) if end else None
    if since and until and since >= until:
        raise ValidationError({"end_date": "must be after start_date"})
    return since, until


def _region(request: web.Request) -> str | None:
    region = request.query.get("region") or request.query.get("location") or None
    if region is not None and region not in request.app[keys.REGIONS].ids():
        raise ValidationError({"region": "unknown region"})
    return region


def log_entry(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "checked_at": r.get("started_at") or r["due"],
        "due": r["due"],
        "region": r["region"],
        "attempt": r["attempt"],
        "on_demand": r["attempt"] == ondemand.ON_DEMAND_ATTEMPT,
        # A diagnosis run where the monitor went down: ok whenever it ran, not a check of it.
        "diagnostic": r["attempt"] == diagnostics.DIAGNOSTIC_ATTEMPT,
        "probe_id": r.get("probe_id"),
        "status": r["status"],
        "is_ok": r["status"] in ("ok", "degraded"),
        "reason": r["reason"],
        "error": r["message"] or None,
        "response_time": stats_store.ms(r["duration_ms"]),
        "status_code": r["status_code"],
        "timings": r.get("timings"),
    }


async def monitor_logs(request: web.Request) -> web.Response:
    """Raw per-region check results, newest first (the monitor's check log)."""
    await require(request, "monitors:read")
    monitor_id, _ = await _current(request)
    since, until = _span(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await result_store.recent(
        request.app[keys.POOL], monitor_id, limit=limit, since=since, until=until, region=_region(request)
    )
    return ok([log_entry(r) for r in rows], meta={"count": len(rows)})


async def monitor_results(request: web.Request) -> web.Response:
    """GET /monitors/{id}/results: the same log as /logs."""
    return await monitor_logs(request)


async def monitor_history(request: web.Request) -> web.Response:
    """Rounds newest first, each with its verdict and the result of every region."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor_id, _ = await _current(request)
    since, until = _span(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    region = _region(request)
    rounds = await store.rounds_between(pool, monitor_id, since=since, until=until, limit=limit)
    by_round: dict[tuple[dt.datetime, int], list[dict[str, Any]]] = {}
    for r in await store.results_of_rounds(pool, monitor_id, rounds):
        if region is None or r["region"] == region:
            by_round.setdefault((r["due"], r["attempt"]), []).append(log_entry(r))
    data = [
        {
            "due": r["due"],
            "attempt": r["attempt"],
            "status": r["verdict"] or "open",
            "is_ok": r["verdict"] in ("up", "degraded") if r["verdict"] else None,
            "regions": list(r["regions"]),
            "answered": list(r["answered"]),
            "closed_at": r["closed_at"],
            "results": sorted(by_round.get((r["due"], r["attempt"]), []), key=lambda x: x["region"]),
        }
        for r in rounds
    ]
    return ok(data, meta={"count": len(data)})


# ---- alert settings --------------------------------------------------------------------


class AlertSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Per-monitor alert settings, read by the notifications dispatcher."""

    email_enabled: bool = False
    email_recipients: Annotated[
        list[Annotated[str, Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)]], Meta(max_length=50)
    ] = []
    slack_enabled: bool = False
    alert_on_recovery: bool = True
    alert_threshold: Annotated[int, Meta(ge=1, le=100)] = 1


ALERT_ALIASES = {
    "emailEnabled": "email_enabled",
    "emailRecipients": "email_recipients",
    "slackEnabled": "slack_enabled",
    "alertOnRecovery": "alert_on_recovery",
    "alertThreshold": "alert_threshold",
    "recipients": "email_recipients",
}


async def get_alerts(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    monitor_id, _ = await _current(request)
    settings = await store.alert_settings(request.app[keys.POOL], monitor_id)
    return ok({"monitor_id": monitor_id, **settings})


async def put_alerts(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    monitor_id, _ = await _current(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    try:
        req = msgspec.convert({ALERT_ALIASES.get(k, k): v for k, v in body.items()}, AlertSettings)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None
    if req.email_enabled and not req.email_recipients:
        raise ValidationError({"email_recipients": "required when email_enabled is true"})
    try:
        settings = await store.put_alert_settings(
            request.app[keys.POOL], monitor_id, msgspec.to_builtins(req)
        )
    except asyncpg.ForeignKeyViolationError:
        raise not_found("monitor") from None
    return ok({"monitor_id": monitor_id, **settings})
