"""Cached uptimes (storage/uptime_cache.py, refreshed by rollups.refresh_uptimes): equal to
stats.uptimes() at the refresh time, only redone for monitors with new rounds, null
without data, and served by the monitors API with the row."""

from __future__ import annotations

import datetime as dt

import aiohttp
import asyncpg

from probefleet.controller import keys
from probefleet.controller.stats import rollups
from probefleet.controller.storage import stats as store
from probefleet.controller.storage import uptime_cache
from tests.controller.conftest import Running
from tests.controller.stats.test_rollups import END, MONITORS, NOW, START, pool, roll_all, seed

__all__ = ["pool"]


async def cached(pool: asyncpg.Pool, ids: list[int]) -> dict[int, dict[str, float | None]]:
    return {i: (await uptime_cache.read(pool, [i])).get(i, uptime_cache.fields({})) for i in ids}


async def test_it_caches_exactly_what_uptimes_computes(pool: asyncpg.Pool) -> None:
    await seed(pool, START, END)
    # Older data, so the 24 h, 7 d and 30 d windows differ; some of it partly rolled up.
    await seed(
        pool, NOW - dt.timedelta(days=9), NOW - dt.timedelta(days=8, hours=20), every=dt.timedelta(minutes=3)
    )
    await seed(
        pool,
        NOW - dt.timedelta(days=3, hours=5),
        NOW - dt.timedelta(days=3, hours=1),
        monitors=[1, 2],
        every=dt.timedelta(minutes=2),
    )
    await pool.execute(
        "INSERT INTO events (kind, monitor_id, occurred_at) VALUES ('monitor.paused', 2, $1),"
        " ('monitor.resumed', 2, $2)",
        START + dt.timedelta(minutes=30),
        START + dt.timedelta(hours=1),
    )
    await pool.execute("UPDATE monitors SET last_round = $1", END)
    await pool.execute(
        "INSERT INTO monitors (id, name, kind, spec, interval_s, timeout_s, locations)"
        " VALUES (4, 'no data', 'http', '{}', 60, 5, '{us-east}')"
    )
    await roll_all(pool, END - dt.timedelta(hours=1))  # the last hour stays raw

    assert await rollups.refresh_uptimes(pool, NOW) == len(MONITORS)
    expected = await store.uptimes(pool, [*MONITORS, 4], NOW)
    assert await cached(pool, [*MONITORS, 4]) == expected
    assert expected[4] == {"uptime_24h": None, "uptime_7d": None, "uptime_30d": None}
    assert len({expected[1]["uptime_24h"], expected[1]["uptime_7d"], expected[1]["uptime_30d"]}) == 3
    assert expected[2]["uptime_24h"] != expected[3]["uptime_24h"]

    # Rolling up the rest changes nothing.
    await roll_all(pool, NOW)
    await uptime_cache.refresh(pool, [*MONITORS, 4], NOW)
    assert await cached(pool, [*MONITORS, 4]) == expected


async def test_it_refreshes_only_monitors_with_new_rounds(pool: asyncpg.Pool) -> None:
    await seed(pool, START, END)
    await pool.execute("UPDATE monitors SET last_round = $1", END)
    assert await rollups.refresh_uptimes(pool, NOW) == 3
    later = NOW + dt.timedelta(seconds=55)
    assert await rollups.refresh_uptimes(pool, later) == 0  # nothing new
    await pool.execute("UPDATE monitors SET last_round = $1 WHERE id = 2", NOW)
    assert await rollups.refresh_uptimes(pool, NOW + dt.timedelta(seconds=30)) == 0  # too soon
    assert await rollups.refresh_uptimes(pool, later) == 1
    # With no new round a monitor is still redone after max_age: its windows slide.
    assert await rollups.refresh_uptimes(pool, NOW + dt.timedelta(minutes=11)) == 3
    await pool.execute("DELETE FROM monitors WHERE id = 3")
    await rollups.refresh_uptimes(pool, NOW + dt.timedelta(minutes=22))
    assert await pool.fetchval("SELECT array_agg(monitor_id ORDER BY 1) FROM monitor_uptimes") == [1, 2]


async def test_it_lets_one_controller_refresh_at_a_time(pool: asyncpg.Pool) -> None:
    await seed(pool, START, END)
    await pool.execute("UPDATE monitors SET last_round = $1", END)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", rollups.UPTIME_LOCK)
        assert await rollups.refresh_uptimes(pool, NOW) == 0
        await conn.execute("SELECT pg_advisory_unlock($1)", rollups.UPTIME_LOCK)
    assert await rollups.refresh_uptimes(pool, NOW) == 3


async def test_the_api_shows_cached_uptimes_and_null_without_data(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    pool = controller.app[keys.POOL]
    ids = []
    for name in ("with data", "without data"):
        r = await api.post("/api/v1/monitors", json={"name": name, "url": "http://127.0.0.1:9/"})
        ids.append((await r.json())["data"]["id"])
    now = dt.datetime.now(dt.UTC)
    base = now - dt.timedelta(hours=2)
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, attempt, regions, answered, deadline, closed_at, verdict)"
        " SELECT $1, $2::timestamptz + i * interval '1 minute', 0, '{us-east}', '{us-east}',"
        " $2::timestamptz + i * interval '1 minute', $2::timestamptz + i * interval '1 minute',"
        " CASE WHEN i % 4 = 0 THEN 'down' ELSE 'up' END FROM generate_series(0, 59) i",
        ids[0],
        base,
    )
    await pool.execute("UPDATE monitors SET last_round = $2 WHERE id = $1", ids[0], base)
    await rollups.rewind(pool, base)  # the controller's rollups already passed `base`
    await roll_all(pool, now)
    await uptime_cache.refresh(pool, ids, now)  # not the locked pass: the controller's may hold it
    want = (await store.uptimes(pool, [ids[0]], now))[ids[0]]
    assert want == {"uptime_24h": 75.0, "uptime_7d": 75.0, "uptime_30d": 75.0}

    got = (await (await api.get(f"/api/v1/monitors/{ids[0]}")).json())["data"]
    assert {k: got[k] for k in want} == want
    listed = {m["id"]: m for m in (await (await api.get("/api/v1/monitors")).json())["data"]}
    assert {k: listed[ids[0]][k] for k in want} == want
    assert [listed[ids[1]][k] for k in want] == [None, None, None]
    patched = (await (await api.patch(f"/api/v1/monitors/{ids[0]}", json={"name": "renamed"})).json())["data"]
    assert {k: patched[k] for k in want} == want
