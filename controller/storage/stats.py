"""SQL for statistics: rollup steps (raw -> minute -> hour -> day), watermarks, and the
reads behind the stats, analytics and SLA endpoints and the monitors' uptime_* fields.

Response times go into a sparse log histogram: bucket i holds [MIN_MS*GAMMA^i,
MIN_MS*GAMMA^(i+1)) and a percentile is read as the bucket's geometric midpoint, so it is
within RELATIVE_ERROR (2 %) of the exact nearest-rank percentile of the same results.

Reads split a range into whole days, hours, 5-minute spans and minutes below each level's
watermark, and read the raw tables for the rest (edges and the not yet rolled-up tail).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from probefleet.controller.storage import DB, Tx

GAMMA = 1.04
MIN_MS = 0.01
# Response times are shown to 0.01 ms (MIN_MS): what a probe's clock and the network can
# tell apart; more digits are float noise (a float4 column read as 235.07200622558594).
MS_DIGITS = 2
RELATIVE_ERROR = math.sqrt(GAMMA) - 1
ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
BUCKET_SQL = f"GREATEST(0, floor(ln(GREATEST(duration_ms, {MIN_MS}) / {MIN_MS}) / ln({GAMMA})))::smallint"

MINUTE, FIVE, HOUR, DAY = (
    dt.timedelta(minutes=1),
    dt.timedelta(minutes=5),
    dt.timedelta(hours=1),
    dt.timedelta(days=1),
)
# Rollup levels, finest first: each is rolled up from the one before it.
LEVELS: dict[str, dt.timedelta] = {"minute": MINUTE, "5min": FIVE, "hour": HOUR, "day": DAY}
# Rows that count toward response times: a failing check's duration is its timeout.
TIMED = "status IN ('ok', 'degraded')"

Piece = tuple[str, dt.datetime, dt.datetime]  # level ("raw" or a LEVELS key), start, end


def bucket(ms: float) -> int:
    return max(0, math.floor(math.log(max(ms, MIN_MS) / MIN_MS) / math.log(GAMMA)))


def bucket_value(i: int) -> float:
    return MIN_MS * GAMMA ** (i + 0.5)


def percentiles(hist: dict[int, int], qs: Iterable[float]) -> list[float | None]:
    """Nearest-rank percentiles (rank ceil(q*n)) read from a histogram."""
    n = sum(hist.values())
    if n == 0:
        return [None for _ in qs]
    ordered = sorted(hist.items())
    out: list[float | None] = []
    for q in qs:
        rank, seen = max(1, math.ceil(q * n - 1e-9)), 0
        for i, c in ordered:
            seen += c
            if seen >= rank:
                out.append(round(bucket_value(i), MS_DIGITS))
                break
    return out


def floor_to(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    return t - (t - ORIGIN) % step


def ceil_to(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    f = floor_to(t, step)
    return f if f == t else f + step


def pieces(
    start: dt.datetime, end: dt.datetime, marks: dict[str, dt.datetime], coarsest: str = "day"
) -> list[Piece]:
    """Cover [start, end) with the fewest rollup buckets below each level's watermark."""
    order = ["day", "hour", "5min", "minute"]
    return _split(start, end, marks, order[order.index(coarsest) :])


def _split(
    start: dt.datetime, end: dt.datetime, marks: dict[str, dt.datetime], levels: list[str]
) -> list[Piece]:
    if start >= end:
        return []
    if not levels:
        return [("raw", start, end)]
    level, finer = levels[0], levels[1:]
    step = LEVELS[level]
    a = ceil_to(start, step)
    b = floor_to(min(end, marks.get(level, ORIGIN)), step)
    if a >= b:
        return _split(start, end, marks, finer)
    return [*_split(start, a, marks, finer), (level, a, b), *_split(b, end, marks, finer)]


# ---- rollup steps ------------------------------------------------------------------


async def watermarks(conn: DB) -> dict[str, dt.datetime]:
    rows = await conn.fetch("SELECT level, upto FROM stats_watermarks")
    return {r["level"]: r["upto"] for r in rows}


