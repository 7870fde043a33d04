"""SQL for the fleet: regions, enrollment tokens, probe credentials and revoked keys.

Enrollment tokens are stored like API keys (storage/api_keys.py): only a SHA-256 of the
token (256 random bits, so a fast hash is enough), looked up by its non-secret prefix and
compared in constant time. A token is spent under `SELECT ... FOR UPDATE`, so concurrent
enrollments with one token are serialised and exactly `max_uses` of them succeed.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

from probefleet.controller.storage import DB, Tx

TOKEN_PREFIX = "pfe_"
PREFIX_LEN = 12

REGION_FIELDS = (
    "display_name",
    "city",
    "country",
    "country_code",
    "latitude",
    "longitude",
    "provider",
)
_REGION_COLUMNS = "name, " + ", ".join(REGION_FIELDS) + ", created_at, updated_at"
_TOKEN_COLUMNS = "id, region, prefix, expires_at, max_uses, uses, created_at, revoked_at"
_CREDENTIAL_COLUMNS = "probe_id, region, public_key, host, version, created_at, updated_at, revoked_at"


# ---- regions ---------------------------------------------------------------------------


async def seed_regions(conn: DB, regions: Sequence[dict[str, Any]]) -> int:
    """Insert the configured regions that are not in the table; never touch existing rows
    (an operator may have edited them through the API). Returns how many were added."""
    if not regions:
        return 0
    status = await conn.execute(
        "INSERT INTO regions (name, city, country, country_code, latitude, longitude)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::float8[], $6::float8[]) ON CONFLICT (name) DO NOTHING",
        [r["name"] for r in regions],
        [r.get("city", "") for r in regions],
        [r.get("country", "") for r in regions],
        [r.get("country_code", "") for r in regions],
        [r.get("latitude") for r in regions],
        [r.get("longitude") for r in regions],
    )
    return int(status.split()[-1])


async def list_regions(conn: DB) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_REGION_COLUMNS} FROM regions ORDER BY created_at, name")
    return [dict(r) for r in rows]


async def get_region(conn: DB, name: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_REGION_COLUMNS} FROM regions WHERE name = $1", name)
    return dict(row) if row is not None else None


async def create_region(conn: DB, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The new row; None when a region of that name exists."""
    names = [f for f in REGION_FIELDS if f in fields]
    columns = ", ".join(["name", *names])
    params = ", ".join(f"${i}" for i in range(1, len(names) + 2))
    row = await conn.fetchrow(
        f"INSERT INTO regions ({columns}) VALUES ({params}) ON CONFLICT (name) DO NOTHING"
        f" RETURNING {_REGION_COLUMNS}",
        name,
        *(fields[f] for f in names),
    )
    return dict(row) if row is not None else None


