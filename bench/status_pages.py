"""Status pages and push: a public page with 50 components and 90 days of rounds behind its
uptime bars, loaded by wrk (Debian package, installed when missing) from another process;
then one outbox event fanned out over WebSocket to 1,000 clients held by a second process.

    .venv/bin/python -m bench.status_pages [--components 50] [--clients 1000] [--no-record]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
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
from probefleet.controller import keys
from probefleet.controller.app import build_app
from probefleet.controller.config import ControllerConfig, Region
from probefleet.controller.engine.incidents import emit
from probefleet.controller.stats import rollups
from probefleet.controller.storage import api_keys, stats
from probefleet.shared.devstack import create_database, embedded_stack

ROUND_INTERVAL = dt.timedelta(minutes=5)
# base URL, admin key and monitor ids of the running bench controller
CTX: dict[str, Any] = {}
ROUND_COLUMNS = ["monitor_id", "due", "attempt", "regions", "answered", "deadline", "closed_at", "verdict"]


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        subprocess.run(
            "apt-get update && apt-get install -y wrk", shell=True, check=True, capture_output=True
        )
    return str(shutil.which("wrk"))


def wrk(url: str, *, seconds: int, connections: int, gzip: bool) -> dict[str, float]:
    args = [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if gzip:
        args[1:1] = ["-H", "Accept-Encoding: gzip"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale}


async def roll_up(pool: Any, since: dt.datetime) -> None:
    """Rounds seeded below the rollup watermarks into the rollups, as the rollup steps would
    have put them had they arrived on time (the bars read whole days from verdicts_day)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", rollups.LOCK)
        marks = await stats.watermarks(conn)
        for level, source in (("minute", None), ("hour", "minute"), ("day", "hour")):
            start = stats.floor_to(since, stats.LEVELS[level])
            if level not in marks or start >= marks[level]:
                continue
            await rollups.ensure_partitions(conn, level, start, marks[level])
            if source is None:
                await stats.rollup_raw(conn, start, marks[level])
            else:
                await stats.rollup_level(conn, source, level, start, marks[level])


