"""The console's create and edit forms against the real controller: each form is built from
the API's body type, posted by the page as JSON with the session and its CSRF token, the
API's 422 details name fields the form shows, the edit form holds the stored values, a
viewer gets no form and a 403 from the API, a missing CSRF token is a 403, every change is
in the audit log, and markup in names is shown as text. "Test now" runs an unsaved
monitor from real probes."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import markupsafe
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.config import ConfigError, load
from probefleet.controller.console import accounts
from probefleet.controller.notifications.notifiers import NOTIFIERS
from probefleet.controller.storage import notifications as notify_store
from probefleet.controller.storage import users as user_store
from probefleet.probe.agent import Agent
from tests.controller.conftest import Running, start_controller
from tests.controller.console.conftest import PASSWORD, Browser
from tests.fleet import start_probes, stop_probes
from tests.helpers import eventually

Make = Callable[[str, str], Awaitable[Browser]]
XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


@dataclass(frozen=True)
class Kind:
    list_path: str
    new_path: str
    api: str  # the collection the form posts to
    edit_path: str  # with {id}
    valid: dict[str, Any]
    invalid: dict[str, Any]
    bad_field: str  # the form field the invalid body's error is shown beside
    rename: dict[str, Any]


KINDS = {
    "channel": Kind(
        "/console/channels",
        "/console/channels/new",
        "/api/v1/notification-channels",
        "/console/channels/{id}/edit",
        {"name": XSS, "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook?token=s3cret"}},
        {"name": "hook", "kind": "webhook", "config": {"url": "not a url"}},
        "config",
        {"name": "renamed <b>"},
    ),
    "rule": Kind(
        "/console/rules",
        "/console/rules/new",
        "/api/v1/notification-rules",
        "/console/rules/{id}/edit",
        {"name": XSS, "channel_ids": ["CHANNEL"], "tags": ["web"]},
        {"name": "no channels", "channel_ids": []},
        "channel_ids",
        {"name": "renamed <b>"},
    ),
    "maintenance": Kind(
        "/console/maintenance",
        "/console/maintenance/new",
        "/api/v1/maintenance-windows",
        "/console/maintenance/{id}/edit",
        {"name": XSS, "tags": ["web"], "days": ["mon"], "start_time": "02:30", "duration": 3600},
        {"name": "w", "tags": ["web"], "days": ["mon"], "start_time": "25:99", "duration": 3600},
        "start_time",
        {"name": "renamed <b>"},
    ),
    "heartbeat": Kind(
        "/console/heartbeats",
        "/console/heartbeats/new",
        "/api/v1/heartbeats",
        "/console/heartbeats/{id}/edit",
        {"name": XSS, "run_interval": 3600, "grace_period": 300, "tags": ["batch"]},
        {"name": "h", "run_interval": 0},
        "run_interval",
        {"name": "renamed <b>"},
    ),
    "status page": Kind(
        "/console/status-pages",
        "/console/status-pages/new",
        "/api/v1/status-pages",
        "/console/status-pages/{id}/edit",
        {"name": XSS, "slug": "xss-page", "is_public": True, "sections": [{"name": "API", "monitors": []}]},
        {"name": "p", "slug": "Bad Slug!"},
        "slug",
        {"name": "renamed <b>"},
    ),
}


def _fields(page: str) -> set[str]:
    return set(re.findall(r'class="field" data-field="([^"]+)"', page))


def _field_of(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _no_markup(text: str) -> None:
    assert "<script>alert" not in text and "<img src=x" not in text


@pytest.mark.parametrize("name", list(KINDS))
async def test_a_form_creates_validates_edits_and_refuses_viewers(
    controller: Running, api: aiohttp.ClientSession, users: Make, name: str
) -> None:
    kind = KINDS[name]
    valid = dict(kind.valid)
    if valid.get("channel_ids") == ["CHANNEL"]:
        r = await api.post(
            "/api/v1/notification-channels",
            json={"name": "c", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        )
        valid["channel_ids"] = [(await r.json())["data"]["id"]]
    editor = await users("ed", "editor")
    viewer = await users("vi", "viewer")
    csrf = {"X-CSRF-Token": editor.csrf}

    # The new form posts to the API; every field of the bodies below is on it.
    r = await editor.http.get(kind.new_path)
    form = await r.text()
    assert r.status == 200, form[:2000]
    assert f'data-method="POST" data-action="{kind.api}"' in form
    fields = _fields(form)
    assert set(valid) <= fields and set(kind.invalid) <= fields, (fields, valid)
    listed = await (await editor.http.get(kind.list_path)).text()
    assert f'href="{kind.new_path}"' in listed

    # The API's field error names a field of the form (shown beside it by the page).
    r = await editor.http.post(kind.api, json=kind.invalid, headers=csrf)
    body = await r.json()
    assert r.status == 422, body
    assert {_field_of(p) for p in body["error"]["details"]} == {kind.bad_field}, body
    assert kind.bad_field in fields

    # Created, then its edit form holds the stored values, escaped.
    r = await editor.http.post(kind.api, json=valid, headers=csrf)
    created = (await r.json())["data"]
    assert r.status == 201, created
    edit_path = kind.edit_path.replace("{id}", str(created["id"]))
    r = await editor.http.get(edit_path)
    edit = await r.text()
    assert r.status == 200, edit[:2000]
    assert f'data-method="PATCH" data-action="{kind.api}/{created["id"]}"' in edit
    _no_markup(edit)
    assert f'value="{markupsafe.escape(XSS)}"' in edit
    assert "s3cret" not in edit
    listed = await (await editor.http.get(kind.list_path)).text()
    _no_markup(listed)
    assert html.escape(XSS, quote=False) in listed.replace("&#34;", '"') and f'href="{edit_path}"' in listed

    # The change the edit form sends.
    r = await editor.http.patch(f"{kind.api}/{created['id']}", json=kind.rename, headers=csrf)
    assert r.status == 200, await r.text()
    edit = await (await editor.http.get(edit_path)).text()
    assert 'value="renamed &lt;b&gt;"' in edit

    # Without the CSRF token, and for a viewer: 403, and no form or edit link for a viewer.
    r = await editor.http.patch(f"{kind.api}/{created['id']}", json={"name": "x"})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_failed"
    r = await viewer.http.post(kind.api, json=valid, headers={"X-CSRF-Token": viewer.csrf})
    assert r.status == 403
    r = await viewer.http.patch(
        f"{kind.api}/{created['id']}", json={"name": "x"}, headers={"X-CSRF-Token": viewer.csrf}
    )
    assert r.status == 403
    for path in (kind.new_path, edit_path):
        r = await viewer.http.get(path)
        assert r.status == 403 and "data-action" not in await r.text(), path
    listed = await (await viewer.http.get(kind.list_path)).text()
    assert "renamed" in listed and kind.new_path not in listed and edit_path not in listed

    # Both changes are in the audit log under the editor's name; the refused ones are not.
    rows = await user_store.audit_page(controller.app[keys.POOL], actor="user:ed")
    assert [(x["method"], x["path"], x["status"]) for x in reversed(rows)] == [
        ("POST", kind.api, 201),
        ("PATCH", f"{kind.api}/{created['id']}", 200),
    ]


async def test_a_missing_item_is_a_404_page(users: Make) -> None:
    editor = await users("ed", "editor")
    for path in (
        "/console/channels/99/edit",
        "/console/rules/99/edit",
        "/console/maintenance/99/edit",
        "/console/heartbeats/99",
        "/console/heartbeats/99/edit",
        "/console/status-pages/99/edit",
    ):
        assert (await editor.http.get(path)).status == 404, path


async def test_a_channel_page_sends_a_test(api: aiohttp.ClientSession, users: Make) -> None:
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.text())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        r = await api.post(
            "/api/v1/notification-channels", json={"name": "h", "kind": "webhook", "config": {"url": url}}
        )
        cid = (await r.json())["data"]["id"]
        editor = await users("ed", "editor")
        page = await (await editor.http.get(f"/console/channels/{cid}/edit")).text()
        button = f'data-api="POST /api/v1/notification-channels/{cid}/test"'
        assert button in page
        r = await editor.http.post(
            f"/api/v1/notification-channels/{cid}/test", headers={"X-CSRF-Token": editor.csrf}
        )
        assert r.status == 200 and (await r.json())["data"]["delivered"] is True
        assert len(got) == 1
    finally:
        await runner.cleanup()


async def test_rule_and_window_forms_pick_channels_by_name_and_monitors_by_search(
    api: aiohttp.ClientSession, users: Make
) -> None:
    channels = []
    for name in ("ops <b>", "dev"):
        r = await api.post(
            "/api/v1/notification-channels",
            json={"name": name, "kind": "webhook", "config": {"url": "http://127.0.0.1:9/"}},
        )
        channels.append((await r.json())["data"]["id"])
    monitors = []
    for name in ("db <i>", "web", "cache"):
        r = await api.post(
            "/api/v1/monitors",
            json={"name": name, "type": "http", "url": "http://127.0.0.1:9/", "check_interval": 3600},
        )
        monitors.append((await r.json())["data"]["id"])
    editor = await users("ed", "editor")
    # The new form: a checkbox per channel, by name; the monitors a search (no monitor listed).
    form = await (await editor.http.get("/console/rules/new")).text()
    _no_markup(form)
    for cid in channels:
        assert f'<input type="checkbox" data-choice value="{cid}" >' in form
    assert "ops &lt;b&gt; (webhook)" in form and "data-monitor-find" in form
    assert "cache" not in form and 'data-field="monitor_ids" data-input="monitors"' in form
    # A rule naming the second channel and two monitors: its edit form has them chosen, by name.
    r = await editor.http.post(
        "/api/v1/notification-rules",
        json={
            "name": "r",
            "channel_ids": [channels[1]],
            "monitor_ids": monitors[:2],
            "events": ["monitor.down"],
            "group_by": ["tag"],
        },
        headers={"X-CSRF-Token": editor.csrf},
    )
    rule = (await r.json())["data"]
    assert r.status == 201, rule
    form = await (await editor.http.get(f"/console/rules/{rule['id']}/edit")).text()
    _no_markup(form)
    assert f'data-choice value="{channels[1]}" checked>' in form
    assert f'data-choice value="{channels[0]}" >' in form
    # Events and group keys: a checkbox each, the stored ones ticked.
    ticked = re.findall(r'data-choice value="([a-z.]+)" checked>', form)
    assert ticked == ["monitor.down", "tag"] and 'data-choice value="incident.opened" >' in form
    chosen = re.findall(r'data-chosen-id="(\d+)"><span data-chosen-name>([^<]*)</span>', form)
    assert chosen == [
        (str(monitors[0]), f"db &lt;i&gt; (#{monitors[0]})"),
        (str(monitors[1]), f"web (#{monitors[1]})"),
    ]
    assert "cache" not in form
    # The list names the rule's channel.
    listed = await (await editor.http.get("/console/rules")).text()
    assert "<td>dev</td>" in listed, listed[-3000:]
    # A maintenance window's monitors are picked the same way.
    r = await api.post(
        "/api/v1/maintenance-windows",
        json={
            "name": "w",
            "monitor_ids": [monitors[2]],
            "days": ["mon"],
            "start_time": "02:30",
            "duration": 60,
        },
    )
    window = (await r.json())["data"]
    assert r.status == 201, window
    form = await (await editor.http.get(f"/console/maintenance/{window['id']}/edit")).text()
    chosen = re.findall(r'data-chosen-id="(\d+)"><span data-chosen-name>([^<]*)</span>', form)
    assert chosen == [(str(monitors[2]), f"cache (#{monitors[2]})")] and "data-monitor-find" in form


async def test_a_channel_form_has_each_kinds_settings_and_never_echoes_a_secret(
    controller: Running, users: Make
) -> None:
    editor = await users("ed", "editor")
    csrf = {"X-CSRF-Token": editor.csrf}
    form = await (await editor.http.get("/console/channels/new")).text()
    # One fieldset per kind, from its config type; the first kind's is shown and sent.
    for kind in NOTIFIERS:
        assert f'data-kind-settings="{kind}"' in form, kind
    assert re.search(r'data-kind-settings="discord" data-object="config" hidden disabled', form)
    assert re.search(r'data-kind-settings="webhook" data-object="config" >', form)
    fields = _fields(form)
    assert {
        "config.url",
        "config.headers",
        "config.routing_key",
        "config.to",
        "config.from",
        "config.bot_token",
    } <= fields
    assert 'id="k-webhook-f-config.url" name="config.url" type="url"' in form  # a new secret: an input
    assert 'id="k-pagerduty-f-config.routing_key" name="config.routing_key" type="password"' in form

    # A bad setting's error names a field of the kind's fieldset.
    bad = {"name": "pd", "kind": "pagerduty", "config": {"routing_key": "short"}}
    r = await editor.http.post("/api/v1/notification-channels", json=bad, headers=csrf)
    details = (await r.json())["error"]["details"]
    assert r.status == 422 and set(details) == {"config.routing_key"} and "config.routing_key" in fields, (
        details
    )

    secrets = {"url": "http://127.0.0.1:9/hook?token=s3cret-url", "secret": "hmac-s3cret"}
    headers = {"X-Api-Key": "k3y-value", "X-Other": "other-value"}
    body = {"name": "hook", "kind": "webhook", "config": {**secrets, "headers": headers}}
    r = await editor.http.post("/api/v1/notification-channels", json=body, headers=csrf)
    cid = (await r.json())["data"]["id"]
    assert r.status == 201
    edit = await (await editor.http.get(f"/console/channels/{cid}/edit")).text()
    # Secrets show as "set" with Replace: no value, not even the masked one the API shows.
    for value in (*secrets.values(), *headers.values(), "****", "&lt;redacted&gt;", "<redacted>"):
        assert value not in edit, value
    assert edit.count("data-secret-replace") == 2 and edit.count("data-secret-clear") == 1  # url is required
    assert 'data-stored="X-Api-Key"' in edit and 'data-stored="X-Other"' in edit
    assert '<option value="webhook" selected>webhook</option>' in edit and 'value="slack"' not in edit

    async def stored() -> dict[str, Any]:
        row = await notify_store.get_channel(controller.app[keys.POOL], cid)
        assert row is not None
        return dict(row["config"])

    # What the form sends untouched (no secret, no header map): everything is kept.
    untouched = {"name": "hook 2", "kind": "webhook", "is_enabled": True, "config": {"method": "PUT"}}
    r = await editor.http.patch(f"/api/v1/notification-channels/{cid}", json=untouched, headers=csrf)
    assert r.status == 200, await r.text()
    assert await stored() == {**secrets, "headers": headers, "method": "PUT", "kind": "webhook"}
    # A header changed: the rows send the map, "<redacted>" for a kept value; one removed.
    changed = {"config": {"headers": {"X-Api-Key": "<redacted>", "X-New": "new-value"}}}
    r = await editor.http.patch(f"/api/v1/notification-channels/{cid}", json=changed, headers=csrf)
    assert r.status == 200, await r.text()
    assert (await stored())["headers"] == {"X-Api-Key": "k3y-value", "X-New": "new-value"}
    # Replace the URL, remove the optional secret.
    r = await editor.http.patch(
        f"/api/v1/notification-channels/{cid}",
        json={"config": {"url": "http://127.0.0.1:9/other", "secret": None}},
        headers=csrf,
    )
    assert r.status == 200, await r.text()
    config = await stored()
    assert config["url"] == "http://127.0.0.1:9/other" and config["secret"] is None
    edit = await (await editor.http.get(f"/console/channels/{cid}/edit")).text()
    assert edit.count("data-secret-replace") == 1 and 'data-stored="X-New"' in edit


async def test_a_heartbeat_page_shows_its_ping_url_pings_and_runs(controller: Running, users: Make) -> None:
    editor = await users("ed", "editor")
    viewer = await users("vi", "viewer")
    r = await editor.http.post(
        "/api/v1/heartbeats",
        json={"name": "nightly", "run_interval": 3600},
        headers={"X-CSRF-Token": editor.csrf},
    )
    hb = (await r.json())["data"]
    assert r.status == 201 and hb["ping_url"].startswith(controller.base)
    async with aiohttp.ClientSession() as anon:
        assert (await anon.get(hb["ping_url"] + "/start?rid=run-1")).status == 200
        assert (await anon.get(hb["ping_url"] + "/start?rid=run-2")).status == 200
        assert (await anon.get(hb["ping_url"] + "?rid=run-1")).status == 200
    page = await (await editor.http.get(f"/console/heartbeats/{hb['id']}")).text()
    _no_markup(page)
    assert f"{controller.base}/api/v1/heartbeat/" in page and hb["token"] not in page
    assert f'data-api="POST /api/v1/heartbeats/{hb["id"]}/token" data-show="ping_url"' in page
    assert page.count("<td>start</td>") == 2 and page.count("<td>success</td>") == 1
    # run-2 is still open (in the runs and the pings), run-1 ended (twice in the pings).
    assert page.count("<td>run-2</td>") == 2 and page.count("<td>run-1</td>") == 2
    assert f'href="/console/heartbeats/{hb["id"]}/edit"' in page
    seen = await (await viewer.http.get(f"/console/heartbeats/{hb['id']}")).text()
    assert "nightly" in seen and "data-api=" not in seen and "/edit" not in seen
    listed = await (await editor.http.get("/console/heartbeats")).text()
    assert f'<a href="/console/heartbeats/{hb["id"]}">nightly</a>' in listed


async def test_a_status_page_form_edits_sections_and_posts(api: aiohttp.ClientSession, users: Make) -> None:
    r = await api.post(
        "/api/v1/monitors",
        json={"name": "web", "type": "http", "url": "http://127.0.0.1:9/", "check_interval": 3600},
    )
    mid = (await r.json())["data"]["id"]
    editor = await users("ed", "editor")
    csrf = {"X-CSRF-Token": editor.csrf}
    sections = [
        {
            "name": "Site",
            "monitors": [{"monitor_id": mid, "display_name": "Web <i>site</i>", "description": "<b>x"}],
        }
    ]
    r = await editor.http.post(
        "/api/v1/status-pages",
        json={"name": "Acme", "slug": "acme", "sections": sections, "colors": {"accent": "#2f6fde"}},
        headers=csrf,
    )
    page_id = (await r.json())["data"]["id"]
    r = await editor.http.post(
        f"/api/v1/status-pages/{page_id}/posts",
        json={"title": XSS, "status": "investigating", "message": "looking <u>into</u> it"},
        headers=csrf,
    )
    post = (await r.json())["data"]
    assert r.status == 201, post
    r = await api.post(
        "/api/v1/monitors",
        json={"name": "elsewhere-db", "type": "http", "url": "http://127.0.0.1:9/db", "check_interval": 3600},
    )
    assert r.status == 201
    form = await (await editor.http.get(f"/console/status-pages/{page_id}/edit")).text()
    _no_markup(form)
    # Sections and components as controls: the section's name, the component's monitor
    # (its name in the picker's select), its display name, escaped; no component ids, no
    # JSON text, and no other monitor (the picker searches the API's paged list).
    assert 'data-section-name value="Site"' in form and "component_id" not in form
    assert f'<option value="{mid}" selected>web (#{mid})</option>' in form
    assert 'data-display-name value="Web &lt;i&gt;site&lt;/i&gt;"' in form
    assert re.search(r'data-description maxlength="500" value="&lt;b&gt;x"', form)
    assert (
        "elsewhere-db" not in form and 'data-input="sections"' in form and "&#34;monitor_id&#34;" not in form
    )
    # Colours: a field each, sent as one object (an empty one left out, so it is removed).
    assert 'data-object="colors"' in form and re.search(
        r'name="colors.accent" type="text"\s+value="#2f6fde"', form
    )
    assert re.search(r'name="colors.outage" type="text"\s+value=""', form) and "colors.outage" in _fields(
        form
    )
    r = await editor.http.patch(
        f"/api/v1/status-pages/{page_id}", json={"colors": {"outage": "nope"}}, headers=csrf
    )
    assert r.status == 422 and set((await r.json())["error"]["details"]) == {"colors.outage"}
    for control in (
        "data-add-section",
        "data-add-component",
        'data-move="-1"',
        "data-remove-row",
        "data-monitor-search",
    ):
        assert control in form, control
    # The picker's search: the API's list with the page's session, 20 at most, by name.
    r = await editor.http.get(
        "/api/v1/monitors", params={"limit": "20", "sort": "name:asc", "search": "elsew"}
    )
    assert r.status == 200 and [m["name"] for m in (await r.json())["data"]] == ["elsewhere-db"]
    assert f'data-action="/api/v1/status-pages/{page_id}/posts"' in form
    assert f'data-action="/api/v1/status-pages/{page_id}/posts/{post["id"]}/updates"' in form
    assert "looking &lt;u&gt;into&lt;/u&gt; it" in form
    # What the editor sends (reordered, a section added, one display name cleared) is
    # accepted; a bad component's error names its path, which the page shows on that row.
    sent = [{"name": "New", "monitors": []}, {"name": "Site", "monitors": [{"monitor_id": mid}]}]
    r = await editor.http.patch(f"/api/v1/status-pages/{page_id}", json={"sections": sent}, headers=csrf)
    assert r.status == 200, await r.text()
    assert [s["name"] for s in (await r.json())["data"]["sections"]] == [
        "Site"
    ]  # an empty section shows nothing
    bad = [{"name": "Site", "monitors": [{"monitor_id": 999999}]}]
    r = await editor.http.patch(f"/api/v1/status-pages/{page_id}", json={"sections": bad}, headers=csrf)
    details = (await r.json())["error"]["details"]
    assert r.status == 422 and {p.split(".monitor_id")[0] for p in details} == {"sections[0].monitors[0]"}, (
        details
    )
    r = await editor.http.post(
        f"/api/v1/status-pages/{page_id}/posts/{post['id']}/updates",
        json={"status": "resolved", "message": "fixed"},
        headers=csrf,
    )
    assert r.status == 201
    form = await (await editor.http.get(f"/console/status-pages/{page_id}/edit")).text()
    assert f"/posts/{post['id']}/updates" not in form and "fixed" in form  # resolved: no update form


# ---- "test now" ---------------------------------------------------------------------------


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """200 for us-east's probe (127.0.0.11), 503 for everyone else."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.remote == "127.0.0.11" else 503)

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


