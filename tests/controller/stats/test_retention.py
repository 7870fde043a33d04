"""Retention drops exactly the partitions past each level's retention that the level
above has already rolled up, heartbeat ping days past theirs, and nothing else."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from probefleet.controller.stats import retention, rollups
from probefleet.controller.stats.retention import Retention
from probefleet.controller.storage import db
from probefleet.controller.storage import stats as store

NOW = dt.datetime(2031, 3, 15, 12, tzinfo=dt.UTC)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


@pytest.fixture
async def pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The shared pool, with daily partitions of the last 16 days and rollup partitions
    back to the oldest row these tests write."""
    for back in range(0, 16):
        await db.ensure_partitions(pool, NOW - dt.timedelta(days=back), days_ahead=0)
    await rollups.ensure_partitions(pool, "minute", utc(2031, 2, 1), utc(2031, 3, 16))
    await rollups.ensure_partitions(pool, "5min", utc(2031, 2, 1), utc(2031, 3, 16))
    await rollups.ensure_partitions(pool, "hour", utc(2029, 11, 1), utc(2031, 3, 16))
    await rollups.ensure_partitions(pool, "day", utc(2027, 1, 1), utc(2031, 3, 16))
    return pool


async def set_marks(pool: asyncpg.Pool, **marks: dt.datetime) -> None:
    for level, upto in marks.items():
        await pool.execute(
            "INSERT INTO stats_watermarks (level, upto) VALUES ($1, $2)"
            " ON CONFLICT (level) DO UPDATE SET upto = EXCLUDED.upto",
            level,
            upto,
        )


def days(prefix: str, first: dt.date, last: dt.date) -> list[str]:
    n = (last - first).days + 1
    return [f"{prefix}_{first + dt.timedelta(days=i):%Y%m%d}" for i in range(n)]


async def test_it_drops_exactly_the_expired_partitions(pool: asyncpg.Pool) -> None:
    await set_marks(
        pool,
        minute=utc(2031, 3, 15, 11),
        **{"5min": utc(2031, 3, 15, 11)},
        hour=utc(2031, 3, 15, 10),
        day=utc(2031, 3, 15),
    )
    before = {t: await store.partitions(pool, t) for t in retention.TABLES}
    kept_row = utc(2031, 3, 8, 0, 30)
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, probe_id, status, started_at, duration_ms)"
        " VALUES (1, $1, 'us-east', 'p', 'ok', $1, 5)",
        kept_row,
    )
    dropped = await retention.tick(pool, NOW, Retention())
    expected = (
        # Includes the partitions migrate() made around the real date, years earlier.
        [n for t in ("check_results", "rounds") for n in before[t] if "_2" in n and n[-8:] <= "20310307"]
        + [n for n in before["heartbeat_pings"] if n[-8:] <= "20310212"]
        + [
            n
            for t in ("stats_minute", "verdicts_minute", "stats_5min", "verdicts_5min")
            for n in days(t, dt.date(2031, 2, 1), dt.date(2031, 2, 12))
        ]
        + [
            f"{t}_{y}{m:02d}01"
            for t in ("stats_hour", "verdicts_hour")
            for y, m in ((2029, 11), (2029, 12), (2030, 1), (2030, 2))
        ]
    )
    assert sorted(dropped) == sorted(expected)
    after = {t: await store.partitions(pool, t) for t in retention.TABLES}
    for t in retention.TABLES:
        assert sorted(after[t]) == sorted(set(before[t]) - set(expected)), t
    assert "check_results_20310308" in after["check_results"]
    assert "stats_day_20270101" in after["stats_day"]
    assert await pool.fetchval("SELECT count(*) FROM check_results WHERE due = $1", kept_row) == 1
    assert await retention.tick(pool, NOW, Retention()) == []


async def test_it_keeps_what_is_not_rolled_up_yet(pool: asyncpg.Pool) -> None:
    # The 5-minute level trails (it is filling after an upgrade): the minute days it has not
    # reached stay, since the hour step reads minute rows there.
    marks = {"minute": utc(2031, 3, 3, 5), "5min": utc(2031, 3, 1, 5), "hour": utc(2031, 3, 3, 5)}
    await set_marks(pool, **marks, day=utc(2031, 3, 3))
    dropped = await retention.tick(pool, NOW, Retention(raw=1, minute=1, hour=1))
    raw = sorted(n for n in dropped if n.startswith("check_results"))
    assert [n for n in raw if n >= "check_results_2031"] == days(
        "check_results", dt.date(2031, 2, 27), dt.date(2031, 3, 2)
    )
    assert "stats_minute_20310228" in dropped and "stats_minute_20310301" not in dropped
    assert "stats_5min_20310302" in dropped and "stats_5min_20310303" not in dropped
    await set_marks(pool, **{"5min": utc(2031, 3, 3, 5)})
    dropped = await retention.tick(pool, NOW, Retention(raw=1, minute=1, hour=1))
    assert "stats_minute_20310302" in dropped and "stats_minute_20310303" not in dropped
    assert "stats_hour_20310301" not in dropped


async def test_it_drops_expired_ping_days_and_keeps_newer_pings(pool: asyncpg.Pool) -> None:
    mid = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " VALUES ('job', 'heartbeat', '{}', 60, 10, '{}') RETURNING id"
    )
    # Ten days kept: the cutoff is 2031-03-05 12:00, so the day of 03-04 goes as a whole and
    # the day of 03-05 stays whole, its morning ping included.
    pings = {"gone": utc(2031, 3, 4, 23, 59), "edge": utc(2031, 3, 5, 1), "new": utc(2031, 3, 14, 9)}
    for body, t in pings.items():
        await pool.execute(
            "INSERT INTO heartbeat_pings (monitor_id, at, kind, body) VALUES ($1, $2, 'log', $3)",
            mid,
            t,
            body,
        )
    before = await store.partitions(pool, "heartbeat_pings")
    assert await retention.tick(pool, NOW, Retention(pings=None)) == []  # kept forever
    dropped = await retention.tick(pool, NOW, Retention(pings=10))
    # no watermarks yet: results and rollups wait, pings do not depend on them
    assert sorted(dropped) == [n for n in before if n[-8:] <= "20310304"]
    assert "heartbeat_pings_20310304" in dropped and "heartbeat_pings_20310305" not in dropped
    rows = await pool.fetch("SELECT body FROM heartbeat_pings ORDER BY at")
    assert [r["body"] for r in rows] == ["edge", "new"]


def test_it_keeps_a_level_forever_when_told() -> None:
    names = ["stats_day_20200101", "stats_day_20300101", "stats_day_x"]
    marks = {"minute": NOW, "5min": NOW, "hour": NOW, "day": NOW}
    assert retention.expired("stats_day", names, NOW, Retention(), marks) == []
    assert retention.expired("stats_day", names, NOW, Retention(day=365), marks) == ["stats_day_20200101"]
    assert retention.expired("check_results", ["check_results_default"], NOW, Retention(raw=0), marks) == []
