"""Rollups against real PostgreSQL: every level equals the raw data it summarises
(recomputed in SQL), percentiles stay within the stated error, maintenance and paused
periods leave uptime, and steps are idempotent and single-owner."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import asyncpg
import pytest

from probefleet.controller.stats import rollups
from probefleet.controller.storage import db
from probefleet.controller.storage import stats as store

NOW = dt.datetime(2031, 3, 15, 2, 30, tzinfo=dt.UTC)
START = dt.datetime(2031, 3, 14, 21, 17, 20, tzinfo=dt.UTC)  # crosses hours and a day
END = dt.datetime(2031, 3, 15, 1, 43, tzinfo=dt.UTC)
MONITORS = [1, 2, 3]
EVERY = dt.timedelta(seconds=20)


@pytest.fixture
async def pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The shared pool, with the partitions of NOW's days."""
    await db.ensure_partitions(pool, NOW)
    return pool


async def seed(
    pool: asyncpg.Pool,
    start: dt.datetime = START,
    end: dt.datetime = END,
    monitors: list[int] = MONITORS,
    every: dt.timedelta = EVERY,
) -> None:
    """Rounds with verdicts and per-region results with spread-out durations and statuses."""
    await pool.execute(
        "INSERT INTO monitors (id, name, kind, spec, interval_s, timeout_s, locations)"
        " SELECT m, 'm' || m, 'http', '{}', 20, 5, ARRAY['us-east','eu-west','ap-south']"
        " FROM unnest($1::bigint[]) m ON CONFLICT DO NOTHING",
        monitors,
    )
    await pool.execute("SELECT setseed(0.42)")
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, attempt, regions, answered, deadline, closed_at, verdict)"
        " SELECT m, d, 0, ARRAY['us-east','eu-west','ap-south'], ARRAY['us-east','eu-west','ap-south'],"
        " d + interval '7 s', d + interval '1 s',"
        " (ARRAY['up','up','up','up','up','up','degraded','down','unknown'])[1 + floor(random() * 9)::int]"
        " FROM unnest($1::bigint[]) m, generate_series($2::timestamptz, $3, $4::interval) d",
        monitors,
        start,
        end - dt.timedelta(microseconds=1),
        every,
    )
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status, reason,"
        " started_at, duration_ms)"
        " SELECT m, d, r, 0, 'p-' || r, s, CASE WHEN s = 'fail' THEN 'timeout' END, d,"
        " (exp(random() * 8) * (1 + m))::real"
        # A status drawn per row (a LATERAL subquery was drawn once per monitor).
        " FROM (SELECT m, d, r, (ARRAY['ok','ok','ok','ok','ok','degraded','fail','skipped'])"
        "   [1 + floor(random() * 8)::int] AS s"
        "   FROM unnest($1::bigint[]) m, generate_series($2::timestamptz, $3, $4::interval) d,"
        "   unnest(ARRAY['us-east','eu-west','ap-south']) r) x",
        monitors,
        start,
        end - dt.timedelta(microseconds=1),
        every,
    )


async def roll_all(pool: asyncpg.Pool, now: dt.datetime = NOW) -> None:
    for _ in range(1000):
        if not await rollups.tick(pool, now):
            return
    raise AssertionError("rollups never caught up")


RAW_BY = """
SELECT monitor_id, date_bin($1::interval, due, '2000-01-01Z') AS bucket, region,
  count(*) FILTER (WHERE status <> 'skipped')::int AS checks,
  count(*) FILTER (WHERE status = 'fail')::int AS failures,
  count(*) FILTER (WHERE status = 'degraded')::int AS degraded,
  count(*) FILTER (WHERE status IN ('ok','degraded'))::int AS rt_count,
  round(COALESCE(sum(duration_ms::float8) FILTER (WHERE status IN ('ok','degraded')), 0)::numeric, 1)
    AS rt_sum,
  min(duration_ms) FILTER (WHERE status IN ('ok','degraded')) AS rt_min,
  max(duration_ms) FILTER (WHERE status IN ('ok','degraded')) AS rt_max
FROM check_results GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLED = """
SELECT monitor_id, bucket, region, checks, failures, degraded, rt_count,
  round(rt_sum::numeric, 1) AS rt_sum, rt_min, rt_max FROM stats_{level} ORDER BY 1, 2, 3
"""
RAW_VERDICTS_BY = """
SELECT monitor_id, date_bin($1::interval, due, '2000-01-01Z') AS bucket,
  count(*) FILTER (WHERE verdict = 'up')::int, count(*) FILTER (WHERE verdict = 'degraded')::int,
  count(*) FILTER (WHERE verdict = 'down')::int, count(*) FILTER (WHERE verdict = 'unknown')::int