@pytest.fixture
async def probes(controller: Running, nats_url: str) -> AsyncIterator[list[Agent]]:
    agents = await start_probes(nats_url, ["us-east", "eu-west"])
    await eventually(
        lambda: all(controller.app[keys.FLEET].live_regions().get(r, 0) >= 1 for r in ("us-east", "eu-west")),
        timeout=10,
        what="heartbeats of both probes",
    )
    yield agents
    await stop_probes(agents)


async def test_test_now_runs_the_unsaved_form_from_its_regions(
    controller: Running, api: aiohttp.ClientSession, users: Make, target: str, probes: list[Agent]
) -> None:
    editor = await users("ed", "editor")
    csrf = {"X-CSRF-Token": editor.csrf}
    form = await (await editor.http.get("/console/monitors/new?type=http")).text()
    assert 'data-test="/console/monitors/test"' in form and 'id="test-results"' in form
    body = {
        "name": "t",
        "type": "http",
        "url": target,
        "locations": ["us-east", "eu-west", "ap-south"],
        "timeout": 2,
    }
    r = await editor.http.post("/console/monitors/test", json=body, headers=csrf)
    run = (await r.json())["data"]
    assert r.status == 200, run
    by = {x["region"]: x for x in run["regions"]}
    assert by["us-east"]["status"] == "ok" and by["us-east"]["status_code"] == 200
    assert by["eu-west"]["status"] == "fail" and by["eu-west"]["status_code"] == 503
    assert by["ap-south"]["status"] == "unavailable"
    # Nothing was saved.
    assert (await (await api.get("/api/v1/monitors")).json())["data"] == []
    # The API's field errors, as a save would give them.
    r = await editor.http.post("/console/monitors/test", json={**body, "url": "ftp://x"}, headers=csrf)
    assert r.status == 422 and "url" in (await r.json())["error"]["details"]
    # An edit runs the stored monitor with the form's changes merged in.
    r = await api.post(
        "/api/v1/monitors", json={**body, "url": "http://127.0.0.1:9/", "check_interval": 3600}
    )
    mid = (await r.json())["data"]["id"]
    edit = await (await editor.http.get(f"/console/monitors/{mid}/edit")).text()
    assert f'data-test="/console/monitors/test?id={mid}"' in edit
    r = await editor.http.post(
        f"/console/monitors/test?id={mid}", json={"url": target, "locations": ["us-east"]}, headers=csrf
    )
    run = (await r.json())["data"]
    assert r.status == 200 and [x["status"] for x in run["regions"]] == ["ok"], run
    # A viewer, and a request without the token, get 403.
    viewer = await users("vi", "viewer")
    r = await viewer.http.post("/console/monitors/test", json=body, headers={"X-CSRF-Token": viewer.csrf})
    assert r.status == 403
    assert (await editor.http.post("/console/monitors/test", json=body)).status == 403


