"""Status pages: the admin API (/api/v1/status-pages), incident posts, subscribers, and the
anonymous side: public JSON, the HTML page at /status/{slug} or a custom domain, its
Server-Sent Events, SVG badges.

A private page (is_public false) answers exactly like a page that does not exist until
the visitor holds the signed cookie that its password grants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import html
import logging
from importlib import resources
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import bearer, now_utc, ok, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.cluster import broadcast
from probefleet.controller.engine.incidents import iso
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.realtime import Client, Event
from probefleet.controller.status_pages import html as status_html
from probefleet.controller.status_pages import model as sp
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import status_pages as store
from probefleet.controller.validation import ValidationError
from probefleet.shared import subjects

log = logging.getLogger("probefleet.status_pages")

MAX_PAGE = 100
POST_DAYS = 14
SSE_KEEPALIVE = 15.0
# How long a change waits for every live controller to confirm it ended the page's streams.
ANNOUNCE_WAIT = 1.0


def _not_found() -> ApiError:
    return not_found("status page")


# --- admin API --------------------------------------------------------------------------


def drop_page(app: web.Application, page_id: int) -> None:
    """Forget the page's cached renderings and end its SSE streams on this controller."""
    app[keys.STATUS_PAGES].forget(page_id)
    app[keys.HUB].close_page(page_id)


async def announce_changed(app: web.Application, page_id: int) -> None:
    """The page's settings changed (or it is gone), committed: end its streams here, then on
    every live controller, and wait (at most ANNOUNCE_WAIT) until each confirmed, so no
    stream checked against the old settings outlives the answer to the change."""
    drop_page(app, page_id)
    await broadcast.announce(
        app,
        subjects.status_page_changed(),
        str(page_id).encode(),
        wait=ANNOUNCE_WAIT,
        what=f"status page change page_id={page_id}",
    )


def page_out(page: dict[str, Any], comps: list[dict[str, Any]]) -> dict[str, Any]:
    sections: dict[str, list[dict[str, Any]]] = {}
    for c in comps:
        sections.setdefault(c["section"], []).append(
            {"monitor_id": c["monitor_id"], "display_name": c["display_name"], "component_id": c["id"]}
        )
    return {
        "id": page["id"],
        "name": page["name"],
        "slug": page["slug"],
        "custom_domain": page["custom_domain"],
        "description": page["description"],
        "is_public": page["is_public"],
        "has_password": page["password_hash"] is not None,
        "incident_status": page["incident_status"],
        "incident_message": page["incident_message"],
        "incident_updated_at": page["incident_updated_at"],
        "sections": [{"name": k, "monitors": v} for k, v in sections.items()],
        "url": f"/status/{page['slug']}",
        "created_at": page["created_at"],
        "updated_at": page["updated_at"],
    }


async def _out(conn: Any, page_id: int) -> dict[str, Any]:
    page = await store.get_page(conn, page_id)
    if page is None:
        raise _not_found()
    return page_out(page, await store.components(conn, [page_id]))


async def _check_monitors(conn: Any, sections: list[dict[str, Any]]) -> None:
    ids = [c["monitor_id"] for s in sections for c in s["monitors"]]
    missing = await store.missing_monitors(conn, ids) if ids else set()
    errors: dict[str, object] = {
        f"sections[{i}].monitors[{j}].monitor_id": "no such monitor"
        for i, s in enumerate(sections)
        for j, c in enumerate(s["monitors"])
        if c["monitor_id"] in missing
    }
    if errors:
        raise ValidationError(errors)


async def _incident(conn: Any, page_id: int, status: str, message: str) -> None:
    """Reference 000's page-level incident: the banner, and an update of the open post (or a new one)."""
    await store.set_incident(conn, page_id, status, message)
    post_id = await store.open_post(conn, page_id)
    if post_id is None:
        title = message if len(message) <= 80 else message[:77] + "..."
        post_id = await store.insert_post(conn, page_id, title, status, message)
        await sp.emit_post(conn, page_id, post_id, created=True)
    else:
        await store.add_update(conn, post_id, status, message)
        await sp.emit_post(conn, page_id, post_id, created=False)
    await store.enqueue_for_page(
        conn, page_id, "post", {"post_id": post_id, "status": status, "message": message}
    )


