"""The console's pages: login and logout, the overview at `/`, a monitor, the monitor form,
incidents, the fleet, users and the audit log, and the console's static files.

Pages are rendered on the server from the database (one page of monitors at a time, never
all of them); changes are made by the page's script through the REST API with the session
cookie and the CSRF header, so the console can do nothing the API does not allow the
user's role. Live updates come over the API's WebSocket, subscribed to the monitors on
screen only.
"""

from __future__ import annotations

import datetime as dt
import math
import mimetypes
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api import heartbeats as hb_api
from probefleet.controller.api import maintenance as maintenance_api
from probefleet.controller.api import monitors as monitors_api
from probefleet.controller.api import notifications as notify_api
from probefleet.controller.api import public_pages
from probefleet.controller.api.common import now_utc, parse_int
from probefleet.controller.api.errors import ApiError
from probefleet.controller.console import accounts, charts, forms, templating
from probefleet.controller.status_pages import model as page_model
from probefleet.controller.storage import api_keys as key_store
from probefleet.controller.storage import console as console_store
from probefleet.controller.storage import heartbeats as hb_store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import notifications as notify_store
from probefleet.controller.storage import results as result_store
from probefleet.controller.storage import status_pages as page_store
from probefleet.controller.storage import users as user_store
from probefleet.controller.validation import ValidationError

