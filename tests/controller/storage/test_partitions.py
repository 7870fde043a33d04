"""Daily partitions are UTC days whatever the database server's time zone: their names,
retention and the migrations assume UTC."""

from __future__ import annotations

import datetime as dt

import asyncpg

from probefleet.controller.storage import db

UTC = dt.UTC


async def test_partitions_are_utc_days_in_any_server_time_zone(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET TimeZone = 'Asia/Tokyo'")  # UTC+9: local midnight is 15:00 UTC
        now = dt.datetime(2031, 5, 10, 12, tzinfo=UTC)
        await db.ensure_partitions(conn, now, tables=("heartbeat_pings",))
        mid = await conn.fetchval(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            " VALUES ('cron', 'heartbeat', '{}', 60, 5, '{}') RETURNING id"
        )
        where = {}
        day = dt.datetime(2031, 5, 10, tzinfo=UTC)
        for at in (day, day + dt.timedelta(hours=23, minutes=59), day + dt.timedelta(days=1)):
            where[at] = await conn.fetchval(
                "INSERT INTO heartbeat_pings (monitor_id, at, kind) VALUES ($1, $2, 'success')"
                " RETURNING tableoid::regclass::text",
                mid,
                at,
            )
    assert list(where.values()) == [
        "heartbeat_pings_20310510",
        "heartbeat_pings_20310510",
        "heartbeat_pings_20310511",
    ]


async def test_rows_in_the_default_partition_move_into_their_new_day(pool: asyncpg.Pool) -> None:
    """Rows written while their day had no partition (say the clock jumped) sit in the
    default partition; creating that day's partition later moves them there instead of
    failing, and the other days and tables are still created."""
    far = dt.datetime(2033, 1, 10, 6, tzinfo=UTC)
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, regions, deadline) VALUES"
        " (1, $1, '{us-east}', $1), (2, $2, '{us-east}', $2)",
        far,
        far + dt.timedelta(days=1, hours=1),
    )
    assert await pool.fetchval("SELECT count(*) FROM rounds_default") == 2
    await db.ensure_partitions(pool, far + dt.timedelta(days=1), days_ahead=1)
    where = await pool.fetch("SELECT monitor_id, tableoid::regclass::text AS part FROM rounds ORDER BY 1")
    assert [(r["monitor_id"], r["part"]) for r in where] == [
        (1, "rounds_20330110"),
        (2, "rounds_20330111"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM rounds_default") == 0
    # Tables after rounds were not held up.
    assert (
        await pool.fetchval("SELECT to_regclass('heartbeat_pings_20330112')::text")
        == "heartbeat_pings_20330112"
    )
