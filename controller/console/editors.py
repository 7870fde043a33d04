"""The console's create and edit forms for what is not a probe-checked monitor: notification
channels and rules, maintenance windows, heartbeats (with their ping URL, pings and runs),
status pages (sections, components, posts), and "test now" for the monitor form.

The forms are built from the API's own body types (forms.struct_fields) and posted by the
page's script to the REST API with the session and its CSRF token, so the API validates
(its 422 details shown beside the fields), checks the role and writes the audit row; no
second validator lives here. "Test now" runs the unsaved monitor from its regions with
the API's on-demand run (engine/ondemand.run) and stores nothing of the monitor.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, cast

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api import heartbeats as hb_api
from probefleet.controller.api import maintenance as maintenance_api
from probefleet.controller.api import monitors as monitors_api
from probefleet.controller.api import notifications as notify_api
from probefleet.controller.api.common import ok, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.api.status_pages import page_out
from probefleet.controller.console import forms
from probefleet.controller.console.pages import EDITORS, _monitor_id, _render, _secure, _session
from probefleet.controller.engine import consensus, ondemand
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.notifications.dispatcher import NOTIFIABLE
from probefleet.controller.notifications.notifiers import NOTIFIERS
from probefleet.controller.notifications.notifiers.base import secret_fields
from probefleet.controller.status_pages import config as page_config
from probefleet.controller.status_pages import posts as page_posts
from probefleet.controller.storage import heartbeats as hb_store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import notifications as notify_store
from probefleet.controller.storage import status_pages as page_store
from probefleet.controller.validation import ValidationError

# ---- the forms' fields, from the API's body types ----------------------------------------


def channel_fields(kind: str | None = None) -> list[forms.Field]:
    """The channel's own fields; its settings are config_fields(kind), one fieldset per kind.
    A stored channel keeps its kind (the API refuses a change): its select has that one."""
    out = forms.struct_fields(notify_api.ChannelBody, skip=frozenset({"config"}))
    kinds = (kind,) if kind else tuple(sorted(NOTIFIERS))
    return [forms.Field(f.name, f.label, "select", True, kinds) if f.name == "kind" else f for f in out]


_WORDS = {"url": "URL", "api": "API", "ca": "CA", "s": "(seconds)"}


def _config_label(name: str) -> str:
    text = " ".join(_WORDS.get(w, w) for w in name.split("_"))
    return text[:1].upper() + text[1:]


def config_fields(kind: str) -> list[forms.Field]:
    """A channel kind's settings, read from its config type (the type the API validates
    with), named config.<field> as the API's 422 details name them. A secret gets a
    "set" state and a replace control instead of its value; a header map (secret values)
    gets name/value rows; a union such as Telegram's chat id (number or @name) is text."""
    config_type = NOTIFIERS[kind].config_type
    secrets = secret_fields(config_type)
    out = []
    for f in forms.struct_fields(config_type):
        mask = secrets.get(f.name, "")
        match (mask, f.input):
            case ("values", _):
                kind_of = "pairs"
            case ("url" | "full", _):
                kind_of = "secret"
            case (_, "json"):
                kind_of = "text"
            case _:
                kind_of = f.input
        label = _config_label(f.name) + (" (comma separated)" if kind_of == "list" else "")
        out.append(
            forms.Field(f"config.{f.name}", label, kind_of, f.required, f.choices, f.step, f.default, mask)
        )
    return out


def config_values(fields: list[forms.Field], config: dict[str, Any]) -> list[tuple[forms.Field, Any]]:
    """What each settings field shows: a secret only whether it is set (never its value,
    not even the masked one), a header map its names."""
    out: list[tuple[forms.Field, Any]] = []
    for f in fields:
        name = f.name.removeprefix("config.")
        value = config.get(name, f.default)
        if f.input == "secret":
            out.append((f, "set" if value is not None else ""))
        elif f.input == "pairs":
            out.append((f, sorted(value or {})))
        else:
            out.append((f, forms.form_value(f, value)))
    return out


