"""The OpenAPI 3.1 document of every route, and the interactive reference at /api/docs.

Schemas come from the msgspec types that validate the requests (msgspec writes their JSON
Schema) and from the response types of probefleet.client.models, which the API client
decodes into too, beside the few request types declared here for handlers that validate
by hand; the table OPERATIONS names, for every route, its operationId, parameters, body
and responses. A route missing from the table still appears, untyped, and
tests/controller/api/test_openapi.py fails on any untyped operation, so the document
cannot silently fall behind the routes.

Why a generator of our own: the aiohttp OpenAPI libraries (aiohttp-apispec and its
forks, aiohttp-pydantic) describe marshmallow or pydantic models and want their own
handler classes or decorators; our types are msgspec structs, and msgspec already writes
their JSON Schema. What is left is this module: the table (most of its length) and a
couple of hundred lines that assemble the document.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Literal, NamedTuple

import msgspec
from aiohttp import web

from probefleet.client.models import (
    ApiKey,
    ApiKeyCreated,
    BulkResult,
    Channel,
    ChannelTest,
    CheckRun,
    Delivery,
    DeliveryAttempt,
    Diagnostic,
    Error,
    Event,
    FailedResult,
    Health,
    HealthDetails,
    Heartbeat,
    HistoryEntry,
    Incident,
    IncidentDetail,
    IncidentTimeline,
    LogEntry,
    MaintenanceWindow,
    Meta,
    Monitor,
    MonitorStats,
    MonitorStatus,
    Pagination,
    Ping,
    PingReceived,
    Post,
    PublicPage,
    Region,
    RegionProbe,
    Rule,
    SlaReport,
    StatsReport,
    StatusPage,
    Subscribed,
    Subscriber,
    Subscription,
    WorkerRegion,
)
from probefleet.controller.api import apply as config_api
from probefleet.controller.api import fleet, incidents, keys_api, maintenance, regions, users
from probefleet.controller.api import monitors as monitors_api
from probefleet.controller.api import notifications as notifications_api
from probefleet.controller.api import paths as api_paths
from probefleet.controller.api.errors import ApiError
from probefleet.controller.console import editors as console_forms
from probefleet.controller.console import pages as console_paths
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.status_pages.config import (
    StatusPageColors,
    StatusPageInput,
    StatusPageUpdate,
)
from probefleet.shared.version import VERSION

REF = "#/components/schemas/{name}"
Schema = dict[str, Any]


# ---- response types (what the handlers return) ----------------------------------------


class AlertSettingsOut(monitors_api.AlertSettings, kw_only=True):
    monitor_id: int
    updated_at: dt.datetime | None


class EventPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: Literal["resolved"] = "resolved"


class HeartbeatInput(heartbeat.HeartbeatSpec, kw_only=True, forbid_unknown_fields=True):
    """A heartbeat monitor: pinged by the job it watches, every `run_interval` seconds or
    at `cron` in `tz`; late by more than `grace_period` seconds means down."""

    name: monitors.Name
    tags: list[monitors.Tag] = []
    is_enabled: bool = True


class HeartbeatUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields to change; sending `cron` clears `run_interval` and back."""

    name: monitors.Name | None = None
    run_interval: int | None = None
    grace_period: int | None = None
    cron: str | None = None
    tz: str | None = None
    tags: list[monitors.Tag] | None = None
    is_enabled: bool | None = None


PostState = Literal["investigating", "identified", "monitoring", "resolved"]


class PostInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: str
    message: str
    status: PostState = "investigating"


class PostUpdateInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message: str
    status: PostState = "investigating"


class SubscribeForm(msgspec.Struct, kw_only=True):
    email: str
    components: list[int] = []


class UnlockForm(msgspec.Struct, kw_only=True):
    password: str


class SubscribeInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either `email` or `webhook_url`; `components` (ids of the page's components) limits
    the state notices to those (omitted or empty: all). Posts reach every subscriber."""

    email: str | None = None
    webhook_url: str | None = None
    components: list[int] | None = None


TYPES: list[Any] = [
    monitors.MonitorCommon,
    *monitors.SPEC_TYPES.values(),
    monitors_api.PauseRequest,
    monitors_api.BulkAction,
    monitors_api.BulkUpdate,
    monitors_api.AlertSettings,
    AlertSettingsOut,
    config_api.ApplyRequest,
    config_api.Plan,
    keys_api.ApiKeyCreate,
    ApiKey,
    ApiKeyCreated,
    users.UserCreate,
    users.UserUpdate,
    users.User,
    users.AuditEntry,
    WorkerRegion,
    regions.RegionCreate,
    regions.RegionUpdate,
    Region,
    RegionProbe,
    fleet.TokenCreate,
    fleet.EnrollmentToken,
    fleet.EnrollmentTokenCreated,
    fleet.EnrollRequest,
    fleet.Enrollment,
    incidents.TriggerBody,
    incidents.PatchBody,
    maintenance.WindowBody,
    notifications_api.ChannelBody,
    notifications_api.RuleBody,
    Error,
    Meta,
    Monitor,
    CheckRun,
    LogEntry,
    HistoryEntry,
    BulkResult,
    Pagination,
    Health,
    HealthDetails,
    Incident,
    IncidentDetail,
    FailedResult,
    Diagnostic,
    IncidentTimeline,
    Event,
    EventPatch,
    MonitorStatus,
    MaintenanceWindow,
    HeartbeatInput,
    HeartbeatUpdate,
    Heartbeat,
    Ping,
    PingReceived,
    Channel,
    ChannelTest,
    Delivery,
    DeliveryAttempt,
    Rule,
    Subscription,
    StatusPageColors,
    StatusPageInput,
    StatusPageUpdate,
    StatusPage,
    PostInput,
    PostUpdateInput,
    Post,
    Subscriber,
    SubscribeInput,
    SubscribeForm,
    UnlockForm,
    Subscribed,
    PublicPage,
    MonitorStats,
    StatsReport,
    SlaReport,
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
    comps.update(monitor_inputs(comps))
    return {name: _tidy(schema) for name, schema in sorted(comps.items())}


def _tidy(node: Any) -> Any:
    """Descriptions with their docstring indentation removed (msgspec 0.23 began to dedent
    them itself, so the document stays the same whichever version renders it), and fixed
    pairs (`tuple[str, str]`) as arrays of two: `items: false` beside `prefixItems` is
    valid JSON Schema that client generators cannot read."""
    if isinstance(node, dict):
        if "prefixItems" in node and node.get("items") is False:
            first = node["prefixItems"][0]
            if all(p == first for p in node["prefixItems"]):
                node = {k: v for k, v in node.items() if k not in ("prefixItems", "items")}
                node["items"] = first
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _tidy(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _aliases_of(kind: str) -> list[str]:
    return sorted(a for a, k in monitors.TYPE_ALIASES.items() if k == kind)


ALIASES_NOTE = (
    "Also accepted, and read as the field after the arrow: "
    + ", ".join(f"`{k}` → `{v}`" for k, v in sorted(monitors.FIELD_ALIASES.items()))
    + "; `json_path` with `expected_json_value` → one more `json_assertions` item;"
    " `headers` as a JSON string of an object."
)


def _kind_fields(comps: dict[str, Schema], kind: str) -> tuple[dict[str, Schema], list[str]]:
    """The API fields of one kind's spec (wire names that clash renamed) and the required ones."""
    if kind == "heartbeat":
        spec = comps["HeartbeatInput"]
        skip = {"name", "tags", "is_enabled"}
        return {k: v for k, v in spec["properties"].items() if k not in skip}, []
    spec = comps[monitors.SPEC_TYPES[kind].__name__]
    renames = monitors.SPEC_API_NAMES.get(kind, {})
    props = {renames.get(k, k): v for k, v in spec["properties"].items() if k != "type"}
    required = [renames.get(k, k) for k in spec.get("required", []) if k != "type"]
    return props, required


def monitor_inputs(comps: dict[str, Schema]) -> dict[str, Schema]:
    """The monitor body: one schema per kind (the common fields and that kind's own, each
    default one the server accepts), joined by `oneOf` on `type`; and the partial body of
    an update, every field optional and without defaults (the stored values stay)."""
    common = comps["MonitorCommon"]
    common_props = {k: v for k, v in common["properties"].items() if k != "type"}
    common_props["consensus"] = {**common_props["consensus"], "enum": list(monitors.MODES)}
    out: dict[str, Schema] = {}
    mapping: dict[str, str] = {}
    every: dict[str, Schema] = {}
    for kind in monitors.KINDS:
        name = f"{kind.capitalize()}MonitorInput"
        props, required = _kind_fields(comps, kind)
        names = [kind, *_aliases_of(kind)]
        out[name] = {
            "title": name,
            "type": "object",
            "description": f"A {kind} monitor. Type names {', '.join(names)} all mean {kind}.",
            "properties": {"type": {"type": "string", "enum": names}, **common_props, **props},
            "required": ["type", "name", *required],
        }
        for n in names:
            mapping[n] = REF.format(name=name)
        for k, v in props.items():
            every.setdefault(k, v)
    out["MonitorInput"] = {
        "title": "MonitorInput",
        "description": "A monitor of one kind, chosen by `type`. " + ALIASES_NOTE,
        "oneOf": [{"$ref": REF.format(name=f"{k.capitalize()}MonitorInput")} for k in monitors.KINDS],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    update_props = {k: _without_defaults(v) for k, v in {**common_props, **every}.items()}
    out["MonitorUpdate"] = {
        "title": "MonitorUpdate",
        "type": "object",
        "description": "The fields to change; the rest keep their values. A monitor takes"
        " only its own kind's fields (the type cannot change). " + ALIASES_NOTE,
        "properties": update_props,
    }
    return out


def _without_defaults(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if k != "default"}


def ref(name: str) -> Schema:
    return {"$ref": REF.format(name=name)}


def envelope(data: Schema, *, pagination: bool = False) -> Schema:
    props: dict[str, Schema] = {"data": data, "meta": ref("Meta")}
    if pagination:
        props["pagination"] = ref("Pagination")
    return {"type": "object", "required": ["data", "meta"], "properties": props}


def many(name: str) -> Schema:
    return {"type": "array", "items": ref(name)}


def path(name: str, schema: Schema | None = None, description: str = "") -> Schema:
    out: Schema = {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}
    if description:
        out["description"] = description
    return out


def q(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def integer(lo: int = 1, hi: int | None = None) -> Schema:
    out: Schema = {"type": "integer", "minimum": lo}
    if hi is not None:
        out["maximum"] = hi
    return out


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


ID = path("id", integer())
MONITOR_ID = path("monitor_id", integer(), "A monitor's id")
POST_ID = path("post_id", integer())
SUBSCRIBER_ID = path("subscriber_id", integer())
REGION = path("name", description="A region's name")
PROBE_ID = path("probe_id")
SLUG = path("slug", description="The status page's slug")
TOKEN = path("token", description="The heartbeat's ping token")
SIGNAL = path(
    "signal",
    {"type": "string", "pattern": "^(start|fail|log|[0-9]{1,3})$"},
    "start, fail, log, or the exit code 0-255",
)
ASSET = path("name", enum("status.css", "status.js", "theme.js"))
CURSOR = q("cursor", "`meta.next_cursor` of the previous page")


def limit(hi: int = 100, default: int = 50) -> Schema:
    return q("limit", f"Page size, 1 to {hi} (default {default})", integer(1, hi))


TIME = {"type": "string", "format": "date-time"}
SPAN = [
    q("start_date", "Start (ISO 8601 date or time; alias from)", {"type": "string", "format": "date"}),
    q(
        "end_date",
        "End, exclusive; a date covers its whole day (alias to)",
        {"type": "string", "format": "date"},
    ),
    q("region", "Only this region"),
    limit(1000, 100),
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
    q("created_after", "ISO 8601 time", TIME),
    q("is_enabled", "true or false", {"type": "boolean"}),
    q("sort", "field:asc|desc; field one of " + ", ".join(sorted(monitors_api.store.SORTS))),
    q("page", "Page number: page style, with a pagination object", integer()),
    q("offset", "Rows to skip: offset style, with meta.has_more and next_offset", integer(0)),
    CURSOR,
    limit(),
]
RANGE = [
    q("from", "Start: ISO 8601 time or Unix seconds", TIME),
    q("to", "End, exclusive: ISO 8601 time or Unix seconds (default now)", TIME),
]
GRANULARITY = q("granularity", "Step of the series", enum("5m", "1h", "1d"))
BADGE_LABEL = q("label", "Text on the badge's left half", {"type": "string", "maxLength": 100})


class Op(NamedTuple):
    """One operation: `body` and `response` are schemas; `response` None means no body."""

    method: str
    path: str
    id: str
    summary: str
    scope: str | None
    body: Schema | None = None
    status: int = 200
    response: Schema | None = None
    params: list[Schema] = []
    media: str = "application/json"
    body_media: str = "application/json"
    body_required: bool = True
    description: str = ""
    csv: bool = False  # with ?format=csv the same rows as text/csv


def json_op(
    method: str,
    route: str,
    op_id: str,
    summary: str,
    scope: str | None,
    data: Schema | None,
    *,
    body: Schema | None = None,
    status: int = 200,
    params: list[Schema] | None = None,
    body_required: bool = True,
    description: str = "",
) -> Op:
    """An operation answering the {data, meta} envelope around `data` (None: 204, no body)."""
    return Op(
        method,
        route,
        op_id,
        summary,
        scope,
        body,
        status if data is not None else 204,
        envelope(data) if data is not None else None,
        params or [],
        body_required=body_required,
        description=description,
    )


def _list(name: str) -> Schema:
    return many(name)


MONITOR = ref("Monitor")
BINARY = {"type": "string", "format": "binary"}

OPERATIONS: list[Op] = [
    # --- health and regions
    Op(
        "get",
        "/api/v1/health",
        "health_get",
        "Health: ok, or degraded with a 503",
        None,
        None,
        200,
        ref("Health"),
    ),
    json_op(
        "get",
        "/api/v1/health/details",
        "health_details",
        "Database, NATS, scheduler, probes, version",
        "admin",
        ref("HealthDetails"),
    ),
    Op(
        "get",
        "/metrics",
        "metrics_get",
        "Prometheus metrics",
        None,
        None,
        200,
        {"type": "string"},
        media="text/plain",
    ),
    json_op(
        "get",
        "/api/v1/worker-regions",
        "worker_regions_list",
        "Configured regions and their live probes",
        "monitors:read",
        _list("WorkerRegion"),
    ),
    json_op(
        "get",
        "/api/v1/regions",
        "regions_list",
        "Regions with their live probes, capacity, use and versions",
        "monitors:read",
        _list("Region"),
    ),
    json_op(
        "post",
        "/api/v1/regions",
        "regions_create",
        "Create a region",
        "fleet:admin",
        ref("Region"),
        body=ref("RegionCreate"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/regions/{name}",
        "regions_get",
        "One region with its live figures",
        "monitors:read",
        ref("Region"),
        params=[REGION],
    ),
    json_op(
        "patch",
        "/api/v1/regions/{name}",
        "regions_update",
        "Change a region's labels (not its name)",
        "fleet:admin",
        ref("Region"),
        body=ref("RegionUpdate"),
        params=[REGION],
    ),
    json_op(
        "delete",
        "/api/v1/regions/{name}",
        "regions_delete",
        "Delete a region (409 while monitors use it or probes hold credentials for it)",
        "fleet:admin",
        None,
        params=[REGION],
    ),
    json_op(
        "get",
        "/api/v1/regions/{name}/probes",
        "regions_probes",
        "The region's live probes and its enrolled ones",
        "fleet:admin",
        _list("RegionProbe"),
        params=[REGION],
    ),
    json_op(
        "post",
        "/api/v1/regions/{name}/enrollment-tokens",
        "enrollment_tokens_create",
        "Create an enrollment token (the token is shown only here)",
        "fleet:admin",
        ref("EnrollmentTokenCreated"),
        body=ref("TokenCreate"),
        status=201,
        params=[REGION],
    ),
    json_op(
        "get",
        "/api/v1/regions/{name}/enrollment-tokens",
        "enrollment_tokens_list",
        "The region's enrollment tokens, without secrets",
        "fleet:admin",
        _list("EnrollmentToken"),
        params=[REGION],
    ),
    json_op(
        "delete",
        "/api/v1/regions/{name}/enrollment-tokens/{id}",
        "enrollment_tokens_revoke",
        "Revoke an enrollment token",
        "fleet:admin",
        None,
        params=[REGION, ID],
    ),
    json_op(
        "post",
        "/api/v1/enroll",
        "probes_enroll",
        "Exchange an enrollment token (in the body or as Bearer) for a probe credential",
        None,
        ref("Enrollment"),
        body=ref("EnrollRequest"),
        status=201,
    ),
    json_op(
        "delete",
        "/api/v1/probes/{probe_id}",
        "probes_revoke",
        "Revoke a probe's credential; NATS closes its connection",
        "fleet:admin",
        None,
        params=[PROBE_ID],
    ),
    # --- API keys
    json_op(
        "post",
        "/api/v1/api-keys",
        "api_keys_create",
        "Create a key (the full key is shown only here)",
        "keys:admin",
        ref("ApiKeyCreated"),
        body=ref("ApiKeyCreate"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/api-keys",
        "api_keys_list",
        "List keys (prefix, scopes, created, last used)",
        "keys:admin",
        _list("ApiKey"),
    ),
    json_op(
        "delete",
        "/api/v1/api-keys/{id}",
        "api_keys_revoke",
        "Revoke a key at once",
        "keys:admin",
        None,
        params=[ID],
    ),
    # --- console users and the audit log
    json_op("get", "/api/v1/users", "users_list", "List console users (no password)", "admin", _list("User")),
    json_op(
        "post",
        "/api/v1/users",
        "users_create",
        "Create a console user (the password is stored as an argon2id hash)",
        "admin",
        ref("User"),
        body=ref("UserCreate"),
        status=201,
    ),
    json_op(
        "patch",
        "/api/v1/users/{id}",
        "users_update",
        "Change a user's role or password, or disable them (ends their sessions); 409 for the last admin",
        "admin",
        ref("User"),
        body=ref("UserUpdate"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/users/{id}",
        "users_delete",
        "Delete a console user; 409 for the last enabled admin",
        "admin",
        {"type": "object", "properties": {"id": integer(), "deleted": {"type": "boolean"}}},
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/audit",
        "audit_list",
        "Who changed what: every successful state-changing request with its key or user, newest first",
        "admin",
        _list("AuditEntry"),
        params=[
            limit(200, 50),
            CURSOR,
            q("actor", "Only this actor: key:<prefix> or user:<name>"),
        ],
    ),
    # --- config as code
    json_op(
        "post",
        "/api/v1/apply",
        "config_apply",
        "Apply a set of resources by stable key and owner, in one transaction; the plan",
        "monitors:write",
        ref("Plan"),
        body=ref("ApplyRequest"),
        description="All or nothing: a refused resource rolls back the set, its error names it by key"
        " (`monitors[<key>].<field>`). With `dry_run` the plan only (scopes `monitors:read`, and"
        " `notifications:read` with channels, rules or prune); `notifications:write` is needed with"
        " channels, rules or prune. docs/config-as-code.md.",
    ),
    json_op(
        "get",
        "/api/v1/export",
        "config_export",
        "The live configuration in config-as-code file form (secrets as <redacted>)",
        "monitors:read",
        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        params=[
            q("owner", "Only the resources this owner applied"),
            q("tag", "Only monitors with this tag"),
            q("type", "Only monitors of this type", enum(*monitors.KINDS)),
        ],
    ),
    Op(
        "get",
        "/api/v1/config-schema.json",
        "config_schema",
        "The JSON Schema of config-as-code files",
        None,
        None,
        200,
        {"type": "object"},
        media="application/schema+json",
    ),
    # --- config as code
    json_op(
        "post",
        "/api/v1/apply",
        "config_apply",
        "Apply a set of resources by stable key and owner, in one transaction; the plan",
        "monitors:write",
        ref("Plan"),
        body=ref("ApplyRequest"),
        description="All or nothing: a refused resource rolls back the set, its error names it by key"
        " (`monitors[<key>].<field>`). With `dry_run` the plan only (scopes `monitors:read`, and"
        " `notifications:read` with channels, rules or prune); `notifications:write` is needed with"
        " channels, rules or prune. docs/config-as-code.md.",
    ),
    json_op(
        "get",
        "/api/v1/export",
        "config_export",
        "The live configuration in config-as-code file form (secrets as <redacted>)",
        "monitors:read",
        {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        params=[
            q("owner", "Only the resources this owner applied"),
            q("tag", "Only monitors with this tag"),
            q("type", "Only monitors of this type", enum(*monitors.KINDS)),
        ],
    ),
    Op(
        "get",
        "/api/v1/config-schema.json",
        "config_schema",
        "The JSON Schema of config-as-code files",
        None,
        None,
        200,
        {"type": "object"},
        media="application/schema+json",
    ),
    # --- monitors
    json_op(
        "post",
        "/api/v1/monitors",
        "monitors_create",
        "Create a monitor",
        "monitors:write",
        MONITOR,
        body=ref("MonitorInput"),
        status=201,
    ),
    Op(
        "get",
        "/api/v1/monitors",
        "monitors_list",
        "List monitors: filters, sort, page or cursor",
        "monitors:read",
        None,
        200,
        envelope(_list("Monitor"), pagination=True),
        LIST_PARAMS,
    ),
    json_op(
        "get", "/api/v1/monitors/{id}", "monitors_get", "One monitor", "monitors:read", MONITOR, params=[ID]
    ),
    json_op(
        "put",
        "/api/v1/monitors/{id}",
        "monitors_replace",
        "Change the given fields, as PATCH does (clients send partial PUTs)",
        "monitors:write",
        MONITOR,
        body=ref("MonitorUpdate"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/monitors/{id}",
        "monitors_update",
        "Change some fields",
        "monitors:write",
        MONITOR,
        body=ref("MonitorUpdate"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/monitors/{id}",
        "monitors_delete",
        "Delete a monitor",
        "monitors:write",
        None,
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/monitors/{id}/config",
        "monitors_config_update",
        "Change settings without interrupting the schedule",
        "monitors:write",
        MONITOR,
        body=ref("MonitorUpdate"),
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/monitors/{id}/pause",
        "monitors_pause",
        "Pause, with an optional reason",
        "monitors:write",
        MONITOR,
        body=ref("PauseRequest"),
        params=[ID],
        body_required=False,
    ),
    json_op(
        "post",
        "/api/v1/monitors/{id}/resume",
        "monitors_resume",
        "Resume",
        "monitors:write",
        MONITOR,
        body=ref("PauseRequest"),
        params=[ID],
        body_required=False,
    ),
    json_op(
        "post",
        "/api/v1/monitors/{id}/check",
        "monitors_check",
        "Run now in every region; the verdict and each region's result",
        "monitors:write",
        ref("CheckRun"),
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/monitors/{id}/test",
        "monitors_test",
        "Same as /check",
        "monitors:write",
        ref("CheckRun"),
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/monitors/bulk",
        "monitors_bulk_action",
        "Pause, resume, delete or update many monitors at once (all or nothing)",
        "monitors:write",
        ref("BulkResult"),
        body=ref("BulkAction"),
    ),
    json_op(
        "put",
        "/api/v1/monitors/bulk",
        "monitors_bulk_update",
        "Apply the same changes to many monitors (all or nothing)",
        "monitors:write",
        ref("BulkResult"),
        body=ref("BulkUpdate"),
    ),
    json_op(
        "get",
        "/api/v1/monitors/{id}/logs",
        "monitors_logs",
        "Each region's check results, newest first",
        "monitors:read",
        _list("LogEntry"),
        params=[ID, *SPAN],
    ),
    json_op(
        "get",
        "/api/v1/monitors/{id}/results",
        "monitors_results",
        "Same as /logs",
        "monitors:read",
        _list("LogEntry"),
        params=[ID, *SPAN],
    ),
    json_op(
        "get",
        "/api/v1/monitors/{id}/history",
        "monitors_history",
        "Rounds with their verdicts and each region's result",
        "monitors:read",
        _list("HistoryEntry"),
        params=[ID, *SPAN],
    ),
    json_op(
        "get",
        "/api/v1/monitors/{id}/alerts",
        "monitors_alerts_get",
        "Alert settings",
        "monitors:read",
        ref("AlertSettingsOut"),
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/monitors/{id}/alerts",
        "monitors_alerts_put",
        "Replace alert settings",
        "monitors:write",
        ref("AlertSettingsOut"),
        body=ref("AlertSettings"),
        params=[ID],
    ),
    Op(
        "get",
        "/api/v1/monitors/{id}/badge.svg",
        "monitors_badge",
        "The monitor's state as an SVG badge",
        None,
        None,
        200,
        BINARY,
        [ID, BADGE_LABEL, q("api_key", "A key with monitors:read, when no public page shows the monitor")],
        media="image/svg+xml",
        description="Anonymous when a public status page shows the monitor; otherwise a key"
        " with `monitors:read` (header or `api_key`), else 404.",
    ),
    # --- statistics
    json_op(
        "get",
        "/api/v1/monitors/{id}/stats",
        "monitors_stats",
        "Uptime, response times, checks and incidents over a period, per region",
        "monitors:read",
        ref("MonitorStats"),
        params=[ID, q("period", "The period up to now", enum("24h", "7d", "30d", "90d")), GRANULARITY],
    ),
    json_op(
        "get",
        "/api/v1/analytics/{monitor_id}",
        "monitors_analytics",
        "The same report over any range (default: the last 24 hours)",
        "monitors:read",
        ref("StatsReport"),
        params=[MONITOR_ID, *RANGE, GRANULARITY],
    ),
    json_op(
        "get",
        "/api/v1/status/{monitor_id}",
        "monitors_status",
        "Current state, each region's last result, and the last 24 hours' numbers",
        "monitors:read",
        ref("MonitorStatus"),
        params=[MONITOR_ID],
    ),
    Op(
        "get",
        "/api/v1/reports/sla",
        "reports_sla",
        "Per monitor: uptime, downtime, incidents, MTTR and MTBF over a range (default 30 days)",
        "monitors:read",
        None,
        200,
        envelope(ref("SlaReport")),
        [*RANGE, q("format", "json, or csv for a spreadsheet", enum("json", "csv"))],
        csv=True,
    ),
    # --- incidents and events
    Op(
        "get",
        "/api/v1/incidents",
        "incidents_list",
        "Incidents, newest first: filters, offset or cursor; CSV with format=csv",
        "incidents:read",
        None,
        200,
        envelope(_list("Incident")),
        [
            q("status", "active, resolved or all", enum("active", "resolved", "all")),
            q("monitor_id", "Only this monitor's (alias monitorId)", integer()),
            q("from", "Still open at or after this time (alias start_date)", TIME),
            q("to", "Started before this time (alias end_date)", TIME),
            q("offset", "Rows to skip", integer(0, 1_000_000)),
            CURSOR,
            limit(),
            q("format", "json, or csv for a spreadsheet", enum("json", "csv")),
        ],
        csv=True,
    ),
    json_op(
        "post",
        "/api/v1/incidents",
        "incidents_create",
        "Open an incident by hand",
        "incidents:write",
        ref("Incident"),
        body=ref("TriggerBody"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/incidents/{id}",
        "incidents_get",
        "One incident and why: region x phase matrix, first failed result with its evidence,"
        " the failing regions' diagnostics, timeline",
        "incidents:read",
        ref("IncidentDetail"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/incidents/{id}",
        "incidents_update",
        "Acknowledge (status acknowledged), resolve (status resolved) or annotate",
        "incidents:write",
        ref("Incident"),
        body=ref("PatchBody"),
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/incidents/{id}/evidence",
        "incidents_evidence",
        "The incident's failed results (first 100, oldest first) with their phase and evidence;"
        " `meta.truncated` when there were more; `meta.diagnostics` the failing regions' diagnostics"
        " (Diagnostic: traceroute, DNS answer and resolver, TLS chain)",
        "incidents:read",
        _list("FailedResult"),
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/incidents/{id}/timeline",
        "incidents_timeline",
        "What happened, in order, and the events the incident wrote",
        "incidents:read",
        ref("IncidentTimeline"),
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/events",
        "events_list",
        "State changes, oldest first, with a cursor",
        "incidents:read",
        _list("Event"),
        params=[
            q("cursor", "`meta.next_cursor` of the previous page (an event id)", integer(0)),
            limit(),
            q("kind", "Event kinds, comma-separated (monitor.down, incident.resolved, ...)"),
            q("monitor_id", "Only this monitor's (alias monitorId)", integer()),
            q("incident_id", "Only this incident's (alias incidentId)", integer()),
            q("from", "At or after this time", TIME),
            q("to", "Before this time", TIME),
        ],
    ),
    json_op(
        "get", "/api/v1/events/{id}", "events_get", "One event", "incidents:read", ref("Event"), params=[ID]
    ),
    json_op(
        "patch",
        "/api/v1/events/{id}",
        "events_resolve",
        "Resolve the incident this event belongs to (events themselves never change)",
        "incidents:write",
        ref("Event"),
        body=ref("EventPatch"),
        params=[ID],
        body_required=False,
    ),
    # --- maintenance windows
    json_op(
        "post",
        "/api/v1/maintenance-windows",
        "maintenance_windows_create",
        "Create a maintenance window (one-off, or recurring on days at a time)",
        "monitors:write",
        ref("MaintenanceWindow"),
        body=ref("WindowBody"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/maintenance-windows",
        "maintenance_windows_list",
        "Maintenance windows",
        "monitors:read",
        _list("MaintenanceWindow"),
    ),
    json_op(
        "get",
        "/api/v1/maintenance-windows/{id}",
        "maintenance_windows_get",
        "One maintenance window",
        "monitors:read",
        ref("MaintenanceWindow"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/maintenance-windows/{id}",
        "maintenance_windows_update",
        "Change some fields",
        "monitors:write",
        ref("MaintenanceWindow"),
        body={"type": "object", "description": "Any fields of WindowBody", "properties": {}},
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/maintenance-windows/{id}",
        "maintenance_windows_replace",
        "Replace the window",
        "monitors:write",
        ref("MaintenanceWindow"),
        body=ref("WindowBody"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/maintenance-windows/{id}",
        "maintenance_windows_delete",
        "Delete a maintenance window",
        "monitors:write",
        None,
        params=[ID],
    ),
    # --- heartbeats
    json_op(
        "post",
        "/api/v1/heartbeats",
        "heartbeats_create",
        "Create a heartbeat monitor; its token and ping URL are shown only here",
        "monitors:write",
        ref("Heartbeat"),
        body=ref("HeartbeatInput"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/heartbeats",
        "heartbeats_list",
        "Heartbeat monitors, with a cursor",
        "monitors:read",
        _list("Heartbeat"),
        params=[limit(), q("cursor", "`meta.next_cursor` of the previous page", integer(0))],
    ),
    json_op(
        "get",
        "/api/v1/heartbeats/{id}",
        "heartbeats_get",
        "One heartbeat monitor",
        "monitors:read",
        ref("Heartbeat"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/heartbeats/{id}",
        "heartbeats_update",
        "Change some fields",
        "monitors:write",
        ref("Heartbeat"),
        body=ref("HeartbeatUpdate"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/heartbeats/{id}",
        "heartbeats_delete",
        "Delete a heartbeat monitor",
        "monitors:write",
        None,
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/heartbeats/{id}/token",
        "heartbeats_rotate_token",
        "A new token; the old one stops working at once",
        "monitors:write",
        ref("Heartbeat"),
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/heartbeats/{id}/ping",
        "heartbeats_ping",
        "Ping with an API key instead of the token",
        "monitors:write",
        ref("PingReceived"),
        params=[ID, q("rid", "Run id, pairing a start ping with its end")],
    ),
    json_op(
        "post",
        "/api/v1/monitors/{id}/heartbeat",
        "monitors_heartbeat_ping",
        "Ping a heartbeat monitor with an API key",
        "monitors:write",
        ref("PingReceived"),
        params=[ID, q("rid", "Run id, pairing a start ping with its end")],
    ),
    json_op(
        "get",
        "/api/v1/heartbeats/{id}/pings",
        "heartbeats_pings",
        "Pings received, newest first, with a cursor",
        "monitors:read",
        _list("Ping"),
        params=[ID, limit(1000, 100), CURSOR],
    ),
    *[
        Op(
            method,
            route,
            f"heartbeat_ping{'_signal' if signal else ''}_{method}",
            "Ping by token" + (": start, fail, log or an exit code" if signal else ": success"),
            None,
            BINARY if method == "post" else None,
            200,
            envelope(ref("PingReceived")),
            [TOKEN, *([SIGNAL] if signal else []), q("rid", "Run id, pairing a start ping with its end")],
            body_media="application/octet-stream",
            body_required=False,
            description="The body, if any, is kept as the ping's log excerpt.",
        )
        for signal, route in (
            (False, "/api/v1/heartbeat/{token}"),
            (True, "/api/v1/heartbeat/{token}/{signal}"),
        )
        for method in ("get", "post")
    ],
    # --- notifications
    json_op(
        "post",
        "/api/v1/notification-channels",
        "channels_create",
        "Create a channel (email, slack, webhook, ...)",
        "notifications:write",
        ref("Channel"),
        body=ref("ChannelBody"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/notification-channels",
        "channels_list",
        "Channels",
        "notifications:read",
        _list("Channel"),
    ),
    json_op(
        "get",
        "/api/v1/notification-channels/{id}",
        "channels_get",
        "One channel",
        "notifications:read",
        ref("Channel"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/notification-channels/{id}",
        "channels_update",
        "Change some fields (secrets left out stay as they are)",
        "notifications:write",
        ref("Channel"),
        body={"type": "object", "description": "Any fields of ChannelBody", "properties": {}},
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/notification-channels/{id}",
        "channels_replace",
        "Replace the channel (secrets sent as <redacted> stay as they are)",
        "notifications:write",
        ref("Channel"),
        body=ref("ChannelBody"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/notification-channels/{id}",
        "channels_delete",
        "Delete a channel",
        "notifications:write",
        None,
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/notification-channels/{id}/test",
        "channels_test",
        "Send a test notification now (even to a disabled channel)",
        "notifications:write",
        ref("ChannelTest"),
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/notification-channels/{id}/deliveries",
        "channels_deliveries",
        "The channel's deliveries, newest first, with a cursor",
        "notifications:read",
        _list("Delivery"),
        params=[
            ID,
            limit(),
            q("cursor", "`meta.next_cursor` of the previous page", integer(0)),
            q("status", "Only deliveries in this state"),
        ],
    ),
    json_op(
        "get",
        "/api/v1/delivery-attempts",
        "delivery_attempts_list",
        "The delivery log: every attempt to send a notification (channel, event, outcome,"
        " HTTP status, error, duration), newest first, with a cursor",
        "notifications:read",
        _list("DeliveryAttempt"),
        params=[
            limit(),
            q("cursor", "`meta.next_cursor` of the previous page", integer(1)),
            q("incident_id", "Only attempts for this incident's notifications", integer(1)),
            q("channel_id", "Only attempts to this channel", integer(1)),
            q(
                "outcome",
                "Only attempts with this outcome",
                {"type": "string", "enum": ["delivered", "failed", "dead", "cancelled"]},
            ),
        ],
    ),
    json_op(
        "post",
        "/api/v1/notification-rules",
        "rules_create",
        "Create a routing rule (which events go to which channels)",
        "notifications:write",
        ref("Rule"),
        body=ref("RuleBody"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/notification-rules",
        "rules_list",
        "Routing rules",
        "notifications:read",
        _list("Rule"),
    ),
    json_op(
        "get",
        "/api/v1/notification-rules/{id}",
        "rules_get",
        "One rule",
        "notifications:read",
        ref("Rule"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/notification-rules/{id}",
        "rules_update",
        "Change some fields",
        "notifications:write",
        ref("Rule"),
        body={"type": "object", "description": "Any fields of RuleBody", "properties": {}},
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/notification-rules/{id}",
        "rules_replace",
        "Replace the rule",
        "notifications:write",
        ref("Rule"),
        body=ref("RuleBody"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/notification-rules/{id}",
        "rules_delete",
        "Delete a rule",
        "notifications:write",
        None,
        params=[ID],
    ),
    # --- live updates
    Op(
        "get",
        "/api/v1/ws",
        "events_websocket",
        "Live events over a WebSocket",
        "monitors:read",
        None,
        101,
        None,
        description="Upgrade to a WebSocket; each message is an event as in /api/v1/events.",
    ),
    # --- subscription (self-hosted: no billing)
    json_op(
        "get",
        "/api/v1/subscription",
        "subscription_get",
        "The plan and current usage",
        "monitors:read",
        ref("Subscription"),
    ),
    *[
        json_op(
            "post",
            route,
            op_id,
            summary + ": always 409, a self-hosted installation has no billing",
            "monitors:read",
            ref("Subscription"),
            body={"type": "object", "properties": {}},
            body_required=False,
        )
        for route, op_id, summary in (
            ("/api/v1/subscription", "subscription_cancel", "Cancel"),
            ("/api/v1/subscription/checkout", "subscription_checkout", "Checkout session"),
            ("/api/v1/subscription/portal", "subscription_portal", "Billing portal session"),
        )
    ],
    # --- status pages (admin)
    json_op(
        "post",
        "/api/v1/status-pages",
        "status_pages_create",
        "Create a status page",
        "status_pages:write",
        ref("StatusPage"),
        body=ref("StatusPageInput"),
        status=201,
    ),
    json_op(
        "get",
        "/api/v1/status-pages",
        "status_pages_list",
        "Status pages, with a cursor",
        "status_pages:read",
        _list("StatusPage"),
        params=[limit(), q("cursor", "`meta.next_cursor` of the previous page", integer(0))],
    ),
    json_op(
        "get",
        "/api/v1/status-pages/{id}",
        "status_pages_get",
        "One status page",
        "status_pages:read",
        ref("StatusPage"),
        params=[ID],
    ),
    json_op(
        "put",
        "/api/v1/status-pages/{id}",
        "status_pages_replace",
        "Replace the page's settings",
        "status_pages:write",
        ref("StatusPage"),
        body=ref("StatusPageInput"),
        params=[ID],
    ),
    json_op(
        "patch",
        "/api/v1/status-pages/{id}",
        "status_pages_update",
        "Change some settings",
        "status_pages:write",
        ref("StatusPage"),
        body=ref("StatusPageUpdate"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/status-pages/{id}",
        "status_pages_delete",
        "Delete a status page",
        "status_pages:write",
        None,
        params=[ID],
    ),
    json_op(
        "get",
        "/api/v1/status-pages/{id}/posts",
        "status_pages_posts_list",
        "The page's incident posts, newest first",
        "status_pages:read",
        _list("Post"),
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/status-pages/{id}/posts",
        "status_pages_posts_create",
        "Publish an incident post",
        "status_pages:write",
        ref("Post"),
        body=ref("PostInput"),
        status=201,
        params=[ID],
    ),
    json_op(
        "post",
        "/api/v1/status-pages/{id}/posts/{post_id}/updates",
        "status_pages_posts_add_update",
        "Add an update to a post",
        "status_pages:write",
        ref("Post"),
        body=ref("PostUpdateInput"),
        status=201,
        params=[ID, POST_ID],
    ),
    json_op(
        "post",
        "/api/v1/status-page-posts/{post_id}/updates",
        "status_page_posts_add_update",
        "Add an update to a post, by the post's id alone",
        "status_pages:write",
        ref("Post"),
        body=ref("PostUpdateInput"),
        status=201,
        params=[POST_ID],
    ),
    json_op(
        "get",
        "/api/v1/status-pages/{id}/subscribers",
        "status_pages_subscribers_list",
        "The page's subscribers",
        "status_pages:read",
        _list("Subscriber"),
        params=[ID],
    ),
    json_op(
        "delete",
        "/api/v1/status-pages/{id}/subscribers/{subscriber_id}",
        "status_pages_subscribers_delete",
        "Remove a subscriber",
        "status_pages:write",
        None,
        params=[ID, SUBSCRIBER_ID],
    ),
    # --- status pages (visitors)
    json_op(
        "get",
        "/api/v1/status-pages/{slug}/public",
        "status_pages_public",
        "What a visitor sees, as JSON",
        None,
        ref("PublicPage"),
        params=[SLUG],
    ),
    json_op(
        "post",
        "/api/v1/status-pages/{slug}/subscribe",
        "status_pages_subscribe",
        "Subscribe to the page's updates by email or webhook (confirmed by a link)",
        None,
        ref("Subscribed"),
        body=ref("SubscribeInput"),
        status=202,
        params=[SLUG],
    ),
    Op(
        "get",
        "/",
        "custom_domain_page",
        "The operator console (without a session: to /login); on a status page's custom domain, that page",
        None,
        None,
        200,
        {"type": "string"},
        media="text/html",
    ),
    Op(
        "post",
        "/",
        "custom_domain_unlock",
        "The password form of a private page on a custom domain",
        None,
        ref("UnlockForm"),
        200,
        {"type": "string"},
        media="text/html",
        body_media="application/x-www-form-urlencoded",
    ),
    Op(
        "get",
        "/status-assets/{name}",
        "status_pages_asset",
        "The pages' stylesheet and script",
        None,
        None,
        200,
        {"type": "string"},
        [ASSET],
        media="text/css",
    ),
    Op(
        "get",
        "/status/{slug}",
        "status_pages_html",
        "The status page",
        None,
        None,
        200,
        {"type": "string"},
        [SLUG],
        media="text/html",
    ),
    Op(
        "post",
        "/status/{slug}",
        "status_pages_unlock",
        "The password form of a private page",
        None,
        ref("UnlockForm"),
        200,
        {"type": "string"},
        [SLUG],
        media="text/html",
        body_media="application/x-www-form-urlencoded",
    ),
    Op(
        "get",
        "/status/{slug}/events",
        "status_pages_stream",
        "Live updates of the page as server-sent events",
        None,
        None,
        200,
        {"type": "string"},
        [SLUG, q("last_event_id", "Resume after this event (or the Last-Event-ID header)")],
        media="text/event-stream",
    ),
    Op(
        "get",
        "/status/{slug}/badge.svg",
        "status_pages_badge",
        "The page's state, or one component's state or uptime, as an SVG badge",
        None,
        None,
        200,
        BINARY,
        [
            SLUG,
            BADGE_LABEL,
            q("component", "A component's id"),
            q("type", "uptime: the component's 90-day uptime instead of its state", enum("uptime")),
        ],
        media="image/svg+xml",
    ),
    Op(
        "get",
        "/status/{slug}/theme.css",
        "status_pages_stylesheet",
        "The page's own stylesheet: its colours and custom CSS",
        None,
        None,
        200,
        {"type": "string"},
        [SLUG, q("v", "A version, changed with the stylesheet (ignored)")],
        media="text/css",
    ),
    Op(
        "get",
        "/status/{slug}/logo",
        "status_pages_logo",
        "The page's logo (PNG, JPEG, GIF, WebP or SVG)",
        None,
        None,
        200,
        BINARY,
        [SLUG, q("v", "A version, changed with the logo (ignored)")],
        media="image/*",
    ),
    Op(
        "get",
        "/status/{slug}/history",
        "status_pages_history",
        "The incident archive: every post, newest first, 20 a page",
        None,
        None,
        200,
        {"type": "string"},
        [SLUG, q("page", "The page of the archive, from 1", integer(1, 100_000))],
        media="text/html",
    ),
    Op(
        "get",
        "/status/{slug}/feed.atom",
        "status_pages_feed",
        "An Atom feed of the page's incident posts (the newest 50)",
        None,
        None,
        200,
        BINARY,
        [SLUG],
        media="application/atom+xml",
    ),
    Op(
        "post",
        "/status/{slug}/subscribe",
        "status_pages_subscribe_form",
        "The subscribe form: sends a confirmation link",
        None,
        ref("SubscribeForm"),
        200,
        {"type": "string"},
        [SLUG],
        media="text/html",
        body_media="application/x-www-form-urlencoded",
    ),
    Op(
        "get",
        "/status/{slug}/confirm",
        "status_pages_confirm",
        "The confirmation link of a subscription",
        None,
        None,
        200,
        {"type": "string"},
        [SLUG, q("token", "The token of the link")],
        media="text/html",
    ),
    *[
        Op(
            method,
            "/status/{slug}/unsubscribe",
            f"status_pages_unsubscribe_{method}",
            "The unsubscribe link" + (" (one-click unsubscribe by mail clients)" if method == "post" else ""),
            None,
            None,
            200,
            {"type": "string"},
            [SLUG, q("token", "The token of the link")],
            media="text/html",
        )
        for method in ("get", "post")
    ],
]


# The console's pages (HTML for people; `/` is listed as the custom-domain page it also is).
SKIP = {
    "/api/v1/openapi.json",
    "/api/docs",
    "/api/docs/{name}",
    *console_paths.PATHS,
    *console_forms.PATHS,
}
ERRORS = {
    "400": "The body or a parameter cannot be read",
    "401": "No key, or a key that is not valid",
    "403": "The key lacks the scope",
    "404": "No such resource",
    "409": "Conflicts with the resource's state",
    "413": "Body too large",
    "422": "Invalid fields: `details` names each with what is wrong",
    "429": "Too many requests: wait `Retry-After` seconds",
}
NO_BODY = {101: "Switching protocols", 204: "Done, no content"}


def _error_codes(op: Op) -> list[str]:
    codes = ["429"]
    if op.body is not None or any(p["in"] == "query" for p in op.params):
        codes += ["400", "422"]
    if op.body is not None:
        codes.append("413")
    if op.scope is not None:
        codes += ["401", "403"]
    if any(p["in"] == "path" for p in op.params):
        codes.append("404")
    if op.method in ("post", "put", "patch", "delete"):
        codes.append("409")
    return sorted(set(codes))


def _content(media: str, schema: Schema) -> Schema:
    medias = {"text/css": ("text/css", "text/javascript")}.get(media, (media,))
    return {m: {"schema": schema} for m in medias}


# Deprecated operations, (method, path) to the day they were deprecated (docs/api.md,
# Versioning). They keep working within /api/v1: the document marks them, and every answer
# carries `Deprecation: @<unix time>` (RFC 9745) with a link to the policy.
DEPRECATED: dict[tuple[str, str], dt.date] = {}
POLICY = "/api/docs"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def deprecated(handler: Handler, since: dt.date) -> Handler:
    """`handler` with the Deprecation and Link headers on its answers and its ApiErrors."""
    stamp = int(dt.datetime.combine(since, dt.time(), dt.UTC).timestamp())
    headers = {"Deprecation": f"@{stamp}", "Link": f'<{POLICY}>; rel="deprecation"'}

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(headers)
            raise
        except ApiError as e:
            e.headers = {**(e.headers or {}), **headers}
            raise
        response.headers.update(headers)
        return response

    return wrapped


def _operation(op: Op) -> Schema:
    out: Schema = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [_tag(op.path)],
        "parameters": op.params,
        "responses": {},
    }
    if (op.method, op.path) in DEPRECATED:
        out["deprecated"] = True
    description = op.description
    if op.scope is None:
        out["security"] = []
    else:
        description = f"{description} Needs the scope `{op.scope}` (or `admin`).".strip()
    if description:
        out["description"] = description
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _content(op.body_media, op.body)}
    ok: Schema = {"description": NO_BODY.get(op.status, "Success")}
    if op.response is not None:
        ok["content"] = _content(op.media, op.response)
    if op.csv:
        ok["content"]["text/csv"] = {"schema": {"type": "string"}}
    out["responses"][str(op.status)] = ok
    error = {"application/json": {"schema": ref("Error")}}
    if op.media == "text/html":
        error = {"text/html": {"schema": {"type": "string"}}, **error}
    for code in _error_codes(op):
        out["responses"][code] = {"description": ERRORS[code], "content": error}
    out["responses"]["default"] = {"description": "Another error", "content": error}
    return out


def _tag(route: str) -> str:
    parts = route.split("/")
    if len(parts) > 3 and parts[1] == "api":
        return TAG_OF.get(parts[3], parts[3])
    return "health" if parts[1] == "metrics" else "status-pages"


# Path segments whose operations are listed under another resource's tag.
TAG_OF = {
    "apply": "config",
    "export": "config",
    "config-schema.json": "config",
    "audit": "users",
    "heartbeat": "heartbeats",
    "status": "monitors",
    "analytics": "monitors",
    "enroll": "regions",
    "probes": "regions",
    "worker-regions": "regions",
    "ws": "events",
    "status-page-posts": "status-pages",
    "delivery-attempts": "notification-channels",
}


def _generic(method: str, route: str, handler: Any) -> Schema:
    """A route missing from OPERATIONS: listed, untyped (the tests fail on it)."""
    doc = inspect.getdoc(handler) or ""
    return {
        "operationId": f"{handler.__module__.rsplit('.', 1)[-1]}_{handler.__name__}_{method}",
        "summary": doc.splitlines()[0] if doc else handler.__name__.replace("_", " "),
        "tags": [_tag(route)],
        "parameters": [path(p) for p in _path_params(route)],
        "responses": {
            "default": {"description": "Not described yet", "content": {"application/json": {"schema": {}}}}
        },
    }


def _path_params(route: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in route.split("/") if seg.startswith("{")]


def untyped(doc: Schema) -> list[str]:
    """Operations with a parameter, body or response whose schema is missing or empty
    (a response without content is fine for 101 and 204 only)."""
    bad = []
    for route, methods in doc["paths"].items():
        for method, op in methods.items():
            schemas = [p.get("schema") for p in op.get("parameters", [])]
            schemas += [c.get("schema") for c in op.get("requestBody", {}).get("content", {}).values()]
            for status, resp in op["responses"].items():
                content = resp.get("content")
                if content is None and status not in ("101", "204"):
                    schemas.append(None)
                schemas += [c.get("schema") for c in (content or {}).values()]
            if any(not s for s in schemas):
                bad.append(f"{method.upper()} {route}")
    return bad


def document(app: web.Application) -> Schema:
    """The whole OpenAPI 3.1 document for the routes of `app`."""
    paths: dict[str, dict[str, Schema]] = {}
    described = set()
    served = {str(r.resource.canonical) for r in app.router.routes() if r.resource}
    for op in OPERATIONS:
        if op.path in served:
            paths.setdefault(op.path, {})[op.method] = _operation(op)
            described.add((op.method, op.path))
    for route in app.router.routes():
        method, info = route.method.lower(), route.resource.get_info() if route.resource else {}
        route_path = info.get("formatter") or info.get("path")
        if method == "head" or not route_path:
            continue
        if route_path in SKIP or api_paths.is_alias(route_path, served) or (method, route_path) in described:
            continue
        paths.setdefault(route_path, {})[method] = _generic(method, route_path, route.handler)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "probefleet API",
            "version": VERSION,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": {p: dict(sorted(m.items())) for p, m in sorted(paths.items(), key=_api_first)},
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Bearer pf_…`",
                },
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _api_first(item: tuple[str, Any]) -> tuple[bool, str]:
    return (not item[0].startswith("/api/"), item[0])


DESCRIPTION = """Distributed uptime monitoring: monitors checked from several regions, incidents
decided by consensus, notifications, status pages.

Authenticate with an API key, as `Authorization: Bearer pf_…` or `X-API-Key: pf_…`.
Every success is `{"data": …, "meta": {…}}`; every error is
`{"error": {"code", "message", "details"}}`, where `details` names each bad field.
Lists page with a cursor: pass `meta.next_cursor` as `cursor` until it is null.
Within /api/v1 changes are additions only; see the versioning policy in the docs."""

TAGS = {
    "monitors": "Monitors of every kind, their results, statistics and status",
    "heartbeats": "Heartbeat monitors and their pings",
    "incidents": "Incidents: opened and resolved by consensus, acknowledged by people",
    "events": "State changes, as a list or a live stream",
    "maintenance-windows": "Periods when failures open no incident",
    "notification-channels": "Where notifications go",
    "notification-rules": "Which events go to which channels",
    "status-pages": "Public status pages and their posts and subscribers",
    "reports": "Reports over many monitors",
    "api-keys": "API keys and their scopes",
    "config": "Config as code: apply sets of resources, export, the file schema",
    "users": "Console users (roles on the same scopes) and the audit log",
    "regions": "Regions and their probes",
    "subscription": "The plan (self-hosted: no billing)",
    "health": "The controller's health and metrics",
}


# ---- the interactive reference -------------------------------------------------------

STATIC = resources.files("probefleet.controller.api") / "static"
# Swagger UI sets styles on its elements and shows its icons as data: images; it calls only
# this server (the document, and the operations a user tries out).
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>probefleet API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<noscript>The interactive reference needs JavaScript; the document itself is at
<a href="v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/docs.js"></script>
</body>
</html>
"""
# name: (file under static/, content type)
DOCS_ASSETS = {
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "docs.js": ("docs.js", "text/javascript"),
}
_assets: dict[str, bytes] = {}
_cache: dict[tuple[tuple[str, str], ...], bytes] = {}


def _rendered(app: web.Application) -> bytes:
    """Built once per route table (the document depends on nothing else)."""
    key = tuple((r.method, str(r.resource.canonical if r.resource else "")) for r in app.router.routes())
    if key not in _cache:
        _cache[key] = msgspec.json.encode(document(app))
    return _cache[key]


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document (anonymous)."""
    return web.Response(body=_rendered(request.app), content_type="application/json")


async def api_docs(request: web.Request) -> web.Response:
    """The interactive API reference (anonymous, works offline): Swagger UI on the document."""
    return web.Response(text=DOCS_PAGE, content_type="text/html", headers=DOCS_HEADERS)


async def docs_asset(request: web.Request) -> web.Response:
    """Swagger UI's script and stylesheet, served from the package."""
    name = request.match_info["name"]
    if name not in DOCS_ASSETS:
        raise web.HTTPNotFound(headers=DOCS_HEADERS)
    file, content_type = DOCS_ASSETS[name]
    if name not in _assets:
        _assets[name] = (STATIC / file).read_bytes()
    headers = {**DOCS_HEADERS, "Cache-Control": "public, max-age=3600"}
    return web.Response(body=_assets[name], content_type=content_type, charset="utf-8", headers=headers)