FROM rounds WHERE attempt = 0 GROUP BY 1, 2 ORDER BY 1, 2
"""


@pytest.mark.parametrize("level", list(store.LEVELS))
async def test_it_rolls_up_exactly_what_the_raw_data_says(pool: asyncpg.Pool, level: str) -> None:
    await seed(pool)
    await roll_all(pool, NOW + dt.timedelta(days=2))
    step = store.LEVELS[level]
    raw = [tuple(r) for r in await pool.fetch(RAW_BY, step)]
    rolled = [tuple(r) for r in await pool.fetch(ROLLED.format(level=level))]
    assert rolled == raw and len(raw) > 0
    raw_v = [tuple(r) for r in await pool.fetch(RAW_VERDICTS_BY, step)]
    rolled_v = [
        tuple(r)
        for r in await pool.fetch(
            f"SELECT monitor_id, bucket, up, degraded, down, unknown FROM verdicts_{level} ORDER BY 1, 2"
        )
    ]
    assert rolled_v == raw_v
    # Histograms hold every timed result in the bucket its duration belongs to.
    hist = await pool.fetch(
        f"SELECT monitor_id, bucket, region, i, c FROM stats_{level}, unnest(hist_idx, hist_cnt) x(i, c)"
        " ORDER BY 1, 2, 3, 4"
    )
    raw_hist = await pool.fetch(
        f"SELECT monitor_id, date_bin($1::interval, due, '2000-01-01Z') AS bucket, region,"
        f" {store.BUCKET_SQL} AS i, count(*)::int AS c FROM check_results"
        f" WHERE status IN ('ok', 'degraded') GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        step,
    )
    assert [tuple(r) for r in hist] == [tuple(r) for r in raw_hist]


async def test_it_reads_percentiles_within_the_stated_error(pool: asyncpg.Pool) -> None:
    await seed(pool)
    await roll_all(pool)
    # Unaligned on purpose: days, hours, minutes and raw edges all take part.
    a, b = START + dt.timedelta(minutes=3, seconds=10), END - dt.timedelta(minutes=7, seconds=30)
    s = await store.summary(pool, 2, a, b)
    exact = await pool.fetchrow(
        "SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p,"
        " count(*) FILTER (WHERE status <> 'skipped') AS n, avg(duration_ms) AS avg FROM check_results"
        " WHERE monitor_id = 2 AND due >= $1 AND due < $2 AND status IN ('ok', 'degraded')",
        a,
        b,
    )
    total = s["total"].public()
    for got, want in zip(
        [total["response_times"][k] for k in ("p50", "p95", "p99")], exact["p"], strict=True
    ):
        assert abs(got - want) / want <= store.RELATIVE_ERROR + 1e-6, (got, want)
    assert total["response_times"]["avg"] == pytest.approx(exact["avg"], abs=0.006)  # shown to 0.01 ms
    n = await pool.fetchval(
        "SELECT count(*) FROM check_results WHERE monitor_id = 2 AND due >= $1 AND due < $2"
        " AND status <> 'skipped'",
        a,
        b,
    )
    assert total["checks"]["total"] == n
    assert sum(r.checks for r in s["regions"].values()) == n


def test_it_splits_ranges_into_the_fewest_buckets() -> None:
    marks = {
        "minute": END,
        "5min": dt.datetime(2031, 3, 15, 1, 40, tzinfo=dt.UTC),
        "hour": dt.datetime(2031, 3, 15, 1, tzinfo=dt.UTC),
        "day": dt.datetime(2031, 3, 15, tzinfo=dt.UTC),
    }
    parts = store.pieces(START - dt.timedelta(days=2), END + dt.timedelta(minutes=5), marks)
    levels = [p[0] for p in parts]
    assert levels == ["raw", "minute", "5min", "hour", "day", "hour", "5min", "minute", "raw"]
    for (_, _, b), (_, c, _) in itertools.pairwise(parts):
        assert b == c


async def test_it_leaves_maintenance_and_paused_time_out_of_uptime(pool: asyncpg.Pool) -> None:
    await seed(pool)
    w = await pool.fetchval(
        "INSERT INTO maintenance_windows (name, monitor_ids) VALUES ('m', '{1}') RETURNING id"
    )
    maint = (dt.datetime(2031, 3, 14, 22, 5, tzinfo=dt.UTC), dt.datetime(2031, 3, 14, 23, 40, tzinfo=dt.UTC))
    await pool.execute("INSERT INTO maintenance_periods VALUES (1, $1, $2, $3)", w, *maint)
    paused = (
        dt.datetime(2031, 3, 15, 0, 10, 30, tzinfo=dt.UTC),
        dt.datetime(2031, 3, 15, 1, 2, tzinfo=dt.UTC),
    )
    await pool.execute(
        "INSERT INTO events (kind, monitor_id, occurred_at) VALUES ('monitor.paused', 1, $1),"
        " ('monitor.resumed', 1, $2)",
        *paused,
    )
    await roll_all(pool)
    expected = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE verdict IN ('up', 'degraded')) AS good,"
        " count(*) FILTER (WHERE verdict IN ('up', 'degraded', 'down')) AS counted,"
        " count(*) FILTER (WHERE (due >= $1 AND due < $2) OR (due >= $3 AND due < $4)) AS excluded"
        " FROM rounds WHERE monitor_id = 1",
        *maint,
        *paused,
    )
    kept = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE verdict IN ('up', 'degraded')) AS good,"
        " count(*) FILTER (WHERE verdict IN ('up', 'degraded', 'down')) AS counted FROM rounds"
        " WHERE monitor_id = 1 AND NOT ((due >= $1 AND due < $2) OR (due >= $3 AND due < $4))",
        *maint,
        *paused,
    )
    assert expected["excluded"] > 0
    s = await store.summary(pool, 1, START - dt.timedelta(minutes=1), NOW)
    assert s["verdicts"].excluded == expected["excluded"]
    assert s["verdicts"].uptime == round(100.0 * kept["good"] / kept["counted"], 4)
    assert s["verdicts"].uptime != round(100.0 * expected["good"] / expected["counted"], 4)
    periods = await store.excluded_periods(pool, 1, START, NOW)
    assert [(p["kind"], p["starts_at"], p["ends_at"]) for p in periods] == [
        ("maintenance", *maint),
        ("paused", *paused),
    ]


async def test_it_gives_the_same_uptime_before_and_after_rolling_up(pool: asyncpg.Pool) -> None:
    await seed(pool, START, NOW)
    before = await store.uptimes(pool, MONITORS, NOW)
    await roll_all(pool)
    after = await store.uptimes(pool, MONITORS, NOW)
    assert before == after
    assert all(v["uptime_24h"] is not None for v in after.values())
    assert after[1]["uptime_24h"] == after[1]["uptime_30d"]


async def test_it_waits_for_open_rounds_and_is_idempotent(pool: asyncpg.Pool) -> None:
    await seed(pool)
    open_due = dt.datetime(2031, 3, 15, 0, 30, 40, tzinfo=dt.UTC)
    await pool.execute(
        "UPDATE rounds SET closed_at = NULL, verdict = NULL WHERE monitor_id = 3 AND due = $1", open_due
    )
    await roll_all(pool, open_due + dt.timedelta(minutes=5))
    marks = await store.watermarks(pool)
    assert marks["minute"] == dt.datetime(2031, 3, 15, 0, 30, tzinfo=dt.UTC)
    before = await pool.fetch("SELECT * FROM stats_minute ORDER BY 1, 2, 3")
    async with pool.acquire() as conn, conn.transaction():
        await store.rollup_raw(conn, START - dt.timedelta(minutes=1), marks["minute"])
    assert await pool.fetch("SELECT * FROM stats_minute ORDER BY 1, 2, 3") == before
    # A stuck round stops holding statistics back after max_lag.
    await roll_all(pool, open_due + dt.timedelta(hours=1))
    assert (await store.watermarks(pool))["minute"] == dt.datetime(2031, 3, 15, 1, 20, tzinfo=dt.UTC)


async def test_it_lets_one_controller_roll_up_at_a_time(pool: asyncpg.Pool) -> None:
    await seed(pool)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", rollups.LOCK)
        assert await rollups.tick(pool, NOW) is False
        assert await store.watermarks(pool) == {}
    await asyncio.gather(*(rollups.tick(pool, NOW) for _ in range(3)))
    await roll_all(pool, NOW + dt.timedelta(days=2))
    raw = await pool.fetchval("SELECT count(*) FROM check_results WHERE status <> 'skipped'")
    assert await pool.fetchval("SELECT sum(checks) FROM stats_minute") == raw
    assert await pool.fetchval("SELECT sum(checks) FROM stats_day") == raw


async def test_it_recomputes_after_a_backfill_and_rewind(pool: asyncpg.Pool) -> None:
    await seed(pool, monitors=[1])
    await roll_all(pool, NOW + dt.timedelta(days=2))
    await seed(pool, monitors=[2])  # older than every watermark: invisible to rollups
    assert await pool.fetchval("SELECT count(*) FROM stats_minute WHERE monitor_id = 2") == 0
    await rollups.rewind(pool, START)
    await roll_all(pool, NOW + dt.timedelta(days=2))
    raw = await pool.fetchval("SELECT count(*) FROM check_results WHERE status <> 'skipped'")
    for level in store.LEVELS:
        assert await pool.fetchval(f"SELECT sum(checks) FROM stats_{level}") == raw


async def test_diagnose_results_are_not_checks_of_the_monitor(pool: asyncpg.Pool) -> None:
    """A diagnosis (engine/diagnostics.py, attempt 2000) runs where a monitor went down and
    is ok whenever it ran: counted, it would be an ok check of a down target."""
    from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT

    await seed(pool)
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status, started_at,"
        " duration_ms) SELECT 1, d, 'us-east', $3, 'p-us-east', 'ok', d, 9000"
        " FROM generate_series($1::timestamptz, $2, interval '7 min') d",
        START,
        END - dt.timedelta(seconds=1),
        DIAGNOSTIC_ATTEMPT,
    )
    await roll_all(pool, NOW + dt.timedelta(days=2))
    checks_only = RAW_BY.replace(
        "FROM check_results", f"FROM check_results WHERE attempt <> {DIAGNOSTIC_ATTEMPT}"
    )
    for level, step in store.LEVELS.items():
        raw = [tuple(r) for r in await pool.fetch(checks_only, step)]
        assert [tuple(r) for r in await pool.fetch(ROLLED.format(level=level))] == raw
    assert await pool.fetchval("SELECT max(rt_max) FROM stats_minute WHERE monitor_id = 1") < 9000


def same_points(got: list[dict[str, object]], want: list[dict[str, object]]) -> None:
    """Series points equal; averages to their shown 0.01 ms (sums add in another order)."""
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g["avg_response_time"] == pytest.approx(w["avg_response_time"], abs=0.011)
        assert {**g, "avg_response_time": 0} == {**w, "avg_response_time": 0}


async def test_the_24h_read_from_rollups_equals_the_raw_results(pool: asyncpg.Pool) -> None:
    """The stats endpoint's default read (summary + 5-minute series over 24 h, edges inside
    minutes and hours, a tail not rolled up yet) gives what the raw rows alone give."""
    first = dt.datetime(2031, 3, 13, 23, tzinfo=dt.UTC)
    now = dt.datetime(2031, 3, 15, 0, 52, 10, tzinfo=dt.UTC)
    await seed(pool, first, now, monitors=[1, 2], every=dt.timedelta(seconds=40))
    await roll_all(pool, now)
    marks = await store.watermarks(pool)
    a, b = now - store.DAY - dt.timedelta(minutes=6, seconds=30), now
    used = {level for level, _, _ in store.pieces(a, b, marks, "5min")}
    assert used == {"raw", "minute", "5min"}
    assert {level for level, _, _ in store.pieces(a, b, marks)} == {"raw", "minute", "5min", "hour"}
    for m in (1, 2):
        got = await store.series(pool, m, a, b, store.FIVE, marks)
        same_points(got, await store.series(pool, m, a, b, store.FIVE, {}))
        assert len(got) == 290 and sum(p["checks"] for p in got) > 0
        s, raw = await store.summary(pool, m, a, b, marks), await store.summary(pool, m, a, b, {})
        assert s["verdicts"] == raw["verdicts"] and s["regions"].keys() == raw["regions"].keys()
        regions = zip(s["regions"].values(), raw["regions"].values(), strict=True)
        for got_c, want_c in [(s["total"], raw["total"]), *regions]:
            g, w = got_c.public(), want_c.public()
            assert g["response_times"].pop("avg") == pytest.approx(w["response_times"].pop("avg"), abs=0.011)
            assert g == w


async def test_an_installation_from_before_the_5min_level_fills_it(pool: asyncpg.Pool) -> None:
    await seed(pool)
    await roll_all(pool, NOW - dt.timedelta(hours=2))
    # As migration 0026 leaves it: minute, hour and day rolled up, no 5-minute level.
    await pool.execute("DELETE FROM stats_watermarks WHERE level = '5min'")
    await pool.execute("DELETE FROM stats_5min; DELETE FROM verdicts_5min")
    marks = await store.watermarks(pool)
    assert "5min" not in marks and marks["hour"] > START
    a, b = START + dt.timedelta(minutes=2), END
    want = await store.series(pool, 1, a, b, store.FIVE, {})
    same_points(await store.series(pool, 1, a, b, store.FIVE, marks), want)  # minute rows
    await roll_all(pool, NOW + dt.timedelta(days=2))
    marks = await store.watermarks(pool)
    assert marks["5min"] == store.floor_to(marks["minute"], store.FIVE)
    assert "5min" in {p[0] for p in store.pieces(a, b, marks, "5min")}
    same_points(await store.series(pool, 1, a, b, store.FIVE, marks), want)
    for level in ("5min", "hour"):
        raw = [tuple(r) for r in await pool.fetch(RAW_BY, store.LEVELS[level])]
        assert [tuple(r) for r in await pool.fetch(ROLLED.format(level=level))] == raw