async def set_watermark(conn: Tx, level: str, old: dt.datetime | None, new: dt.datetime) -> bool:
    """Compare-and-set: False when another controller moved it first."""
    if old is None:
        row = await conn.fetchval(
            "INSERT INTO stats_watermarks (level, upto) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING level",
            level,
            new,
        )
    else:
        row = await conn.fetchval(
            "UPDATE stats_watermarks SET upto = $3, updated_at = now()"
            " WHERE level = $1 AND upto = $2 RETURNING level",
            level,
            old,
            new,
        )
    return row is not None


async def oldest_raw(conn: DB) -> dt.datetime | None:
    return await conn.fetchval(
        "SELECT least((SELECT min(due) FROM check_results), (SELECT min(due) FROM rounds))"
    )


async def oldest_open_round(conn: DB) -> dt.datetime | None:
    return await conn.fetchval("SELECT min(due) FROM rounds WHERE closed_at IS NULL")


_STAT_UPSERT = (
    " ON CONFLICT (monitor_id, bucket, region) DO UPDATE SET checks = EXCLUDED.checks,"
    " failures = EXCLUDED.failures, degraded = EXCLUDED.degraded, rt_count = EXCLUDED.rt_count,"
    " rt_sum = EXCLUDED.rt_sum, rt_min = EXCLUDED.rt_min, rt_max = EXCLUDED.rt_max,"
    " hist_idx = EXCLUDED.hist_idx, hist_cnt = EXCLUDED.hist_cnt"
)
_VERDICT_UPSERT = (
    " ON CONFLICT (monitor_id, bucket) DO UPDATE SET up = EXCLUDED.up, degraded = EXCLUDED.degraded,"
    " down = EXCLUDED.down, unknown = EXCLUDED.unknown, excluded = EXCLUDED.excluded"
)


async def rollup_raw(conn: Tx, start: dt.datetime, end: dt.datetime) -> int:
    """Raw results and attempt-0 round verdicts of [start, end) into minute rows (replace).
    Diagnose results (attempt 2000, engine/diagnostics.DIAGNOSTIC_ATTEMPT) are left out:
    they describe the path to a target that is down, they are not checks of it."""
    status = await conn.execute(
        "WITH g AS (SELECT monitor_id, date_bin('1 minute', due, $3) AS bucket, region,"
        f" CASE WHEN {TIMED} THEN {BUCKET_SQL} END AS i,"
        " count(*) FILTER (WHERE status <> 'skipped') AS checks,"
        " count(*) FILTER (WHERE status = 'fail') AS failures,"
        " count(*) FILTER (WHERE status = 'degraded') AS degraded,"
        " count(*) AS n, sum(duration_ms::float8) AS s, min(duration_ms) AS mn, max(duration_ms) AS mx"
        " FROM check_results WHERE due >= $1 AND due < $2 AND attempt <> 2000 GROUP BY 1, 2, 3, 4)"
        " INSERT INTO stats_minute SELECT monitor_id, bucket, region, sum(checks), sum(failures),"
        " sum(degraded), COALESCE(sum(n) FILTER (WHERE i IS NOT NULL), 0),"
        " COALESCE(sum(s) FILTER (WHERE i IS NOT NULL), 0),"
        " min(mn) FILTER (WHERE i IS NOT NULL), max(mx) FILTER (WHERE i IS NOT NULL),"
        " COALESCE(array_agg(i ORDER BY i) FILTER (WHERE i IS NOT NULL), '{}'),"
        " COALESCE(array_agg(n::int ORDER BY i) FILTER (WHERE i IS NOT NULL), '{}')"
        " FROM g GROUP BY 1, 2, 3" + _STAT_UPSERT,
        start,
        end,
        ORIGIN,
    )
    await conn.execute(
        "WITH ex AS MATERIALIZED (SELECT monitor_id, starts_at, ends_at FROM stats_excluded_periods"
        "   WHERE starts_at < $2 AND ends_at > $1),"
        " r AS (SELECT r.monitor_id, date_bin('1 minute', r.due, $3) AS bucket, r.verdict,"
        "   EXISTS (SELECT 1 FROM ex WHERE ex.monitor_id = r.monitor_id"
        "     AND r.due >= ex.starts_at AND r.due < ex.ends_at) AS x"
        "   FROM rounds r WHERE r.due >= $1 AND r.due < $2 AND r.attempt = 0"
        "   AND r.verdict IS NOT NULL)"
        " INSERT INTO verdicts_minute SELECT monitor_id, bucket,"
        " count(*) FILTER (WHERE NOT x AND verdict = 'up'),"
        " count(*) FILTER (WHERE NOT x AND verdict = 'degraded'),"
        " count(*) FILTER (WHERE NOT x AND verdict = 'down'),"
        " count(*) FILTER (WHERE NOT x AND verdict NOT IN ('up', 'degraded', 'down')),"
        " count(*) FILTER (WHERE x) FROM r GROUP BY 1, 2" + _VERDICT_UPSERT,
        start,
        end,
        ORIGIN,
    )
    return int(status.split()[-1])


