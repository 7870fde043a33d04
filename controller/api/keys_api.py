"""/api/v1/api-keys: create (the full key is shown once), list, revoke (scope keys:admin)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api import auth
from probefleet.controller.api.common import by_id, now_utc, ok, read_json, require
from probefleet.controller.api.scopes import SCOPES
from probefleet.controller.storage import api_keys as store
from probefleet.controller.validation import ValidationError, from_msgspec


class ApiKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api-keys body. `expires_at` or `expires_in_days` (alias `expiresInDays`)."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["monitors:read"]
    )
    expires_at: dt.datetime | None = None
    expires_in_days: Annotated[int, Meta(ge=1, le=3650)] | None = None
    rate_limit: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None


class ApiKey(msgspec.Struct, kw_only=True):
    """A key as listed: never the secret or its hash."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    rate_limit: int | None = None


class ApiKeyCreated(ApiKey, kw_only=True):
    key: str  # the full key, shown only in the create response


ALIASES = {
    "expiresAt": "expires_at",
    "expiresInDays": "expires_in_days",
    "permissions": "scopes",
    "rateLimit": "rate_limit",
}


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {f: row.get(f) for f in ApiKey.__struct_fields__}


def parse(body: object, now: dt.datetime) -> ApiKeyCreate:
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    body = {ALIASES.get(k, k): v for k, v in body.items()}
    try:
        req = msgspec.convert(body, ApiKeyCreate)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None
    errors: dict[str, object] = {}
    for i, scope in enumerate(req.scopes):
        if scope not in SCOPES:
            errors[f"scopes[{i}]"] = f"unknown scope; use one of {', '.join(SCOPES)}"
    if req.expires_at is not None:
        if req.expires_at.tzinfo is None:
            errors["expires_at"] = "must include a time zone (for example Z)"
        elif req.expires_at <= now:
            errors["expires_at"] = "must be in the future"
    if errors:
        raise ValidationError(errors)
    return req


async def create_key(request: web.Request) -> web.Response:
    await require(request, "keys:admin")
    now = now_utc()
    req = parse(await read_json(request), now)
    expires = req.expires_at
    if expires is None and req.expires_in_days is not None:
        expires = now + dt.timedelta(days=req.expires_in_days)
    key, row = await store.create(
        request.app[keys.POOL], req.name, sorted(set(req.scopes)), expires, rate_limit=req.rate_limit
    )
    return ok({**public(row), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    await require(request, "keys:admin")
    rows = await store.list_all(request.app[keys.POOL])
    return ok([public(r) for r in rows], meta={"count": len(rows)})


async def revoke_key(request: web.Request) -> web.Response:
    await require(request, "keys:admin")
    prefix = await by_id(request, "API key", store.revoke)
    await auth.announce_revoked(request.app, prefix)
    return web.Response(status=204)
