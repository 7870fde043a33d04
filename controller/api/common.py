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
from probefleet.controller.console import accounts
from probefleet.controller.storage import DB
from probefleet.controller.storage import events as event_store
from probefleet.controller.validation import ValidationError, check_time

R = TypeVar("R")

MAX_BODY = 1 << 20
# Limits of what a JSON body may hold (docs/api.md, "Limits"). Deeper nesting than any
# resource needs would only cost recursion; integers go into bigint columns; PostgreSQL
# text cannot hold NUL.
MAX_JSON_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_encoder = msgspec.json.Encoder()


def json_default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return obj.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    data = msgspec.json.encode(body, enc_hook=json_default)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def ok(data: Any, *, status: int = 200, meta: dict[str, Any] | None = None) -> web.Response:
    envelope = {"data": data, "meta": {"timestamp": now_utc(), **(meta or {})}}
    return json_response(envelope, status)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400/413/422 the client can act on: nested at most
    MAX_JSON_DEPTH deep, integers within 64 bits, no NUL in any string or key."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"body larger than {MAX_BODY} bytes")
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "bad_request", "Request body must be valid JSON", {"body": "empty body"})
    too_deep = ApiError(
        400, "bad_request", f"JSON nested deeper than {MAX_JSON_DEPTH} levels", {"body": "nested too deep"}
    )
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ApiError(400, "bad_request", "Request body must be valid JSON", {"body": str(e)}) from None
    except RecursionError:
        raise too_deep from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    if problems := json_problems(body):
        raise ValidationError(problems)
    return body


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def json_problems(value: Any, path: str = "") -> dict[str, object]:
    """Field path -> what is wrong, for every value no column can store: a string or key
    with NUL, an integer beyond 64 bits. Paths read like validation errors: a.b[2]."""
    problems: dict[str, object] = {}
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                problems[where or "body"] = "must not contain NUL (\\u0000)"
        elif isinstance(item, bool | float) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                problems[where or "body"] = "integer out of range (64-bit signed)"
        elif isinstance(item, dict):
            for k, v in item.items():
                field = f"{where}.{k}" if where else str(k)
                if "\x00" in k:
                    problems[field.replace("\x00", "\\u0000")] = "field name must not contain NUL (\\u0000)"
                else:
                    stack.append((v, field))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return problems


def parse_int(raw: str, lo: int = 0, hi: int = INT_MAX) -> int | None:
    """`raw` as an int from lo to hi if it is plain ASCII digits; else None. (str.isdigit
    accepts "¹" and "٣", which int() refuses or reads.)"""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(hi)):
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def parse_time(raw: str, name: str) -> dt.datetime:
    """An ISO 8601 time (naive means UTC; a trailing Z allowed) from validation.MIN_TIME to MAX_TIME,
    in UTC; else a ValidationError naming `name`."""
    try:
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError({name: "must be an ISO 8601 time"}) from None
    check_time(t, name)
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def path_id(request: web.Request, name: str = "id", what: str = "resource") -> int:
    """The path's {name} as a non-negative 64-bit id; 404 "<what> not found" for anything else."""
    value = parse_int(request.match_info[name])
    if value is None:
        raise not_found(what)
    return value


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
    """The calling key if it holds `scope` (or admin); else 401 or 403.

    Without a key, a console session (cookie) stands for its user's role; a state-changing
    request made with it must carry the session's CSRF token (403 otherwise)."""
    key = bearer(request)
    if not key and accounts.COOKIE in request.cookies:
        return await _require_session(request, scope)
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
    request[accounts.ACTOR] = f"key:{key[:12]}"
    event_store.ACTOR.set(request[accounts.ACTOR])
    return row


async def _require_session(request: web.Request, scope: str) -> dict[str, Any]:
    session = await accounts.session_of(request, now_utc())
    if session is None:
        raise ApiError(401, "unauthorized", "session expired or logged out: log in again")
    if request.method not in accounts.SAFE_METHODS and not accounts.csrf_ok(request, session):
        raise ApiError(403, "csrf_failed", f"missing or wrong {accounts.CSRF_HEADER} header")
    # A user's bucket: negative ids never meet an API key's.
    scopes = accounts.scopes_of(session["role"])
    row: dict[str, Any] = {"id": -int(session["user_id"]), "scopes": scopes, "rate_limit": None}
    ratelimit.check(request, row)
    if scope not in scopes and "admin" not in scopes:
        raise ApiError(
            403,
            "forbidden",
            f"the role {session['role']!r} lacks the scope {scope!r}",
            {"required_scope": scope},
        )
    request[keys.API_KEY] = row
    event_store.ACTOR.set(f"user:{session['username']}")
    return row
