"""SQL for console users, their sessions and the audit log.

Passwords arrive here already hashed (argon2id, controller/console/accounts.py); session
ids are stored as SHA-256 digests, as API keys are: they carry 256 random bits, so a fast
hash is enough and a database dump holds no usable session.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from probefleet.controller.storage import DB

USER_COLUMNS = "id, username, role, created_at, disabled"


class UsernameTakenError(Exception):
    """Another user has this name (names compare case-insensitively)."""


async def create(conn: DB, username: str, password_hash: str, role: str) -> dict[str, Any]:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING {USER_COLUMNS}",
            username,
            password_hash,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise UsernameTakenError(username) from None
    assert row is not None
    return dict(row)


async def get(conn: DB, user_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return dict(row) if row else None


async def credentials(conn: DB, username: str) -> dict[str, Any] | None:
    """The user with this name (any case) and their password hash."""
    row = await conn.fetchrow(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(username) = lower($1)", username
    )
    return dict(row) if row else None


async def list_all(conn: DB, limit: int = 500) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1", limit)
    return [dict(r) for r in rows]


async def update(
    conn: DB,
    user_id: int,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    password_hash: str | None = None,
) -> dict[str, Any] | None:
    """Change what is given; a disabled user or a new password ends every session of the user."""
    row = await conn.fetchrow(
        "UPDATE users SET role = coalesce($2, role), disabled = coalesce($3, disabled),"
        f" password_hash = coalesce($4, password_hash) WHERE id = $1 RETURNING {USER_COLUMNS}",
        user_id,
        role,
        disabled,
        password_hash,
    )
    if row is not None and (disabled or password_hash is not None):
        await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
    return dict(row) if row else None


async def delete(conn: DB, user_id: int) -> bool:
    return await conn.fetchval("DELETE FROM users WHERE id = $1 RETURNING id", user_id) is not None


async def count_admins(conn: DB) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled"))


async def count(conn: DB) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM users"))


# ---- sessions ---------------------------------------------------------------------------


async def create_session(
    conn: DB, id_hash: str, user_id: int, csrf: str, now: dt.datetime, expires_at: dt.datetime
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at, last_seen)"
        " VALUES ($1, $2, $3, $4, $5, $4)",
        id_hash,
        user_id,
        csrf,
        now,
        expires_at,
    )


async def session(conn: DB, id_hash: str, now: dt.datetime) -> dict[str, Any] | None:
    """The live session with this digest and its enabled user; None when there is none."""
    row = await conn.fetchrow(
        "SELECT s.id_hash, s.csrf, s.created_at, s.expires_at, s.last_seen,"
        " u.id AS user_id, u.username, u.role"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id_hash = $1 AND s.expires_at > $2 AND NOT u.disabled",
        id_hash,
        now,
    )
    return dict(row) if row else None


async def touch_session(conn: DB, id_hash: str, now: dt.datetime, expires_at: dt.datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET last_seen = $2, expires_at = $3 WHERE id_hash = $1", id_hash, now, expires_at
    )


async def delete_session(conn: DB, id_hash: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE id_hash = $1", id_hash)


async def delete_expired_sessions(conn: DB, now: dt.datetime) -> int:
    done: str = await conn.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
    return int(done.split()[-1])


# ---- audit log --------------------------------------------------------------------------


async def audit(
    conn: DB, actor: str, method: str, path: str, status: int, source: str, now: dt.datetime
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (occurred_at, actor, method, path, status, source) VALUES ($1,$2,$3,$4,$5,$6)",
        now,
        actor,
        method,
        path,
        status,
        source,
    )


async def audit_page(
    conn: DB, *, before_id: int | None = None, limit: int = 50, actor: str | None = None
) -> list[dict[str, Any]]:
    """Newest first; `before_id` is the cursor of the next page."""
    rows = await conn.fetch(
        "SELECT id, occurred_at, actor, method, path, status, source FROM audit_log"
        " WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR actor = $2)"
        " ORDER BY id DESC LIMIT $3",
        before_id,
        actor,
        limit,
    )
    return [dict(r) for r in rows]
