"""Precomputed uptime_24h/7d/30d per monitor, so monitor get and list read them with the
row instead of calling stats.uptimes() per request (which costs milliseconds a monitor).

`refresh(conn, ids, now, marks)` is one INSERT ... SELECT over exactly the pieces
stats.uptimes(ids, now) reads (stats.uptime_pieces), stored as counts; `fields(row)`
turns them into percentages with the same stats.uptime_pct, so a cached value equals a
fresh uptimes() at `computed_at`. `due(conn, now, ...)` picks the monitors worth
refreshing: never computed but with rounds, or older than `min_age` with a new round
(monitors.last_round moved), or older than `max_age` (the windows slide even without
new rounds). controller/rollups.py runs the pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.storage import DB, Tx, stats

WINDOWS = ("24h", "7d", "30d")
COUNTS = [f"{kind}_{w}" for w in WINDOWS for kind in ("good", "counted")]
_UPTIMES = tuple(f"uptime_{w}" for w in WINDOWS)
# For a SELECT that joins `monitor_uptimes u` (LEFT JOIN: a monitor never computed reads null).
COLUMNS = ", ".join(f"u.{c}" for c in COUNTS)
JOIN = "LEFT JOIN monitor_uptimes u ON u.monitor_id = monitors.id"


_FIELDS = tuple((f"uptime_{w}", f"good_{w}", f"counted_{w}") for w in WINDOWS)


def fields(row: dict[str, Any]) -> dict[str, float | None]:
    """{uptime_24h, uptime_7d, uptime_30d} from a row holding the cached counts (or not)."""
    if row.get("good_24h") is None:  # never computed: the LEFT JOIN gave nulls
        return dict.fromkeys(_UPTIMES)
    return {name: stats.uptime_pct(row[good], row[counted]) for name, good, counted in _FIELDS}


async def read(conn: DB, monitor_ids: list[int]) -> dict[int, dict[str, float | None]]:
    """Cached uptimes of some monitors (after a write, whose RETURNING row lacks them)."""
    rows = await conn.fetch(
        f"SELECT monitor_id, {', '.join(COUNTS)} FROM monitor_uptimes WHERE monitor_id = ANY($1)",
        monitor_ids,
    )
    return {r["monitor_id"]: fields(dict(r)) for r in rows}


def refresh_sql(now: dt.datetime, marks: dict[str, dt.datetime]) -> tuple[str, list[Any]]:
    """The refresh statement and its arguments after $1 (the monitor ids)."""
    windows = {f"uptime_{w}": stats.UPTIME_WINDOWS[f"uptime_{w}"] for w in WINDOWS}
    args: list[Any] = [now]
    branches: list[str] = []
    for inside, (level, a, b) in stats.uptime_pieces(now, marks, windows):
        args += [a, b]
        flags = ", ".join(f"{f'uptime_{w}' in inside} AS in_{w}" for w in WINDOWS)
        sql = stats.verdicts_sql(level, "$1", f"${len(args)}", f"${len(args) + 1}")
        branches.append(f"SELECT monitor_id, {flags}, up, degraded, down FROM ({sql}) p{len(branches)}")
    sums = ", ".join(
        f"COALESCE(sum(v.up + v.degraded) FILTER (WHERE v.in_{w}), 0)::int AS good_{w},"
        f" COALESCE(sum(v.up + v.degraded + v.down) FILTER (WHERE v.in_{w}), 0)::int AS counted_{w}"
        for w in WINDOWS
    )
    sql = (
        f"WITH v AS ({' UNION ALL '.join(branches)}),"
        f" t AS (SELECT id, {sums} FROM unnest($1::bigint[]) AS id LEFT JOIN v ON v.monitor_id = id"
        f"   GROUP BY id)"
        f" INSERT INTO monitor_uptimes (monitor_id, {', '.join(COUNTS)}, computed_at, seen_round)"
        f" SELECT t.id, {', '.join(f't.{c}' for c in COUNTS)}, $2, m.last_round"
        f" FROM t JOIN monitors m ON m.id = t.id"
        f" ON CONFLICT (monitor_id) DO UPDATE SET"
        f" {', '.join(f'{c} = EXCLUDED.{c}' for c in COUNTS)},"
        f" computed_at = EXCLUDED.computed_at, seen_round = EXCLUDED.seen_round"
    )
    return sql, args


async def refresh(
    conn: DB, monitor_ids: list[int], now: dt.datetime, marks: dict[str, dt.datetime] | None = None
) -> int:
    """Recompute the cached uptimes of `monitor_ids` at `now`, in one statement."""
    if not monitor_ids:
        return 0
    marks = await stats.watermarks(conn) if marks is None else marks
    sql, args = refresh_sql(now, marks)
    status = await conn.execute(sql, monitor_ids, *args)
    return int(status.split()[-1])


async def due(conn: DB, now: dt.datetime, *, min_age: dt.timedelta, max_age: dt.timedelta) -> list[int]:
    """Monitors whose cached uptimes are missing (and they have rounds) or worth redoing."""
    rows = await conn.fetch(
        "SELECT m.id FROM monitors m LEFT JOIN monitor_uptimes u ON u.monitor_id = m.id"
        " WHERE CASE WHEN u.monitor_id IS NULL THEN m.last_round IS NOT NULL"
        "   ELSE u.computed_at <= $1::timestamptz - $2::interval"
        "     AND (m.last_round IS DISTINCT FROM u.seen_round"
        "          OR u.computed_at <= $1::timestamptz - $3::interval) END"
        " ORDER BY m.id",
        now,
        min_age,
        max_age,
    )
    return [r["id"] for r in rows]


async def forget_orphans(conn: Tx) -> int:
    """Drop the rows of deleted monitors."""
    status = await conn.execute(
        "DELETE FROM monitor_uptimes u WHERE NOT EXISTS (SELECT 1 FROM monitors m WHERE m.id = u.monitor_id)"
    )
    return int(status.split()[-1])
