"""API keys: only a SHA-256 of each key is stored; the full key is shown once.

Keys carry 256 bits of randomness, so a fast hash is enough (no password stretching
needed); lookups go by the non-secret prefix and compare digests in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from probefleet.controller.storage import DB

__all__ = [
    "KEY_PREFIX",
    "authenticate",
    "count",
    "create",
    "digest",
    "expired",
    "list_active",
    "new_key",
    "revoke",
    "scopes_of",
    "touch",
]

KEY_PREFIX = "pf_"
# last_used_at is written at most this often per key (and per controller with a key cache).
USE_RESOLUTION = dt.timedelta(minutes=1)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(full key, lookup prefix)."""
    body = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{body}"
    return key, key[:12]


async def create(
    conn: DB,
    name: str,
    scopes: list[str],
    expires_at: dt.datetime | None = None,
    rate_limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    key, prefix = new_key()
    row = await conn.fetchrow(
        "INSERT INTO api_keys (name, prefix, hash, scopes, expires_at, rate_limit)"
        " VALUES ($1,$2,$3,$4,$5,$6) RETURNING id, name, prefix, scopes, created_at, last_used_at,"
        " expires_at, revoked_at, rate_limit",
        name,
        prefix,
        digest(key),
        scopes,
        expires_at,
        rate_limit,
    )
    assert row is not None
    return key, dict(row)


async def authenticate(conn: DB, key: str, now: dt.datetime) -> dict[str, Any] | None:
    """The key's row if it is known, not revoked and not expired."""
    if not key.startswith(KEY_PREFIX) or len(key) < 20:
        return None
    row = await conn.fetchrow(
        "SELECT id, name, hash, scopes, expires_at, revoked_at, last_used_at, rate_limit"
        " FROM api_keys"
        " WHERE prefix = $1",
        key[:12],
    )
    if row is None or not hmac.compare_digest(row["hash"], digest(key)):
        return None
    out = dict(row)
    if out["revoked_at"] is not None or expired(out, now):
        return None
    await touch(conn, out, now)
    return out


def expired(row: dict[str, Any], now: dt.datetime) -> bool:
    return row["expires_at"] is not None and row["expires_at"] <= now


async def touch(conn: DB, row: dict[str, Any], now: dt.datetime) -> None:
    """Record a use of the key (in the database and in `row`) unless one was recorded
    less than USE_RESOLUTION ago."""
    if row["last_used_at"] is None or now - row["last_used_at"] > USE_RESOLUTION:
        row["last_used_at"] = now
        await conn.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", row["id"], now)


async def list_active(conn: DB, now: dt.datetime) -> list[dict[str, Any]]:
    """Keys that authenticate at `now`: neither revoked nor expired."""
    rows = await conn.fetch(
        "SELECT id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at,"
        " rate_limit FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)"
        " ORDER BY id",
        now,
    )
    return [dict(r) for r in rows]


async def scopes_of(conn: DB, key_id: int) -> list[str] | None:
    """The scopes of an unrevoked key (a key's scopes never change); None when there is none."""
    scopes: list[str] | None = await conn.fetchval(
        "SELECT scopes FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return scopes


async def revoke(conn: DB, key_id: int) -> str | None:
    """The revoked key's prefix; None when there is no such unrevoked key."""
    prefix: str | None = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING prefix",
        key_id,
    )
    return prefix


async def count(conn: DB) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"))