async def seed(app: web.Application, components: int) -> None:
    """Monitors, 90 days of 5-minute rounds (COPY), and a page showing them all."""
    pool = app[keys.POOL]
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    ids = [
        await pool.fetchval(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, status)"
            " VALUES ($1, 'http', $2, 300, 10, '{us-east}', 'up') RETURNING id",
            f"svc-{i}",
            {"url": f"http://127.0.0.1:9/{i}"},
        )
        for i in range(components)
    ]
    steps = int(dt.timedelta(days=90) / ROUND_INTERVAL)
    rows = []
    for mid in ids:
        for k in range(steps):
            due = now - k * ROUND_INTERVAL
            verdict = "down" if (k + mid * 37) % 997 == 0 else "up"
            rows.append((mid, due, 0, ["us-east"], ["us-east"], due, due, verdict))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("rounds", records=rows, columns=ROUND_COLUMNS)
        await conn.execute("ANALYZE rounds")
    await roll_up(pool, now - dt.timedelta(days=91))
    sections = [
        {
            "name": f"Group {g}",
            "monitors": [
                {"monitor_id": m, "display_name": f"Service {m}"} for m in ids[g * 10 : (g + 1) * 10]
            ],
        }
        for g in range((components + 9) // 10)
    ]
    # Every WebSocket connection spends a request of the key's limit: 1,000 clients on one key.
    key, _ = await api_keys.create(pool, "bench", ["admin"], rate_limit=1_000_000)
    CTX["bench_key"] = key
    CTX["bench_ids"] = ids
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        body = {"name": "Bench", "slug": "bench", "sections": sections}
        r = await s.post(f"{CTX['bench_base']}/api/v1/status-pages", json=body)
        assert r.status == 201, await r.text()
    print(f"seeded {components} components, {len(rows):,} rounds", file=sys.stderr)


async def clients_main(url: str, key: str, n: int, out: Path) -> None:
    """Child process: n WebSocket clients; prints 'ready', then each client's receive time."""
    received: dict[int, float] = {}
    done = asyncio.Event()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        sockets = []
        for _ in range(n):
            ws = await s.ws_connect(f"{url}?api_key={key}", heartbeat=None)
            await ws.send_json({"subscribe": ["monitor.status"]})
            sockets.append(ws)
        for ws in sockets:
            while (await ws.receive_json())["type"] != "subscribed":
                pass

        async def listen(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            while True:
                msg = await ws.receive_json()
                if msg["type"] == "event":
                    received[i] = time.time()
                    if len(received) == n:
                        done.set()
                    return

        tasks = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 60)
        out.write_text(json.dumps(sorted(received.values())))
        await asyncio.gather(*tasks)
        for ws in sockets:
            await ws.close()


async def fan_out(app: web.Application, n: int, root: Path) -> dict[str, float]:
    out = root / "fanout.json"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.status_pages",
        "--clients-child",
        f"{CTX['bench_base']}/api/v1/ws",
        CTX["bench_key"],
        str(n),
        str(out),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert (await asyncio.wait_for(child.stdout.readline(), 300)).strip() == b"ready"
    await asyncio.sleep(1.0)
    mid = CTX["bench_ids"][0]
    async with app[keys.POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE monitors SET status = 'down' WHERE id = $1"
            " RETURNING id, name, kind, spec, locations, status",
            mid,
        )
        await emit(conn, "monitor.down", dt.datetime.now(dt.UTC), monitor=dict(row), previous="up")
    committed = time.time()
    await asyncio.wait_for(child.wait(), 120)
    times = [t - committed for t in json.loads(out.read_text())]
    return {
        "clients": len(times),
        "first_ms": times[0] * 1000,
        "p50_ms": percentile(times, 0.5) * 1000,
        "last_ms": times[-1] * 1000,
    }


async def run(components: int, clients: int, seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pf-bench-sp-") as tmp, embedded_stack(Path(tmp)) as stack:
        await create_database(stack.postgres.dsn(), "bench", drop=True)
        cfg = ControllerConfig(
            database_url=stack.postgres.dsn("bench"), nats_url=stack.nats.url, regions=[Region(id="us-east")]
        )
        app = build_app(cfg)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        CTX["bench_base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            await seed(app, components)
            base = CTX["bench_base"]
            t0 = time.perf_counter()
            async with aiohttp.ClientSession() as s, s.get(f"{base}/status/bench") as r:
                size = len(await r.read())
            cold_ms = (time.perf_counter() - t0) * 1000
            async with (
                aiohttp.ClientSession(headers={"Accept-Encoding": "gzip"}) as s,
                s.get(f"{base}/status/bench") as r,
            ):
                gz_size = int(r.headers["Content-Length"])
            loop = asyncio.get_running_loop()
            html = await loop.run_in_executor(
                None, lambda: wrk(f"{base}/status/bench", seconds=seconds, connections=64, gzip=True)
            )
            api_url = f"{base}/api/v1/status-pages/bench/public"
            js = await loop.run_in_executor(
                None, lambda: wrk(api_url, seconds=seconds, connections=64, gzip=False)
            )
            ws = await fan_out(app, clients, Path(tmp))
        finally:
            await runner.cleanup()
    return {
        "components": components,
        "cold_ms": cold_ms,
        "size": size,
        "gz_size": gz_size,
        "html": html,
        "json": js,
        "ws": ws,
        "seconds": seconds,
    }


def report(r: dict[str, Any]) -> str:
    html, js, ws = r["html"], r["json"], r["ws"]
    return f"""\
Public page with {r["components"]} components in 5 sections, 90 days of 5-minute rounds behind
the bars ({r["components"] * 25920:,} rows); controller in one process on one event loop, load
from wrk in another process (2 threads, 64 connections, {r["seconds"]} s per run, loopback).

| what | requests/s | p99 latency |
|---|---:|---:|
| `GET /status/bench` (HTML, gzip: {r["gz_size"]:,} B, plain {r["size"]:,} B) \
| {html["rps"]:,.0f} | {html["p99_ms"]:.1f} ms |
| `GET /api/v1/status-pages/bench/public` (JSON) | {js["rps"]:,.0f} | {js["p99_ms"]:.1f} ms |

First (uncached) render including the 90-day bars query: {r["cold_ms"]:.0f} ms (bars read from the verdict
rollups: whole days from `verdicts_day`, the rounds were rolled up after seeding; it was 314 ms
when they were counted from the raw rounds). The page model
is cached for 1 s and the bars for 60 s per controller, so the steady state is one model
build per second whatever the request rate.

WebSocket fan-out: {ws["clients"]:,} clients (another process) subscribed to `monitor.status`;
one monitor.down event committed to the outbox; time from commit to receipt: first \
{ws["first_ms"]:.0f} ms, median {ws["p50_ms"]:.0f} ms, last {ws["last_ms"]:.0f} ms (the hub polls \
the outbox every 250 ms, so up to 250 ms of that is the poll interval). Both processes and \
PostgreSQL share the machine's 2 cores.
"""


@click.command()
@click.option("--components", default=50, show_default=True)
@click.option("--clients", default=1000, show_default=True)
@click.option("--seconds", default=10, show_default=True)
@click.option("--no-record", is_flag=True)
@click.option("--clients-child", nargs=4, type=str, default=None, hidden=True)
def main(
    components: int,
    clients: int,
    seconds: int,
    no_record: bool,
    clients_child: tuple[str, str, str, str] | None,
) -> None:
    if clients_child:
        url, key, n, out = clients_child
        asyncio.run(clients_main(url, key, int(n), Path(out)))
        return
    result = asyncio.run(run(components, clients, seconds))
    text = report(result)
    print(text)
    if not no_record:
        record("Status pages and push (issue 9)", text)


if __name__ == "__main__":
    main()
