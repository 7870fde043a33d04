"""The admin API of status pages (/api/v1/status-pages, key-authenticated): pages, their
incident posts and subscribers. A committed change of a page's settings ends its open
streams and drops its cached renderings on every controller (`announce_changed`).

The anonymous site (public JSON, HTML, SSE, badges, subscribing) is api/public_pages.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import ok, parse_int, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.cluster import broadcast
from probefleet.controller.status_pages import access, config, posts
from probefleet.controller.storage import DB
from probefleet.controller.storage import status_pages as store
from probefleet.controller.validation import ValidationError
from probefleet.shared import subjects

MAX_PAGE = 100
# How long a change waits for every live controller to confirm it ended the page's streams.
ANNOUNCE_WAIT = 1.0


def _not_found() -> ApiError:
    return not_found("status page")


# --- pages ------------------------------------------------------------------------------


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
            {
                "monitor_id": c["monitor_id"],
                "display_name": c["display_name"],
                "description": c["description"],
                "component_id": c["id"],
            }
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
        "monitor_count": len(comps),
        **appearance_out(page),
        "url": f"/status/{page['slug']}",
        "created_at": page["created_at"],
        "updated_at": page["updated_at"],
    }


def appearance_out(page: dict[str, Any]) -> dict[str, Any]:
    """The page's look as the API shows it: the logo as the link that serves it."""
    version = page["logo_version"]
    return {
        "logo_url": f"/status/{page['slug']}/logo?v={version}" if version else None,
        "colors": page["colors"],
        "custom_css": page["custom_css"],
        "footer_text": page["footer_text"],
        "theme": page["theme"],
        "show_response_times": page["show_response_times"],
    }


async def _out(conn: DB, page_id: int) -> dict[str, Any]:
    page = await store.get_page(conn, page_id)
    if page is None:
        raise _not_found()
    return page_out(page, await store.components(conn, [page_id]))


async def _check_monitors(conn: DB, sections: list[dict[str, Any]]) -> None:
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


async def _save(request: web.Request, page_id: int | None, data: dict[str, Any]) -> dict[str, Any]:
    """Create or change the page. A change of anything but the incident banner ends the
    page's open streams everywhere; the banner reaches them as a post frame, and ending every
    visitor's stream on each incident update would make them all reconnect at the worst time."""
    pool = request.app[keys.POOL]
    settings_changed = page_id is not None and bool(set(data) - set(config.INCIDENT_FIELDS))
    names = ("name", "slug", "custom_domain", "description", "is_public", "logo", "logo_type")
    fields: dict[str, Any] = {k: data[k] for k in (*names, *config.APPEARANCE_DEFAULTS) if k in data}
    if "password" in data:
        pw = data["password"]
        fields["password_hash"] = await asyncio.to_thread(access.hash_password, pw) if pw else None
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
                await posts.set_banner(conn, page_id, data["incident_status"], data["incident_message"])
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
    data = config.validate(config.canonical(await read_json(request)), full=True)
    return ok(await _save(request, None, data), status=201)


async def list_status_pages(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    limit = parse_int(request.query.get("limit", "50"), 1, MAX_PAGE)
    cursor = parse_int(request.query.get("cursor", "0"))
    if limit is None:
        raise ValidationError({"limit": f"must be an integer from 1 to {MAX_PAGE}"})
    if cursor is None:
        raise ValidationError({"cursor": "must be the next_cursor of a previous page"})
    pool = request.app[keys.POOL]
    pages = await store.list_pages(pool, after_id=cursor, limit=limit + 1)
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
    """Replace the page; a body of only incident_status/incident_message posts an incident
    update instead. An omitted password or logo is kept (neither can be read back as given)."""
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    data = config.canonical(await read_json(request))
    incident_only = bool(data) and set(data) <= set(config.INCIDENT_FIELDS)
    data = config.validate(data, full=not incident_only)
    if not incident_only:
        defaults: dict[str, Any] = {
            "custom_domain": None,
            "description": "",
            "is_public": True,
            "sections": [],
        }
        data = {**defaults, **config.APPEARANCE_DEFAULTS, **data}
    return ok(await _save(request, page_id, data))


async def patch_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    data = config.validate(config.canonical(await read_json(request)), full=False)
    return ok(await _save(request, page_id, data))


async def delete_status_page(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id = path_id(request, what="status page")
    if not await store.delete_page(request.app[keys.POOL], page_id):
        raise _not_found()
    await announce_changed(request.app, page_id)
    return web.Response(status=204)


# --- posts ------------------------------------------------------------------------------


async def list_posts(request: web.Request) -> web.Response:
    await require(request, "status_pages:read")
    page_id, pool = path_id(request, what="status page"), request.app[keys.POOL]
    if await store.get_page(pool, page_id) is None:
        raise _not_found()
    return ok([posts.post_out(p) for p in await store.posts(pool, page_id, limit=100)])


async def create_post(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    page_id, pool = path_id(request, what="status page"), request.app[keys.POOL]
    body = config.validate_post(await read_json(request), update=False)
    async with pool.acquire() as conn, conn.transaction():
        if await store.get_page(conn, page_id) is None:
            raise _not_found()
        post_id = await posts.publish(conn, page_id, body["title"], body["status"], body["message"])
        post = (await store.posts(conn, page_id, post_id=post_id))[0]
    request.app[keys.STATUS_PAGES].forget(page_id)
    return ok(posts.post_out(post), status=201)


async def add_post_update(request: web.Request) -> web.Response:
    await require(request, "status_pages:write")
    post_id, pool = path_id(request, "post_id", what="post"), request.app[keys.POOL]
    body = config.validate_post(await read_json(request), update=True)
    async with pool.acquire() as conn, conn.transaction():
        page_id = await store.post_page(conn, post_id)
        if page_id is None or ("id" in request.match_info and str(page_id) != request.match_info["id"]):
            raise not_found("post")
        await posts.update(conn, page_id, post_id, body["status"], body["message"])
        post = (await store.posts(conn, page_id, post_id=post_id))[0]
    request.app[keys.STATUS_PAGES].forget(page_id)
    return ok(posts.post_out(post), status=201)


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
