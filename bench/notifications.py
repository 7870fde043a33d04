"""Notifications: events to webhook deliveries per second, and the delay from an
incident.opened event row being committed to the webhook receiving it.

The receiver runs in a second process (so its CPU is not the dispatcher's) and writes
(delivery key, receive time) lines to a file. The dispatcher runs its real steps against
the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import click
from aiohttp import web

from bench.common import percentile, record
from probefleet.controller import metrics
from probefleet.controller.engine import incidents
from probefleet.controller.notifications.dispatcher import Dispatcher, Settings
from probefleet.controller.storage import db
from probefleet.controller.storage import notifications as store
from probefleet.shared.devstack import PostgresServer, create_database


def serve_receiver(port_file: Path, log_file: Path) -> None:
    """Child process: answer 200 to every webhook and log when each arrived."""
    out = log_file.open("a", buffering=1)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        out.write(f"{request.headers['X-Probefleet-Delivery']} {time.time():.6f}\n")
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        port_file.write_text(str(runner.addresses[0][1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def received(log_file: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in log_file.read_text().splitlines():
        key, _, at = line.partition(" ")
        out.setdefault(key, float(at))
    return out


async def _monitors(pool: Any, n: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " SELECT 'm' || g, 'http', jsonb_build_object('url', 'https://m' || g || '.example/'), 60, 5,"
        " ARRAY['us-east'] FROM generate_series(1, $1) g RETURNING *",
        n,
    )
    return [dict(r) for r in rows]


async def _incident(pool: Any, m: dict[str, Any], now: dt.datetime) -> int:
    async with pool.acquire() as conn, conn.transaction():
        iid = await conn.fetchval(
            "INSERT INTO incidents (monitor_id, title, started_at, severity) VALUES ($1, $2, $3, 'high')"
            " ON CONFLICT DO NOTHING RETURNING id",
            m["id"],
            f"{m['name']} is down",
            now,
        )
        inc = await conn.fetchrow("SELECT * FROM incidents WHERE id=$1", iid)
        return await incidents.emit(
            conn, "incident.opened", now, monitor=m, status="down", incident=dict(inc)
        )


async def run(root: Path, deliveries: int, samples: int, rate: float) -> dict[str, Any]:
    pg = PostgresServer(root / "pg", ephemeral=True)
    pg.start()
    log_file = root / "received.log"
    log_file.touch()
    port_file = root / "port"
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.notifications", "--receiver", str(port_file), str(log_file)]
    )
    try:
        while not port_file.exists() or not port_file.read_text():  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}/hook"
        await create_database(pg.dsn(), "notify", drop=True)
        dsn = pg.dsn("notify")
        await db.migrate(dsn)
        pool = await db.create_pool(dsn, max_size=10)
        channel = await store.insert_channel(
            pool,
            {
                "kind": "webhook",
                "name": "bench",
                "is_enabled": True,
                "reminder_minutes": None,
                "config": {"kind": "webhook", "url": url, "secret": "s"},
            },
        )
        await store.insert_rule(
            pool,
            {
                "name": "all",
                "events": [],
                "monitor_ids": [],
                "tags": [],
                "min_severity": None,
                "channel_ids": [channel["id"]],
                "reminder_minutes": None,
                "escalate_after_minutes": None,
                "escalation_channel_ids": [],
                "is_enabled": True,
            },
        )
        monitors = await _monitors(pool, deliveries + samples)
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=connector) as s:
            d = Dispatcher(pool=pool, session=s, settings=Settings())
            # Throughput: a backlog of incident.opened events, drained by the loop's step.
            now = dt.datetime.now(dt.UTC)
            for m in monitors[:deliveries]:
                await _incident(pool, m, now)
            start = time.perf_counter()
            done = 0
            while done < deliveries:
                await d.step(dt.datetime.now(dt.UTC))
                done = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status='delivered'")
            elapsed = time.perf_counter() - start
            got = received(log_file)
            # Latency: the real loop (NOTIFY wake-up, poll fallback) while incidents open one by one.
            wakeups = metrics.REGISTRY.get_sample_value("probefleet_dispatcher_wakeups_total") or 0.0
            stop = asyncio.Event()
            loop_task = asyncio.create_task(d.run(stop))
            committed: dict[str, float] = {}
            for m in monitors[deliveries:]:
                eid = await _incident(pool, m, dt.datetime.now(dt.UTC))
                committed[str(eid)] = time.time()
                await asyncio.sleep(1 / rate)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(received(log_file)) < deliveries + samples:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stop.set()
            await loop_task
        latency = received(log_file)
        delays = [(latency[k] - t) * 1000 for k, t in committed.items() if k in latency]
        dupes = sum(1 for line in log_file.read_text().splitlines()) - len(latency)
        await pool.close()
        return {
            "rate": deliveries / elapsed,
            "elapsed": elapsed,
            "first": len(got),
            "delays": delays,
            "dupes": dupes,
            "wakeups": (metrics.REGISTRY.get_sample_value("probefleet_dispatcher_wakeups_total") or 0.0)
            - wakeups,
            "poll": Settings().poll_s,
            "batch": Settings().batch,
        }
    finally:
        child.terminate()
        child.wait()
        pg.stop()


@click.command()
@click.option("--deliveries", default=5000, show_default=True)
@click.option("--samples", default=200, show_default=True)
@click.option("--rate", default=20.0, show_default=True, help="Incidents per second in the latency phase.")
@click.option("--no-record", is_flag=True)
@click.option("--receiver", type=(Path, Path), default=None, hidden=True)
def main(
    deliveries: int, samples: int, rate: float, no_record: bool, receiver: tuple[Path, Path] | None
) -> None:
    if receiver is not None:
        serve_receiver(*receiver)
        return
    with tempfile.TemporaryDirectory(prefix="pf-notify-") as tmp:
        res = asyncio.run(run(Path(tmp), deliveries, samples, rate))
    delays = res["delays"]
    body = "\n".join(
        [
            f"Command: `.venv/bin/python -m bench.notifications --deliveries {deliveries}"
            f" --samples {samples} --rate {rate:g}`.",
            "",
            "Embedded PostgreSQL (fsync off), one signed-webhook channel and one rule; the receiver is an"
            " aiohttp server in a second process on 127.0.0.1. Throughput: a backlog of"
            f" {deliveries} incident.opened events drained by `Dispatcher.step` (fan-out + claim + send +"
            f" record, batch {res['batch']}, 200 sends in flight).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| deliveries per second (events to webhook 2xx recorded) | **{res['rate']:,.0f}**"
            f" ({deliveries} in {res['elapsed']:.2f} s) |",
            "| delay, incident.opened committed to webhook received, median |"
            f" {percentile(delays, 0.5):.0f} ms |",
            f"| same, p99 | {percentile(delays, 0.99):.0f} ms |",
            f"| same, max | {max(delays, default=float('nan')):.0f} ms |",
            f"| latency samples (one incident every {1000 / rate:.0f} ms) | {len(delays)} of {samples} |",
            f"| duplicate receipts | {res['dupes']} |",
            "",
            "The latency phase runs the real loop: an idle dispatcher sleeps until the `events`"
            " trigger's NOTIFY (sent at the commit of the incident) or its fallback poll"
            f" ({res['poll']} s), so the delay is one step (fan-out, claim, send, record) plus the"
            f" receiver's hop. NOTIFY wake-ups counted: {res['wakeups']:.0f}.",
        ]
    )
    print(body)
    if not no_record:
        record("Notifications (issue 7)", body)


if __name__ == "__main__":
    main()
