"""The public page against a real controller, over HTTP: each page's look (logo, colours,
custom CSS, footer, default theme) and its refusals, stored markup shown as text on every
public answer, the incident archive beyond 14 days, the Atom feed, response times per
component, and subscriptions to some components only."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from tests.controller.conftest import Running, start_controller
from tests.controller.status_pages.helpers import (
    BOUND,
    Receiver,
    backfill_rollups,
    create_monitor,
    create_page,
    set_status,
)
from tests.controller.status_pages.test_html import ATOM, EVIL, Parsed, assert_no_injected_markup
from tests.helpers import eventually

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
async def anon(controller: Running) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=controller.base) as session:
        yield session


async def _page(api: aiohttp.ClientSession, slug: str, **body: Any) -> tuple[dict[str, Any], list[int]]:
    mids = [await create_monitor(api, f"{slug}-{i}") for i in range(2)]
    monitors = [{"monitor_id": m, "display_name": f"Part {i}"} for i, m in enumerate(mids)]
    return await create_page(api, **{"name": "Acme", "slug": slug, "monitors": monitors, **body}), mids


async def test_a_page_shows_its_logo_colours_custom_css_footer_and_theme(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    css = ".component { border-width: 2px }\n.name > b { color: red }"
    page, _ = await _page(
        api,
        "look",
        logo=PNG_URL,
        colors={"accent": "#1A7F37", "outage": "#f00"},
        custom_css=css,
        footer_text="Acme Inc.\nhelp@acme.test",
        theme="dark",
    )
    assert page["logo_url"].startswith("/status/look/logo?v=")
    assert (page["colors"], page["custom_css"], page["theme"]) == (
        {"accent": "#1a7f37", "outage": "#f00"},
        css,
        "dark",
    )
    r = await anon.get("/status/look")
    doc = Parsed(await r.text())
    assert r.status == 200 and doc.first("html")["data-theme"] == "dark"
    assert doc.first("img")["src"] == page["logo_url"]
    sheet = [a["href"] for a in doc.tags("link") if a.get("rel") == "stylesheet"][1]
    assert "Acme Inc.\nhelp@acme.test" in doc.text
    logo = await anon.get(page["logo_url"])
    assert (logo.status, logo.content_type, await logo.read()) == (200, "image/png", PNG)
    assert "script-src 'self'" in logo.headers["Content-Security-Policy"]
    styles = await anon.get(str(sheet))
    text = await styles.text()
    assert styles.status == 200 and styles.content_type == "text/css"
    assert "--accent: #1a7f37;" in text and "--bad: #f00;" in text and text.endswith(css)
    # PUT leaves the logo (it cannot be read back as given) and resets the rest
    r = await api.put(f"/api/v1/status-pages/{page['id']}", json={"name": "Acme", "slug": "look"})
    kept = (await r.json())["data"]
    assert kept["logo_url"] == page["logo_url"] and kept["colors"] == {} and kept["theme"] == "auto"
    assert (await anon.get(str(sheet).split("?")[0])).status == 200
    doc = Parsed(await (await anon.get("/status/look")).text())
    assert "data-theme" not in doc.first("html") and len(doc.tags("link")) == 2  # status.css, the feed
    r = await api.patch(f"/api/v1/status-pages/{page['id']}", json={"logo": None})
    assert (await r.json())["data"]["logo_url"] is None
    assert (await anon.get("/status/look/logo")).status == 404
    assert Parsed(await (await anon.get("/status/look")).text()).tags("img") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"colors": {"accent": "red"}}, "colors.accent"),
        ({"colors": {"background": "#fff"}}, "colors.background"),
        ({"colors": "#fff"}, "colors"),
        ({"custom_css": "body{}</style><script>alert(1)</script>"}, "custom_css"),
        ({"custom_css": "@import url(https://evil.test/x.css);"}, "custom_css"),
        ({"custom_css": "x" * 20_001}, "custom_css"),
        ({"logo": "https://cdn.test/logo.png"}, "logo"),
        ({"logo": "data:text/html;base64,PHNjcmlwdD4="}, "logo"),
        ({"logo": "data:image/gif;base64," + base64.b64encode(PNG).decode()}, "logo"),
        ({"logo": "data:image/png;base64,not base64!"}, "logo"),
        ({"logo": "data:image/png;base64," + base64.b64encode(PNG + b"0" * 300_000).decode()}, "logo"),
        ({"theme": "neon"}, "theme"),
        ({"show_response_times": "yes"}, "show_response_times"),
        ({"footer_text": "x" * 1001}, "footer_text"),
    ],
    ids=[
        "colour-name",
        "unknown-colour",
        "colours-not-object",
        "css-closing-style",
        "css-import",
        "css-too-long",
        "logo-link",
        "logo-html",
        "logo-type-mismatch",
        "logo-bad-base64",
        "logo-too-big",
        "theme",
        "response-times",
        "footer-too-long",
    ],
)
async def test_bad_appearance_is_a_422_naming_the_field(
    api: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    r = await api.post("/api/v1/status-pages", json={"name": "Bad", "slug": "bad", **body})
    assert r.status == 422
    assert field in (await r.json())["error"]["details"]


async def test_stored_markup_is_shown_as_text_on_every_public_answer(
    controller: Running, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    mid = await create_monitor(api, EVIL)
    page = await create_page(
        api,
        name=EVIL,
        slug="xss",
        description=EVIL,
        footer_text=EVIL,
        sections=[
            {"name": EVIL, "monitors": [{"monitor_id": mid, "display_name": EVIL, "description": EVIL}]}
        ],
    )
    r = await api.post(
        f"/api/v1/status-pages/{page['id']}/posts",
        json={"title": EVIL, "message": EVIL, "status": "identified"},
    )
    assert r.status == 201
    await api.put(
        f"/api/v1/status-pages/{page['id']}", json={"incident_status": "monitoring", "incident_message": EVIL}
    )
    for path in ("/status/xss", "/status/xss/history"):
        r = await anon.get(path)
        doc = Parsed(await r.text())
        assert r.status == 200 and r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert_no_injected_markup(doc)
        assert EVIL in doc.text, path
    # The component's description, under its name, as text.
    text = await (await anon.get("/status/xss")).text()
    shown = re.search(r'<span class="name">([^<]*)</span>.*?<p class="desc">([^<]*)</p>', text, re.S)
    assert shown and html.unescape(shown.group(1)) == html.unescape(shown.group(2)) == EVIL
    feed = ET.fromstring(await (await anon.get("/status/xss/feed.atom")).text())
    content = feed.findtext(f"{ATOM}entry/{ATOM}content") or ""
    assert feed.findtext(f"{ATOM}title") == f"{EVIL} status"
    assert_no_injected_markup(Parsed(content))
    assert EVIL in Parsed(content).text


async def _post_at(
    controller: Running, api: aiohttp.ClientSession, page_id: int, title: str, at: dt.datetime
) -> int:
    r = await api.post(
        f"/api/v1/status-pages/{page_id}/posts", json={"title": title, "message": "m", "status": "resolved"}
    )
    post_id = int((await r.json())["data"]["id"])
    await controller.app[keys.POOL].execute(
        "UPDATE status_page_posts SET created_at = $2, updated_at = $2, resolved_at = $2 WHERE id = $1",
        post_id,
        at,
    )
    return post_id


async def test_the_archive_pages_through_every_post_beyond_14_days(
    controller: Running, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    page, _ = await _page(api, "hist")
    now = dt.datetime.now(dt.UTC)
    # 25 resolved posts, one a day from 40 days ago: only the last 14 days on the page itself
    for d in range(25):
        await _post_at(controller, api, page["id"], f"post {d}", now - dt.timedelta(days=40 - d))
    controller.app[keys.STATUS_PAGES].forget(page["id"])
    main = Parsed(await (await anon.get("/status/hist")).text())
    recent = [a["id"] for a in main.tags("article")]
    assert len(recent) == 0 and "No incidents reported recently." in main.text
    assert main.first("a", href="/status/hist/history")
    first = Parsed(await (await anon.get("/status/hist/history")).text())
    titles = [t.strip() for t in first.chunks if t.startswith("post ")]
    assert titles == [f"post {d}" for d in range(24, 4, -1)]  # 20, newest first
    assert {a.get("rel"): a["href"] for a in first.tags("a") if a.get("rel")} == {
        "next": "/status/hist/history?page=2"
    }
    assert "Page 1 of 2" in first.text
    second = Parsed(await (await anon.get("/status/hist/history?page=2")).text())
    assert [t.strip() for t in second.chunks if t.startswith("post ")] == [
        f"post {d}" for d in range(4, -1, -1)
    ]
    assert {a.get("rel") for a in second.tags("a") if a.get("rel")} == {"prev"}
    assert (await anon.get("/status/hist/history?page=3")).status == 404
    for bad in ("0", "abc", "-1", "1e3"):
        r = await anon.get(f"/status/hist/history?page={bad}")
        assert r.status == 400 and "whole number" in await r.text()
    await api.patch(f"/api/v1/status-pages/{page['id']}", json={"is_public": False, "password": "password1"})
    r = await anon.get("/status/hist/history")
    assert r.status == 401 and "post 1" not in await r.text()
    # and the rest of a private page's site answers as for a page that does not exist
    for path in ("feed.atom", "theme.css", "logo"):
        private, missing = await anon.get(f"/status/hist/{path}"), await anon.get(f"/status/nosuch/{path}")
        assert private.status == missing.status == 404, path
        assert "post 1" not in await private.text()


async def test_the_atom_feed_lists_posts_with_their_updates(
    controller: Running, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    page, _ = await _page(api, "feed", description="All of Acme")
    old = await _post_at(
        controller, api, page["id"], "Old outage", dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC)
    )
    r = await api.post(
        f"/api/v1/status-pages/{page['id']}/posts",
        json={"title": "API slow", "message": "Looking", "status": "investigating"},
    )
    new = (await r.json())["data"]["id"]
    await api.post(
        f"/api/v1/status-page-posts/{new}/updates", json={"message": "Fixed", "status": "resolved"}
    )
    r = await anon.get("/status/feed/feed.atom")
    assert r.status == 200 and r.content_type == "application/atom+xml"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    feed = ET.fromstring(await r.read())
    assert feed.tag == f"{ATOM}feed" and feed.findtext(f"{ATOM}subtitle") == "All of Acme"
    self_link = next(link for link in feed.findall(f"{ATOM}link") if link.get("rel") == "self")
    assert self_link.get("href") == f"{controller.base}/status/feed/feed.atom"
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["API slow (resolved)", "Old outage (resolved)"]
    assert entries[1].findtext(f"{ATOM}updated") == "2024-01-02T03:04:00Z"
    assert feed.findtext(f"{ATOM}updated") == entries[0].findtext(f"{ATOM}updated")
    assert len({e.findtext(f"{ATOM}id") for e in entries}) == 2
    body = Parsed(entries[0].findtext(f"{ATOM}content") or "").text
    assert body.index("Fixed") < body.index("Looking")
    del old
    missing = await anon.get("/status/nosuch/feed.atom")
    assert missing.status == 404


async def test_components_show_their_response_time_when_the_page_says_so(
    controller: Running, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    page, (timed, silent) = await _page(api, "rt")
    now = dt.datetime.now(dt.UTC)
    pool = controller.app[keys.POOL]
    await pool.executemany(
        "INSERT INTO check_results (monitor_id, due, region, probe_id, status, started_at, duration_ms)"
        " VALUES ($1, $2, 'us-east', 'p', 'ok', $2, $3)",
        [(timed, now - dt.timedelta(minutes=m), 100.0 + 200 * (m % 2)) for m in range(10, 20)],
    )
    await backfill_rollups(pool, now - dt.timedelta(hours=1))
    data = (await (await anon.get("/api/v1/status-pages/rt/public")).json())["data"]
    assert "response_time_ms" not in data["sections"][0]["components"][0]
    await api.patch(f"/api/v1/status-pages/{page['id']}", json={"show_response_times": True})
    data = (await (await anon.get("/api/v1/status-pages/rt/public")).json())["data"]
    assert [c["response_time_ms"] for c in data["sections"][0]["components"]] == [200.0, None]
    text = await (await anon.get("/status/rt")).text()
    assert re.findall(r'<span class="rt"[^>]*>([^<]*)</span>', text) == ["200 ms", "no data"]
    del silent


async def test_the_title_says_status_once(api: aiohttp.ClientSession, anon: aiohttp.ClientSession) -> None:
    await _page(api, "title", name="Acme Status")
    assert "<title>Acme Status</title>" in await (await anon.get("/status/title")).text()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    got = [Receiver(), Receiver()]
    for r in got:
        await r.start()
    yield got
    for r in got:
        await r.stop()


async def test_a_subscriber_of_some_components_hears_only_of_those(
    database: str, nats_url: str, receivers: list[Receiver], smtp: list[Any]
) -> None:
    running = await start_controller(
        database,
        nats_url,
        subscriber_webhooks_allow_private=True,
        smtp_host="127.0.0.1",
        smtp_port=smtp.pop(0),
        smtp_security="none",
    )
    some, every = receivers
    headers = {"Authorization": f"Bearer {running.admin_key}"}
    try:
        async with (
            aiohttp.ClientSession(base_url=running.base, headers=headers) as api,
            aiohttp.ClientSession(base_url=running.base) as anon,
        ):
            page, (first, second) = await _page(api, "subs")
            comps = [m["component_id"] for m in page["sections"][0]["monitors"]]
            r = await anon.post(
                "/api/v1/status-pages/subs/subscribe",
                json={"webhook_url": some.url(), "components": [comps[0]]},
            )
            assert r.status == 202
            assert (
                await anon.post("/api/v1/status-pages/subs/subscribe", json={"webhook_url": every.url()})
            ).ok
            # a component of another page, or not an id: 422 by position
            other, _ = await _page(api, "other")
            foreign = other["sections"][0]["monitors"][0]["component_id"]
            r = await anon.post(
                "/api/v1/status-pages/subs/subscribe",
                json={"webhook_url": some.url(), "components": [comps[1], foreign, "x"]},
            )
            assert r.status == 422
            assert set((await r.json())["error"]["details"]) == {"components[1]", "components[2]"}
            # a confirmed subscriber keeps its choice whoever asks again
            r = await anon.post(
                "/api/v1/status-pages/subs/subscribe",
                json={"webhook_url": some.url(), "components": [comps[1]]},
            )
            assert r.status == 202
            # the form: tick boxes, by email
            r = await anon.post(
                "/status/subs/subscribe", data=[("email", "ann@example.test"), ("components", str(comps[1]))]
            )
            assert r.status == 200 and "Check your inbox" in await r.text()
            r = await anon.post(
                "/status/subs/subscribe", data=[("email", "bob@example.test"), ("components", "x")]
            )
            assert r.status == 422 and "choose components of this page" in await r.text()
            subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
            assert [s["component_ids"] for s in subs] == [[comps[0]], None, [comps[1]]]

            await set_status(running.app, second, "down")
            await eventually(lambda: every.got, timeout=BOUND, what="the state notice to every component's")
            await set_status(running.app, first, "down")
            await eventually(
                lambda: some.got and len(every.got) == 2, timeout=BOUND, what="the first's notices"
            )
            assert [h["data"]["component"] for h in every.got] == ["Part 1", "Part 0"]
            assert [h["data"]["component"] for h in some.got] == ["Part 0"]
            # posts reach every subscriber, whatever its components
            await api.post(
                f"/api/v1/status-pages/{page['id']}/posts",
                json={"title": "Note", "message": "m", "status": "identified"},
            )
            await eventually(
                lambda: len(some.got) == 2 and len(every.got) == 3, timeout=BOUND, what="the post to both"
            )
            assert some.got[1]["type"] == every.got[2]["type"] == "status_page.post"
    finally:
        await running.stop()