# ---- the overview: group by, region state ---------------------------------------------------


async def test_the_overview_groups_by_project_or_tag_and_filters_by_region_state(
    controller: Running, users: Make
) -> None:
    pool = controller.app[keys.POOL]
    # 60 monitors: projects a (20), b (20) and none (20); tags cycling web, db, none.
    await pool.execute(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, project, tags)"
        " SELECT 'm ' || lpad(g::text, 2, '0'), 'tcp', '{\"host\": \"127.0.0.1\", \"port\": 9}', 3600, 5,"
        " ARRAY['us-east', 'eu-west'], (ARRAY['a', 'b', NULL])[1 + (g - 1) / 20],"
        " CASE g % 3 WHEN 0 THEN ARRAY['web'] WHEN 1 THEN ARRAY['zz', 'db'] ELSE '{}'::text[] END"
        " FROM generate_series(1, 60) g"
    )
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM monitors ORDER BY name")]
    # In eu-west: the first five failed most recently (an older ok before), the next five are ok
    # now (an older fail), one failed two hours ago (not in the last hour), the rest no result.
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, probe_id, status, started_at, duration_ms)"
        " SELECT id, now() - make_interval(mins => m), 'eu-west', 'p', s, now(), 1"
        " FROM unnest($1::bigint[], $2::int[], $3::text[]) AS t(id, m, s)",
        [*ids[:5], *ids[:5], *ids[5:10], *ids[5:10], ids[10]],
        [*[1] * 5, *[5] * 5, *[1] * 5, *[5] * 5, 120],
        [*["fail"] * 5, *["ok"] * 5, *["ok"] * 5, *["fail"] * 5, "fail"],
    )
    admin = await users("root", "admin")

    page = await (await admin.http.get("/?region=eu-west&region_state=fail&sort=name:asc")).text()
    assert page.count('data-monitor-id="') == 5 and "5 monitors match" in page
    assert all(f'data-monitor-id="{i}"' in page for i in ids[:5])
    page = await (await admin.http.get("/?region=eu-west&region_state=ok")).text()
    assert {int(x) for x in re.findall(r'data-monitor-id="(\d+)"', page)} == set(ids[5:10])
    page = await (await admin.http.get("/?region=eu-west&region_state=none&sort=name:asc")).text()
    assert "50 monitors match" in page and "page 1 of 1" in page  # ids[10]'s result is too old
    # With another filter; the form shows what is chosen.
    page = await (await admin.http.get("/?region=eu-west&region_state=none&tag=web")).text()
    assert "17 monitors match" in page  # web: 20, less m 03, 06 and 09
    assert '<option value="eu-west" selected>' in page
    bad = await (await admin.http.get("/?region=mars&region_state=fail")).text()
    assert 'class="error"' in bad and "region: one of" in bad and "60 monitors match" in bad

    # Grouped by project: a, b, then those without, in pages of 50 (never all at once).
    page = await (await admin.http.get("/?group=project&sort=name:asc")).text()
    groups = re.findall(r'data-group="([^"]*)"', page)
    assert groups == ["a", "b", "(no project)"] and page.count('data-monitor-id="') == 50
    assert 'rel="next"' in page and "group=project" in page  # kept in the pager's links
    second = await (await admin.http.get("/?group=project&sort=name:asc&page=2")).text()
    assert re.findall(r'data-group="([^"]*)"', second) == ["(no project)"]
    assert second.count('data-monitor-id="') == 10
    # Grouped by tag: by each monitor's first tag alphabetically, then the untagged.
    page = await (await admin.http.get("/?group=tag&sort=name:asc")).text()
    assert re.findall(r'data-group="([^"]*)"', page) == ["db", "web", "(no tag)"]
    page2 = await (await admin.http.get("/?group=tag&sort=name:asc&page=2")).text()
    assert re.findall(r'data-group="([^"]*)"', page2) == ["(no tag)"]
    # The partial htmx swaps in keeps the groups.
    partial = await (await admin.http.get("/?group=project", headers={"HX-Request": "true"})).text()
    assert partial.lstrip().startswith('<section id="rows"') and 'data-group="a"' in partial
    assert "group: one of" in await (await admin.http.get("/?group=colour")).text()


