"""API latency with 100,000 monitors stored: p50/p99 of GET /monitors/{id} and of a
filtered list of 100, at a fixed request rate from a second process (open loop: requests
are sent on schedule whether or not earlier ones have answered).

    .venv/bin/python -m bench.api_latency [--rates 100,150,500] [--seconds 15] [--monitors 100000]

The controller runs in this process on the embedded PostgreSQL and NATS; the load comes
from `python -m bench.api_latency --load ...` in a child process. Results go to
bench/RESULTS.md under "API latency (issue 5)".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import cpu_seconds, percentile, record

LIST_PATH = "/api/v1/monitors?type=http&tag=shop&status=pending&limit=100"


async def load(base: str, key: str, rate: float, seconds: float, max_id: int) -> dict[str, list[float]]:
    """Open-loop load: half single gets, half filtered lists; latencies in ms per kind."""
    out: dict[str, list[float]] = {"get": [], "list": [], "errors": []}
    rnd = random.Random(1)
    conn = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=base, headers=headers, connector=conn) as s:

        async def one(kind: str, path: str) -> None:
            t = time.perf_counter()
            try:
                async with s.get(path) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            out[kind if ok else "errors"].append((time.perf_counter() - t) * 1000)

        for _ in range(50):  # warm up connections and caches
            await one("get", f"/api/v1/monitors/{rnd.randint(1, max_id)}")
        out["get"].clear()
        start = time.perf_counter()
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i % 2:
                tasks.append(asyncio.create_task(one("list", LIST_PATH)))
            else:
                tasks.append(asyncio.create_task(one("get", f"/api/v1/monitors/{rnd.randint(1, max_id)}")))
        await asyncio.gather(*tasks)
        out["elapsed"] = [time.perf_counter() - start]
    return out


async def seed(dsn: str, count: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, tags, status)"
            " SELECT 'monitor ' || g, CASE WHEN g % 4 = 0 THEN 'tcp' ELSE 'http' END,"
            " CASE WHEN g % 4 = 0 THEN jsonb_build_object('type', 'tcp', 'host', '127.0.0.1', 'port', 9)"
            "   ELSE jsonb_build_object('type', 'http', 'url', 'http://127.0.0.1:9/' || g) END,"
            " 86400, 5, ARRAY['us-east', 'eu-west', 'ap-south'],"
            " CASE WHEN g % 10 = 0 THEN ARRAY['shop', 'prod'] ELSE ARRAY['prod'] END,"
            " CASE WHEN g % 3 = 0 THEN 'up' ELSE 'pending' END"
            " FROM generate_series(1, $1) AS g",
            count,
        )
        await conn.execute("ANALYZE monitors")
    finally:
        await conn.close()


def _rows(rate: float, res: dict[str, list[float]], cpu: float) -> list[str]:
    elapsed = res["elapsed"][0]
    sent = len(res["get"]) + len(res["list"]) + len(res["errors"])
    out = []
    for kind, label in (("get", "GET /monitors/{id}"), ("list", "filtered list of 100")):
        v = res[kind]
        cpu_pct = cpu / elapsed * 100
        out.append(f"| {rate:.0f} | {sent / elapsed:.0f} | {len(res['errors'])} | {cpu_pct:.0f} % |"
                   f" {label} | {percentile(v, 0.5):.1f} | {percentile(v, 0.95):.1f} |"
                   f" {percentile(v, 0.99):.1f} | {max(v):.1f} |")  # fmt: skip
    return out


async def main(args: argparse.Namespace) -> None:
    from aiohttp import web

    from controller import keys
    from controller.app import build_app
    from controller.config import ControllerConfig
    from controller.storage import api_keys, db
    from shared.devstack import create_database, embedded_stack

    with tempfile.TemporaryDirectory(prefix="pf-bench-api-") as tmp, embedded_stack(Path(tmp)) as stack:
        dsn = stack.postgres.dsn("bench")
        await create_database(stack.postgres.dsn(), "bench")
        await db.migrate(dsn)
        t = time.perf_counter()
        await seed(dsn, args.monitors)
        seeded = time.perf_counter() - t
        cfg = ControllerConfig(database_url=dsn, nats_url=stack.nats.url, port=0)
        app = build_app(cfg)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        key, _ = await api_keys.create(app[keys.POOL], "bench", ["monitors:read"], rate_limit=10_000_000)
        rows = []
        for rate in args.rates:
            cpu0 = cpu_seconds(os.getpid())
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.api_latency", "--load", base, "--key", key,
                "--rates", str(rate), "--seconds", str(args.seconds), "--monitors", str(args.monitors),
                stdout=subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            res = json.loads(out)
            cpu = cpu_seconds(os.getpid()) - cpu0
            rows += _rows(rate, res, cpu)
        await runner.cleanup()
    body = f"""
{args.monitors:,} monitors stored (seeded with one INSERT ... SELECT generate_series in {seeded:.1f} s).
Load from a second process, open loop for {args.seconds:.0f} s per offered rate: half
`GET /api/v1/monitors/{{id}}` (random id), half `GET {LIST_PATH}` (a filtered list of 100).
One controller process; embedded PostgreSQL 16 and NATS on the same 2 cores (fsync off).

| offered req/s | achieved req/s | errors | controller CPU | request | p50 ms | p95 ms | p99 ms | max ms |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Goal: p99 under 20 ms at 500 requests/s. Run: `.venv/bin/python -m bench.api_latency`.
"""
    print(body)
    if not args.no_record:
        record("API latency (issue 5)", body)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")], default=[100.0, 150.0, 500.0])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--monitors", type=int, default=100_000)
    p.add_argument("--load")
    p.add_argument("--key")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    if a.load:
        result = asyncio.run(load(a.load, a.key, a.rates[0], a.seconds, a.monitors))
        print(json.dumps(result))
    else:
        asyncio.run(main(a))