async def rollup_level(conn: Tx, source: str, dest: str, start: dt.datetime, end: dt.datetime) -> int:
    """Merge `source` level rows of [start, end) into `dest` level buckets (replace)."""
    step = LEVELS[dest]
    status = await conn.execute(
        f"WITH h AS (SELECT monitor_id, date_bin($3, bucket, $4) AS b, region, i, sum(c)::int AS c"
        f"   FROM stats_{source}, unnest(hist_idx, hist_cnt) AS x(i, c)"
        f"   WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2, 3, 4),"
        f" ha AS (SELECT monitor_id, b, region, array_agg(i ORDER BY i) AS idx,"
        f"   array_agg(c ORDER BY i) AS cnt FROM h GROUP BY 1, 2, 3),"
        f" a AS (SELECT monitor_id, date_bin($3, bucket, $4) AS b, region, sum(checks) AS checks,"
        f"   sum(failures) AS failures, sum(degraded) AS degraded, sum(rt_count) AS rt_count,"
        f"   sum(rt_sum) AS rt_sum, min(rt_min) AS rt_min, max(rt_max) AS rt_max"
        f"   FROM stats_{source} WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2, 3)"
        f" INSERT INTO stats_{dest} SELECT a.monitor_id, a.b, a.region, checks, failures, degraded,"
        f" rt_count, rt_sum, rt_min, rt_max, COALESCE(ha.idx, '{{}}'), COALESCE(ha.cnt, '{{}}')"
        f" FROM a LEFT JOIN ha USING (monitor_id, b, region)" + _STAT_UPSERT,
        start,
        end,
        step,
        ORIGIN,
    )
    await conn.execute(
        f"INSERT INTO verdicts_{dest} SELECT monitor_id, date_bin($3, bucket, $4), sum(up),"
        f" sum(degraded), sum(down), sum(unknown), sum(excluded) FROM verdicts_{source}"
        f" WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2" + _VERDICT_UPSERT,
        start,
        end,
        step,
        ORIGIN,
    )
    return int(status.split()[-1])


async def ensure_partition(conn: DB, parent: str, name: str, start: dt.date, end: dt.date) -> None:
    """Partition `name` of `parent` for the UTC days [start, end), unless it exists."""
    if await conn.fetchval("SELECT to_regclass($1)", name) is None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent}"
            f" FOR VALUES FROM ('{start.isoformat()} 00:00+00') TO ('{end.isoformat()} 00:00+00')"
        )


async def partitions(conn: DB, parent: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 ORDER BY 1",
        parent,
    )
    return [r["relname"] for r in rows]


