"""/api/v1/incidents: list (filters, offset or cursor, CSV), get, trigger, acknowledge,
resolve, timeline. Every change writes its event in the same transaction."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api import common
from probefleet.controller.api.common import now_utc, ok, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.engine import incidents
from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT
from probefleet.controller.storage import DB, Tx
from probefleet.controller.storage import diagnostics as diagnostic_store
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import incidents as store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.validation import ValidationError, convert
from probefleet.shared.evidence import unpack_body

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_ALIASES = {"info": "low", "minor": "low", "warning": "medium", "major": "high", "sev1": "critical"}
FIELD_ALIASES = {
    "monitorId": "monitor_id",
    "externalTicketId": "external_ticket_id",
    "ticket_id": "external_ticket_id",
    "external_id": "external_ticket_id",
    "state": "status",
    "assigned_to": "assignee",
    "note": "notes",
    "incidentId": "incident_id",
}
Text = Annotated[str, Meta(max_length=2000)]
CSV_FIELDS = (
    "id",
    "monitor_id",
    "monitor_name",
    "title",
    "status",
    "severity",
    "started_at",
    "resolved_at",
    "duration",
    "root_cause",
    "affected_regions",
    "checks_failed",
    "checks_total",
    "external_ticket_id",
)


class TriggerBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    monitor_id: int | None = None
    title: Annotated[str, Meta(min_length=1, max_length=300)] | None = None
    severity: str = "high"
    external_ticket_id: Annotated[str, Meta(max_length=200)] | None = None
    notes: Text | None = None
    root_cause: Text | None = None


class PatchBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: str | None = None
    assignee: Annotated[str, Meta(max_length=200)] | None = None
    notes: Text | None = None
    severity: str | None = None
    title: Annotated[str, Meta(min_length=1, max_length=300)] | None = None
    external_ticket_id: Annotated[str, Meta(max_length=200)] | None = None


def public(row: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    end = row["resolved_at"] or now or now_utc()
    duration = round((end - row["started_at"]).total_seconds(), 3)
    return {
        "id": row["id"],
        "monitor_id": row["monitor_id"],
        "monitor_name": row["monitor_name"],
        "title": row["title"],
        "status": row["status"],
        "is_resolved": row["status"] == "resolved",
        "severity": row["severity"],
        "started_at": row["started_at"],
        "acknowledged_at": row["acknowledged_at"],
        "resolved_at": row["resolved_at"],
        "duration": duration,
        "mttr": duration if row["resolved_at"] else None,
        "root_cause": row["root_cause"],
        "root_cause_category": row["root_reason"],
        "affected_regions": list(row["affected_regions"]),
        "checks_failed": row["checks_failed"],
        "checks_total": row["checks_total"],
        "assignee": row["assignee"],
        "notes": row["notes"],
        "external_ticket_id": row["external_ticket_id"],
        "manual": row["manual"],
        "suppressed": row["suppressed"],
        "cause_monitor_id": row["cause_monitor_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _body(raw: object, struct: type[msgspec.Struct]) -> Any:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return convert({FIELD_ALIASES.get(str(k), str(k)): v for k, v in raw.items()}, struct)


def severity(value: str, field: str = "severity") -> str:
    s = value.lower()
    s = SEVERITY_ALIASES.get(s, s)
    if s not in SEVERITIES:
        raise ValidationError({field: f"must be one of {', '.join(SEVERITIES)}"})
    return s


def parse_time(
    request: web.Request, name: str, alias: str | None = None, *, end: bool = False
) -> dt.datetime | None:
    """An ISO 8601 time (naive means UTC) or a date; as an `end`, a date covers its whole day."""
    raw = request.query.get(name, request.query.get(alias) if alias else None)
    if raw is None:
        return None
    t = common.parse_time(raw, name)
    return t + dt.timedelta(days=1) if end and len(raw) == 10 else t


def int_param(
    request: web.Request, name: str, default: int | None, lo: int, hi: int, alias: str | None = None
) -> int | None:
    raw = request.query.get(name, request.query.get(alias) if alias else None)
    if raw is None:
        return default
    if (value := common.parse_int(raw, lo, hi)) is None:
        raise ValidationError({name: f"must be an integer from {lo} to {hi}"})
    return value


def _cursor(raw: str | None) -> tuple[dt.datetime, int] | None:
    if raw is None:
        return None
    try:
        ts, _, ident = raw.partition("_")
        at, last_id = dt.datetime.fromtimestamp(int(ts) / 1e6, dt.UTC), common.parse_int(ident)
    except (ValueError, OverflowError, OSError):
        at, last_id = None, None
    if at is None or last_id is None or not ts.isascii():
        raise ValidationError({"cursor": "invalid cursor"})
    return at, last_id


def _make_cursor(row: dict[str, Any]) -> str:
    return f"{round(row['started_at'].timestamp() * 1e6)}_{row['id']}"


async def list_incidents(request: web.Request) -> web.Response:
    await require(request, "incidents:read")
    status = request.query.get("status", "all")
    if status not in ("active", "resolved", "all"):
        raise ValidationError({"status": "must be active, resolved or all"})
    limit = int_param(request, "limit", 50, 1, 100) or 50
    offset = int_param(request, "offset", 0, 0, 1_000_000) or 0
    monitor_id = int_param(request, "monitor_id", None, 1, 2**62, alias="monitorId")
    cursor = _cursor(request.query.get("cursor"))
    pool = request.app[keys.POOL]
    rows = await store.list_page(
        pool,
        monitor_id=monitor_id,
        status=status,
        since=parse_time(request, "from", "start_date"),
        until=parse_time(request, "to", "end_date", end=True),
        limit=limit + 1,
        offset=offset,
        before=cursor,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    now = now_utc()
    items = [public(r, now) for r in rows]
    if request.query.get("format") == "csv":
        return _csv(items)
    meta = {
        "count": len(items),
        "has_more": more,
        "next_cursor": _make_cursor(rows[-1]) if more else None,
        "mttr": await store.mttr_seconds(pool, monitor_id),
    }
    return ok(items, meta=meta)


def _csv(items: list[dict[str, Any]]) -> web.Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for item in items:
        row = {k: item[k] for k in CSV_FIELDS}
        row["affected_regions"] = " ".join(item["affected_regions"])
        for k in ("started_at", "resolved_at"):
            row[k] = incidents.iso(item[k]) or ""
        writer.writerow(row)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="incidents.csv"'},
    )


EVIDENCE_LIMIT = 100


def _window(row: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    return row["started_at"], row["resolved_at"] or now_utc()


def public_failure(r: dict[str, Any]) -> dict[str, Any]:
    """One failed result; its evidence with the body as text, whether the probe sent it
    compressed or, before it did, as text (shared/evidence.py)."""
    evidence = r["evidence"]
    return {
        "due": r["due"],
        "attempt": r["attempt"],
        "region": r["region"],
        "probe_id": r["probe_id"],
        "reason": r["reason"],
        "phase": incidents.PHASE_OF.get(r["reason"] or "", "other"),
        "message": r["message"],
        "status_code": r["status_code"],
        "duration_ms": r["duration_ms"],
        "timings": r["timings"] or {},
        "evidence": unpack_body(evidence) if isinstance(evidence, dict) else evidence,
    }


def public_diagnostic(r: dict[str, Any]) -> dict[str, Any]:
    """One region's diagnosis: when it ran, its summary, the traceroute hops, the DNS
    answer and resolver, the TLS chain (probe/checkers/diagnose.py)."""
    details = r["details"] or {}
    return {
        "region": r["region"],
        "probe_id": r["probe_id"],
        "status": r["status"],
        "due": r["due"],
        "ran_at": r["started_at"],
        "duration_ms": r["duration_ms"],
        "summary": r["message"],
        "target": details.get("target"),
        "port": details.get("port"),
        "traceroute": details.get("traceroute"),
        "dns": details.get("dns"),
        "tls": details.get("tls"),
    }


async def _diagnostics(conn: DB, row: dict[str, Any]) -> list[dict[str, Any]]:
    if row["monitor_id"] is None:
        return []
    start, end = _window(row)
    rows = await diagnostic_store.for_monitor(conn, row["monitor_id"], DIAGNOSTIC_ATTEMPT, start, end)
    return [public_diagnostic(r) for r in rows]


async def get_incident(request: web.Request) -> web.Response:
    """The incident, and why: the region x phase matrix of its failed results, the first
    failed result with its evidence, the failing regions' diagnostics, and the timeline."""
    await require(request, "incidents:read")
    pool = request.app[keys.POOL]
    row = await store.get(pool, path_id(request, what="incident"))
    if row is None:
        raise not_found("incident")
    out = public(row)
    out["matrix"], out["first_failure"] = {"phases": [], "regions": {}}, None
    if row["monitor_id"] is not None:
        start, end = _window(row)
        out["matrix"] = incidents.phase_matrix(
            await store.failures_by_region(pool, row["monitor_id"], start, end)
        )
        first = await store.failed_results(pool, row["monitor_id"], start, end, 1)
        out["first_failure"] = public_failure(first[0]) if first else None
    out["diagnostics"] = await _diagnostics(pool, row)
    out["timeline"] = await store.timeline(pool, row["id"])
    return ok(out)


