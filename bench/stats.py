"""Statistics at scale: COPY millions of raw results and rounds into the embedded
PostgreSQL in due order (one hour of data per batch, rolled up right after it, as the
rollup loop would), then time the statistics reads and measure the disk used.

Goals (issue 8): stats queries p99 < 50 ms; ingest plus rollups >= 10,000 results/s.

    .venv/bin/python -m bench.stats [--monitors 1000] [--hours 56] [--no-record]
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

from bench.common import percentile, record
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


async def run(monitors: int, hours: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        pg = PostgresServer(Path(tmp) / "pg", ephemeral=True)
        pg.start()
        try:
            await create_database(pg.dsn(), "bench")
            dsn = pg.dsn("bench")
            await db.migrate(dsn)
            pool = await db.create_pool(dsn, max_size=4)
            try:
                return await _bench(pool, monitors, hours, samples)
            finally:
                await pool.close()
        finally:
            pg.stop()


async def _bench(pool: asyncpg.Pool, monitors: int, hours: int, samples: int) -> dict[str, Any]:
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
        clock = start + dt.timedelta(hours=h + 1, seconds=31)
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

    async def stats_24h() -> None:
        m = pick.choice(ids)
        s = await store.summary(pool, m, now - store.DAY, now)
        s["total"].public()
        await store.series(pool, m, now - store.DAY, now, dt.timedelta(minutes=5))

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
        "stats 7d (summary + 1h series)": stats_7d,
        "stats 90d (summary + 1d series)": stats_90d,
        "uptimes, page of 100 monitors": uptime_page,
        "analytics, unaligned 30 h range": analytics_unaligned,
    }
    latencies = {}
    for name, fn in queries.items():
        await timed(fn, 5)
        latencies[name] = await timed(fn, samples)
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
            " WHERE p.relname IN ('check_results', 'rounds', 'stats_minute', 'stats_hour', 'stats_day',"
            " 'verdicts_minute', 'verdicts_hour', 'verdicts_day') GROUP BY 1"
        )
    }
    rows = {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in sizes}
    return {
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
        f" time in due order, each hour rolled up (raw -> minute -> hour -> day) right after its COPY.",
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
def main(monitors: int, hours: int, samples: int, do_record: bool) -> None:
    result = asyncio.run(run(monitors, hours, samples))
    body = report(result)
    print(body)
    if do_record:
        record("Statistics (issue 8)", body + "\n\nRun: `.venv/bin/python -m bench.stats`")


if __name__ == "__main__":
    main()
