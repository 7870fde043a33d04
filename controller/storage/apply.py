"""SQL of config as code: the (kind, owner, key) -> resource id map of applied sets."""

from __future__ import annotations

from collections.abc import Sequence

from probefleet.controller.storage import DB, Tx

# The table each kind of the map stands for.
TABLES = {
    "monitor": "monitors",
    "channel": "notification_channels",
    "rule": "notification_rules",
    "window": "maintenance_windows",
    "status_page": "status_pages",
}


async def owned(conn: Tx, kind: str, owner: str) -> dict[str, int]:
    """The owner's keys of `kind` and their resource ids; rows whose resource was deleted by
    hand meanwhile are removed (the key then means a new resource)."""
    await conn.execute(
        f"DELETE FROM applied_resources a WHERE kind=$1 AND owner=$2"
        f" AND NOT EXISTS (SELECT 1 FROM {TABLES[kind]} t WHERE t.id = a.resource_id)",
        kind,
        owner,
    )
    rows = await conn.fetch(
        "SELECT key, resource_id FROM applied_resources WHERE kind=$1 AND owner=$2", kind, owner
    )
    return {r["key"]: r["resource_id"] for r in rows}


async def unowned_named(conn: Tx, kind: str, names: Sequence[str]) -> dict[str, int]:
    """Resources of `kind` that no apply set owns, by name (the oldest of a name), for the
    names given: what an apply of an exported file takes over instead of duplicating."""
    if not names:
        return {}
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (name) name, id FROM {TABLES[kind]} t WHERE name = ANY($2::text[])"
        f" AND NOT EXISTS (SELECT 1 FROM applied_resources a WHERE a.kind=$1 AND a.resource_id=t.id)"
        f" ORDER BY name, id",
        kind,
        list(names),
    )
    return {r["name"]: r["id"] for r in rows}


async def record(conn: Tx, kind: str, owner: str, keys: dict[str, int]) -> None:
    """Map the owner's keys of `kind` onto these resource ids (new or changed rows)."""
    if not keys:
        return
    await conn.execute(
        "INSERT INTO applied_resources (kind, owner, key, resource_id)"
        " SELECT $1, $2, k, id FROM unnest($3::text[], $4::bigint[]) AS u(k, id)"
        " ON CONFLICT (kind, owner, key) DO UPDATE SET resource_id = EXCLUDED.resource_id",
        kind,
        owner,
        list(keys),
        list(keys.values()),
    )


async def forget(conn: Tx, kind: str, ids: Sequence[int]) -> None:
    await conn.execute(
        "DELETE FROM applied_resources WHERE kind=$1 AND resource_id = ANY($2::bigint[])", kind, list(ids)
    )


async def keys_of(conn: DB, kind: str, owner: str | None) -> dict[int, tuple[str, str]]:
    """Resource id -> (owner, key) of `kind`, for one owner or every one (export)."""
    rows = await conn.fetch(
        "SELECT resource_id, owner, key FROM applied_resources WHERE kind=$1 AND (owner=$2 OR $2 IS NULL)",
        kind,
        owner,
    )
    return {r["resource_id"]: (r["owner"], r["key"]) for r in rows}


async def owns_any(conn: DB, kinds: Sequence[str], owner: str) -> bool:
    """Whether the owner has applied any resource of these kinds."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM applied_resources WHERE kind = ANY($1::text[]) AND owner=$2)",
        list(kinds),
        owner,
    )
    return bool(found)


async def lock_owner(conn: Tx, owner: str) -> None:
    """Serialize the applies of one owner until this transaction ends: two at once would
    both make the same new keys' resources, and one would fail on the map's key."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('probefleet.apply:' || $1))", owner)