async def incident_evidence(request: web.Request) -> web.Response:
    """Every failed result of the incident (first EVIDENCE_LIMIT), oldest first, with its
    phase and evidence; the regions' diagnostics in `meta.diagnostics`."""
    await require(request, "incidents:read")
    pool = request.app[keys.POOL]
    row = await store.get(pool, path_id(request, what="incident"))
    if row is None:
        raise not_found("incident")
    if row["monitor_id"] is None:
        return ok([], meta={"truncated": False, "diagnostics": []})
    start, end = _window(row)
    rows = await store.failed_results(pool, row["monitor_id"], start, end, EVIDENCE_LIMIT + 1)
    meta = {"truncated": len(rows) > EVIDENCE_LIMIT, "diagnostics": await _diagnostics(pool, row)}
    return ok([public_failure(r) for r in rows[:EVIDENCE_LIMIT]], meta=meta)


async def _monitor(conn: Tx, monitor_id: int | None) -> dict[str, Any] | None:
    return await monitor_store.get(conn, monitor_id) if monitor_id is not None else None


async def trigger_incident(request: web.Request) -> web.Response:
    """A manual incident: for a monitor (at most one open per monitor) or standalone. With
    `incident_id` it changes that incident as PATCH /incidents/{id} does, so a client can
    trigger, acknowledge and resolve through this one endpoint."""
    await require(request, "incidents:write")
    raw = await read_json(request)
    if isinstance(raw, dict) and ("incident_id" in raw or "incidentId" in raw):
        fields = {FIELD_ALIASES.get(str(k), str(k)): v for k, v in raw.items()}
        incident_id = fields.pop("incident_id")
        if not isinstance(incident_id, int) or isinstance(incident_id, bool) or incident_id < 1:
            raise ValidationError({"incident_id": "must be an incident id"})
        return await _change(
            request, incident_id, fields, missing=ValidationError({"incident_id": "no such incident"})
        )
    body: TriggerBody = _body(raw, TriggerBody)
    sev = severity(body.severity)
    now = now_utc()
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        monitor = await _monitor(conn, body.monitor_id)
        if body.monitor_id is not None and monitor is None:
            raise ValidationError({"monitor_id": "no such monitor"})
        if monitor is None and body.title is None:
            raise ValidationError({"title": "required when no monitor_id is given"})
        title = body.title or f"{monitor['name'] if monitor else ''} incident"
        incident_id = await store.open_incident(
            conn,
            monitor_id=body.monitor_id,
            title=title,
            severity=sev,
            started_at=now,
            root_cause=body.root_cause,
            manual=True,
            external_ticket_id=body.external_ticket_id,
            notes=body.notes,
        )
        if incident_id is None:
            raise ApiError(409, "conflict", "this monitor already has an open incident")
        await store.add_timeline(
            conn,
            incident_id,
            now,
            "opened",
            "triggered manually",
            {"external_ticket_id": body.external_ticket_id},
        )
        row = await store.get(conn, incident_id)
        assert row is not None
        await incidents.emit(conn, "incident.opened", now, monitor=monitor, incident=row)
    return ok(public(row), status=201)