async def drop_partition(pool: asyncpg.Pool, name: str) -> bool:
    """Drop partition `name` in a transaction of its own; False when the lock on its parent
    was not had within 2 s. Dropping needs an exclusive lock on the parent: give up
    rather than stall ingest."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '2s'")
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        except asyncpg.LockNotAvailableError:
            return False
    return True


async def excluded_periods(
    conn: DB, monitor_id: int, start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """Maintenance occurrences and paused spans of a monitor overlapping [start, end)."""
    rows = await conn.fetch(
        "SELECT starts_at, ends_at, kind FROM stats_excluded_periods WHERE monitor_id = $1"
        " AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at",
        monitor_id,
        start,
        end,
    )
    return [dict(r) for r in rows]


# ---- reads -------------------------------------------------------------------------


@dataclass
class Checks:
    checks: int = 0
    failures: int = 0
    degraded: int = 0
    rt_count: int = 0
    rt_sum: float = 0.0
    rt_min: float | None = None
    rt_max: float | None = None
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, r: dict[str, Any] | asyncpg.Record) -> None:
        self.checks += r["checks"]
        self.failures += r["failures"]
        self.degraded += r["degraded"]
        self.rt_count += r["rt_count"]
        self.rt_sum += r["rt_sum"]
        if r["rt_min"] is not None:
            self.rt_min = r["rt_min"] if self.rt_min is None else min(self.rt_min, r["rt_min"])
            self.rt_max = r["rt_max"] if self.rt_max is None else max(self.rt_max, r["rt_max"])
        for i, c in zip(r["hist_idx"], r["hist_cnt"], strict=True):
            self.hist[i] = self.hist.get(i, 0) + c

    def public(self) -> dict[str, Any]:
        p50, p95, p99 = percentiles(self.hist, (0.5, 0.95, 0.99))
        return {
            "checks": {
                "total": self.checks,
                "successful": self.checks - self.failures,
                "failed": self.failures,
                "degraded": self.degraded,
            },
            "response_times": {
                "avg": ms(self.rt_sum / self.rt_count) if self.rt_count else None,
                "min": ms(self.rt_min),
                "max": ms(self.rt_max),
                "p50": p50,
                "p95": p95,
                "p99": p99,
            },
        }


@dataclass
class Verdicts:
    up: int = 0
    degraded: int = 0
    down: int = 0
    unknown: int = 0
    excluded: int = 0

    def add(self, r: dict[str, Any] | asyncpg.Record) -> None:
        self.up += r["up"]
        self.degraded += r["degraded"]
        self.down += r["down"]
        self.unknown += r["unknown"]
        self.excluded += r["excluded"]

    @property
    def uptime(self) -> float | None:
        """Percent of answered rounds that were up or degraded; unknown rounds (no region
        answered: a fleet problem) and excluded rounds do not count."""
        return uptime_pct(self.up + self.degraded, self.up + self.degraded + self.down)


def uptime_pct(good: int, counted: int) -> float | None:
    """Percent `good` of `counted` rounds, 4 decimals; None without counted rounds."""
    return round(100.0 * good / counted, 4) if counted else None


def ms(v: float | None) -> float | None:
    """A response time in milliseconds as every endpoint shows it: to 0.01 ms."""
    return None if v is None else round(v, MS_DIGITS)


def raw_stats_sql(ids: str, a: str, b: str) -> str:
    """Per (monitor, region) sums of `ids` over [a, b) from raw results (SQL placeholders)."""
    return (
        f"WITH g AS (SELECT monitor_id, region, CASE WHEN {TIMED} THEN {BUCKET_SQL} END AS i,"
        " count(*) FILTER (WHERE status <> 'skipped') AS checks,"
        " count(*) FILTER (WHERE status = 'fail') AS failures,"
        " count(*) FILTER (WHERE status = 'degraded') AS degraded,"
        " count(*) AS n, sum(duration_ms::float8) AS s, min(duration_ms) AS mn, max(duration_ms) AS mx"
        f" FROM check_results WHERE monitor_id = ANY({ids}) AND due >= {a} AND due < {b}"
        " AND attempt <> 2000 GROUP BY 1, 2, 3)"
        " SELECT monitor_id, region, sum(checks)::int AS checks, sum(failures)::int AS failures,"
        " sum(degraded)::int AS degraded, COALESCE(sum(n) FILTER (WHERE i IS NOT NULL), 0)::int AS rt_count,"
        " COALESCE(sum(s) FILTER (WHERE i IS NOT NULL), 0) AS rt_sum,"
        " min(mn) FILTER (WHERE i IS NOT NULL) AS rt_min, max(mx) FILTER (WHERE i IS NOT NULL) AS rt_max,"
        " COALESCE(array_agg(i ORDER BY i) FILTER (WHERE i IS NOT NULL), '{}') AS hist_idx,"
        " COALESCE(array_agg(n::int ORDER BY i) FILTER (WHERE i IS NOT NULL), '{}') AS hist_cnt"
        " FROM g GROUP BY 1, 2"
    )


def raw_verdicts_sql(ids: str, a: str, b: str) -> str:
    """Verdict counts per monitor of `ids` over [a, b) from raw rounds (SQL placeholders)."""
    return (
        "WITH ex AS MATERIALIZED (SELECT monitor_id, starts_at, ends_at FROM stats_excluded_periods"
        f"   WHERE monitor_id = ANY({ids}) AND starts_at < {b} AND ends_at > {a}),"
        " r AS (SELECT r.monitor_id, r.verdict, EXISTS (SELECT 1 FROM ex WHERE ex.monitor_id = r.monitor_id"
        "   AND r.due >= ex.starts_at AND r.due < ex.ends_at) AS x FROM rounds r"
        f"   WHERE r.monitor_id = ANY({ids}) AND r.due >= {a} AND r.due < {b} AND r.attempt = 0"
        "   AND r.verdict IS NOT NULL)"
        " SELECT monitor_id, count(*) FILTER (WHERE NOT x AND verdict = 'up')::int AS up,"
        " count(*) FILTER (WHERE NOT x AND verdict = 'degraded')::int AS degraded,"
        " count(*) FILTER (WHERE NOT x AND verdict = 'down')::int AS down,"
        " count(*) FILTER (WHERE NOT x AND verdict NOT IN ('up', 'degraded', 'down'))::int AS unknown,"
        " count(*) FILTER (WHERE x)::int AS excluded FROM r GROUP BY 1"
    )


def level_verdicts_sql(level: str, ids: str, a: str, b: str) -> str:
    """The same counts from a rollup level's buckets in [a, b)."""
    return (
        f"SELECT monitor_id, sum(up)::int AS up, sum(degraded)::int AS degraded,"
        f" sum(down)::int AS down, sum(unknown)::int AS unknown, sum(excluded)::int AS excluded"
        f" FROM verdicts_{level} WHERE monitor_id = ANY({ids}) AND bucket >= {a} AND bucket < {b}"
        f" GROUP BY 1"
    )


