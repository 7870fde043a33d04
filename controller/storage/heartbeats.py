"""SQL for heartbeats (token, deadline state) and their ping history.

heartbeat_pings is partitioned by day on `at` (migration 0011); retention drops whole
partitions (controller/retention.py), so nothing here deletes pings.

Every state change locks the heartbeat and its monitor row (`lock`, `lock_due`) first, in
monitor id order, so pings and the deadline checker of any number of controllers apply
to one heartbeat one after the other.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from probefleet.controller.storage import DB, Tx

if TYPE_CHECKING:
    from probefleet.controller.monitors.heartbeat import Deadline, Ping, State

Row = dict[str, Any]

# What heartbeats.state_of and incidents.apply need. Heartbeats have no regions: an empty
# location list keeps apply from reporting regions as unavailable.
_STATE = (
    "h.monitor_id, h.anchor_at, h.runs, h.deadline, h.deadline_reason, h.last_ping_at,"
    " h.last_ping_kind, m.id, m.name, m.kind, m.spec, m.status, m.enabled, m.fail_streak,"
    " m.pass_streak, m.retry_count, m.recovery_count, m.tags, m.parent_id,"
    " m.incident_on_degraded, m.fail_since, '{}'::text[] AS locations,"
    " '{}'::text[] AS unavailable_regions, m.last_round, m.last_success, m.updated_at"
)
_JOIN = "FROM heartbeats h JOIN monitors m ON m.id = h.monitor_id"


async def create(
    conn: DB, monitor_id: int, token_hash: str, hint: str, anchor: dt.datetime, deadline: Deadline | None
) -> None:
    await conn.execute(
        "INSERT INTO heartbeats (monitor_id, token_hash, token_hint, anchor_at, deadline, deadline_reason)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (monitor_id) DO UPDATE"
        " SET token_hash = EXCLUDED.token_hash, token_hint = EXCLUDED.token_hint",
        monitor_id,
        token_hash,
        hint,
        anchor,
        deadline.at if deadline else None,
        deadline.reason if deadline else None,
    )


async def by_token(conn: DB, token_hash: str) -> int | None:
    monitor_id: int | None = await conn.fetchval(
        "SELECT monitor_id FROM heartbeats WHERE token_hash = $1", token_hash
    )
    return monitor_id


async def lock(conn: Tx, monitor_ids: list[int]) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {_STATE} {_JOIN} WHERE h.monitor_id = ANY($1) ORDER BY h.monitor_id FOR UPDATE",
        monitor_ids,
    )
    return [dict(r) for r in rows]


async def any_due(conn: DB, now: dt.datetime) -> bool:
    """Whether some heartbeat's cached deadline passed: one index probe, no transaction."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM heartbeats WHERE deadline <= $1)", now))