async def update_region(conn: DB, name: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The changed row; None when there is no such region."""
    names = [f for f in REGION_FIELDS if f in fields]
    sets = "".join(f"{f} = ${i}, " for i, f in enumerate(names, start=2))
    row = await conn.fetchrow(
        f"UPDATE regions SET {sets}updated_at = now() WHERE name = $1 RETURNING {_REGION_COLUMNS}",
        name,
        *(fields[f] for f in names),
    )
    return dict(row) if row is not None else None


async def monitors_using(conn: DB, name: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM monitors WHERE $1 = ANY (locations)", name))


async def active_credentials(conn: DB, name: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM probe_credentials WHERE region = $1 AND revoked_at IS NULL", name
        )
    )


async def delete_region(conn: Tx, name: str) -> str:
    """'deleted', 'missing', or why not: 'monitors' (monitors check from it) or 'probes'
    (probes hold unrevoked credentials for it). The region row is locked first, so a
    concurrent enrollment into it waits for the answer."""
    if await conn.fetchval("SELECT 1 FROM regions WHERE name = $1 FOR UPDATE", name) is None:
        return "missing"
    if await monitors_using(conn, name):
        return "monitors"
    if await active_credentials(conn, name):
        return "probes"
    await conn.execute("DELETE FROM regions WHERE name = $1", name)
    return "deleted"


# ---- enrollment tokens -----------------------------------------------------------------


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """(full token, lookup prefix)."""
    token = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    return token, token[:PREFIX_LEN]


async def create_token(
    conn: DB, region: str, expires_at: dt.datetime, max_uses: int | None
) -> tuple[str, dict[str, Any]] | None:
    """(token, row); None when the region does not exist."""
    token, prefix = new_token()
    row = await conn.fetchrow(
        "INSERT INTO enrollment_tokens (region, prefix, hash, expires_at, max_uses)"
        f" SELECT name, $2, $3, $4, $5 FROM regions WHERE name = $1 RETURNING {_TOKEN_COLUMNS}",
        region,
        prefix,
        digest(token),
        expires_at,
        max_uses,
    )
    return (token, dict(row)) if row is not None else None


async def list_tokens(conn: DB, region: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_TOKEN_COLUMNS} FROM enrollment_tokens WHERE region = $1 ORDER BY id", region
    )
    return [dict(r) for r in rows]


async def revoke_token(conn: DB, region: str, token_id: int) -> bool:
    """True when the token existed in that region (revoking twice is fine)."""
    found = await conn.fetchval(
        "UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = $1 AND region = $2 RETURNING id",
        token_id,
        region,
    )
    return found is not None


class TokenRefusal(enum.Enum):
    """Why a token cannot enroll a probe; the value is the message the client gets."""

    UNKNOWN = "unknown enrollment token"
    EXPIRED = "enrollment token expired; create a new one with `probefleet region enroll`"
    USED_UP = "enrollment token used up (it allows no more enrollments)"
    REVOKED = "enrollment token revoked"


async def spend_token(conn: Tx, token: str, now: dt.datetime) -> dict[str, Any] | TokenRefusal:
    """Use the token once (call inside the transaction that stores the credential): its row
    (id, region) after counting the use, or why it cannot be used. The row stays locked
    until the transaction ends, so concurrent uses of one token go one at a time."""
    if not token.startswith(TOKEN_PREFIX) or len(token) < 20:
        return TokenRefusal.UNKNOWN
    # The region row is share-locked too: a concurrent delete_region (FOR UPDATE of it) then
    # either sees this enrollment's credential and refuses, or goes first and takes the
    # token with it.
    row = await conn.fetchrow(
        "SELECT t.id, t.region, t.hash, t.expires_at, t.max_uses, t.uses, t.revoked_at"
        " FROM enrollment_tokens t JOIN regions r ON r.name = t.region"
        " WHERE t.prefix = $1 FOR UPDATE OF t FOR SHARE OF r",
        token[:PREFIX_LEN],
    )
    if row is None or not hmac.compare_digest(row["hash"], digest(token)):
        return TokenRefusal.UNKNOWN
    if row["revoked_at"] is not None:
        return TokenRefusal.REVOKED
    if row["expires_at"] <= now:
        return TokenRefusal.EXPIRED
    if row["max_uses"] is not None and row["uses"] >= row["max_uses"]:
        return TokenRefusal.USED_UP
    await conn.execute("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1", row["id"])
    return {"id": row["id"], "region": row["region"]}


# ---- probe credentials -----------------------------------------------------------------


async def key_revoked(conn: DB, public_key: str) -> bool:
    return (
        await conn.fetchval("SELECT 1 FROM probe_revoked_keys WHERE public_key = $1", public_key) is not None
    )


async def get_credential(conn: DB, probe_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_CREDENTIAL_COLUMNS} FROM probe_credentials WHERE probe_id = $1", probe_id
    )
    return dict(row) if row is not None else None


async def credential_by_key(conn: DB, public_key: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_CREDENTIAL_COLUMNS} FROM probe_credentials WHERE public_key = $1", public_key
    )
    return dict(row) if row is not None else None


async def save_credential(
    conn: Tx, *, probe_id: str, region: str, public_key: str, host: str, version: str, token_id: int
) -> dict[str, Any]:
    """Store a new credential, or give an enrolled probe id a new key (re-enrollment): its
    old key goes to the revoked keys, so the credential it replaces stops working."""
    old = await conn.fetchrow(
        "SELECT public_key FROM probe_credentials WHERE probe_id = $1 FOR UPDATE", probe_id
    )
    if old is not None and old["public_key"] != public_key:
        await conn.execute(
            "INSERT INTO probe_revoked_keys (public_key, probe_id) VALUES ($1, $2)"
            " ON CONFLICT (public_key) DO NOTHING",
            old["public_key"],
            probe_id,
        )
    row = await conn.fetchrow(
        "INSERT INTO probe_credentials (probe_id, region, public_key, host, version, token_id)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (probe_id) DO UPDATE SET"
        " region = excluded.region, public_key = excluded.public_key, host = excluded.host,"
        " version = excluded.version, token_id = excluded.token_id, updated_at = now(),"
        f" revoked_at = NULL RETURNING {_CREDENTIAL_COLUMNS}",
        probe_id,
        region,
        public_key,
        host,
        version,
        token_id,
    )
    assert row is not None
    return dict(row)


async def list_credentials(conn: DB, region: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_CREDENTIAL_COLUMNS} FROM probe_credentials WHERE region = $1 ORDER BY probe_id", region
    )
    return [dict(r) for r in rows]


async def enrolled_counts(conn: DB) -> dict[str, int]:
    """Region -> probes holding an unrevoked credential for it."""
    rows = await conn.fetch(
        "SELECT region, count(*) AS n FROM probe_credentials WHERE revoked_at IS NULL GROUP BY region"
    )
    return {r["region"]: int(r["n"]) for r in rows}


async def revoke_probe(conn: Tx, probe_id: str) -> dict[str, Any] | None:
    """Mark the probe's credential revoked and its key refused; the credential row, or None
    when no probe of that id ever enrolled. Revoking twice keeps the first time."""
    row = await conn.fetchrow(
        "UPDATE probe_credentials SET revoked_at = coalesce(revoked_at, now())"
        f" WHERE probe_id = $1 RETURNING {_CREDENTIAL_COLUMNS}",
        probe_id,
    )
    if row is None:
        return None
    await conn.execute(
        "INSERT INTO probe_revoked_keys (public_key, probe_id, revoked_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (public_key) DO NOTHING",
        row["public_key"],
        probe_id,
        row["revoked_at"],
    )
    return dict(row)


async def revoked_keys(conn: DB) -> dict[str, int]:
    """Every refused public key -> the Unix second it was revoked (NATS refuses JWTs issued
    at or before it): the full list, which FleetTrust.push_revocations takes each time."""
    rows = await conn.fetch("SELECT public_key, revoked_at FROM probe_revoked_keys")
    return {r["public_key"]: int(r["revoked_at"].timestamp()) + 1 for r in rows}
