"""The anonymous site of status pages: the HTML page at /status/{slug} (or at / of a custom
domain) and its password form, the public JSON, the page's Server-Sent Events, SVG badges,
its stylesheet and logo, the incident archive and Atom feed, static assets, and
subscribing (subscribe, confirm, unsubscribe).

A private page (is_public false) answers exactly like a page that does not exist until the
visitor holds the signed cookie that its password grants. Visitors see the public model
(status_pages/model.py) and nothing else.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from probefleet.controller import keys
from probefleet.controller.api.common import bearer, now_utc, ok, parse_int, path_id, read_json
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.console import accounts
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.realtime import Client, Event
from probefleet.controller.status_pages import access, config, model, subscribers
from probefleet.controller.status_pages import html as status_html
from probefleet.controller.status_pages.posts import post_out
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import status_pages as store
from probefleet.controller.validation import ValidationError

SSE_KEEPALIVE = 15.0

# On every answer of the anonymous site: no inline script or style anywhere (status.js and
# status.css are files), no framing (the password form must not be clickjacked), no MIME
# sniffing of user text, and no page URL leaked to other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hardened(handler: Handler) -> Handler:
    """The handler with SECURITY_HEADERS on whatever it answers: its response, a redirect
    it raises, or an error the error middleware turns into an envelope."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ValidationError as e:
            raise ApiError(
                422, "validation_error", e.message, e.details, headers=dict(SECURITY_HEADERS)
            ) from None
        except ApiError as e:
            e.headers = {**SECURITY_HEADERS, **e.headers}
            raise
        except web.HTTPRedirection as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    return wrapped