async def _save(request: web.Request, page_id: int | None, data: dict[str, Any]) -> dict[str, Any]:
    """Create or change the page. A change of anything but the incident banner ends the
    page's open streams everywhere; the banner reaches them as a post frame, and ending every
    visitor's stream on each incident update would make them all reconnect at the worst time."""
    pool = request.app[keys.POOL]
    settings_changed = page_id is not None and bool(set(data) - set(sp.INCIDENT_FIELDS))
    names = ("name", "slug", "custom_domain", "description", "is_public")
    fields: dict[str, Any] = {k: data[k] for k in names if k in data}
    if "password" in data:
        pw = data["password"]
        fields["password_hash"] = await asyncio.to_thread(sp.hash_password, pw) if pw else None
    if "sections" in data:
        await _check_monitors(pool, data["sections"])
    try:
        async with pool.acquire() as conn, conn.transaction():
            if page_id is None:
                page_id = await store.insert_page(conn, fields)
            elif not await store.update_page(conn, page_id, fields):
                raise _not_found()
            if "sections" in data:
                await store.set_components(conn, page_id, data["sections"])
            if data.get("incident_status") is not None:
                await _incident(conn, page_id, data["incident_status"], data["incident_message"])
            out = await _out(conn, page_id)
    except asyncpg.UniqueViolationError as e:
        field = "custom_domain" if "custom_domain" in str(e) else "slug"
        raise ApiError(409, "conflict", f"{field} already in use", {field: "already in use"}) from None
    except asyncpg.ForeignKeyViolationError:
        raise ValidationError({"sections": "a monitor was deleted meanwhile"}) from None
    if settings_changed:
        await announce_changed(request.app, page_id)
    else:
        request.app[keys.STATUS_PAGES].forget(page_id)
    return out


async def create_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    data = sp.validate(sp.canonical(await read_json(request)), full=True)
    return ok(await _save(request, None, data), status=201)