async def patch_incident(request: web.Request) -> web.Response:
    await require(request, "incidents:write")
    incident_id = path_id(request, what="incident")
    return await _change(request, incident_id, await read_json(request), missing=not_found("incident"))


async def _change(
    request: web.Request, incident_id: int, raw: object, *, missing: ApiError | ValidationError
) -> web.Response:
    body: PatchBody = _body(raw, PatchBody)
    if body.status not in (None, "acknowledged", "resolved", "active"):
        raise ValidationError({"status": "must be acknowledged or resolved"})
    fields = {
        k: getattr(body, k)
        for k in ("assignee", "notes", "title", "external_ticket_id")
        if getattr(body, k) is not None
    }
    if body.severity is not None:
        fields["severity"] = severity(body.severity)
    now = now_utc()
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        row = await store.get(conn, incident_id)
        if row is None:
            raise missing
        monitor = await _monitor(conn, row["monitor_id"])
        row = await change_incident(conn, row, monitor, body.status, fields, now)
    return ok(public(row))


async def change_incident(
    conn: Tx,
    row: dict[str, Any],
    monitor: dict[str, Any] | None,
    status: str | None,
    fields: dict[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    incident_id = row["id"]
    if status in ("acknowledged", "resolved", "active") and row["status"] == "resolved":
        if status != "resolved" or fields:
            raise ApiError(409, "conflict", "the incident is already resolved")
        return row
    if status == "active" and row["status"] != "active":
        raise ApiError(409, "conflict", "an acknowledged incident cannot go back to active")
    if fields:
        await store.update_fields(conn, incident_id, now, fields)
    kind = None
    if status == "acknowledged" and row["status"] == "active":
        acked = await store.acknowledge(conn, incident_id, now, fields.get("assignee"), fields.get("notes"))
        if acked is None:
            raise ApiError(409, "conflict", "the incident changed meanwhile; retry")
        kind = "incident.acknowledged"
        await store.add_timeline(
            conn,
            incident_id,
            now,
            "acknowledged",
            fields.get("notes") or "",
            {"assignee": fields.get("assignee")},
        )
    elif status == "resolved":
        if await store.resolve(conn, incident_id, now) is None:
            raise ApiError(409, "conflict", "the incident changed meanwhile; retry")
        kind = "incident.resolved"
        note = fields.get("notes") or "resolved manually"
        await store.add_timeline(conn, incident_id, now, "resolved", note)
    elif fields:
        kind = "incident.updated"
        await store.add_timeline(conn, incident_id, now, "updated", "", msgspec.to_builtins(fields))
    new = await store.get(conn, incident_id)
    assert new is not None
    if kind is not None:
        extra = {"assignee": new["assignee"]} if kind == "incident.acknowledged" else None
        await incidents.emit(conn, kind, now, monitor=monitor, incident=new, extra=extra)
    return new


async def incident_timeline(request: web.Request) -> web.Response:
    await require(request, "incidents:read")
    pool = request.app[keys.POOL]
    incident_id = path_id(request, what="incident")
    if await store.get(pool, incident_id) is None:
        raise not_found("incident")
    entries = await store.timeline(pool, incident_id)
    events = await event_store.list_page(pool, incident_id=incident_id, limit=1000)
    brief = [{"id": e["id"], "kind": e["kind"], "occurred_at": e["occurred_at"]} for e in events]
    return ok({"entries": entries, "events": brief})
