"""The OpenAPI 3.1 document, generated from the msgspec types that validate requests,
and a readable HTML rendering of it for /api/docs (self-contained: no CDN, no script).

Operations of this module's table are described in full. Every other route of the app
gets a generic entry (its handler's docstring, an object body, the envelope), so the
document always lists every endpoint; its owner can describe it here in full.
"""

from __future__ import annotations

import datetime as dt
import html
import inspect
from typing import Any

import msgspec
from aiohttp import web

from probefleet.controller.api import fleet, keys_api, regions
from probefleet.controller.api import monitors as monitors_api
from probefleet.controller.api import paths as api_paths
from probefleet.controller.monitors import config as monitors
from probefleet.shared.version import VERSION

REF = "#/components/schemas/{name}"
Schema = dict[str, Any]


# ---- response types (documentation of what the handlers return) -----------------------


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any]


class Error(msgspec.Struct, kw_only=True):
    """Every error: 400, 401, 403, 404, 409, 413, 422, 429."""

    error: ErrorBody


class Monitor(msgspec.Struct, kw_only=True):
    """A monitor: id, the common config, its kind's fields (url, method, host, port, ...
    as in the request), then its state. Uptimes are percentages, null without data."""

    id: int
    name: str
    type: str
    timeout: float
    check_interval: int
    locations: list[str]
    consensus: str
    quorum: int | None
    retry_count: int
    recovery_count: int
    is_enabled: bool
    tags: list[str]
    parent_id: int | None
    incident_on_degraded: bool
    project: str | None
    status: str
    is_ok: bool
    uptime_24h: float | None
    uptime_7d: float | None
    uptime_30d: float | None
    response_time: float | None
    last_check: dt.datetime | None
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    status_changed_at: dt.datetime | None
    paused_reason: str | None
    paused_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class RegionCheck(msgspec.Struct, kw_only=True):
    region: str
    status: str  # ok | degraded | fail | skipped | unavailable | no_answer
    is_ok: bool | None
    reason: str | None
    error: str | None
    response_time: float | None
    status_code: int | None
    probe_id: str | None
    checked_at: str | None


class CheckRun(msgspec.Struct, kw_only=True):
    monitor_id: int
    status: str  # the consensus verdict: up | down | degraded | unknown
    is_ok: bool
    response_time: float | None
    status_code: int | None
    checked_at: str
    error: str | None
    reason: str | None
    attempt: int
    regions: list[RegionCheck]


class LogEntry(msgspec.Struct, kw_only=True):
    checked_at: dt.datetime
    due: dt.datetime
    region: str
    attempt: int
    on_demand: bool
    probe_id: str | None
    status: str
    is_ok: bool
    reason: str | None
    error: str | None
    response_time: float
    status_code: int | None
    timings: Any = None


class HistoryEntry(msgspec.Struct, kw_only=True):
    due: dt.datetime
    attempt: int
    status: str  # the round's verdict, or open
    is_ok: bool | None
    regions: list[str]
    answered: list[str]
    closed_at: dt.datetime | None
    results: list[LogEntry]


class BulkResult(msgspec.Struct, kw_only=True):
    action: str
    monitor_ids: list[int]
    count: int
    monitors: list[Monitor]


class AlertSettingsOut(monitors_api.AlertSettings, kw_only=True):
    monitor_id: int
    updated_at: dt.datetime | None


class Pagination(msgspec.Struct, kw_only=True):
    page: int
    limit: int
    total: int
    pages: int
    has_next: bool
    has_previous: bool


class Health(msgspec.Struct, kw_only=True):
    status: str  # ok | degraded
    timestamp: dt.datetime


class HealthDetails(msgspec.Struct, kw_only=True):
    status: str
    version: str
    server_time: dt.datetime
    controller_id: str
    database: dict[str, Any]
    nats: dict[str, Any]
    scheduler: dict[str, Any]
    regions: list[dict[str, Any]]