async def list_status_pages(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    raw_limit, cursor = request.query.get("limit", "50"), request.query.get("cursor", "0")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ValidationError({"limit": f"must be an integer from 1 to {MAX_PAGE}"})
    if not cursor.isdigit() or len(cursor) > 18:
        raise ValidationError({"cursor": "must be the next_cursor of a previous page"})
    limit, pool = int(raw_limit), request.app[keys.POOL]
    pages = await store.list_pages(pool, after_id=int(cursor), limit=limit + 1)
    more = len(pages) > limit
    pages = pages[:limit]
    comps = await store.components(pool, [p["id"] for p in pages])
    out = [page_out(p, [c for c in comps if c["page_id"] == p["id"]]) for p in pages]
    meta = {"count": len(out), "has_more": more, "next_cursor": str(pages[-1]["id"]) if more else None}
    return ok(out, meta=meta)


async def get_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    return ok(await _out(request.app[keys.POOL], path_id(request, what="status page")))


async def put_status_page(request: web.Request) -> web.Response:
    """Replace the page; a body of only incident_status/incident_message (reference 000)
    posts an incident update instead. An omitted password is kept (it cannot be read back)."""
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    data = sp.canonical(await read_json(request))
    incident_only = bool(data) and set(data) <= set(sp.INCIDENT_FIELDS)
    data = sp.validate(data, full=not incident_only)
    if not incident_only:
        data = {"custom_domain": None, "description": "", "is_public": True, "sections": [], **data}
    return ok(await _save(request, page_id, data))


async def patch_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    data = sp.validate(sp.canonical(await read_json(request)), full=False)
    return ok(await _save(request, page_id, data))


async def delete_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    if not await store.delete_page(request.app[keys.POOL], page_id):
        raise _not_found()
    await announce_changed(request.app, page_id)
    return web.Response(status=204)


# --- posts ------------------------------------------------------------------------------


post_out = sp.post_out


async def list_posts(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    page_id, pool = path_id(request, what="status page"), request.app[keys.POOL]
    if await store.get_page(pool, page_id) is None:
        raise _not_found()
    return ok([post_out(p) for p in await store.posts(pool, page_id, limit=100)])


async def create_post(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id, pool = path_id(request, what="status page"), request.app[keys.POOL]
    body = sp.validate_post(await read_json(request), update=False)
    async with pool.acquire() as conn, conn.transaction():
        if await store.get_page(conn, page_id) is None:
            raise _not_found()
        post_id = await store.insert_post(conn, page_id, body["title"], body["status"], body["message"])
        await sp.emit_post(conn, page_id, post_id, created=True)
        await store.enqueue_for_page(conn, page_id, "post", {"post_id": post_id, **body})
        post = (await store.posts(conn, page_id, post_id=post_id))[0]
    request.app[keys.STATUS_PAGES].forget(page_id)
    return ok(post_out(post), status=201)


async def add_post_update(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    post_id, pool = path_id(request, "post_id", what="post"), request.app[keys.POOL]
    body = sp.validate_post(await read_json(request), update=True)
    async with pool.acquire() as conn, conn.transaction():
        page_id = await store.post_page(conn, post_id)
        if page_id is None or ("id" in request.match_info and str(page_id) != request.match_info["id"]):
            raise not_found("post")
        await store.add_update(conn, post_id, body["status"], body["message"])
        await sp.emit_post(conn, page_id, post_id, created=False)
        await store.enqueue_for_page(conn, page_id, "post", {"post_id": post_id, **body})
        post = (await store.posts(conn, page_id, post_id=post_id))[0]
    request.app[keys.STATUS_PAGES].forget(page_id)
    return ok(post_out(post), status=201)


# --- subscribers (admin side) -----------------------------------------------------------


async def list_subscribers(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    page_id, pool = path_id(request, what="status page"), request.app[keys.POOL]
    if await store.get_page(pool, page_id) is None:
        raise _not_found()
    subs = await store.subscribers(pool, page_id)
    return ok([{**s, "confirmed": s["confirmed_at"] is not None} for s in subs])


async def delete_subscriber(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    sid = path_id(request, "subscriber_id", what="subscriber")
    if not await store.remove_subscriber(request.app[keys.POOL], page_id=page_id, subscriber_id=sid):
        raise not_found("subscriber")
    return web.Response(status=204)


# --- the public model -------------------------------------------------------------------


async def _bars(app: web.Application, page_id: int, monitor_ids: list[int], now: dt.datetime) -> Any:
    async def build() -> Any:
        since = dt.datetime.combine(now.date() - dt.timedelta(days=sp.BAR_DAYS - 1), dt.time(), dt.UTC)
        until = since + dt.timedelta(days=sp.BAR_DAYS)
        return await store.day_counts(app[keys.POOL], monitor_ids, since, until)

    cache = app[keys.STATUS_PAGES]
    return await cache.fetch("bars", page_id, cache.bars_ttl, build)


async def public_model(app: web.Application, page: dict[str, Any]) -> dict[str, Any]:
    """Everything a visitor may see, and nothing else: no monitor ids, targets or settings."""
    pool, now = app[keys.POOL], now_utc()
    comps = await store.components(pool, [page["id"]])
    mids = [c["monitor_id"] for c in comps]
    maint = await store.in_maintenance(pool, mids, now) if mids else set()
    counts = await _bars(app, page["id"], mids, now) if mids else {}
    sections: dict[str, list[dict[str, Any]]] = {}
    for c in comps:
        days = counts.get(c["monitor_id"], {})
        sections.setdefault(c["section"], []).append(
            {
                "id": c["id"],
                "name": c["display_name"],
                "status": sp.component_state(c["status"], c["monitor_id"] in maint),
                "uptime_90d": sp.uptime_of(days),
                "days": sp.day_bars(days, now.date()),
            }
        )
    states = [c["status"] for s in sections.values() for c in s]
    posts = await store.posts(pool, page["id"], since=now - dt.timedelta(days=POST_DAYS), limit=20)
    windows = sp.scheduled(await store.maintenance_windows(pool, mids, now), now) if mids else []
    return {
        "name": page["name"],
        "slug": page["slug"],
        "description": page["description"],
        "status": sp.overall_state(states),
        "incident": sp.page_incident(page),
        "sections": [{"name": k, "components": v} for k, v in sections.items()],
        "posts": [{**post_out(p), "id": p["id"]} for p in posts],
        "maintenance": [
            {
                "name": w["name"],
                "starts_at": iso(w["starts_at"]),
                "ends_at": iso(w["ends_at"]),
                "components": [c["id"] for c in comps if c["monitor_id"] in w["monitor_ids"]],
            }
            for w in windows
        ],
        "updated_at": iso(now),
    }


async def _cached_model(app: web.Application, page: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The public model and the hub's last event id read before building it: a browser that
    resumes its event stream from that id misses no change the model does not show."""
    cache = app[keys.STATUS_PAGES]

    async def build() -> tuple[int, dict[str, Any]]:
        last: int = app[keys.HUB].last_id
        return last, await public_model(app, page)

    got: tuple[int, dict[str, Any]] = await cache.fetch("model", page["id"], cache.ttl, build)
    return got


def _allowed(request: web.Request, page: dict[str, Any]) -> bool:
    if page["is_public"]:
        return True
    cookie = request.cookies.get(sp.cookie_name(page["slug"]))
    return sp.access_ok(request.app[keys.STATUS_PAGES].secret, page["id"], page["password_hash"], cookie)


async def visible_page(request: web.Request, slug: str | None = None) -> dict[str, Any] | None:
    """The page if it exists and this visitor may see it; None in every other case."""
    if slug is None:
        host = request.host.rsplit(":", 1)[0].lower().rstrip(".")
        page = await store.find_page(request.app[keys.POOL], domain=host)
    else:
        page = await store.find_page(request.app[keys.POOL], slug=slug)
    return page if page is not None and _allowed(request, page) else None


async def public_json(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    cache = request.app[keys.STATUS_PAGES]

    async def build() -> tuple[bytes, bytes]:
        raw = ok((await _cached_model(request.app, page))[1]).body
        assert isinstance(raw, bytes)
        return raw, gzip.compress(raw, 5)

    return _bytes(request, await cache.fetch("json", page["id"], cache.ttl, build), "application/json")


def _bytes(request: web.Request, body: tuple[bytes, bytes], content_type: str) -> web.Response:
    """The plain or the gzip body, by Accept-Encoding."""
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body[1], content_type=content_type, charset="utf-8", headers=headers)
    return web.Response(body=body[0], content_type=content_type, charset="utf-8", headers=headers)


# --- the HTML page ----------------------------------------------------------------------


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _locked(request: web.Request, wrong: bool = False) -> web.Response:
    return _html(status_html.render_locked(request.path, wrong=wrong), status=401)


async def _render(
    request: web.Request, page: dict[str, Any], notice: str = "", status: int = 200
) -> web.Response:
    """The page's HTML, from a one-second cache of its bytes (and their gzip)."""
    app = request.app
    cache = app[keys.STATUS_PAGES]

    async def build() -> tuple[bytes, bytes]:
        last, model = await _cached_model(app, page)
        text = status_html.render_page(model, slug=page["slug"], last_event_id=last, notice=notice)
        raw = text.encode()
        return raw, gzip.compress(raw, 5)

    body = await build() if notice else await cache.fetch("html", page["id"], cache.ttl, build)
    response = _bytes(request, body, "text/html")
    response.set_status(status)
    return response


async def status_page_html(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    return _locked(request) if page is None else await _render(request, page)


async def custom_domain_html(request: web.Request) -> web.StreamResponse:
    """`/` on a page's custom domain (Host header); anywhere else `/` does not exist."""
    page = await store.find_page(request.app[keys.POOL], domain=request.host.rsplit(":", 1)[0].lower())
    if page is None:
        raise web.HTTPNotFound()
    if not _allowed(request, page):
        return _locked(request)
    return await _render(request, page)


async def unlock_page(request: web.Request) -> web.Response:
    """The password form posts here; a right password sets the signed access cookie."""
    slug = request.match_info.get("slug")
    form = await request.post()
    password = form.get("password")
    pool = request.app[keys.POOL]
    host = request.host.rsplit(":", 1)[0].lower()
    page = await (store.find_page(pool, slug=slug) if slug else store.find_page(pool, domain=host))
    private = page if page is not None and not page["is_public"] else None
    stored = private["password_hash"] if private else None
    good = isinstance(password, str) and await asyncio.to_thread(sp.check_password, password, stored)
    if not good or private is None or stored is None:
        return _locked(request, wrong=True)
    cache = request.app[keys.STATUS_PAGES]
    response = web.HTTPSeeOther(request.path)
    response.set_cookie(
        sp.cookie_name(private["slug"]),
        sp.sign_access(cache.secret, private["id"], stored),
        max_age=sp.COOKIE_TTL,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=request.secure,
    )
    raise response


_ASSETS: dict[str, tuple[bytes, str]] = {}


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ("status.css", "status.js"):
        raise web.HTTPNotFound()
    if name not in _ASSETS:
        data = (resources.files("probefleet.controller.status_pages") / "static" / name).read_bytes()
        _ASSETS[name] = (data, "text/css" if name.endswith(".css") else "text/javascript")
    data, ctype = _ASSETS[name]
    return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "public, max-age=300"})


# --- Server-Sent Events -----------------------------------------------------------------


def _post_frame(ev: Event) -> bytes:
    """The post and the banner as the public page renders them (server-side, escaped), so
    the browser needs no second renderer; nothing else of the event's payload. Rendered
    once per event however many visitors watch the page."""
    frame = ev.rendered.get("sse")
    if frame is None:
        payload = ev.row["payload"]
        post = payload["post"]
        body = {
            "post": post["id"],
            "status": post["status"],
            "html": status_html.post(post),
            "banner": status_html.banner(payload.get("banner")),
        }
        data = msgspec.json.encode(body).decode()
        frame = ev.rendered["sse"] = f"id: {ev.id}\nevent: post\ndata: {data}\n\n".encode()
    return frame


def _sse(ev: Event, components: dict[int, list[int]]) -> bytes:
    """Only what the public page shows: component ids with their public state (never the
    event's monitor payload), and posts. Every frame's `id:` is its outbox event id."""
    if ev.page_id is not None:
        return _post_frame(ev) if ev.kind.startswith("status_page.post.") else b""
    status = (ev.row["payload"].get("monitor") or {}).get("status") or ev.kind.removeprefix("monitor.")
    state = sp.component_state(status, False)
    frames = [
        f"id: {ev.id}\nevent: component\ndata: "
        + msgspec.json.encode({"component": cid, "state": state}).decode()
        + "\n\n"
        for cid in components.get(ev.monitor_id or 0, [])
    ]
    return "".join(frames).encode()


async def page_events(request: web.Request) -> web.StreamResponse:
    """The page's live frames, for as long as the page stays as it was checked here: a
    change ends the stream (`announce_changed`), and the browser's reconnect is checked anew."""
    hub = request.app[keys.HUB]
    checked_at = hub.page_changes
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    comps = await store.components(request.app[keys.POOL], [page["id"]])
    by_monitor: dict[int, list[int]] = {}
    for c in comps:
        by_monitor.setdefault(c["monitor_id"], []).append(c["id"])
    client = Client(
        kind="sse",
        topics=frozenset({"monitor.status"}),
        monitor_ids=frozenset(by_monitor),
        size=64,
        page_id=page["id"],
    )
    resume = request.headers.get("Last-Event-ID") or request.query.get("last_event_id", "")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    if not hub.attach(client, checked_at=checked_at):
        return response  # changed while we checked: the browser reconnects, and is checked again
    try:
        await response.write(b"retry: 2000\n\n")
        if resume.isdigit() and len(resume) <= 18:
            # The page lists posts of the last POST_DAYS only: an older one is not replayed.
            shown_since = now_utc() - dt.timedelta(days=POST_DAYS)
            for ev in await hub.replay(client, int(resume)):
                if ev.page_id is None or ev.row["occurred_at"] >= shown_since:
                    await response.write(_sse(ev, by_monitor))
        while True:
            try:
                live = await client.next(SSE_KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if live is None:
                break
            await response.write(_sse(live, by_monitor))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        hub.detach(client)
    return response


# --- badges -----------------------------------------------------------------------------


def _svg(svg: str) -> web.Response:
    return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "max-age=60"})


def _badge_label(request: web.Request, default: str) -> str:
    label = request.query.get("label", default)
    return label[:40] if label else default


async def page_badge(request: web.Request) -> web.Response:
    """The page's overall state, or with ?component=<id> one component's state or uptime."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    _, model = await _cached_model(request.app, page)
    wanted = request.query.get("component")
    if wanted is None:
        state = model["status"]
        return _svg(status_html.badge(_badge_label(request, "status"), state.replace("_", " "), state))
    comp = next((c for s in model["sections"] for c in s["components"] if str(c["id"]) == wanted), None)
    if comp is None:
        raise not_found("component")
    if request.query.get("type") == "uptime":
        value = f"{comp['uptime_90d']:.2f}%" if comp["uptime_90d"] is not None else "no data"
        return _svg(status_html.badge(_badge_label(request, "uptime"), value, comp["status"]))
    return _svg(status_html.badge(_badge_label(request, comp["name"]), comp["status"], comp["status"]))


async def monitor_badge(request: web.Request) -> web.Response:
    """A monitor's state: anonymous when a public page shows the monitor, else an API key
    with monitors:read (header or ?api_key=) is needed; otherwise 404 either way."""
    monitor_id = path_id(request, what="monitor")
    pool = request.app[keys.POOL]
    row = await pool.fetchrow(
        "SELECT m.status, bool_or(p.is_public) AS public, min(c.display_name) AS display_name"
        " FROM monitors m LEFT JOIN status_page_components c ON c.monitor_id = m.id"
        " LEFT JOIN status_pages p ON p.id = c.page_id WHERE m.id = $1 GROUP BY m.id",
        monitor_id,
    )
    if row is None:
        raise not_found("monitor")
    if not row["public"]:
        key = bearer(request) or request.query.get("api_key")
        found = await api_keys.authenticate(pool, key, now_utc()) if key else None
        if found is None or not {"monitors:read", "admin"} & set(found["scopes"]):
            raise not_found("monitor")
    state = sp.component_state(row["status"], False)
    label = _badge_label(request, row["display_name"] or "status")
    return _svg(status_html.badge(label, {"operational": "up", "outage": "down"}.get(state, state), state))


# --- subscribers (visitor side) ---------------------------------------------------------


def _subscription(body: Any) -> tuple[str, str]:
    """(kind, address) from {"email"} or {"webhook_url"} (alias "url"), or a 422."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    unknown = set(body) - {"email", "webhook_url", "webhook", "url"}
    if unknown:
        raise ValidationError({k: "unknown field" for k in unknown})
    email = body.get("email")
    url = body.get("webhook_url", body.get("webhook", body.get("url")))
    if (email is None) == (url is None):
        raise ValidationError({"email": "give either email or webhook_url"})
    if email is not None:
        if not isinstance(email, str) or len(email) > 254 or not sp.EMAIL.match(email.strip()):
            raise ValidationError({"email": "must be an email address"})
        return "email", email.strip().lower()
    if not isinstance(url, str) or len(url) > 2000 or not url.startswith(("http://", "https://")):
        raise ValidationError({"webhook_url": "must be an http or https URL"})
    return "webhook", url


async def _destination(request: web.Request, url: str) -> None:
    """422 for a webhook URL whose host is (or resolves to) a non-public address."""
    allow = request.app[keys.CONFIG].subscriber_webhooks_allow_private
    try:
        await destinations.check(url, allow_private=allow)
    except destinations.DestinationError as e:
        raise ValidationError({"webhook_url": str(e)}) from None


def _throttle(request: web.Request) -> int:
    """Spend one anonymous subscribe request of the caller's address: 0, or seconds to wait."""
    return request.app[keys.STATUS_PAGES].subscribe_limiter.take(sp.source_key(request.remote))


def _mail_off(request: web.Request) -> bool:
    """Whether this server cannot send the confirmation mail an email subscriber needs."""
    return not request.app[keys.CONFIG].smtp_host


def _no_mail() -> ApiError:
    # Rather than a 202 "check your inbox" for a mail that would never come.
    return ApiError(409, "email_unavailable", "this server cannot send email: smtp_host is not configured")


def _too_many(retry: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many subscribe requests; retry after {retry} s",
        {"retry_after": retry},
        headers={"Retry-After": str(retry)},
    )


async def _subscribe(request: web.Request, page: dict[str, Any], kind: str, address: str) -> dict[str, Any]:
    """Email subscribers get a confirmation link first (at most one queued, and none again
    within RESEND_AFTER); webhooks are live at once."""
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        sub = await store.add_subscriber(conn, page["id"], kind, address, confirmed=kind == "webhook")
        if sub["confirmed_at"] is None:
            await store.enqueue_confirmation(conn, sub["id"], sp.RESEND_AFTER)
    return {"kind": kind, "confirmed": sub["confirmed_at"] is not None}


async def subscribe_json(request: web.Request) -> web.Response:
    """Subscribe by email (202, a confirmation mail; 409 email_unavailable without SMTP) or by webhook."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    retry = _throttle(request)
    if retry:
        raise _too_many(retry)
    kind, address = _subscription(await read_json(request))
    if kind == "email" and _mail_off(request):
        raise _no_mail()
    if kind == "webhook":
        await _destination(request, address)
    return ok(await _subscribe(request, page, kind, address), status=202)


async def subscribe_form(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        return _locked(request)
    retry = _throttle(request)
    if retry:
        return _html(
            status_html.render_message("Too many requests", f"Please try again in {retry} seconds."),
            429,
            {"Retry-After": str(retry)},
        )
    form = await request.post()
    try:
        kind, address = _subscription({"email": form.get("email")})
    except ValidationError:
        return await _render(request, page, notice="Please enter a valid email address.")
    if _mail_off(request):
        notice = "Email subscriptions are not available on this server."
        return await _render(request, page, notice=notice, status=409)
    await _subscribe(request, page, kind, address)
    return await _render(request, page, notice="Check your inbox for a confirmation link.")


async def confirm_subscription(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    sub = await store.confirm_subscriber(request.app[keys.POOL], token) if 20 <= len(token) <= 100 else None
    if sub is None:
        return _html(status_html.render_message("Link not valid", "This link is unknown or expired."), 404)
    return _html(status_html.render_message("Subscribed", "You will receive status updates."))


async def unsubscribe(request: web.Request) -> web.Response:
    """GET shows a button (link scanners must not unsubscribe anyone); POST removes."""
    token = request.query.get("token", "")
    if request.method == "GET":
        form = (
            f'<form method="post"><input type="hidden" name="token" value="{html.escape(token[:100])}">'
            '<button type="submit">Unsubscribe</button></form></main>'
        )
        page = status_html.render_message("Unsubscribe", "Press the button to stop status updates.")
        return _html(page.replace("</main>", form))
    posted = await request.post()
    token = str(posted.get("token") or token)
    done = await store.remove_subscriber(request.app[keys.POOL], token=token) if token else False
    if not done:
        return _html(status_html.render_message("Link not valid", "This link is unknown or expired."), 404)
    return _html(status_html.render_message("Unsubscribed", "You will not receive further updates."))