async def harden_unmatched(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: SECURITY_HEADERS on an answer under the site's paths that no
    hardened handler gave (a path no route matches), so no page of the site can be framed."""
    if request.path.startswith(("/status/", "/status-assets/")) and request.match_info.route.resource is None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _not_found() -> ApiError:
    return not_found("status page")


def _no_such_endpoint() -> ApiError:
    return ApiError(404, "not_found", "no such endpoint")


# --- the public model -------------------------------------------------------------------


async def _cached_model(app: web.Application, page: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The public model and the hub's last event id read before building it: a browser that
    resumes its event stream from that id misses no change the model does not show."""
    cache = app[keys.STATUS_PAGES]

    async def build() -> tuple[int, dict[str, Any]]:
        last: int = app[keys.HUB].last_id
        return last, await model.public_model(app[keys.POOL], cache, page, now_utc())

    got: tuple[int, dict[str, Any]] = await cache.get("model", page["id"], cache.ttl, build)
    return got


def _allowed(request: web.Request, page: dict[str, Any]) -> bool:
    return access.visible(page, request.app[keys.STATUS_PAGES].secret, dict(request.cookies))


async def visible_page(request: web.Request, slug: str | None = None) -> dict[str, Any] | None:
    """The page if it exists and this visitor may see it; None in every other case."""
    if slug is None:
        host = request.host.rsplit(":", 1)[0].lower().rstrip(".")
        page = await store.find_page(request.app[keys.POOL], domain=host)
    else:
        page = await store.find_page(request.app[keys.POOL], slug=slug)
    return page if page is not None and _allowed(request, page) else None


@hardened
async def public_json(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    cache = request.app[keys.STATUS_PAGES]

    async def build() -> tuple[bytes, bytes]:
        raw = ok((await _cached_model(request.app, page))[1]).body
        assert isinstance(raw, bytes)
        return raw, gzip.compress(raw, 5)

    return _bytes(request, await cache.get("json", page["id"], cache.ttl, build), "application/json")


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


async def _form(request: web.Request) -> MultiDictProxy[Any] | None:
    """The posted form, or None when it cannot be read (multipart without a boundary, a
    broken body): the caller answers 400 with a page."""
    try:
        return await request.post()
    except ValueError:
        return None


def _bad_form() -> web.Response:
    return _html(
        status_html.render_message("Bad request", "The form could not be read. Please try again."), 400
    )


async def _render(
    request: web.Request, page: dict[str, Any], notice: str = "", status: int = 200
) -> web.Response:
    """The page's HTML, from a one-second cache of its bytes (and their gzip)."""
    app = request.app
    cache = app[keys.STATUS_PAGES]

    async def build() -> tuple[bytes, bytes]:
        last, shown = await _cached_model(app, page)
        text = status_html.render_page(
            shown, slug=page["slug"], last_event_id=last, notice=notice, appearance=status_html.look(page)
        )
        raw = text.encode()
        return raw, gzip.compress(raw, 5)

    body = await build() if notice else await cache.get("html", page["id"], cache.ttl, build)
    response = _bytes(request, body, "text/html")
    response.set_status(status)
    return response


@hardened
async def status_page_html(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    return _locked(request) if page is None else await _render(request, page)


@hardened
async def custom_domain_html(request: web.Request) -> web.StreamResponse:
    """`/` on a page's custom domain (Host header); anywhere else `/` does not exist."""
    page = await store.find_page(request.app[keys.POOL], domain=request.host.rsplit(":", 1)[0].lower())
    if page is None:
        raise _no_such_endpoint()
    if not _allowed(request, page):
        return _locked(request)
    return await _render(request, page)


@hardened
async def unlock_page(request: web.Request) -> web.Response:
    """The password form posts here; a right password sets the signed access cookie."""
    slug = request.match_info.get("slug")
    form = await _form(request)
    if form is None:
        return _bad_form()
    password = form.get("password")
    pool = request.app[keys.POOL]
    host = request.host.rsplit(":", 1)[0].lower()
    cache = request.app[keys.STATUS_PAGES]
    retry = cache.unlock_limiter.take(
        f"slug:{slug}" if slug else f"domain:{host}", access.source_key(accounts.client_of(request))
    )
    if retry:
        text = status_html.render_locked(
            request.path, wrong=False, message=f"Too many attempts. Please try again in {retry} seconds."
        )
        return _html(text, 429, {"Retry-After": str(retry)})
    page = await (store.find_page(pool, slug=slug) if slug else store.find_page(pool, domain=host))
    private = page if page is not None and not page["is_public"] else None
    stored = private["password_hash"] if private else None
    good = isinstance(password, str) and await access.verify_password(password, stored)
    if not good or private is None or stored is None:
        return _locked(request, wrong=True)
    response = web.HTTPSeeOther(request.path)
    response.set_cookie(
        access.cookie_name(private["slug"]),
        access.sign_access(cache.secret, private["id"], stored),
        max_age=access.COOKIE_TTL,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=accounts.is_https(request),
    )
    raise response


_ASSETS: dict[str, tuple[bytes, str]] = {}


@hardened
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ("status.css", "status.js", "theme.js"):
        raise _no_such_endpoint()
    if name not in _ASSETS:
        data = (resources.files("probefleet.controller.status_pages") / "static" / name).read_bytes()
        _ASSETS[name] = (data, "text/css" if name.endswith(".css") else "text/javascript")
    data, ctype = _ASSETS[name]
    return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "public, max-age=300"})


@hardened
async def page_stylesheet(request: web.Request) -> web.Response:
    """The page's own stylesheet: its colours and custom CSS, a file of its own (the policy
    allows no inline style, and CSS in a file cannot end a <style> element)."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    return web.Response(
        text=status_html.theme_css(page),
        content_type="text/css",
        headers={"Cache-Control": "private, max-age=300"},
    )


@hardened
async def page_logo(request: web.Request) -> web.Response:
    page = await visible_page(request, request.match_info["slug"])
    found = await store.logo(request.app[keys.POOL], page["id"]) if page is not None else None
    if page is None or found is None:
        raise not_found("logo")
    data, media_type = found
    # An SVG opened on its own runs under the site's policy too (no script): `hardened`.
    return web.Response(
        body=data, content_type=media_type, headers={"Cache-Control": "private, max-age=3600"}
    )


@hardened
async def page_history(request: web.Request) -> web.Response:
    """The incident archive: every post of the page, newest first, HISTORY_PAGE a page."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        return _locked(request)
    number = parse_int(request.query.get("page", "1"), 1, 100_000)
    if number is None:
        text = status_html.render_message("Bad request", "The page number must be a whole number from 1.")
        return _html(text, 400)
    pool, per = request.app[keys.POOL], model.HISTORY_PAGE
    pages = max(1, -(-await store.count_posts(pool, page["id"]) // per))
    found = await store.posts(pool, page["id"], limit=per, offset=(number - 1) * per)
    text = status_html.render_history(
        page["name"],
        [{**post_out(p), "id": p["id"]} for p in found],
        slug=page["slug"],
        number=number,
        pages=pages,
        appearance=status_html.look(page),
    )
    return _html(text, 200 if number <= pages else 404)


FEED_ENTRIES = 50


@hardened
async def page_feed(request: web.Request) -> web.Response:
    """An Atom feed of the page's posts (the newest FEED_ENTRIES, whatever their age)."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    found = await store.posts(request.app[keys.POOL], page["id"], limit=FEED_ENTRIES)
    base = request.app[keys.CONFIG].public_url or str(request.url.origin())
    updated = max([p["updated_at"] for p in found], default=page["updated_at"])
    text = status_html.render_feed(
        page["name"],
        page["description"],
        [post_out(p) for p in found],
        base=base,
        slug=page["slug"],
        updated=updated,
    )
    return web.Response(
        text=text, content_type="application/atom+xml", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


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
    state = model.component_state(status, False)
    frames = [
        f"id: {ev.id}\nevent: component\ndata: "
        + msgspec.json.encode({"component": cid, "state": state}).decode()
        + "\n\n"
        for cid in components.get(ev.monitor_id or 0, [])
    ]
    return "".join(frames).encode()


@hardened
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
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            **SECURITY_HEADERS,
        }
    )
    await response.prepare(request)
    if not hub.attach(client, checked_at=checked_at):
        return response  # changed while we checked: the browser reconnects, and is checked again
    try:
        await response.write(b"retry: 2000\n\n")
        if resume.isascii() and resume.isdigit() and len(resume) <= 18:
            # The page lists posts of the last POST_DAYS only: an older one is not replayed.
            shown_since = now_utc() - dt.timedelta(days=model.POST_DAYS)
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


@hardened
async def page_badge(request: web.Request) -> web.Response:
    """The page's overall state, or with ?component=<id> one component's state or uptime."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    _, shown = await _cached_model(request.app, page)
    wanted = request.query.get("component")
    if wanted is None:
        state = shown["status"]
        return _svg(status_html.badge(_badge_label(request, "status"), state.replace("_", " "), state))
    comp = next((c for s in shown["sections"] for c in s["components"] if str(c["id"]) == wanted), None)
    if comp is None:
        raise not_found("component")
    if request.query.get("type") == "uptime":
        value = f"{comp['uptime_90d']:.2f}%" if comp["uptime_90d"] is not None else "no data"
        return _svg(status_html.badge(_badge_label(request, "uptime"), value, comp["status"]))
    return _svg(status_html.badge(_badge_label(request, comp["name"]), comp["status"], comp["status"]))


@hardened
async def monitor_badge(request: web.Request) -> web.Response:
    """A monitor's state: anonymous when a public page shows the monitor, else an API key
    with monitors:read (header or ?api_key=) is needed; otherwise 404 either way."""
    monitor_id = path_id(request, what="monitor")
    pool = request.app[keys.POOL]
    row = await store.monitor_badge(pool, monitor_id)
    if row is None:
        raise not_found("monitor")
    if not row["public"]:
        key = bearer(request) or request.query.get("api_key")
        found = await api_keys.authenticate(pool, key, now_utc()) if key else None
        if found is None or not {"monitors:read", "admin"} & set(found["scopes"]):
            raise not_found("monitor")
    state = model.component_state(row["status"], False)
    label = _badge_label(request, row["display_name"] or "status")
    return _svg(status_html.badge(label, {"operational": "up", "outage": "down"}.get(state, state), state))


# --- subscribers (visitor side) ---------------------------------------------------------


async def _destination(request: web.Request, url: str) -> None:
    """422 for a webhook URL whose host is (or resolves to) a non-public address."""
    allow = request.app[keys.CONFIG].subscriber_webhooks_allow_private
    try:
        unresolved = await destinations.check(url, allow_private=allow)
    except destinations.DestinationError as e:
        raise ValidationError({"webhook_url": str(e)}) from None
    if unresolved:
        # Unlike a channel's, an anonymous visitor's URL gets no benefit of the doubt: nobody
        # reads a warning, and a dead subscriber would only cost deliveries.
        raise ValidationError({"webhook_url": f"host {destinations.split(url)[0]} does not resolve"})


def _throttle(request: web.Request) -> int:
    """Spend one anonymous subscribe request of the caller's address: 0, or seconds to wait."""
    source = access.source_key(accounts.client_of(request))
    return request.app[keys.STATUS_PAGES].subscribe_limiter.take(source)


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


@hardened
async def subscribe_json(request: web.Request) -> web.Response:
    """Subscribe by email (202, a confirmation mail; 409 email_unavailable without SMTP) or by webhook."""
    page = await visible_page(request, request.match_info["slug"])
    if page is None:
        raise _not_found()
    retry = _throttle(request)
    if retry:
        raise _too_many(retry)
    body = await read_json(request)
    kind, address = config.subscription(body)
    chosen = config.components(body, await _component_ids(request, page))
    if kind == "email" and _mail_off(request):
        raise _no_mail()
    if kind == "webhook":
        await _destination(request, address)
    pool = request.app[keys.POOL]
    return ok(await subscribers.subscribe(pool, page["id"], kind, address, chosen), status=202)


async def _component_ids(request: web.Request, page: dict[str, Any]) -> set[int]:
    return {c["id"] for c in await store.components(request.app[keys.POOL], [page["id"]])}


@hardened
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
    form = await _form(request)
    if form is None:
        return _bad_form()
    try:
        kind, address = config.subscription({"email": form.get("email")})
    except ValidationError:
        return await _render(request, page, notice="Please enter a valid email address.")
    raw = form.getall("components", [])
    try:
        ids = [int(c) for c in raw if isinstance(c, str) and c.isascii() and c.isdigit() and len(c) < 19]
        if len(ids) != len(raw):
            raise ValidationError({"components": "must be component ids"})
        chosen = config.components({"components": ids}, await _component_ids(request, page))
    except ValidationError:
        return await _render(request, page, notice="Please choose components of this page.", status=422)
    if _mail_off(request):
        notice = "Email subscriptions are not available on this server."
        return await _render(request, page, notice=notice, status=409)
    await subscribers.subscribe(request.app[keys.POOL], page["id"], kind, address, chosen)
    return await _render(request, page, notice="Check your inbox for a confirmation link.")


@hardened
async def confirm_subscription(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    sub = await store.confirm_subscriber(request.app[keys.POOL], token) if 20 <= len(token) <= 100 else None
    if sub is None:
        return _html(status_html.render_message("Link not valid", "This link is unknown or expired."), 404)
    return _html(status_html.render_message("Subscribed", "You will receive status updates."))


@hardened
async def unsubscribe(request: web.Request) -> web.Response:
    """GET shows a button (link scanners must not unsubscribe anyone); POST removes."""
    token = request.query.get("token", "")
    if request.method == "GET":
        text = "Press the button to stop status updates."
        return _html(status_html.render_message("Unsubscribe", text, form_token=token[:100]))
    posted = await _form(request)
    if posted is None:
        return _bad_form()
    token = str(posted.get("token") or token)
    done = await store.remove_subscriber(request.app[keys.POOL], token=token) if token else False
    if not done:
        return _html(status_html.render_message("Link not valid", "This link is unknown or expired."), 404)
    return _html(status_html.render_message("Unsubscribed", "You will not receive further updates."))