def channel_kinds(chosen: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """One fieldset per kind; only the chosen kind's holds the stored settings."""
    return [
        {
            "kind": kind,
            "shown": kind == chosen,
            "fields": config_values(config_fields(kind), config if kind == chosen else {}),
        }
        for kind in sorted(NOTIFIERS)
    ]


# Id lists shown as controls: channels as a checkbox each, by name (a few hundred at most);
# monitors as a list of the chosen ones with a search over the API's paged monitor list
# (never a control holding every monitor: there may be 100,000).
PICKERS = {"channel_ids": "channels", "escalation_channel_ids": "channels", "monitor_ids": "monitors"}


# Lists of known words shown as a checkbox each: a rule's events and group keys.
CHECKS = {"events": tuple(sorted(NOTIFIABLE)), "group_by": ("parent", "tag", "host", "region")}


def _pickers(fields: list[forms.Field]) -> list[forms.Field]:
    out = []
    for f in fields:
        if f.name in PICKERS:
            f = dataclasses.replace(f, input=PICKERS[f.name])
        elif f.name in CHECKS and f.input == "list":
            f = dataclasses.replace(f, input="checks", choices=CHECKS[f.name])
        out.append(f)
    return out


def rule_fields() -> list[forms.Field]:
    return _pickers(
        forms.struct_fields(
            notify_api.RuleBody,
            (
                "name",
                "channel_ids",
                "events",
                "monitor_ids",
                "tags",
                "min_severity",
                "reminder_minutes",
                "escalate_after_minutes",
                "escalation_channel_ids",
                "group_by",
                "group_window_s",
                "is_policy",
                "is_enabled",
            ),
            labels={
                "channel_ids": "Channels",
                "escalation_channel_ids": "Escalation channels",
                "monitor_ids": "Monitors (none chosen and no tags: every monitor)",
                "events": "Events (none ticked: openings, diagnoses, acknowledgements, resolutions,"
                " degradations and expiring certificates)",
                "group_by": "Group outages by",
                "tags": "Tags (comma separated: also the monitors with any of them)",
            },
        )
    )


def window_fields() -> list[forms.Field]:
    return _pickers(
        forms.struct_fields(
            maintenance_api.WindowBody,
            labels={
                "starts_at": "Starts at (one-off, e.g. 2026-12-24T22:00:00Z)",
                "ends_at": "Ends at (one-off)",
                "days": "Days (recurring: mon, tue, ...)",
                "start_time": "Start time (recurring, local, e.g. 02:30)",
                "duration": "Duration in seconds (recurring)",
                "time_zone": "Time zone (IANA)",
                "monitor_ids": "Monitors",
            },
        )
    )


def heartbeat_fields() -> list[forms.Field]:
    return [
        *forms.struct_fields(monitors.MonitorCommon, ("name",)),
        *forms.struct_fields(
            heartbeat.HeartbeatSpec,
            labels={
                "run_interval": "Expected every (seconds)",
                "grace_period": "Grace period (seconds)",
                "cron": "Or a cron schedule",
                "tz": "Cron time zone",
            },
        ),
        *forms.struct_fields(monitors.MonitorCommon, ("tags", "project")),
    ]


PAGE_FIELDS = (
    "name",
    "slug",
    "description",
    "custom_domain",
    "is_public",
    "password",
    "sections",
    "theme",
    "colors",
    "footer_text",
    "custom_css",
    "show_response_times",
)


def page_fields() -> list[forms.Field]:
    out = forms.struct_fields(
        page_config.StatusPageInput,
        PAGE_FIELDS,
        long_text=frozenset({"description", "custom_css", "footer_text"}),
        labels={
            "sections": "Sections and components",
            "colors": "Colours (hex, such as #2f6fde; empty: the theme's)",
            "password": "Password (makes the page private; empty keeps the current one)",
        },
    )
    kinds = {"password": "password", "sections": "sections", "colors": "object"}
    return [forms.Field(f.name, f.label, kinds[f.name]) if f.name in kinds else f for f in out]


POST_FIELDS = [
    forms.Field("title", "Title", "text", True),
    forms.Field("status", "Status", "select", True, page_config.INCIDENT_STATES),
    forms.Field("message", "Message", "textarea", True),
]
UPDATE_FIELDS = POST_FIELDS[1:]


COLOR_FIELDS = [forms.Field(f"colors.{k}", k.capitalize(), "text") for k in page_config.COLOR_KEYS]


def _values(fields: list[forms.Field], item: dict[str, Any]) -> list[tuple[forms.Field, Any]]:
    out: list[tuple[forms.Field, Any]] = []
    for f in fields:
        if f.input in ("sections", "channels", "monitors", "checks"):  # (see _choices)
            out.append((f, item.get(f.name) or []))
        elif f.name == "colors":  # a field per colour, sent as one object (empty ones left out)
            colors = item.get("colors") or {}
            out.append((f, [(c, colors.get(c.name.removeprefix("colors."), "")) for c in COLOR_FIELDS]))
        else:
            out.append((f, forms.form_value(f, item.get(f.name, f.default))))
    return out


def _form_page(
    request: web.Request,
    *,
    title: str,
    fields: list[forms.Field],
    item: dict[str, Any],
    action: str,
    method: str,
    done: str,
    back: str,
    extra: dict[str, Any] | None = None,
    template: str = "edit.html",
    show: str = "",
) -> web.Response:
    return _render(
        request,
        template,
        {
            "title": title,
            "form": {
                "fields": _values(fields, item),
                "action": action,
                "method": method,
                "next": done,
                "show": show,
                "reload": False,
                "button": "Save" if method == "PATCH" else "Create",
            },
            "back": back,
            "item": item,
            **(extra or {}),
        },
    )


async def _editor(request: web.Request) -> web.Response | None:
    """None for an editor or admin; the 403 page for anyone else."""
    session = await _session(request)
    if session["role"] not in EDITORS:
        return _render(request, "forbidden.html", {}, 403)
    return None


def _missing(request: web.Request, what: str) -> web.Response:
    return _render(request, "not_found.html", {"what": what}, 404)


async def _choices(request: web.Request, fields: list[forms.Field], item: dict[str, Any]) -> dict[str, Any]:
    """The item with each picker's ids as what its control shows: every channel as
    (id, "name (kind)", chosen), the chosen monitors as (id, name). A chosen id that is
    gone is shown by its number, so saving does not drop it unseen (the API names it)."""
    pool = request.app[keys.POOL]
    out = dict(item)
    channels: list[dict[str, Any]] | None = None
    for f in fields:
        if f.input not in ("channels", "monitors"):
            continue
        ids = [int(i) for i in item.get(f.name) or []]
        if f.input == "channels":
            if channels is None:
                channels = await notify_store.list_channels(pool, limit=500)
            known = {c["id"] for c in channels}
            out[f.name] = [(c["id"], f"{c['name']} ({c['kind']})", c["id"] in ids) for c in channels] + [
                (i, f"channel #{i}", True) for i in ids if i not in known
            ]
        elif f.input == "monitors":
            names = {r["id"]: r["name"] for r in await monitor_store.get_many(pool, ids)} if ids else {}
            out[f.name] = [(i, names.get(i, f"monitor #{i} (deleted)")) for i in ids]
    return out


# ---- notification channels and rules ---------------------------------------------------------


async def channel_form(request: web.Request) -> web.StreamResponse:
    if (refused := await _editor(request)) is not None:
        return refused
    if "id" not in request.match_info:
        return _form_page(
            request,
            title="New notification channel",
            fields=channel_fields(),
            item={"config": {}},
            action="/api/v1/notification-channels",
            method="POST",
            done="/console/channels",
            back="/console/channels",
            extra={"kinds": channel_kinds("webhook", {})},
        )
    row = await notify_store.get_channel(request.app[keys.POOL], _monitor_id(request))
    if row is None:
        return _missing(request, "notification channel")
    channel = notify_api.public_channel(row)
    return _form_page(
        request,
        title=f"Edit channel {channel['name']}",
        fields=channel_fields(channel["kind"]),
        item=channel,
        action=f"/api/v1/notification-channels/{channel['id']}",
        method="PATCH",
        done="/console/channels",
        back="/console/channels",
        extra={
            "test_url": f"/api/v1/notification-channels/{channel['id']}/test",
            "kinds": channel_kinds(channel["kind"], channel["config"]),
        },
    )


async def rule_form(request: web.Request) -> web.StreamResponse:
    if (refused := await _editor(request)) is not None:
        return refused
    fields = rule_fields()
    if "id" not in request.match_info:
        return _form_page(
            request,
            title="New notification rule",
            fields=fields,
            item=await _choices(request, fields, {}),
            action="/api/v1/notification-rules",
            method="POST",
            done="/console/rules",
            back="/console/rules",
        )
    row = await notify_store.get_rule(request.app[keys.POOL], _monitor_id(request))
    if row is None:
        return _missing(request, "notification rule")
    rule = notify_api.public_rule(row)
    return _form_page(
        request,
        title=f"Edit rule {rule['name'] or rule['id']}",
        fields=fields,
        item=await _choices(request, fields, rule),
        action=f"/api/v1/notification-rules/{rule['id']}",
        method="PATCH",
        done="/console/rules",
        back="/console/rules",
    )


# ---- maintenance windows ---------------------------------------------------------------------


async def window_form(request: web.Request) -> web.StreamResponse:
    if (refused := await _editor(request)) is not None:
        return refused
    fields = window_fields()
    if "id" not in request.match_info:
        return _form_page(
            request,
            title="New maintenance window",
            fields=fields,
            item={},
            action="/api/v1/maintenance-windows",
            method="POST",
            done="/console/maintenance",
            back="/console/maintenance",
        )
    window_id = _monitor_id(request)
    row = await incident_store.get_window(request.app[keys.POOL], window_id)
    if row is None:
        return _missing(request, "maintenance window")
    window = maintenance_api.public(row)
    return _form_page(
        request,
        title=f"Edit window {window['name']}",
        fields=fields,
        item=await _choices(request, fields, window),
        action=f"/api/v1/maintenance-windows/{window_id}",
        method="PATCH",
        done="/console/maintenance",
        back="/console/maintenance",
    )


# ---- heartbeats ------------------------------------------------------------------------------


async def heartbeat_form(request: web.Request) -> web.StreamResponse:
    if (refused := await _editor(request)) is not None:
        return refused
    if "id" not in request.match_info:
        return _form_page(
            request,
            title="New heartbeat",
            fields=heartbeat_fields(),
            item={},
            action="/api/v1/heartbeats",
            method="POST",
            done="/console/heartbeats/{id}",
            back="/console/heartbeats",
            show="ping_url",
        )
    row = await hb_store.get(request.app[keys.POOL], _monitor_id(request))
    if row is None:
        return _missing(request, "heartbeat")
    hb = hb_api.public(row, request)
    return _form_page(
        request,
        title=f"Edit heartbeat {hb['name']}",
        fields=heartbeat_fields(),
        item={**hb, "project": row.get("project")},
        action=f"/api/v1/heartbeats/{hb['id']}",
        method="PATCH",
        done=f"/console/heartbeats/{hb['id']}",
        back=f"/console/heartbeats/{hb['id']}",
    )


async def heartbeat_page(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    pool = request.app[keys.POOL]
    row = await hb_store.get(pool, _monitor_id(request))
    if row is None:
        return _missing(request, "heartbeat")
    pings = await hb_store.pings(pool, row["id"], before=None, limit=50)
    runs = sorted((row.get("runs") or {}).items())
    return _render(
        request,
        "heartbeat.html",
        {
            "hb": hb_api.public(row, request),
            "ping_base": f"{request.url.origin()}/api/v1/heartbeat/",
            "pings": [{k: v for k, v in p.items() if k != "body"} for p in pings],
            "runs": runs,
            "editable": session["role"] in EDITORS,
        },
    )


# ---- status pages ----------------------------------------------------------------------------


def _page_item(page: dict[str, Any], comps: list[dict[str, Any]], names: dict[int, str]) -> dict[str, Any]:
    """The page as its form shows it: sections as the API takes them back (no component
    ids), each component with its monitor's name for the picker."""
    out = page_out(page, comps)
    out["sections"] = [
        {
            "name": s["name"],
            "monitors": [
                {
                    "monitor_id": c["monitor_id"],
                    "display_name": c["display_name"],
                    "description": c["description"],
                    "monitor_name": names.get(c["monitor_id"], ""),
                }
                for c in s["monitors"]
            ],
        }
        for s in out["sections"]
    ]
    out.pop("password", None)
    return out


async def status_page_form(request: web.Request) -> web.StreamResponse:
    if (refused := await _editor(request)) is not None:
        return refused
    if "id" not in request.match_info:
        return _form_page(
            request,
            title="New status page",
            fields=page_fields(),
            item={"is_public": True},
            action="/api/v1/status-pages",
            method="POST",
            done="/console/status-pages/{id}/edit",
            back="/console/status-pages",
        )
    pool = request.app[keys.POOL]
    page = await page_store.get_page(pool, _monitor_id(request))
    if page is None:
        return _missing(request, "status page")
    comps = await page_store.components(pool, [page["id"]])
    rows = await monitor_store.get_many(pool, sorted({c["monitor_id"] for c in comps}))
    item = _page_item(page, comps, {r["id"]: r["name"] for r in rows})
    posts = [page_posts.post_out(p) for p in await page_store.posts(pool, page["id"], limit=20)]
    return _form_page(
        request,
        title=f"Edit status page {page['name']}",
        fields=page_fields(),
        item=item,
        action=f"/api/v1/status-pages/{page['id']}",
        method="PATCH",
        done=f"/console/status-pages/{page['id']}/edit",
        back="/console/status-pages",
        template="status_page_form.html",
        extra={
            "posts": posts,
            "post_fields": _values(POST_FIELDS, {"status": "investigating"}),
            "update_fields": _values(UPDATE_FIELDS, {"status": "monitoring"}),
            "public_url": item["url"],
        },
    )


# ---- "test now" on the monitor form --------------------------------------------------------


async def test_monitor(request: web.Request) -> web.StreamResponse:
    """POST /console/monitors/test[?id=N]: the form's fields (for an edit, merged into the
    stored monitor as PATCH would) run once from their regions; nothing is saved. The API's
    field errors come back as a 422 like a save would."""
    await require(request, "monitors:write")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    regions = request.app[keys.REGIONS].ids()
    raw_id = request.query.get("id")
    if raw_id:
        row = await monitor_store.get(request.app[keys.POOL], int(raw_id)) if raw_id.isdigit() else None
        if row is None:
            raise not_found("monitor")
        body = {k: v for k, v in body.items() if k != "type"}
        cfg = monitors_api.merged_config(row, body, regions=regions)
    else:
        cfg = monitors.parse(body, regions)
    if cfg.spec is None:
        raise ApiError(409, "conflict", "a heartbeat monitor is checked by its pings, not by probes")
    result = await ondemand.run(
        request.app[keys.NC],
        request.app[keys.FLEET],
        monitor_id=0,
        spec=cfg.spec,
        check_timeout=float(cfg.timeout_s),
        locations=list(cfg.locations),
        rule=consensus.Rule(mode=cast(consensus.Mode, cfg.consensus), quorum=cfg.quorum),
        grace=request.app[keys.CONFIG].round_grace,
    )
    return _secure(ok(result))


def routes() -> list[web.RouteDef]:
    """The forms' routes (listed in api/routes.py before pages.routes())."""
    return [
        web.post("/console/monitors/test", test_monitor),
        web.get("/console/channels/new", channel_form),
        web.get("/console/channels/{id}/edit", channel_form),
        web.get("/console/rules/new", rule_form),
        web.get("/console/rules/{id}/edit", rule_form),
        web.get("/console/maintenance/new", window_form),
        web.get("/console/maintenance/{id}/edit", window_form),
        web.get("/console/heartbeats/new", heartbeat_form),
        web.get("/console/heartbeats/{id}", heartbeat_page),
        web.get("/console/heartbeats/{id}/edit", heartbeat_form),
        web.get("/console/status-pages/new", status_page_form),
        web.get("/console/status-pages/{id}/edit", status_page_form),
    ]


PATHS = frozenset(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", d.path) for d in routes())