TYPES: list[Any] = [
    monitors.MonitorCommon,
    *monitors.SPEC_TYPES.values(),
    monitors_api.PauseRequest,
    monitors_api.BulkAction,
    monitors_api.BulkUpdate,
    monitors_api.AlertSettings,
    AlertSettingsOut,
    keys_api.ApiKeyCreate,
    keys_api.ApiKey,
    keys_api.ApiKeyCreated,
    regions.WorkerRegion,
    regions.RegionCreate,
    regions.RegionUpdate,
    regions.Region,
    regions.RegionProbe,
    fleet.TokenCreate,
    fleet.EnrollmentToken,
    fleet.EnrollmentTokenCreated,
    fleet.EnrollRequest,
    fleet.Enrollment,
    Error,
    Monitor,
    CheckRun,
    LogEntry,
    HistoryEntry,
    BulkResult,
    Pagination,
    Health,
    HealthDetails,
]


def _describable(t: Any) -> Any:
    """`t`, or a same-named copy with `object` values read as Any (msgspec cannot describe
    `object`, which the wire structs use for free-form JSON such as graphql_variables)."""
    fields = msgspec.structs.fields(t)
    if not any("object" in repr(f.type) for f in fields):
        return t
    cfg = t.__struct_config__
    return msgspec.defstruct(
        t.__name__,
        [
            (
                f.name,
                Any if "object" in repr(f.type) else f.type,
                f.default
                if f.default is not msgspec.NODEFAULT
                else msgspec.field(default_factory=f.default_factory)
                if f.default_factory is not msgspec.NODEFAULT
                else msgspec.NODEFAULT,
            )
            for f in fields
        ],
        kw_only=True,
        tag=cfg.tag,
        tag_field=cfg.tag_field,
        module=t.__module__,
    )


def components() -> dict[str, Schema]:
    types = [_describable(t) for t in TYPES]
    _, comps = msgspec.json.schema_components(types, ref_template=REF)
    comps["MonitorInput"] = monitor_input(comps)
    return {name: _tidy(schema) for name, schema in sorted(comps.items())}


