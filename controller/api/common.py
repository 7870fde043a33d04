"""Helpers every resource module uses: the success envelope, JSON bodies, ids, auth."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api import auth, ratelimit
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.storage import DB

R = TypeVar("R")

MAX_BODY = 1 << 20
_encoder = msgspec.json.Encoder()


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return obj.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    data = msgspec.json.encode(body, enc_hook=_default)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def ok(data: Any, *, status: int = 200, meta: dict[str, Any] | None = None) -> web.Response:
    envelope = {"data": data, "meta": {"timestamp": now_utc(), **(meta or {})}}
    return json_response(envelope, status)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400/413 the client can act on."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"body larger than {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "bad_request", "Request body must be valid JSON", {"body": "empty body"})
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ApiError(400, "bad_request", "Request body must be valid JSON", {"body": str(e)}) from None


def path_id(request: web.Request, name: str = "id", what: str = "resource") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise not_found(what)
    return int(raw)


async def by_id(request: web.Request, what: str, action: Callable[[DB, int], Awaitable[R | None]]) -> R:
    """What `action(pool, id)` returns for the path's {id}: get, delete, revoke. 404 "<what> not
    found" when the id is not a number or the action returns None or False (no such row)."""
    result = await action(request.app[keys.POOL], path_id(request, what=what))
    if result is None or result is False:
        raise not_found(what)
    return result


# Some clients send the key as a cookie (`curl -b session_cookie=...`, or
# `Cookie: session=...`). The controller never sets these cookies, and a request a
# browser marks as coming from a page (Origin, or Sec-Fetch-Site other than same-origin or
# none) is refused them, so another site cannot make a browser spend one.
SESSION_COOKIES = ("session_cookie", "session")


def bearer(request: web.Request) -> str | None:
    """The API key: `Authorization: Bearer`, `X-API-Key`, or a session cookie."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if key := request.headers.get("X-API-Key"):
        return key
    site = request.headers.get("Sec-Fetch-Site", "none")
    if "Origin" in request.headers or site not in ("none", "same-origin"):
        return None
    return next((v for name in SESSION_COOKIES if (v := request.cookies.get(name))), None)


async def require(request: web.Request, scope: str) -> dict[str, Any]:
    """The calling key if it holds `scope` (or admin); else 401 or 403."""
    key = bearer(request)
    if not key:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = await auth.authenticate(request.app, key, now_utc())
    if row is None:
        raise ApiError(
            401, "unauthorized", "invalid, revoked or expired API key", headers={"WWW-Authenticate": "Bearer"}
        )
    ratelimit.check(request, row)
    scopes = set(row["scopes"])
    if scope not in scopes and "admin" not in scopes:
        raise ApiError(403, "forbidden", f"this key lacks the scope {scope!r}", {"required_scope": scope})
    request[keys.API_KEY] = row
    return row