def verdicts_sql(level: str, ids: str, a: str, b: str) -> str:
    return raw_verdicts_sql(ids, a, b) if level == "raw" else level_verdicts_sql(level, ids, a, b)


def level_stats_sql(level: str, ids: str, a: str, b: str) -> str:
    return (
        f"SELECT monitor_id, region, checks, failures, degraded, rt_count, rt_sum, rt_min,"
        f" rt_max, hist_idx, hist_cnt FROM stats_{level}"
        f" WHERE monitor_id = ANY({ids}) AND bucket >= {a} AND bucket < {b}"
    )


async def union(
    conn: DB,
    parts: list[Piece],
    branch: Callable[[str, str, str], str],
    args: list[Any],
) -> list[asyncpg.Record]:
    """One statement for every piece: `branch(level, a, b)` gives a piece's SELECT with the
    placeholders of its bounds, appended after `args`; the branches are joined by UNION ALL,
    each row tagged with the index of its piece (`piece`). One round trip instead of one
    per piece (an unaligned 24 h read has up to 7 pieces, the uptime windows about 19)."""
    if not parts:
        return []
    args = list(args)
    branches = []
    for i, (level, a, b) in enumerate(parts):
        args += [a, b]
        sql = branch(level, f"${len(args) - 1}", f"${len(args)}")
        branches.append(f"SELECT p{i}.*, {i} AS piece FROM ({sql}) p{i}")
    return list(await conn.fetch(" UNION ALL ".join(branches), *args))


async def check_rows(conn: DB, monitor_ids: list[int], parts: list[Piece]) -> list[asyncpg.Record]:
    """Per (monitor, region) partial sums over the pieces (several rows per pair)."""

    def branch(level: str, a: str, b: str) -> str:
        return raw_stats_sql("$1", a, b) if level == "raw" else level_stats_sql(level, "$1", a, b)

    return await union(conn, parts, branch, [monitor_ids])


