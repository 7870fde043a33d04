"""Daily partitions are UTC days whatever the database server's time zone: their names,
retention and the migrations assume UTC."""

from __future__ import annotations

import datetime as dt

from controller.storage import db

UTC = dt.UTC


async def test_partitions_are_utc_days_in_any_server_time_zone(database: str) -> None:
    await db.migrate(database)
    pool = await db.create_pool(database, max_size=1)
    try:
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
                    " RETURNING tableoid::regclass::text", mid, at,
                )  # fmt: skip
    finally:
        await pool.close()
    assert list(where.values()) == ["heartbeat_pings_20310510", "heartbeat_pings_20310510",
                                    "heartbeat_pings_20310511"]  # fmt: skip