def _tidy(node: Any) -> Any:
    """Descriptions with their docstring indentation removed: msgspec 0.23 began to
    dedent them itself, so the document stays the same whichever version renders it."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _tidy(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def monitor_input(comps: dict[str, Schema]) -> Schema:
    """The flat monitor body: common fields beside the fields of every kind's spec (each
    kind accepts only its own; aliases such as target or interval are accepted too)."""
    props: dict[str, Schema] = dict(comps["MonitorCommon"]["properties"])
    for spec in monitors.SPEC_TYPES.values():
        for name, schema in comps[spec.__name__]["properties"].items():
            if name != "type":
                props.setdefault(name, schema)
    return {
        "title": "MonitorInput",
        "type": "object",
        "required": ["name"],
        "properties": props,
        "description": "Type names: "
        + ", ".join(monitors.KINDS)
        + "; aliases: "
        + ", ".join(f"{k}→{v}" for k, v in sorted(monitors.TYPE_ALIASES.items())),
    }


def ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def envelope(data: Schema, *, pagination: bool = False) -> Schema:
    props: dict[str, Schema] = {"data": data, "meta": {"type": "object"}}
    if pagination:
        props["pagination"] = ref("Pagination")
    return {"type": "object", "required": ["data"], "properties": props}


def many(name: str) -> Schema:
    return {"type": "array", "items": ref(name)}


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
REGION = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
PROBE_ID = {"name": "probe_id", "in": "path", "required": True, "schema": {"type": "string"}}


def q(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


LIMIT = q(
    "limit",
    "Page size (at most 100; logs and history up to 1000).",
    {"type": "integer", "minimum": 1, "maximum": 100},
)
SPAN = [
    q("start_date", "Start (ISO 8601 date or time; alias from)", {"type": "string", "format": "date"}),
    q(
        "end_date",
        "End, exclusive; a date covers its whole day (alias to)",
        {"type": "string", "format": "date"},
    ),
    q("region", "Only this region"),
    LIMIT,
]
LIST_PARAMS = [
    q(
        "status",
        "up, down, degraded, unknown, pending, paused; aliases online, offline, warning;"
        " comma-separated for several",
    ),
    q("type", "Monitor type or alias"),
    q("search", "Substring of the name, URL or host"),
    q("tag", "Monitors having every listed tag (comma-separated)"),
    q("project", "Project name (alias project_id)"),
    q("created_after", "ISO 8601 time", {"type": "string", "format": "date-time"}),
    q("is_enabled", "true or false", {"type": "boolean"}),
    q("sort", "field:asc|desc; field one of " + ", ".join(sorted(monitors_api.store.SORTS))),
    q("page", "Page number: page style, with a pagination object", {"type": "integer", "minimum": 1}),
    q(
        "offset",
        "Rows to skip: offset style, with meta.has_more and next_offset",
        {"type": "integer", "minimum": 0},
    ),
    q("cursor", "meta.next_cursor of the previous page: cursor style"),
    LIMIT,
]

# (method, path, operation id, summary, scope, request body, status, response, parameters)
Op = tuple[str, str, str, str, str | None, Schema | None, int, Schema | None, list[Schema]]
OPERATIONS: list[Op] = [
    ("get", "/api/v1/health", "health", "Health: ok or degraded (503)", None, None, 200, ref("Health"), []),
    (
        "get",
        "/api/v1/health/details",
        "healthDetails",
        "Database, NATS, scheduler, probes, version",
        "admin",
        None,
        200,
        envelope(ref("HealthDetails")),
        [],
    ),
    (
        "get",
        "/api/v1/worker-regions",
        "listWorkerRegions",
        "Configured regions and their live probes",
        "monitors:read",
        None,
        200,
        envelope(many("WorkerRegion")),
        [],
    ),
    (
        "get",
        "/api/v1/regions",
        "listRegions",
        "Regions with their live probes, capacity, use and versions",
        "monitors:read",
        None,
        200,
        envelope(many("Region")),
        [],
    ),
    (
        "post",
        "/api/v1/regions",
        "createRegion",
        "Create a region",
        "fleet:admin",
        ref("RegionCreate"),
        201,
        envelope(ref("Region")),
        [],
    ),
    (
        "get",
        "/api/v1/regions/{name}",
        "getRegion",
        "One region with its live figures",
        "monitors:read",
        None,
        200,
        envelope(ref("Region")),
        [REGION],
    ),
    (
        "patch",
        "/api/v1/regions/{name}",
        "updateRegion",
        "Change a region's labels (not its name)",
        "fleet:admin",
        ref("RegionUpdate"),
        200,
        envelope(ref("Region")),
        [REGION],
    ),
    (
        "delete",
        "/api/v1/regions/{name}",
        "deleteRegion",
        "Delete a region (409 while monitors use it or probes hold credentials for it)",
        "fleet:admin",
        None,
        204,
        None,
        [REGION],
    ),
    (
        "get",
        "/api/v1/regions/{name}/probes",
        "listRegionProbes",
        "The region's live probes and its enrolled ones",
        "fleet:admin",
        None,
        200,
        envelope(many("RegionProbe")),
        [REGION],
    ),
    (
        "post",
        "/api/v1/regions/{name}/enrollment-tokens",
        "createEnrollmentToken",
        "Create an enrollment token (the token is shown only here)",
        "fleet:admin",
        ref("TokenCreate"),
        201,
        envelope(ref("EnrollmentTokenCreated")),
        [REGION],
    ),
    (
        "get",
        "/api/v1/regions/{name}/enrollment-tokens",
        "listEnrollmentTokens",
        "The region's enrollment tokens, without secrets",
        "fleet:admin",
        None,
        200,
        envelope(many("EnrollmentToken")),
        [REGION],
    ),
    (
        "delete",
        "/api/v1/regions/{name}/enrollment-tokens/{id}",
        "revokeEnrollmentToken",
        "Revoke an enrollment token",
        "fleet:admin",
        None,
        204,
        None,
        [REGION, ID],
    ),
    (
        "post",
        "/api/v1/enroll",
        "enrollProbe",
        "Exchange an enrollment token (in the body or as Bearer) for a probe credential",
        None,
        ref("EnrollRequest"),
        201,
        envelope(ref("Enrollment")),
        [],
    ),
    (
        "delete",
        "/api/v1/probes/{probe_id}",
        "revokeProbe",
        "Revoke a probe's credential; NATS closes its connection",
        "fleet:admin",
        None,
        204,
        None,
        [PROBE_ID],
    ),
    (
        "post",
        "/api/v1/api-keys",
        "createApiKey",
        "Create a key (the full key is shown only here)",
        "keys:admin",
        ref("ApiKeyCreate"),
        201,
        envelope(ref("ApiKeyCreated")),
        [],
    ),
    (
        "get",
        "/api/v1/api-keys",
        "listApiKeys",
        "List keys (prefix, scopes, created, last used)",
        "keys:admin",
        None,
        200,
        envelope(many("ApiKey")),
        [],
    ),
    (
        "delete",
        "/api/v1/api-keys/{id}",
        "revokeApiKey",
        "Revoke a key at once",
        "keys:admin",
        None,
        204,
        None,
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors",
        "createMonitor",
        "Create a monitor",
        "monitors:write",
        ref("MonitorInput"),
        201,
        envelope(ref("Monitor")),
        [],
    ),
    (
        "get",
        "/api/v1/monitors",
        "listMonitors",
        "List monitors: filters, sort, page or cursor",
        "monitors:read",
        None,
        200,
        envelope(many("Monitor"), pagination=True),
        LIST_PARAMS,
    ),
    (
        "get",
        "/api/v1/monitors/{id}",
        "getMonitor",
        "One monitor",
        "monitors:read",
        None,
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "put",
        "/api/v1/monitors/{id}",
        "replaceMonitor",
        "Change the given fields, as PATCH does (clients send partial PUTs)",
        "monitors:write",
        {"type": "object"},
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "patch",
        "/api/v1/monitors/{id}",
        "updateMonitor",
        "Change some fields",
        "monitors:write",
        {"type": "object"},
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "delete",
        "/api/v1/monitors/{id}",
        "deleteMonitor",
        "Delete a monitor",
        "monitors:write",
        None,
        204,
        None,
        [ID],
    ),
    (
        "put",
        "/api/v1/monitors/{id}/config",
        "updateMonitorConfig",
        "Change settings without interrupting the schedule",
        "monitors:write",
        {"type": "object"},
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors/{id}/pause",
        "pauseMonitor",
        "Pause with an optional reason",
        "monitors:write",
        ref("PauseRequest"),
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors/{id}/resume",
        "resumeMonitor",
        "Resume",
        "monitors:write",
        ref("PauseRequest"),
        200,
        envelope(ref("Monitor")),
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors/{id}/check",
        "checkMonitor",
        "Run now in every region; per-region results",
        "monitors:write",
        None,
        200,
        envelope(ref("CheckRun")),
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors/{id}/test",
        "testMonitor",
        "Same as /check",
        "monitors:write",
        None,
        200,
        envelope(ref("CheckRun")),
        [ID],
    ),
    (
        "post",
        "/api/v1/monitors/bulk",
        "bulkMonitorAction",
        "pause, resume, delete or update many",
        "monitors:write",
        ref("BulkAction"),
        200,
        envelope(ref("BulkResult")),
        [],
    ),
    (
        "put",
        "/api/v1/monitors/bulk",
        "bulkUpdateMonitors",
        "Apply the same updates to many",
        "monitors:write",
        ref("BulkUpdate"),
        200,
        envelope(ref("BulkResult")),
        [],
    ),
    (
        "get",
        "/api/v1/monitors/{id}/logs",
        "monitorLogs",
        "Per-region check results, newest first",
        "monitors:read",
        None,
        200,
        envelope(many("LogEntry")),
        [ID, *SPAN],
    ),
    (
        "get",
        "/api/v1/monitors/{id}/results",
        "monitorResults",
        "Same as /logs",
        "monitors:read",
        None,
        200,
        envelope(many("LogEntry")),
        [ID, *SPAN],
    ),
    (
        "get",
        "/api/v1/monitors/{id}/history",
        "monitorHistory",
        "Rounds with verdicts and region results",
        "monitors:read",
        None,
        200,
        envelope(many("HistoryEntry")),
        [ID, *SPAN],
    ),
    (
        "get",
        "/api/v1/monitors/{id}/alerts",
        "getMonitorAlerts",
        "Alert settings",
        "monitors:read",
        None,
        200,
        envelope(ref("AlertSettingsOut")),
        [ID],
    ),
    (
        "put",
        "/api/v1/monitors/{id}/alerts",
        "putMonitorAlerts",
        "Replace alert settings",
        "monitors:write",
        ref("AlertSettings"),
        200,
        envelope(ref("AlertSettingsOut")),
        [ID],
    ),
]

SKIP = {"/api/v1/openapi.json", "/api/docs"}


def _operation(op: Op) -> Schema:
    method, path, op_id, summary, scope, body, status, response, params = op
    out: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [_tag(path)],
        "parameters": params,
        "responses": {},
    }
    if scope is None:
        out["security"] = []
    else:
        out["description"] = f"Scope: `{scope}` (or `admin`)."
    if body is not None:
        out["requestBody"] = {
            "required": method != "post" or not path.endswith(("pause", "resume")),
            "content": {"application/json": {"schema": body}},
        }
    ok: Schema = {"description": "Success"}
    if response is not None:
        ok["content"] = {"application/json": {"schema": response}}
    out["responses"][str(status)] = ok
    out["responses"]["default"] = {
        "description": "Error",
        "content": {"application/json": {"schema": ref("Error")}},
    }
    return out


def _tag(path: str) -> str:
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[1] == "api" else parts[1]


# Generic routes that answer something other than JSON, by path, with the type of their
# errors: the envelope (JSON), or HTML where a browser reads the page.
MEDIA: dict[str, tuple[str, ...]] = {
    "/": ("text/html", "application/json"),
    "/metrics": ("text/plain", "application/json"),
    "/status-assets/{name}": ("text/css", "text/javascript", "application/json"),
    "/status/{slug}": ("text/html",),
    "/status/{slug}/badge.svg": ("image/svg+xml", "application/json"),
    "/status/{slug}/confirm": ("text/html",),
    "/status/{slug}/subscribe": ("text/html",),
    "/status/{slug}/unsubscribe": ("text/html",),
    "/api/v1/monitors/{id}/badge.svg": ("image/svg+xml", "application/json"),
}


# Generic routes anyone may call (no key): the status pages and badges, heartbeat pings
# by token, Prometheus metrics.
ANONYMOUS_PATHS = ("/", "/metrics")
ANONYMOUS_PREFIXES = ("/status/", "/status-assets/", "/api/v1/heartbeat/")
ANONYMOUS_SUFFIXES = ("/public", "/subscribe", "/badge.svg")


def _anonymous(path: str) -> bool:
    return path in ANONYMOUS_PATHS or path.startswith(ANONYMOUS_PREFIXES) or path.endswith(ANONYMOUS_SUFFIXES)


def _generic(method: str, path: str, handler: Any) -> Schema:
    doc = inspect.getdoc(handler) or ""
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _path_params(path)
    ]
    out: Schema = {
        "operationId": f"{method}_{handler.__module__.rsplit('.', 1)[-1]}_{handler.__name__}",
        "summary": doc.splitlines()[0] if doc else handler.__name__.replace("_", " "),
        "tags": [_tag(path)],
        "parameters": params,
        "responses": {
            "default": {
                "description": "The response or an error",
                "content": {media: {"schema": {}} for media in MEDIA.get(path, ("application/json",))},
            }
        },
    }
    if _anonymous(path):
        out["security"] = []
    if method == "delete":
        out["responses"]["204"] = {"description": "Deleted"}
    if method in ("post", "put", "patch"):
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return out


def _path_params(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/") if seg.startswith("{")]


def document(app: web.Application) -> Schema:
    """The whole OpenAPI 3.1 document for the routes of `app`."""
    paths: dict[str, dict[str, Schema]] = {}
    described = set()
    for op in OPERATIONS:
        paths.setdefault(op[1], {})[op[0]] = _operation(op)
        described.add((op[0], op[1]))
    served = {str(r.resource.canonical) for r in app.router.routes() if r.resource}
    for route in app.router.routes():
        method, info = route.method.lower(), route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if method == "head" or not path:
            continue
        if path in SKIP or api_paths.is_alias(path, served) or (method, path) in described:
            continue
        paths.setdefault(path, {})[method] = _generic(method, path, route.handler)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "probefleet API",
            "version": VERSION,
            "description": "Distributed uptime monitoring. Success: {data, meta}; errors:"
            " {error: {code, message, details}}. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Bearer pf_…"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


# ---- HTML ------------------------------------------------------------------------------

CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:2.5rem}h3{margin:1.5rem 0 .3rem;font-size:1rem}
code,.m{font-family:ui-monospace,monospace}.m{display:inline-block;min-width:4.5rem;font-weight:bold}
.get{color:#1a7f37}.post{color:#0969da}.put,.patch{color:#9a6700}.delete{color:#cf222e}
table{border-collapse:collapse;margin:.3rem 0 1rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}nav a{margin-right:.8rem}"""