# ---- Secure cookies behind a TLS-terminating proxy ------------------------------------------


async def _login_cookies(base: str, headers: dict[str, str]) -> list[str]:
    """The Set-Cookie headers of the login form and of a successful login (as root). The
    login token's cookie is sent by hand: a client sends no Secure cookie over plain HTTP."""
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.DummyCookieJar()) as http:
        r = await http.get("/login", headers=headers)
        form_cookies = r.headers.getall("Set-Cookie", [])
        token = re.search(r'name="login_token" value="([^"]+)"', await r.text())
        cookie = r.cookies.get("pf_login")
        assert token and cookie
        r = await http.post(
            "/login",
            data={"username": "root", "password": PASSWORD, "login_token": token.group(1), "next": "/"},
            headers={**headers, "Cookie": f"pf_login={cookie.value}"},
            allow_redirects=False,
        )
        assert r.status == 303, await r.text()
        return [*form_cookies, *r.headers.getall("Set-Cookie", [])]


async def _failed_login(base: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        token = re.search(r'name="login_token" value="([^"]+)"', await (await http.get("/login")).text())
        assert token
        data = {"username": "root", "password": "wrong password", "login_token": token.group(1)}
        r = await http.post("/login", data=data, headers=headers, allow_redirects=False)
        assert r.status == 401, await r.text()


async def test_cookies_are_secure_behind_a_trusted_proxy_only(database: str, nats_url: str) -> None:
    https = {"X-Forwarded-Proto": "https"}
    # Trusted: the test client's 127.0.0.1 is in the list.
    running = await start_controller(database, nats_url, trusted_proxies=["10.0.0.0/8", "127.0.0.0/24"])
    try:
        await accounts.create_user(running.app[keys.POOL], "root", PASSWORD, "admin")
        cookies = await _login_cookies(running.base, https)
        assert len(cookies) >= 2 and all("; Secure" in c for c in cookies if "Max-Age=0" not in c), cookies
        assert any(c.startswith("pf_session=") and "HttpOnly" in c and "SameSite=Lax" in c for c in cookies)
        plain = await _login_cookies(running.base, {"X-Forwarded-Proto": "http"})
        assert not any("Secure" in c for c in plain if c.startswith("pf_session=")), plain
        # From a trusted proxy, a failed login counts against the right-most untrusted
        # address of X-Forwarded-For (10.1.2.3 is another trusted proxy).
        await _failed_login(running.base, {"X-Forwarded-For": "1.2.3.4, 198.51.100.7, 10.1.2.3"})
        assert set(running.app[accounts.LIMITER].addresses.buckets) == {"198.51.100.7"}
    finally:
        await running.stop()
    # Not trusted (the default, and a list without the client's address): the header is
    # ignored. The same database: root is still there.
    for proxies in ([], ["10.0.0.0/8"]):
        running = await start_controller(database, nats_url, trusted_proxies=proxies)
        try:
            cookies = await _login_cookies(running.base, https)
            assert not any("Secure" in c for c in cookies), (proxies, cookies)
            # The peer is not a proxy: its X-Forwarded-For is ignored.
            await _failed_login(running.base, {"X-Forwarded-For": "198.51.100.7"})
            assert set(running.app[accounts.LIMITER].addresses.buckets) == {"127.0.0.1"}
        finally:
            await running.stop()


def test_a_bad_trusted_proxy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"trusted_proxies: 'ten\.0\.0\.0/8'"):
        load(trusted_proxies=["ten.0.0.0/8"])
    assert load(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_networks()[1].num_addresses == 1