async def lock_due(conn: Tx, now: dt.datetime, limit: int) -> list[Row]:
    """Heartbeats whose cached deadline passed (index heartbeats_deadline); rows another
    controller holds are skipped, it is handling them."""
    rows = await conn.fetch(
        f"SELECT {_STATE} {_JOIN} WHERE h.deadline <= $1 ORDER BY h.deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [dict(r) for r in rows]


async def touch_monitors(conn: Tx, updates: list[tuple[int, dt.datetime, dt.datetime, int]]) -> None:
    """(monitor id, last success, due, count): successes that leave an up monitor up."""
    await conn.execute(
        "UPDATE monitors m SET last_check = u.at, last_success = u.at, last_round = u.due,"
        " pass_streak = m.pass_streak + u.n"
        " FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::integer[])"
        " AS u(id, at, due, n) WHERE m.id = u.id",
        [u[0] for u in updates],
        [u[1] for u in updates],
        [u[2] for u in updates],
        [u[3] for u in updates],
    )


async def finish_batch(
    conn: Tx,
    stored: list[tuple[Ping, float | None]],
    states: list[tuple[int, State, Ping, Deadline | None]],
    touches: list[tuple[int, dt.datetime, dt.datetime, int]],
) -> None:
    """Store the pings, save each heartbeat's state and touch up monitors in one statement:
    one round trip."""
    cols: list[list[Any]] = [[] for _ in range(10)]
    for p, duration in stored:
        values = (
            p.monitor_id,
            p.at,
            p.kind,
            p.exit_code,
            p.rid,
            duration * 1000 if duration is not None else None,
            p.source,
            p.user_agent,
            p.method,
            p.body,
        )
        for col, v in zip(cols, values, strict=True):
            col.append(v)
    await conn.execute(
        "WITH pings AS (INSERT INTO heartbeat_pings (monitor_id, at, kind, exit_code, rid, duration_ms,"
        " source, user_agent, method, body) SELECT * FROM unnest($1::bigint[], $2::timestamptz[],"
        " $3::text[], $4::integer[], $5::text[], $6::float8[], $7::text[], $8::text[], $9::text[],"
        " $10::text[])),"
        " states AS (UPDATE heartbeats h SET runs = u.runs, last_ping_at = u.at, last_ping_kind = u.kind,"
        " deadline = u.deadline, deadline_reason = u.reason"
        " FROM unnest($11::bigint[], $12::jsonb[], $13::timestamptz[], $14::text[], $15::timestamptz[],"
        " $16::text[]) AS u(id, runs, at, kind, deadline, reason) WHERE h.monitor_id = u.id)"
        " UPDATE monitors m SET last_check = t.at, last_success = t.at, last_round = t.due,"
        " pass_streak = m.pass_streak + t.n"
        " FROM unnest($17::bigint[], $18::timestamptz[], $19::timestamptz[], $20::integer[])"
        " AS t(id, at, due, n) WHERE m.id = t.id",
        *cols,
        [mid for mid, _, _, _ in states],
        [s.runs for _, s, _, _ in states],  # the jsonb codec (msgspec) encodes datetimes
        [p.at for _, _, p, _ in states],
        [p.kind for _, _, p, _ in states],
        [d.at if d else None for _, _, _, d in states],
        [d.reason if d else None for _, _, _, d in states],
        [u[0] for u in touches],
        [u[1] for u in touches],
        [u[2] for u in touches],
        [u[3] for u in touches],
    )


async def set_deadline(conn: Tx, monitor_id: int, deadline: Deadline | None) -> None:
    await conn.execute(
        "UPDATE heartbeats SET deadline = $2, deadline_reason = $3 WHERE monitor_id = $1",
        monitor_id,
        deadline.at if deadline else None,
        deadline.reason if deadline else None,
    )


async def set_anchor(conn: Tx, monitor_id: int, anchor: dt.datetime) -> None:
    await conn.execute("UPDATE heartbeats SET anchor_at = $2 WHERE monitor_id = $1", monitor_id, anchor)


HEARTBEAT_COLUMNS = (
    "h.token_hint, h.anchor_at, h.runs, h.deadline, h.deadline_reason, h.last_ping_at, h.last_ping_kind"
)


async def get(conn: DB, monitor_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT m.*, {HEARTBEAT_COLUMNS} {_JOIN} WHERE h.monitor_id = $1", monitor_id)
    return dict(row) if row else None


async def list_page(conn: DB, *, after_id: int, limit: int) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT m.*, {HEARTBEAT_COLUMNS} {_JOIN} WHERE h.monitor_id > $1 ORDER BY h.monitor_id LIMIT $2",
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def pings(
    conn: DB, monitor_id: int, *, before: tuple[dt.datetime, int] | None, limit: int
) -> list[Row]:
    """A heartbeat's pings newest first, after the (at, id) cursor `before` when given.
    `at <= $2` beside the row comparison lets PostgreSQL skip newer partitions."""
    cols = "id, at, kind, exit_code, rid, duration_ms, source, user_agent, method, body"
    if before is None:
        rows = await conn.fetch(
            f"SELECT {cols} FROM heartbeat_pings WHERE monitor_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            monitor_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {cols} FROM heartbeat_pings WHERE monitor_id = $1 AND at <= $2"
            " AND (at, id) < ($2, $3) ORDER BY at DESC, id DESC LIMIT $4",
            monitor_id,
            before[0],
            before[1],
            limit,
        )
    return [dict(r) for r in rows]


async def count_pings(conn: DB, monitor_id: int) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM heartbeat_pings WHERE monitor_id = $1", monitor_id)
    return n
