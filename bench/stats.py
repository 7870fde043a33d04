"""Statistics at scale: COPY millions of raw results and rounds into the embedded
PostgreSQL in due order (one hour of data per batch), rolled up right after it minute by
minute as the rollup loop does (it ticks every 10 s, so each minute is rolled up on its
own: rows of one monitor lie apart on disk, one page per minute or 5-minute bucket, as
in a live installation; --rollup-minutes 60 rolls up a whole hour per tick, as this
benchmark did before, which lays each monitor's rows of that hour together and makes
per-monitor reads look cheaper than they are), then time the statistics reads and
measure the disk used.

Goals (issue 8): stats queries p99 < 50 ms; ingest plus rollups >= 10,000 results/s.
Issue 24: stats p99 < 20 ms over 10 M results on the calibration-normalised machine (the
report prints the calibration figure of bench/common.py to normalise by).

    .venv/bin/python -m bench.stats [--monitors 1000] [--hours 56] [--no-record] [--explain]

--explain prints EXPLAIN (ANALYZE, BUFFERS) of every statement of one 24 h read (summary
+ 5-minute series) and of one rollup step at each level, after the timings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import click

from bench.common import calibration, load_average, machine, percentile, record
from probefleet.controller.stats import rollups
from probefleet.controller.storage import db
from probefleet.controller.storage import stats as store
from probefleet.shared.devstack import PostgresServer, create_database

REGIONS = ["us-east", "eu-west", "ap-south"]
INTERVAL = 60
RESULT_COLUMNS = [
    "monitor_id",
    "due",
    "region",
    "attempt",
    "probe_id",
    "status",
    "reason",
    "message",
    "started_at",
    "duration_ms",
    "status_code",
]
ENDPOINT_WINDOWS = {"24h": store.DAY, "7d": 7 * store.DAY, "30d": 30 * store.DAY, "90d": 90 * store.DAY}
ROUND_COLUMNS = ["monitor_id", "due", "attempt", "regions", "answered", "deadline", "closed_at", "verdict"]


def hour_of_data(start: dt.datetime, monitors: int, rng: random.Random) -> tuple[list[Any], list[Any]]:
    """One hour of results and rounds in due order; each monitor has a fixed phase."""
    results: list[tuple[Any, ...]] = []
    rounds: list[tuple[Any, ...]] = []
    ok_rows = {r: (r, 0, f"probe-{r}") for r in REGIONS}
    for minute in range(60):
        base = start + dt.timedelta(minutes=minute)
        for m in range(1, monitors + 1):
            due = base + dt.timedelta(seconds=(m * 7919) % INTERVAL)
            failing = 0
            for region in REGIONS:
                x = rng.random()
                status = "fail" if x < 0.005 else "degraded" if x < 0.015 else "ok"
                failing += status == "fail"
                ms = rng.lognormvariate(4.6 + (m % 5) * 0.2, 0.5)
                r, attempt, probe = ok_rows[region]
                fail = status == "fail"
                results.append(
                    (
                        m,
                        due,
                        r,
                        attempt,
                        probe,
                        status,
                        "timeout" if fail else None,
                        "",
                        due,
                        5000.0 if fail else ms,
                        None if fail else 200,
                    )
                )
            verdict = "down" if failing >= 2 else "up"
            rounds.append(
                (
                    m,
                    due,
                    0,
                    REGIONS,
                    REGIONS,
                    due + dt.timedelta(seconds=7),
                    due + dt.timedelta(seconds=1),
                    verdict,
                )
            )
    return results, rounds


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


class Explaining:
    """A connection that runs EXPLAIN (ANALYZE, BUFFERS) of each statement before it, and
    keeps the plans (for --explain)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.plans = conn, list[str]()

    async def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        rows = await self.conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        self.plans.append(sql + "\n" + "\n".join(r[0] for r in rows))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, args)
        return list(await self.conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        await self._explain(sql, args)
        return str(await self.conn.execute(sql, *args))


async def explain(pool: asyncpg.Pool, now: dt.datetime, monitor: int) -> list[str]:
    """The plans of one 24 h read, then of one step of each rollup level (rolled back)."""
    async with pool.acquire() as conn:
        ex = Explaining(conn)
        marks = await store.watermarks(conn)
        ex.plans.append("-- the 24 h read, hour-aligned:")
        await store.summary(ex, monitor, now - store.DAY, now, marks)
        await store.series(ex, monitor, now - store.DAY, now, dt.timedelta(minutes=5), marks)
        ex.plans.append("-- the 24 h read, unaligned (as the API reads it):")
        end = now - dt.timedelta(minutes=17, seconds=13)
        await store.summary(ex, monitor, end - store.DAY, end, marks)
        await store.series(ex, monitor, end - store.DAY, end, dt.timedelta(minutes=5), marks)
        ex.plans.append("-- the same 5-minute series from minute rows (before migration 0026):")
        before = {k: v for k, v in marks.items() if k != "5min"}
        await store.series(ex, monitor, now - store.DAY, now, dt.timedelta(minutes=5), before)
        ex.plans.append("-- one rollup step at each level above the minute (rolled back):")
        tr = conn.transaction()
        await tr.start()
        try:
            for source, dest in (("minute", "5min"), ("5min", "hour"), ("hour", "day")):
                step = store.LEVELS[dest]
                end = store.floor_to(marks[dest], step)
                await store.rollup_level(ex, source, dest, end - step, end)
        finally:
            await tr.rollback()
    return ex.plans


async def run(monitors: int, hours: int, samples: int, plans: bool = False, every: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        pg = PostgresServer(Path(tmp) / "pg", ephemeral=True)
        pg.start()
        try:
            await create_database(pg.dsn(), "bench")
            dsn = pg.dsn("bench")
            await db.migrate(dsn)
            pool = await db.create_pool(dsn, max_size=4)
            try:
                return await _bench(pool, monitors, hours, samples, plans, every)
            finally:
                await pool.close()
        finally:
            pg.stop()


async def _bench(
    pool: asyncpg.Pool, monitors: int, hours: int, samples: int, plans: bool, every: int
) -> dict[str, Any]:
    now = store.floor_to(dt.datetime.now(dt.UTC), store.HOUR)
    start = now - dt.timedelta(hours=hours)
    for d in range(hours // 24 + 3):
        await db.ensure_partitions(pool, start + dt.timedelta(days=d), days_ahead=1)
    rng = random.Random(8)
    copy_s = rollup_s = gen_s = 0.0
    n_results = 0
    for h in range(hours):
        t = time.perf_counter()
        results, rounds = hour_of_data(start + dt.timedelta(hours=h), monitors, rng)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        async with pool.acquire() as conn:
            await conn.copy_records_to_table("check_results", records=results, columns=RESULT_COLUMNS)
            await conn.copy_records_to_table("rounds", records=rounds, columns=ROUND_COLUMNS)
        copy_s += time.perf_counter() - t
        n_results += len(results)
        t = time.perf_counter()
        for minute in range(every, 61, every):
            clock = start + dt.timedelta(hours=h, minutes=minute, seconds=31)
            while await rollups.tick(pool, clock):
                pass
        rollup_s += time.perf_counter() - t
        if h % 6 == 5:
            print(
                f"hour {h + 1}/{hours}: {n_results:,} results, copy {copy_s:.0f} s, rollup {rollup_s:.0f} s",
                flush=True,
            )
    await pool.execute("VACUUM ANALYZE")
    ids = list(range(1, monitors + 1))
    pick = random.Random(1)

    async def stats_24h(end: dt.datetime = now, minute_rows: bool = False) -> None:
        m = pick.choice(ids)
        marks = await store.watermarks(pool)
        if minute_rows:  # as before the 5-minute level (migration 0026): an A/B in one run
            marks.pop("5min")
        s = await store.summary(pool, m, end - store.DAY, end, marks)
        s["total"].public()
        await store.series(pool, m, end - store.DAY, end, dt.timedelta(minutes=5), marks)

    # What GET /monitors/{id}/stats (24 h) reads, without HTTP: the report, its incidents
    # and the uptime of the 24 h, 7 d, 30 d and 90 d windows (controller/api/stats.py).
    async def stats_endpoint_24h() -> None:
        end = now - dt.timedelta(minutes=17, seconds=13)
        await stats_24h(end)
        m = pick.choice(ids)
        await store.incidents_in(pool, [m], end - store.DAY, end)
        await store.uptimes(pool, [m], end, windows=ENDPOINT_WINDOWS)

    async def stats_24h_minute_rows() -> None:
        await stats_24h(minute_rows=True)

    # As the API asks it (to = now): edges inside minutes, 5 minutes and hours.
    async def stats_24h_unaligned() -> None:
        await stats_24h(now - dt.timedelta(minutes=17, seconds=13))

    async def stats_7d() -> None:
        m = pick.choice(ids)
        await store.summary(pool, m, now - 7 * store.DAY, now)
        await store.series(pool, m, now - 7 * store.DAY, now, store.HOUR)

    async def stats_90d() -> None:
        m = pick.choice(ids)
        await store.summary(pool, m, now - 90 * store.DAY, now)
        await store.series(pool, m, now - 90 * store.DAY, now, store.DAY)

    async def uptime_page() -> None:
        first = pick.randrange(1, max(2, monitors - 100))
        await store.uptimes(pool, list(range(first, first + 100)), now)

    # Unaligned ranges read minute rows and raw edges too.
    async def analytics_unaligned() -> None:
        m = pick.choice(ids)
        a = now - dt.timedelta(hours=30, minutes=17, seconds=13)
        await store.summary(pool, m, a, now - dt.timedelta(minutes=3, seconds=7))

    queries = {
        "stats 24h (summary + 5m series)": stats_24h,
        "stats 24h, unaligned (as the API reads it)": stats_24h_unaligned,
        "stats endpoint 24h: the above + incidents + 4 uptime windows": stats_endpoint_24h,
        "stats 24h from minute rows (the read before 0026, A/B)": stats_24h_minute_rows,
        "stats 7d (summary + 1h series)": stats_7d,
        "stats 90d (summary + 1d series)": stats_90d,
        "uptimes, page of 100 monitors": uptime_page,
        "analytics, unaligned 30 h range": analytics_unaligned,
    }
    for fn in queries.values():
        await timed(fn, 5)
    # Round robin, one sample of each query in turn: a busy spell on the machine falls on
    # all of them alike, so they compare (the A/B rows above all).
    latencies: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(samples):
        for name, fn in queries.items():
            latencies[name] += await timed(fn, 1)
    t = time.perf_counter()
    ids_all = await pool.fetch("SELECT DISTINCT monitor_id FROM stats_day")
    marks = await store.watermarks(pool)
    await store.verdict_rows(pool, [r[0] for r in ids_all], store.pieces(now - 30 * store.DAY, now, marks))
    sla_ms = (time.perf_counter() - t) * 1000
    sizes = {
        r["t"]: r["bytes"]
        for r in await pool.fetch(
            "SELECT p.relname AS t, sum(pg_total_relation_size(c.oid))::bigint AS bytes FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
            " WHERE p.relname IN ('check_results', 'rounds', 'stats_minute', 'stats_5min', 'stats_hour',"
            " 'stats_day', 'verdicts_minute', 'verdicts_5min', 'verdicts_hour', 'verdicts_day') GROUP BY 1"
        )
    }
    rows = {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in sizes}
    return {
        "plans": await explain(pool, now, monitors // 2) if plans else [],
        "monitors": monitors,
        "hours": hours,
        "results": n_results,
        "gen_s": gen_s,
        "copy_s": copy_s,
        "rollup_s": rollup_s,
        "latencies": latencies,
        "sla_ms": sla_ms,
        "sizes": sizes,
        "rows": rows,
    }


def report(r: dict[str, Any]) -> str:
    n = r["results"]
    mib = 2**20
    lines = [
        f"{r['monitors']:,} monitors x {len(REGIONS)} regions every {INTERVAL} s for {r['hours']} h:"
        f" {n:,} raw results and {r['rows'].get('rounds', 0):,} rounds, COPY'd one hour of data at a"
        f" time in due order, each hour rolled up (raw -> minute -> 5 min -> hour -> day) right after"
        f" its COPY, {r['every']} minute(s) per rollup tick.",
        "",
        f"Machine: {r['machine']}. Load average before: {r['load'][0]}; after: {r['load'][1]}.",
        f"Calibration: a fixed pure-Python loop takes {r['calibration']:.1f} ms on this machine"
        f" (bench/common.py calibration(); compare figures across machines as ratios to it).",
        "",
        "| ingest | seconds | results/s |",
        "|---|---:|---:|",
        f"| COPY results + rounds | {r['copy_s']:.1f} | {n / r['copy_s']:,.0f} |",
        f"| rollups (all levels) | {r['rollup_s']:.1f} | {n / r['rollup_s']:,.0f} |",
        f"| COPY + rollups | {r['copy_s'] + r['rollup_s']:.1f} | {n / (r['copy_s'] + r['rollup_s']):,.0f} |",
        "",
        f"Rollups use {100 * r['rollup_s'] / (n / 10_000):.1f} % of one wall-clock second per second"
        f" at 10,000 results/s (rollup time / time those results take to arrive at that rate).",
        "",
        "| statistics read (storage functions, no HTTP) | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, lat in r["latencies"].items():
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        lines.append(f"| {name} | {p50:.1f} | {p99:.1f} | {max(lat):.1f} |")
    lines += [
        "",
        f"SLA verdict read for all {r['monitors']:,} monitors over 30 d: {r['sla_ms']:.0f} ms.",
        "",
        "| table (all partitions, with indexes) | rows | MiB | MiB per million raw results |",
        "|---|---:|---:|---:|",
    ]
    for t, b in sorted(r["sizes"].items()):
        lines.append(f"| {t} | {r['rows'][t]:,} | {b / mib:,.0f} | {b / mib / (n / 1e6):.1f} |")
    total = sum(r["sizes"].values())
    lines.append(f"| **total** | | {total / mib:,.0f} | {total / mib / (n / 1e6):.1f} |")
    return "\n".join(lines)


@click.command()
@click.option("--monitors", default=1000, show_default=True)
@click.option("--hours", default=56, show_default=True, help="hours of data (56 h x 1,000 x 3 = 10.1 M)")
@click.option("--samples", default=200, show_default=True)
@click.option("--record/--no-record", "do_record", default=True)
@click.option(
    "--explain", "plans", is_flag=True, help="print the query plans of a 24 h read and a rollup step"
)
@click.option(
    "--rollup-minutes",
    "every",
    type=click.Choice(["1", "5", "15", "60"]),
    default="1",
    show_default=True,
    help="minutes of data per rollup tick (1: as the live loop; 60: the layout of earlier recordings)",
)
def main(monitors: int, hours: int, samples: int, do_record: bool, plans: bool, every: str) -> None:
    calib, load0 = calibration(), load_average()
    result = asyncio.run(run(monitors, hours, samples, plans, int(every)))
    load = (load0, load_average())
    result |= {"every": int(every), "calibration": calib, "load": load, "machine": machine()}
    body = report(result)
    for plan in result["plans"]:
        print(plan, end="\n\n")
    print(body)
    if do_record:
        record("Statistics (issue 8)", body + "\n\nRun: `.venv/bin/python -m bench.stats`")


if __name__ == "__main__":
    main()
