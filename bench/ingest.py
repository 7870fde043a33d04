"""Results ingest throughput: results.ingest (controller/engine/results.py) on real PostgreSQL, no probes.

Opens rounds for M monitors in 3 regions (as the scheduler does), then feeds their
results in batches of 500 (the consumer's batch size) and reports results stored per
second, including the rounds bookkeeping, verdicts and monitor updates.

    python -m bench.ingest --monitors 2000 --rounds 10
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import click

from bench.common import record
from probefleet.controller.engine import results
from probefleet.controller.storage import db
from probefleet.controller.storage import results as store
from probefleet.shared import devstack, wire

REGIONS = ["us-east", "eu-west", "ap-south"]


async def run(dsn: str, monitors: int, rounds: int, batch: int) -> dict[str, float]:
    await db.migrate(dsn)
    pool = await db.create_pool(dsn, max_size=4)
    try:
        await pool.execute(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            ' SELECT \'m\' || g, \'http\', \'{"type": "http", "url": "http://127.0.0.1/"}\', 60, 5, $1'
            " FROM generate_series(1, $2) g",
            REGIONS,
            monitors,
        )
        ids = [r["id"] for r in await pool.fetch("SELECT id FROM monitors ORDER BY id")]
        base = time.time() - rounds * 60 - 120
        all_results: list[wire.CheckResult] = []
        for k in range(rounds):
            due = base + k * 60
            await store.insert_rounds(
                pool, [(m, store.ts(due), 0, REGIONS, store.ts(due + 3600)) for m in ids]
            )
            for m in ids:
                for region in REGIONS:
                    all_results.append(
                        wire.CheckResult(
                            monitor_id=m,
                            due=due,
                            region=region,
                            probe_id=f"p-{region}",
                            status=wire.Status.OK,
                            started_at=due + 0.01,
                            duration_ms=12.5,
                            status_code=200,
                            timings={"total": 12.5},
                        )
                    )
        start = time.perf_counter()
        stored = 0
        for i in range(0, len(all_results), batch):
            stored += await results.ingest(pool, all_results[i : i + batch])
        elapsed = time.perf_counter() - start
        closed = await pool.fetchval("SELECT count(*) FROM rounds WHERE verdict IS NOT NULL")
        return {
            "results": stored,
            "seconds": elapsed,
            "per_second": stored / elapsed,
            "rounds_closed": closed,
        }
    finally:
        await pool.close()


@click.command()
@click.option("--monitors", type=int, default=2000, show_default=True)
@click.option("--rounds", type=int, default=10, show_default=True)
@click.option("--batch", type=int, default=500, show_default=True)
@click.option("--no-record", is_flag=True)
def main(monitors: int, rounds: int, batch: int, no_record: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="pf-ingest-") as tmp:
        pg = devstack.PostgresServer(Path(tmp) / "pg", ephemeral=True)
        pg.start()
        try:
            asyncio.run(devstack.create_database(pg.dsn(), "bench", drop=True))
            r = asyncio.run(run(pg.dsn("bench"), monitors, rounds, batch))
        finally:
            pg.stop()
    body = (
        f"Command: `python -m bench.ingest --monitors {monitors} --rounds {rounds} --batch {batch}`.\n\n"
        "`results.ingest` (controller/engine/results.py) on the embedded PostgreSQL (fsync off,\n"
        "as in tests), one "
        "process, batches as the JetStream consumer takes them: store results, mark regions\n"
        "answered, close complete rounds, decide and apply verdicts, in one transaction per batch.\n"
        "NATS fetch/ack is not included.\n\n"
        f"| results | seconds | results/s | rounds closed |\n|---:|---:|---:|---:|\n"
        f"| {r['results']:,.0f} | {r['seconds']:.1f} | {r['per_second']:,.0f} | {r['rounds_closed']:,.0f} |\n"
    )
    click.echo(body)
    if not no_record:
        record("Results ingest (issues 2 and 8)", body)


if __name__ == "__main__":
    main()
