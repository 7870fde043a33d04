"""The console's pages rendered by the real controller: what each role sees, markup in
names shown as text, paging, security headers."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable

import aiohttp

from probefleet.controller import keys
from probefleet.controller.api.public_pages import SECURITY_HEADERS
from tests.controller.conftest import Running
from tests.controller.console.conftest import Browser

Make = Callable[[str, str], Awaitable[Browser]]
XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


async def _monitor(api: aiohttp.ClientSession, name: str, tags: list[str] | None = None) -> int:
    body = {
        "name": name,
        "type": "http",
        "url": "http://127.0.0.1:9/",
        "tags": tags or [],
        "check_interval": 3600,
    }
    r = await api.post("/api/v1/monitors", json=body)
    assert r.status == 201, await r.text()
    return int((await r.json())["data"]["id"])


async def test_a_visitor_is_sent_to_the_login_form(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as http:
        for path in ("/", "/console/incidents", "/console/monitors/1"):
            r = await http.get(path, allow_redirects=False)
            assert r.status == 303 and r.headers["Location"].startswith("/login?next="), path
        r = await http.get("/login")
        assert r.status == 200 and 'type="password"' in await r.text()
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == value


async def test_every_page_renders_for_an_admin(api: aiohttp.ClientSession, users: Make) -> None:
    mid = await _monitor(api, "home page", ["web"])
    admin = await users("root", "admin")
    for path in (
        "/",
        "/?search=home&status=pending&type=http&tag=web&sort=name:desc",
        f"/console/monitors/{mid}",
        f"/console/monitors/{mid}/edit",
        "/console/monitors/new?type=dns",
        "/console/incidents",
        "/console/fleet",
        "/console/users",
        "/console/audit",
    ):
        r = await admin.http.get(path)
        text = await r.text()
        assert r.status == 200, (path, text[:2000])
        assert r.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        assert "<script>" not in text.replace('<script src="/console-assets/', ""), path
    # An admin changes roles and disables users from the users page (through the API).
    listed = await (await admin.http.get("/console/users")).text()
    uid = re.search(r'<tr data-user-id="(\d+)"><td>root</td>', listed)
    assert uid, listed[-3000:]
    assert f'data-api="PATCH /api/v1/users/{uid.group(1)}" data-body=\'{{"role": "editor"}}\'' in listed
    disable = 'data-body=\'{"disabled": true}\' data-done="Done" data-reload="1" aria-label="Disable root"'
    assert disable in listed
    # The monitor page's uptime bars: a day each for 90 days (nothing ran yet).
    page = await (await admin.http.get(f"/console/monitors/{mid}")).text()
    assert page.count('<i class="bar b-none"') == 90 and "Uptime, last 90 days" in page
    overview = await (await admin.http.get("/?search=home")).text()
    assert "home page" in overview and 'data-monitor-id="' in overview and "1 monitor match" in overview
    r = await admin.http.get(f"/console/monitors/{mid}/chart?range=7d")
    chart = await r.json()
    assert r.status == 200 and len(chart["t"]) == 84 and chart["series"] == []
    assert (await admin.http.get(f"/console/monitors/{mid}/chart?range=2y")).status == 422


async def test_markup_in_names_tags_and_messages_is_shown_as_text(
    api: aiohttp.ClientSession, users: Make
) -> None:
    mid = await _monitor(api, XSS, [XSS[:40]])
    r = await api.post("/api/v1/incidents", json={"monitor_id": mid, "title": XSS})
    assert r.status == 201, await r.text()
    admin = await users("root", "admin")
    for path in ("/", f"/console/monitors/{mid}", "/console/incidents", f"/console/monitors/{mid}/edit"):
        text = await (await admin.http.get(path)).text()
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert html.escape(XSS, quote=False)[:30] in text.replace("&#34;", '"'), path


async def test_a_viewer_sees_no_edit_controls(api: aiohttp.ClientSession, users: Make) -> None:
    mid = await _monitor(api, "viewed")
    viewer = await users("vi", "viewer")
    overview = await (await viewer.http.get("/")).text()
    page = await (await viewer.http.get(f"/console/monitors/{mid}")).text()
    assert "New monitor" not in overview and "data-api=" not in page and "Edit</a>" not in page
    assert (await viewer.http.get("/console/monitors/new")).status == 403
    assert (await viewer.http.get("/console/users")).status == 403
    r = await viewer.http.post(f"/api/v1/monitors/{mid}/pause", headers={"X-CSRF-Token": viewer.csrf})
    assert r.status == 403
    editor = await users("ed", "editor")
    page = await (await editor.http.get(f"/console/monitors/{mid}")).text()
    assert "data-api=" in page and "Users</a>" not in page


async def test_the_overview_pages_fifty_at_a_time(controller: Running, users: Make) -> None:
    pool = controller.app[keys.POOL]
    await pool.execute(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " SELECT 'bulk ' || lpad(g::text, 3, '0'), 'tcp', '{\"host\": \"127.0.0.1\", \"port\": 9}', 3600, 5,"
        " ARRAY['us-east'] FROM generate_series(1, 120) g"
    )
    admin = await users("root", "admin")
    first = await (await admin.http.get("/?sort=name:asc")).text()
    assert first.count('data-monitor-id="') == 50 and "page 1 of 3" in first and "bulk 001" in first
    third = await (await admin.http.get("/?sort=name:asc&page=3")).text()
    assert third.count('data-monitor-id="') == 20 and "bulk 120" in third and 'rel="next"' not in third
    partial = await (await admin.http.get("/?search=bulk 11", headers={"HX-Request": "true"})).text()
    assert partial.lstrip().startswith('<section id="rows"') and partial.count('data-monitor-id="') == 10


async def test_static_files_are_served_from_the_package(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as http:
        for name in ("console.js", "console.css", "vendor/htmx.min.js", "vendor/uPlot.iife.min.js"):
            r = await http.get(f"/console-assets/{name}")
            assert r.status == 200 and len(await r.read()) > 1000, name
        assert (await http.get("/console-assets/../pages.py")).status == 404
        assert (await http.get("/console-assets/vendor/README.md")).status == 404


async def test_the_list_pages_show_what_the_api_holds_and_secrets_once(
    api: aiohttp.ClientSession, users: Make
) -> None:
    r = await api.post("/api/v1/heartbeats", json={"name": "nightly <i>job</i>", "run_interval": 3600})
    assert r.status == 201, await r.text()
    hb = (await r.json())["data"]
    r = await api.post(
        "/api/v1/notification-channels",
        json={"name": "hook", "type": "webhook", "config": {"url": "http://127.0.0.1:9/hook?token=s3cret"}},
    )
    assert r.status == 201, await r.text()
    admin = await users("root", "admin")
    viewer = await users("vi", "viewer")
    pages = {
        "/console/heartbeats": "nightly &lt;i&gt;job&lt;/i&gt;",
        "/console/channels": "hook",
        "/console/maintenance": "Maintenance windows",
        "/console/status-pages": "Status pages",
        "/console/keys": "test-admin",
    }
    for path, expected in pages.items():
        r = await admin.http.get(path)
        text = await r.text()
        assert r.status == 200 and expected in text, (path, text[:1500])
        assert "s3cret" not in text and hb.get("ping_url", "\x00") not in text
    heartbeats = await (await admin.http.get("/console/heartbeats")).text()
    assert f'data-api="POST /api/v1/heartbeats/{hb["id"]}/token"' in heartbeats
    # Times in a list (also those the API gives as ISO text) are <time> elements, which the
    # page's script shows in the viewer's zone; UTC, named, without script.
    listed = await (await admin.http.get("/console/keys")).text()
    assert re.search(r'<td><time datetime="\d{4}-\d\d-\d\dT[\d:]+Z">[\d-]+ [\d:]+ UTC</time></td>', listed)
    assert re.search(r'<td><time datetime="[^"]+Z">[^<]+ UTC</time></td>', heartbeats), heartbeats
    # A viewer reads the lists without their buttons, and no keys at all.
    text = await (await viewer.http.get("/console/heartbeats")).text()
    assert "nightly" in text and "data-api=" not in text
    assert (await viewer.http.get("/console/keys")).status == 403
    # The key the page's form creates comes back once in the answer, never in the list.
    r = await admin.http.post(
        "/api/v1/api-keys",
        json={"name": "from console", "scopes": ["monitors:read"]},
        headers={"X-CSRF-Token": admin.csrf},
    )
    created = (await r.json())["data"]
    assert r.status == 201 and created["key"].startswith("pf_")
    listed = await (await admin.http.get("/console/keys")).text()
    assert "from console" in listed and created["key"] not in listed
