"""/api/v1/users (console users: list, create, change role or password, disable, delete) and
/api/v1/audit (who changed what, newest first); both need the admin scope."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api.common import ok, parse_int, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.api.scopes import ROLES
from probefleet.controller.console import accounts
from probefleet.controller.storage import users as store
from probefleet.controller.validation import ValidationError

Role = Literal["admin", "editor", "viewer"]


class UserCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /users body; the password is stored as an argon2id hash and never shown."""

    username: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[\w.@-]+$")]
    password: Annotated[str, Meta(min_length=10, max_length=1024)]
    role: Role = "viewer"


class UserUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /users/{id} body: what is given changes; a new password or disabling ends the
    user's sessions."""

    role: Role | None = None
    password: Annotated[str, Meta(min_length=10, max_length=1024)] | None = None
    disabled: bool | None = None


class User(msgspec.Struct, kw_only=True):
    """A console user: never the password or its hash."""

    id: int
    username: str
    role: Role
    created_at: dt.datetime
    disabled: bool


class AuditEntry(msgspec.Struct, kw_only=True):
    """One state-changing request that succeeded: who (`key:<prefix>` or `user:<name>`),
    what (method and path), its status and the caller's address."""

    id: int
    occurred_at: dt.datetime
    actor: str
    method: str
    path: str
    status: int
    source: str


async def list_users(request: web.Request) -> web.Response:
    await require(request, "admin")
    return ok(await store.list_all(request.app[keys.POOL]))


async def create_user(request: web.Request) -> web.Response:
    await require(request, "admin")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    unknown = sorted(set(body) - {"username", "password", "role"})
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "unknown field"))
    user = await accounts.create_user(
        request.app[keys.POOL], body.get("username"), body.get("password"), body.get("role", "viewer")
    )
    return ok(user, status=201)


async def patch_user(request: web.Request) -> web.Response:
    """Change role, password or disabled; the last enabled admin cannot be demoted or disabled."""
    await require(request, "admin")
    user_id = path_id(request, what="user")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    problems: dict[str, object] = {
        k: "unknown field" for k in body if k not in ("role", "password", "disabled")
    }
    role, password, disabled = body.get("role"), body.get("password"), body.get("disabled")
    if role is not None and role not in ROLES:
        problems["role"] = f"one of {', '.join(ROLES)}"
    if disabled is not None and not isinstance(disabled, bool):
        problems["disabled"] = "true or false"
    if password is not None and (
        not isinstance(password, str) or not accounts.MIN_PASSWORD <= len(password) <= accounts.MAX_PASSWORD
    ):
        problems["password"] = f"{accounts.MIN_PASSWORD} to {accounts.MAX_PASSWORD} characters"
    if problems:
        raise ValidationError(problems)
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        current = await store.get(conn, user_id)
        if current is None:
            raise not_found("user")
        losing_admin = current["role"] == "admin" and (role not in (None, "admin") or disabled)
        if losing_admin and not current["disabled"] and await store.count_admins(conn) <= 1:
            raise ApiError(409, "conflict", "this is the last enabled admin")
        hashed = accounts.hash_password(password) if password is not None else None
        user = await store.update(conn, user_id, role=role, disabled=disabled, password_hash=hashed)
    return ok(user)


async def delete_user(request: web.Request) -> web.Response:
    await require(request, "admin")
    user_id = path_id(request, what="user")
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        current = await store.get(conn, user_id)
        if current is None:
            raise not_found("user")
        if current["role"] == "admin" and not current["disabled"] and await store.count_admins(conn) <= 1:
            raise ApiError(409, "conflict", "this is the last enabled admin")
        await store.delete(conn, user_id)
    return ok({"id": user_id, "deleted": True})


async def list_audit(request: web.Request) -> web.Response:
    """Newest first; ?cursor= (from meta.next_cursor) pages back, ?actor= filters."""
    await require(request, "admin")
    raw = request.query.get("cursor")
    cursor = parse_int(raw) if raw else None
    if raw and cursor is None:
        raise ValidationError({"cursor": "invalid cursor"})
    limit = parse_int(request.query.get("limit", "50"), 1, 200)
    if limit is None:
        raise ValidationError({"limit": "an integer from 1 to 200"})
    rows = await store.audit_page(
        request.app[keys.POOL], before_id=cursor, limit=limit + 1, actor=request.query.get("actor") or None
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return ok(rows, meta={"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None})
