"""SQL for the controllers table: one lease row per live controller, timed on the database
clock so controller clocks may disagree."""

from __future__ import annotations

from typing import NamedTuple

from probefleet.controller.storage import DB


class Lease(NamedTuple):
    """The live controllers after a renewal: their ids in order, and the lowest wire any of
    them decodes (`wire.WIRE`)."""

    members: tuple[str, ...]
    wire: int


async def renew_lease(conn: DB, controller_id: str, lease: float, wire: int) -> Lease:
    """Extend this controller's lease by `lease` seconds (creating its row), noting the
    `wire` it decodes, and return every live controller, this one included; one statement.
    A row renewed by a controller that predates the wire column (its `wire_lease_until`
    behind its `lease_until`) counts as wire 1."""
    rows = await conn.fetch(
        "WITH me AS (INSERT INTO controllers (id, heartbeat_at, lease_until, wire, wire_lease_until)"
        " VALUES ($1, now(), now() + make_interval(secs => $2), $3, now() + make_interval(secs => $2))"
        " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), lease_until = EXCLUDED.lease_until,"
        " wire = EXCLUDED.wire, wire_lease_until = EXCLUDED.lease_until"
        " RETURNING id, wire)"
        " SELECT id, CASE WHEN wire_lease_until = lease_until THEN wire ELSE 1 END AS wire"
        " FROM controllers WHERE lease_until > now() AND id <> $1"
        " UNION SELECT id, wire FROM me ORDER BY id",
        controller_id,
        lease,
        wire,
    )
    return Lease(tuple(r["id"] for r in rows), min(r["wire"] for r in rows))


async def drop_lease(conn: DB, controller_id: str) -> None:
    await conn.execute("DELETE FROM controllers WHERE id = $1", controller_id)


async def live_count(conn: DB) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM controllers WHERE lease_until > now()"))
