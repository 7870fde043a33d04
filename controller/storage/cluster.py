"""SQL for the controllers table: one lease row per live controller, timed on the database
clock so controller clocks may disagree."""

from __future__ import annotations

from probefleet.controller.storage import DB


async def renew_lease(conn: DB, controller_id: str, lease: float) -> tuple[str, ...]:
    """Extend this controller's lease by `lease` seconds (creating its row) and return
    the ids of every live controller, this one included, in order; one statement."""
    rows = await conn.fetch(
        "WITH me AS (INSERT INTO controllers (id, heartbeat_at, lease_until)"
        " VALUES ($1, now(), now() + make_interval(secs => $2))"
        " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), lease_until = EXCLUDED.lease_until"
        " RETURNING id)"
        " SELECT id FROM controllers WHERE lease_until > now() AND id <> $1"
        " UNION SELECT id FROM me ORDER BY id",
        controller_id,
        lease,
    )
    return tuple(r["id"] for r in rows)


async def drop_lease(conn: DB, controller_id: str) -> None:
    await conn.execute("DELETE FROM controllers WHERE id = $1", controller_id)


async def live_count(conn: DB) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM controllers WHERE lease_until > now()"))
