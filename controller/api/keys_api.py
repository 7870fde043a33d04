"""/api/v1/api-keys: create (the full key is shown once), list, revoke (scope keys:admin).

A key grants only scopes it holds (`admin` holds them all), and only an `admin` key revokes
an `admin` key: otherwise `keys:admin` would be `admin` one request away."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.client.models import ApiKey
from probefleet.controller import keys
from probefleet.controller.api import auth
from probefleet.controller.api.common import check_time, now_utc, ok, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
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
        else:
            try:
                check_time(req.expires_at, "expires_at")
            except ValidationError as e:
                errors.update(e.details)
    if errors:
        raise ValidationError(errors)
    return req


def _grantable(holder: dict[str, Any], scopes: list[str]) -> None:
    """A 403 naming the scopes `holder` asks to grant but does not hold."""
    held = set(holder["scopes"])
    if "admin" in held:
        return
    if missing := sorted(set(scopes) - held):
        raise ApiError(
            403,
            "forbidden",
            f"a key can grant only scopes it holds; this key lacks {', '.join(missing)}",
            {"scopes": missing},
        )


async def create_key(request: web.Request) -> web.Response:
    holder = await require(request, "keys:admin")
    now = now_utc()
    req = parse(await read_json(request), now)
    _grantable(holder, req.scopes)
    expires = req.expires_at
    if expires is None and req.expires_in_days is not None:
        expires = now + dt.timedelta(days=req.expires_in_days)
    key, row = await store.create(
        request.app[keys.POOL], req.name, sorted(set(req.scopes)), expires, rate_limit=req.rate_limit
    )
    return ok({**public(row), "key": key}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    """Active keys only: an expired or revoked key authenticates nowhere."""
    await require(request, "keys:admin")
    rows = await store.list_active(request.app[keys.POOL], now_utc())
    return ok([public(r) for r in rows], meta={"count": len(rows)})


async def revoke_key(request: web.Request) -> web.Response:
    holder = await require(request, "keys:admin")
    key_id, pool = path_id(request, what="API key"), request.app[keys.POOL]
    scopes = await store.scopes_of(pool, key_id)
    if scopes is None:
        raise not_found("API key")
    if "admin" in scopes and "admin" not in holder["scopes"]:
        raise ApiError(
            403, "forbidden", "only an admin key can revoke an admin key", {"required_scope": "admin"}
        )
    prefix = await store.revoke(pool, key_id)
    if prefix is None:
        raise not_found("API key")
    await auth.announce_revoked(request.app, prefix)
    return web.Response(status=204)