async def verdict_rows(conn: DB, monitor_ids: list[int], parts: list[Piece]) -> list[asyncpg.Record]:
    return await union(conn, parts, lambda level, a, b: verdicts_sql(level, "$1", a, b), [monitor_ids])


async def summary(
    conn: DB,
    monitor_id: int,
    start: dt.datetime,
    end: dt.datetime,
    marks: dict[str, dt.datetime] | None = None,
) -> dict[str, Any]:
    """Checks and response times (total and per region) and verdict counts over [start, end)."""
    marks = await watermarks(conn) if marks is None else marks
    parts = pieces(start, end, marks)
    total, regions = Checks(), dict[str, Checks]()
    for r in await check_rows(conn, [monitor_id], parts):
        total.add(r)
        regions.setdefault(r["region"], Checks()).add(r)
    verdicts = Verdicts()
    for r in await verdict_rows(conn, [monitor_id], parts):
        verdicts.add(r)
    return {"total": total, "regions": dict(sorted(regions.items())), "verdicts": verdicts}


def _series_checks(level: str, a: str, b: str) -> str:
    """A series piece's check sums per point; the raw tail is binned per minute first, as
    the minute level would have it, so each row lands in one point."""
    if level == "raw":
        return (
            f"SELECT date_bin($2, bucket, $3) AS t, count(*) FILTER (WHERE status <> 'skipped')::int"
            f" AS checks, count(*) FILTER (WHERE status = 'fail')::int AS failures,"
            f" count(*) FILTER (WHERE status = 'degraded')::int AS degraded,"
            f" count(*) FILTER (WHERE {TIMED})::int AS rt_count,"
            f" COALESCE(sum(duration_ms::float8) FILTER (WHERE {TIMED}), 0) AS rt_sum,"
            f" min(duration_ms) FILTER (WHERE {TIMED}) AS rt_min,"
            f" max(duration_ms) FILTER (WHERE {TIMED}) AS rt_max,"
            f" '{{}}'::smallint[] AS hist_idx, '{{}}'::int[] AS hist_cnt"
            f" FROM (SELECT date_bin('1 minute', due, $3) AS bucket, status, duration_ms"
            f" FROM check_results WHERE monitor_id = $1 AND due >= {a} AND due < {b}"
            f" AND attempt <> 2000) s GROUP BY 1"
        )
    return (
        f"SELECT date_bin($2, bucket, $3) AS t, sum(checks)::int AS checks,"
        f" sum(failures)::int AS failures, sum(degraded)::int AS degraded,"
        f" sum(rt_count)::int AS rt_count, sum(rt_sum) AS rt_sum, min(rt_min) AS rt_min,"
        f" max(rt_max) AS rt_max, '{{}}'::smallint[] AS hist_idx, '{{}}'::int[] AS hist_cnt"
        f" FROM stats_{level} WHERE monitor_id = $1 AND bucket >= {a} AND bucket < {b} GROUP BY 1"
    )


def _series_verdicts(level: str, a: str, b: str) -> str:
    if level == "raw":
        return (
            "SELECT date_bin($2, due, $3) AS t, count(*) FILTER (WHERE verdict = 'up')::int AS up,"
            " count(*) FILTER (WHERE verdict = 'degraded')::int AS degraded,"
            " count(*) FILTER (WHERE verdict = 'down')::int AS down,"
            " count(*) FILTER (WHERE verdict NOT IN ('up', 'degraded', 'down'))::int AS unknown,"
            f" 0 AS excluded FROM rounds r WHERE monitor_id = $1 AND due >= {a} AND due < {b}"
            " AND attempt = 0 AND verdict IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
            " stats_excluded_periods p WHERE p.monitor_id = r.monitor_id AND r.due >= p.starts_at"
            " AND r.due < p.ends_at) GROUP BY 1"
        )
    return (
        "SELECT date_bin($2, bucket, $3) AS t, sum(up)::int AS up, sum(degraded)::int AS degraded,"
        " sum(down)::int AS down, sum(unknown)::int AS unknown, sum(excluded)::int AS excluded"
        f" FROM verdicts_{level} WHERE monitor_id = $1 AND bucket >= {a} AND bucket < {b} GROUP BY 1"
    )