STATIC = Path(__file__).resolve().parent / "static"
PAGE_SIZE = 50
LOGIN_COOKIE = "pf_login"  # the login form's CSRF token (double submit: cookie and field)
EDITORS = frozenset({"admin", "editor"})
SORTS = {
    "name": "Name",
    "status": "Status",
    "type": "Type",
    "uptime_24h": "Uptime 24 h",
    "updated_at": "Last changed",
    "id": "Created",
}
STATUS_ORDER = ("up", "degraded", "down", "unknown", "pending", "paused")
GROUPS = {"tag": "Tag", "project": "Project"}  # keys of monitor_store.GROUPS
# A region's state in the overview's matrix: the newest result there in the last hour.
REGION_STATES = ("ok", "degraded", "fail", "skipped", "none")
BAR_DAYS = 90  # the monitor page's uptime bars

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _secure(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in public_pages.SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _render(request: web.Request, name: str, context: dict[str, Any], status: int = 200) -> web.Response:
    session = request.get(accounts.SESSION)
    base = {
        "user": session,
        "can_edit": bool(session and session["role"] in EDITORS),
        "is_admin": bool(session and session["role"] == "admin"),
        "csrf": session["csrf"] if session else "",
        "path": request.path,
    }
    response = aiohttp_jinja2.render_template(f"console/{name}", request, {**base, **context}, status=status)
    return _secure(response)  # type: ignore[return-value]


async def _session(request: web.Request) -> dict[str, Any]:
    """The page's session, or a redirect to the login form that comes back here."""
    session = await accounts.session_of(request, now_utc())
    if session is None:
        target = request.path_qs
        raise web.HTTPSeeOther(f"/login?next={quote(target, safe='')}", headers=public_pages.SECURITY_HEADERS)
    return session


def _redirect(location: str) -> web.Response:
    return _secure(web.Response(status=303, headers={"Location": location}))  # type: ignore[return-value]


def _safe_next(raw: str | None) -> str:
    """Only a path of this site: never //host or a scheme, which would leave it."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


# ---- login and logout -----------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    if await accounts.session_of(request, now_utc()) is not None:
        return _redirect(_safe_next(request.query.get("next")))
    return _login_page(request, "", "")


def _login_page(request: web.Request, error: str, username: str, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = _render(
        request,
        "login.html",
        {
            "error": error,
            "username": username,
            "login_token": token,
            "next": _safe_next(request.query.get("next")),
        },
        status,
    )
    secure = accounts.is_https(request)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, secure=secure, samesite="Strict", path="/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username") or "")[:200]
    password = str(form.get("password") or "")
    sent, expected = str(form.get("login_token") or ""), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        return _login_page(request, "The form expired. Please try again.", username, 403)
    try:
        session_id, _ = await accounts.login(request, username, password, now_utc())
    except accounts.LoginRefusedError as e:
        response = _login_page(request, str(e), username, 429 if e.retry_after else 401)
        if e.retry_after:
            response.headers["Retry-After"] = str(e.retry_after)
        return response
    response = _redirect(_safe_next(str(form.get("next") or "")))
    accounts.set_cookie(request, response, session_id)
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = await accounts.session_of(request, now_utc())
    form = await request.post()
    if session is not None and not accounts.csrf_ok(request, session, form):
        raise ApiError(
            403, "csrf_failed", "missing or wrong CSRF token", headers=public_pages.SECURITY_HEADERS
        )
    response = _redirect("/login")
    await accounts.logout(request, response)
    return response


# ---- overview ---------------------------------------------------------------------------


async def root(request: web.Request) -> web.StreamResponse:
    """A status page's custom domain shows that page at `/`; anywhere else `/` is the console."""
    domain = request.host.rsplit(":", 1)[0].lower()
    if await page_store.find_page(request.app[keys.POOL], domain=domain) is not None:
        return await public_pages.custom_domain_html(request)
    return await overview(request)


def _query(request: web.Request, **changes: Any) -> str:
    kept = ("search", "status", "type", "tag", "sort", "page", "group", "region", "region_state")
    q = {k: v for k, v in request.query.items() if k in kept}
    q.update({k: str(v) for k, v in changes.items() if v is not None})
    return urlencode({k: v for k, v in q.items() if v})


async def overview(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    try:
        filters = monitors_api._filters(request)
        sort, desc = monitors_api._sort(request)
    except ValidationError as e:
        filters, sort, desc = monitor_store.Filters(), "id", False
        error = "; ".join(f"{k}: {v}" for k, v in e.details.items())
    else:
        error = ""
    now = now_utc()
    since = now - dt.timedelta(hours=1)
    regions = sorted(r["name"] for r in request.app[keys.REGIONS].all())
    group = request.query.get("group") or None
    if group not in (None, *GROUPS):
        group, error = None, "; ".join(filter(None, (error, f"group: one of {', '.join(GROUPS)}")))
    region, state = request.query.get("region") or "", request.query.get("region_state") or ""
    if region or state:
        if region not in regions or state not in REGION_STATES:
            problem = f"region: one of {', '.join(regions)} with a state, one of {', '.join(REGION_STATES)}"
            error = "; ".join(filter(None, (error, problem)))
        else:
            filters.region_state = (region, state, since)
    page = parse_int(request.query.get("page", "1"), 1, 1_000_000) or 1
    rows = await monitor_store.list_filtered(
        pool, filters, sort=sort, desc=desc, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE, group=group
    )
    total = await monitor_store.count_filtered(pool, filters)
    matrix = await console_store.region_matrix(pool, [r["id"] for r in rows], since)
    monitors = [
        {
            **monitors_api.public(r),
            "regions": matrix.get(r["id"], {}),
            "group": (monitor_store.group_key(group, r) or f"(no {group})") if group else "",
        }
        for r in rows
    ]
    counts = await console_store.status_counts(pool)
    context = {
        "monitors": monitors,
        "regions": regions,
        "counts": [(s, counts.get(s, 0)) for s in STATUS_ORDER],
        "total": total,
        "all_total": sum(counts.values()),
        "page": page,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "prev_query": _query(request, page=page - 1) if page > 1 else None,
        "next_query": _query(request, page=page + 1) if page * PAGE_SIZE < total else None,
        "q": request.query,
        "sorts": SORTS,
        "sort": f"{sort}:{'desc' if desc else 'asc'}",
        "kinds": (*forms.KINDS, "heartbeat"),
        "statuses": STATUS_ORDER[:-1],
        "tags": await console_store.tags(pool),
        "groups": GROUPS,
        "group": group or "",
        "region_states": REGION_STATES,
        "error": error,
    }
    name = "monitor_rows.html" if request.headers.get("HX-Request") == "true" else "overview.html"
    return _render(request, name, context)


# ---- one monitor ------------------------------------------------------------------------


def _monitor_id(request: web.Request) -> int:
    value = parse_int(request.match_info["id"])
    if value is None:
        raise web.HTTPNotFound()
    return value


async def monitor_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    monitor_id = _monitor_id(request)
    row = await monitor_store.get(pool, monitor_id, with_uptimes=True)
    if row is None:
        return _render(request, "not_found.html", {"what": "monitor"}, 404)
    now = now_utc()
    per_region = await result_store.last_per_region(pool, monitor_id, now - dt.timedelta(days=1))
    results = await result_store.recent(pool, monitor_id, limit=30)
    incidents = await incident_store.list_page(pool, monitor_id=monitor_id, limit=20)
    # The uptime bars: a day each, as the status pages count them (rollups and the raw tail).
    since = dt.datetime.combine(now.date() - dt.timedelta(days=BAR_DAYS - 1), dt.time(), dt.UTC)
    days = (await page_store.day_counts(pool, [monitor_id], since, since + dt.timedelta(days=BAR_DAYS))).get(
        monitor_id, {}
    )
    return _render(
        request,
        "monitor.html",
        {
            "m": monitors_api.public(row),
            "per_region": per_region,
            "results": results,
            "incidents": incidents,
            "ranges": charts.RANGES,
            "bars": page_model.day_bars(days, now.date(), BAR_DAYS),
            "bar_days": BAR_DAYS,
            "uptime_bars": page_model.uptime_of(days),
        },
    )


async def monitor_chart(request: web.Request) -> web.StreamResponse:
    """p50 and p95 per region over the chosen range, as columns for uPlot."""
    await _session(request)
    rng = request.query.get("range", "24h")
    if rng not in charts.RANGES:
        raise ApiError(
            422, "validation_error", "Validation failed", {"range": f"one of {', '.join(charts.RANGES)}"}
        )
    data = await charts.response_times(request.app[keys.POOL], _monitor_id(request), rng, now_utc())
    return _secure(web.json_response(data))


async def monitor_form(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session["role"] not in EDITORS:
        return _render(request, "forbidden.html", {}, 403)
    monitor: dict[str, Any] = {}
    if "id" in request.match_info:
        row = await monitor_store.get(request.app[keys.POOL], _monitor_id(request))
        if row is None:
            return _render(request, "not_found.html", {"what": "monitor"}, 404)
        monitor = monitors_api.public(row)
    kind = monitor.get("type") or request.query.get("type", "http")
    if kind not in forms.KINDS:
        kind = "http"
    fields = [(f, forms.form_value(f, monitor.get(f.name, f.default))) for f in forms.fields_for(kind)]
    return _render(
        request,
        "monitor_form.html",
        {"m": monitor, "kind": kind, "kinds": forms.KINDS, "fields": fields},
    )


# ---- incidents, fleet, users, audit ---------------------------------------------------


async def incidents_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    return _render(
        request,
        "incidents.html",
        {
            "open": await console_store.incidents(pool, open_only=True),
            "recent": await console_store.incidents(pool, open_only=False, limit=50),
        },
    )


async def incident_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    incident = await incident_store.get(pool, _monitor_id(request))
    if incident is None:
        return _render(request, "not_found.html", {"what": "incident"}, 404)
    return _render(
        request,
        "incident.html",
        {
            "i": incident,
            "timeline": await incident_store.timeline(pool, incident["id"]),
            "events": await console_store.incident_events(pool, incident["id"]),
        },
    )


async def fleet_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    now = now_utc().timestamp()
    probes = sorted(request.app[keys.FLEET].live(), key=lambda h: (h.region, h.probe_id))
    live = request.app[keys.FLEET].live_regions()
    regions = [{**r, "live": live.get(r["name"], 0)} for r in request.app[keys.REGIONS].all()]
    rows = [
        {
            "probe_id": p.probe_id,
            "region": p.region,
            "version": p.version,
            "host": p.host,
            "concurrency": p.concurrency,
            "in_flight": p.in_flight,
            "lag": max(0.0, now - p.sent_at),
            "since": dt.datetime.fromtimestamp(p.started_at, dt.UTC),
        }
        for p in probes
    ]
    return _render(
        request, "fleet.html", {"regions": sorted(regions, key=lambda r: r["name"]), "probes": rows}
    )


async def users_page(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session["role"] != "admin":
        return _render(request, "forbidden.html", {}, 403)
    return _render(
        request,
        "users.html",
        {"users": await user_store.list_all(request.app[keys.POOL]), "roles": accounts.ROLES},
    )


async def audit_page(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session["role"] != "admin":
        return _render(request, "forbidden.html", {}, 403)
    before = parse_int(request.query.get("before", "")) if request.query.get("before") else None
    rows = await user_store.audit_page(request.app[keys.POOL], before_id=before, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return _render(request, "audit.html", {"rows": rows, "next": rows[-1]["id"] if more else None})


# ---- simple lists: keys, channels, maintenance, heartbeats, status pages -----------------


@dataclass(frozen=True)
class Action:
    """A button on each row: `url` with {id} replaced, answered with a toast (or the
    answer's `show` field displayed once, such as a new ping URL)."""

    label: str
    method: str
    url: str
    body: str = ""
    show: str = ""
    reload: bool = False


_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def _cell(value: Any) -> tuple[str, str]:
    """(text, time): a time (also one the API gave as ISO text) is shown in UTC, named, and
    its ISO form is put in a <time> element that the page's script shows in the viewer's
    zone."""
    if value is None:
        return "-", ""
    if isinstance(value, bool):
        return ("yes" if value else "no"), ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value), ""
    if isinstance(value, str) and _ISO_TIME.match(value):
        value = templating.as_time(value) or value
    if isinstance(value, dt.datetime):
        return templating.utc(value), templating.iso(value)
    return str(value), ""


def _list_page(
    request: web.Request,
    title: str,
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]],
    *,
    actions: list[Action] | None = None,
    create: dict[str, Any] | None = None,
    note: str = "",
    new: str = "",
    edit: str = "",
    link: str = "",
) -> web.Response:
    """`new` is the link to the new-item form and `edit` the edit form's ({id}), both for
    editors only; `link` ({id}) makes each row's first cell a link to the item's page."""
    session = request[accounts.SESSION]
    editable = session["role"] in EDITORS
    table = [
        {
            "id": r.get("id"),
            "cells": [_cell(r.get(k)) for k, _ in columns],
            "link": link.replace("{id}", str(r.get("id"))) if link else "",
            "edit": edit.replace("{id}", str(r.get("id"))) if edit and editable else "",
        }
        for r in rows
    ]
    return _render(
        request,
        "resources.html",
        {
            "title": title,
            "columns": [label for _, label in columns],
            "rows": table,
            "actions": (actions or []) if editable else [],
            "has_edit": bool(edit and editable),
            "create": create if editable else None,
            "new": new if editable else "",
            "note": note,
        },
    )


async def keys_page(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session["role"] != "admin":
        return _render(request, "forbidden.html", {}, 403)
    rows = await key_store.list_active(request.app[keys.POOL], now_utc())
    create = {
        "action": "/api/v1/api-keys",
        "show": "key",
        "fields": [
            forms.Field("name", "Name", "text", True),
            forms.Field("scopes", "Scopes (comma separated)", "list", True, default="monitors:read"),
            forms.Field("expires_in_days", "Expires in days", "number"),
        ],
        "button": "Create key",
    }
    return _list_page(
        request,
        "API keys",
        rows,
        [
            ("name", "Name"),
            ("prefix", "Prefix"),
            ("scopes", "Scopes"),
            ("created_at", "Created"),
            ("last_used_at", "Last used"),
            ("expires_at", "Expires"),
        ],
        actions=[Action("Revoke", "DELETE", "/api/v1/api-keys/{id}", reload=True)],
        create=create,
        note="A new key is shown once, here; only its hash is kept.",
    )


async def channels_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    channels = [notify_api.public_channel(r) for r in await notify_store.list_channels(pool, limit=500)]
    rules = [notify_api.public_rule(r) for r in await notify_store.list_rules(pool)]
    page = _list_page(
        request,
        "Notification channels",
        channels,
        [
            ("name", "Name"),
            ("type", "Kind"),
            ("is_enabled", "Enabled"),
            ("disabled_reason", "Why disabled"),
            ("created_at", "Created"),
        ],
        actions=[Action("Send a test", "POST", "/api/v1/notification-channels/{id}/test")],
        note=f"{len(rules)} notification rule{'' if len(rules) == 1 else 's'} route events to these"
        " channels (Rules).",
        new="/console/channels/new",
        edit="/console/channels/{id}/edit",
    )
    return page


async def rules_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    pool = request.app[keys.POOL]
    rules = [notify_api.public_rule(r) for r in await notify_store.list_rules(pool)]
    # Channels by name (the ids of channels since deleted as numbers).
    ids = {i for r in rules for i in (*r["channel_ids"], *(r.get("escalation_channel_ids") or []))}
    names = {i: c["name"] for i, c in (await notify_store.channels_by_id(pool, sorted(ids))).items()}
    for r in rules:
        r["channel_ids"] = [names.get(i, f"#{i}") for i in r["channel_ids"]]
    return _list_page(
        request,
        "Notification rules",
        rules,
        [
            ("name", "Name"),
            ("channel_ids", "Channels"),
            ("events", "Events"),
            ("monitor_ids", "Monitors"),
            ("tags", "Tags"),
            ("min_severity", "Minimum severity"),
            ("is_policy", "Policy"),
            ("is_enabled", "Enabled"),
        ],
        actions=[Action("Delete", "DELETE", "/api/v1/notification-rules/{id}", reload=True)],
        new="/console/rules/new",
        edit="/console/rules/{id}/edit",
    )


async def maintenance_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    rows = [maintenance_api.public(r) for r in await incident_store.list_windows(request.app[keys.POOL])]
    return _list_page(
        request,
        "Maintenance windows",
        rows,
        [
            ("name", "Name"),
            ("active_now", "Active now"),
            ("recurring", "Recurring"),
            ("starts_at", "Starts"),
            ("ends_at", "Ends"),
            ("days", "Days"),
            ("start_time", "At"),
            ("duration", "Seconds"),
            ("time_zone", "Zone"),
            ("monitor_ids", "Monitors"),
            ("tags", "Tags"),
        ],
        actions=[Action("Delete", "DELETE", "/api/v1/maintenance-windows/{id}", reload=True)],
        new="/console/maintenance/new",
        edit="/console/maintenance/{id}/edit",
    )


async def heartbeats_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    rows = [
        hb_api.public(r, request)
        for r in await hb_store.list_page(request.app[keys.POOL], after_id=0, limit=500)
    ]
    return _list_page(
        request,
        "Heartbeats",
        rows,
        [
            ("name", "Name"),
            ("status", "Status"),
            ("run_interval", "Every (s)"),
            ("cron", "Cron"),
            ("last_ping_at", "Last ping"),
            ("last_ping_kind", "Kind"),
            ("next_deadline", "Next deadline"),
            ("open_runs", "Runs open"),
            ("token_hint", "Token"),
        ],
        actions=[Action("New ping URL", "POST", "/api/v1/heartbeats/{id}/token", show="ping_url")],
        note="A ping URL holds its token and is shown once: make a new one to copy it"
        " (the old one stops working).",
        new="/console/heartbeats/new",
        edit="/console/heartbeats/{id}/edit",
        link="/console/heartbeats/{id}",
    )


async def status_pages_page(request: web.Request) -> web.StreamResponse:
    await _session(request)
    rows = await page_store.list_pages(request.app[keys.POOL], after_id=0, limit=500)
    for r in rows:
        r["url"] = f"/status/{r['slug']}"
    return _list_page(
        request,
        "Status pages",
        rows,
        [("name", "Name"), ("slug", "Slug"), ("url", "Public page"), ("custom_domain", "Domain")],
        new="/console/status-pages/new",
        edit="/console/status-pages/{id}/edit",
    )


# ---- static files -----------------------------------------------------------------------


def _assets() -> dict[str, Path]:
    return {
        str(p.relative_to(STATIC)): p
        for p in STATIC.rglob("*")
        if p.is_file() and p.suffix in (".js", ".css", ".svg", ".png")
    }


ASSETS = _assets()


async def asset(request: web.Request) -> web.StreamResponse:
    path = ASSETS.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = web.Response(body=path.read_bytes(), content_type=ctype)
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def routes() -> list[web.RouteDef]:
    """The console's routes (listed in api/routes.py with every other route, after those of
    console/editors.py, so /new is not read as an id)."""
    return [
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/console/monitors/new", monitor_form),
        web.get("/console/monitors/{id}", monitor_page),
        web.get("/console/monitors/{id}/edit", monitor_form),
        web.get("/console/monitors/{id}/chart", monitor_chart),
        web.get("/console/incidents", incidents_page),
        web.get("/console/incidents/{id}", incident_page),
        web.get("/console/fleet", fleet_page),
        web.get("/console/users", users_page),
        web.get("/console/audit", audit_page),
        web.get("/console/keys", keys_page),
        web.get("/console/channels", channels_page),
        web.get("/console/rules", rules_page),
        web.get("/console/maintenance", maintenance_page),
        web.get("/console/heartbeats", heartbeats_page),
        web.get("/console/status-pages", status_pages_page),
        web.get("/console-assets/{name:.+}", asset),
    ]


# As the router names them ({name:.+} is {name}).
PATHS = frozenset(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", d.path) for d in routes())