def _type(schema: Schema) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{name}">{name}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    t = schema.get("type", "any")
    if t == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(html.escape(repr(v)) for v in schema["enum"])
    return html.escape(str(t))


def _fields(schema: Schema) -> str:
    props = schema.get("properties", {})
    if not props:
        return f"<p>{_type(schema)}</p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{html.escape(n)}</code>{' *' if n in required else ''}</td>"
        f"<td>{_type(s)}</td><td>{html.escape(str(s.get('default', '')))}</td></tr>"
        for n, s in props.items()
    )
    return f"<table><tr><th>field</th><th>type</th><th>default</th></tr>{rows}</table>"


def render_html(doc: Schema) -> str:
    """The document as one static HTML page: every operation, then every schema."""
    out = [
        f"<!doctype html><html><head><meta charset=utf-8><title>probefleet API</title>"
        f"<style>{CSS}</style></head><body><h1>probefleet API {html.escape(doc['info']['version'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])}</p>"
        f'<p>Machine-readable: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a></p>'
    ]
    by_tag: dict[str, list[tuple[str, str, Schema]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    out.append("<nav>" + "".join(f'<a href="#tag-{t}">{t}</a>' for t in sorted(by_tag)) + "</nav>")
    for tag in sorted(by_tag):
        out.append(f'<h2 id="tag-{tag}">{html.escape(tag)}</h2>')
        for method, path, op in by_tag[tag]:
            out.append(
                f'<h3><span class="m {method}">{method.upper()}</span><code>{html.escape(path)}'
                f"</code></h3><p>{html.escape(op.get('summary', ''))}"
                f" {html.escape(op.get('description', ''))}</p>"
            )
            params = op.get("parameters", [])
            if params:
                rows = "".join(
                    f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{p['in']}</td>"
                    f"<td>{_type(p['schema'])}</td><td>{html.escape(p.get('description', ''))}"
                    f"</td></tr>"
                    for p in params
                )
                out.append(
                    f"<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>{rows}</table>"
                )
            if body := op.get("requestBody"):
                out.append(f"<p>Body: {_type(body['content']['application/json']['schema'])}</p>")
            for status, resp in op["responses"].items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                shown = _type(schema) if schema else "no body"
                out.append(f"<p>{html.escape(status)}: {shown}</p>")
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in doc["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{name}">{html.escape(name)}</h3>')
        if desc := schema.get("description"):
            out.append(f"<p>{html.escape(desc)}</p>")
        out.append(_fields(schema))
    out.append("</body></html>")
    return "\n".join(out)


_cache: dict[tuple[tuple[str, str], ...], tuple[bytes, str]] = {}


def _rendered(app: web.Application) -> tuple[bytes, str]:
    """Built once per route table (the document depends on nothing else)."""
    key = tuple((r.method, str(r.resource.canonical if r.resource else "")) for r in app.router.routes())
    if key not in _cache:
        doc = document(app)
        _cache[key] = (msgspec.json.encode(doc), render_html(doc))
    return _cache[key]


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document (anonymous)."""
    return web.Response(body=_rendered(request.app)[0], content_type="application/json")


async def api_docs(request: web.Request) -> web.Response:
    """The API reference as HTML (anonymous, works offline)."""
    return web.Response(text=_rendered(request.app)[1], content_type="text/html")