async def series(
    conn: DB,
    monitor_id: int,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    marks: dict[str, dt.datetime] | None = None,
) -> list[dict[str, Any]]:
    """One point per `step` bucket of [start, end): checks, failures, avg/min/max, uptime."""
    marks = await watermarks(conn) if marks is None else marks
    coarsest = "day" if step >= DAY else "hour" if step >= HOUR else "5min" if step >= FIVE else "minute"
    parts = pieces(start, end, marks, coarsest)
    points: dict[dt.datetime, tuple[Checks, Verdicts]] = {}
    # $1 monitor, $2 step, $3 origin; each piece's bounds after (union()).
    for r in await union(conn, parts, _series_checks, [monitor_id, step, ORIGIN]):
        points.setdefault(r["t"], (Checks(), Verdicts()))[0].add(r)
    for r in await union(conn, parts, _series_verdicts, [monitor_id, step, ORIGIN]):
        points.setdefault(r["t"], (Checks(), Verdicts()))[1].add(r)
    out = []
    t = floor_to(start, step)
    while t < end:
        c, v = points.get(t, (Checks(), Verdicts()))
        out.append(
            {
                "timestamp": t,
                "uptime": v.uptime,
                "checks": c.checks,
                "failed": c.failures,
                "degraded": c.degraded,
                "avg_response_time": ms(c.rt_sum / c.rt_count) if c.rt_count else None,
                "min_response_time": ms(c.rt_min),
                "max_response_time": ms(c.rt_max),
            }
        )
        t += step
    return out


UPTIME_WINDOWS = {"uptime_24h": DAY, "uptime_7d": 7 * DAY, "uptime_30d": 30 * DAY}


def uptime_pieces(
    now: dt.datetime,
    marks: dict[str, dt.datetime],
    windows: dict[str, dt.timedelta] = UPTIME_WINDOWS,
) -> list[tuple[list[str], Piece]]:
    """The pieces covering the longest window, each with the windows it lies in: split at
    each window's start so every piece lies wholly inside or outside each window."""
    starts = sorted({now - w for w in windows.values()})
    out: list[tuple[list[str], Piece]] = []
    for a, b in itertools.pairwise([*starts, now]):
        inside = [name for name, w in windows.items() if a >= now - w]
        out += [(inside, p) for p in pieces(a, b, marks)]
    return out


async def uptimes(
    pool: DB,
    monitor_ids: list[int],
    now: dt.datetime | None = None,
    windows: dict[str, dt.timedelta] = UPTIME_WINDOWS,
) -> dict[int, dict[str, float | None]]:
    """{id: {uptime_24h, uptime_7d, uptime_30d}} for a page of monitors, in a few queries:
    the 30 d window's pieces are read once and each row counted into every window it is in.
    The monitors API reads the same numbers precomputed (storage/uptime_cache.py)."""
    now = now or dt.datetime.now(dt.UTC)
    out: dict[int, dict[str, Verdicts]] = {m: {k: Verdicts() for k in windows} for m in monitor_ids}
    if not monitor_ids:
        return {}
    marks = await watermarks(pool)
    tagged = uptime_pieces(now, marks, windows)
    for r in await verdict_rows(pool, monitor_ids, [piece for _, piece in tagged]):
        for name in tagged[r["piece"]][0]:
            out[r["monitor_id"]][name].add(r)
    return {m: {k: v.uptime for k, v in ws.items()} for m, ws in out.items()}


async def incidents_in(
    conn: DB, monitor_ids: list[int], start: dt.datetime, end: dt.datetime
) -> list[asyncpg.Record]:
    """Non-manual incidents overlapping [start, end), clipped to it."""
    return await conn.fetch(
        "SELECT monitor_id, started_at, resolved_at,"
        " greatest(started_at, $2) AS a, least(COALESCE(resolved_at, $3), $3) AS b"
        " FROM incidents WHERE monitor_id = ANY($1) AND NOT manual"
        " AND started_at < $3 AND COALESCE(resolved_at, 'infinity') > $2 ORDER BY started_at",
        monitor_ids,
        start,
        end,
    )
