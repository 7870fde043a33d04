"""API latency with 100,000 monitors stored: p50/p99 of GET /monitors/{id} and of a
filtered list of 100, at a fixed request rate from a second process (open loop: requests
are sent on schedule whether or not earlier ones have answered).

    .venv/bin/python -m bench.api_latency [--rates 100,250,500] [--seconds 15] [--monitors 100000]
        [--controllers 1,2] [--client raw|aiohttp] [--no-uvloop] [--no-sequential] [--no-record]

The first controller runs in this process on the embedded PostgreSQL and NATS, a second
one (with --controllers 2) in a child process (`--serve`) on the same database and NATS;
the load comes from `python -m bench.api_latency --load ...` in another child process,
spread round-robin over the controllers. Results go to bench/RESULTS.md under
"API latency (issue 5)".

Every process runs on uvloop, as `probefleet controller` does (controller/cli.py); the load
comes from a minimal HTTP/1.1 client (`load_raw`, about a third of the CPU per request of
aiohttp's client, which shares the two cores with what is measured). `--no-uvloop --client
aiohttp` measures as the figures recorded before 2026-12-06 were.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.common import cpu_seconds, percentile, record, tree_cpu

LIST_PATH = "/api/v1/monitors?type=http&tag=shop&status=pending&limit=100"
COLUMNS = (
    "controllers",
    "offered req/s",
    "achieved req/s",
    "errors",
    "controllers CPU",
    "PostgreSQL CPU",
    "load generator CPU",
    "CPU ms per request (controllers / PostgreSQL / load)",
    "request",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
)
HEADER = "| " + " | ".join(COLUMNS) + " |"


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _drive(
    one: Callable[[str, str], Awaitable[None]],
    out: dict[str, list[float]],
    rnd: random.Random,
    rate: float,
    seconds: float,
    max_id: int,
) -> None:
    """The open loop both clients run: a warm-up, then `rate` requests a second for
    `seconds`, alternating single gets and filtered lists; elapsed time and this process's
    CPU into `out`."""
    for _ in range(50):  # warm up connections and caches
        await one("get", f"/api/v1/monitors/{rnd.randint(1, max_id)}")
    out["get"].clear()
    cpu0 = _cpu_self()
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
    out["cpu"] = [_cpu_self() - cpu0]


async def load(
    bases: list[str], key: str, rate: float, seconds: float, max_id: int
) -> dict[str, list[float]]:
    """Open-loop load: half single gets, half filtered lists, round-robin over the
    controllers; latencies in ms per kind."""
    out: dict[str, list[float]] = {"get": [], "list": [], "errors": []}
    rnd = random.Random(1)
    conn = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with aiohttp.ClientSession(headers=headers, connector=conn) as s:

        async def one(kind: str, path: str) -> None:
            nonlocal sent
            # Both kinds alternate, so pairs go round-robin: each controller gets half of each.
            base = bases[(sent // 2) % len(bases)]
            sent += 1
            t = time.perf_counter()
            try:
                async with s.get(base + path) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            out[kind if ok else "errors"].append((time.perf_counter() - t) * 1000)

        await _drive(one, out, rnd, rate, seconds, max_id)
    return out


class _Conn:
    """One kept-alive HTTP/1.1 connection of the raw load generator."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> int:
        """Send one GET, read the whole answer; its status."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.lower().find(b"\ncontent-length:")
        if start < 0:
            raise ConnectionError("answer without Content-Length")
        end = head.index(b"\r", start + 1)
        await self.reader.readexactly(int(head[start + 16 : end]))
        return status


async def load_raw(
    bases: list[str], key: str, rate: float, seconds: float, max_id: int
) -> dict[str, list[float]]:
    """The same open-loop load as `load`, from a minimal HTTP/1.1 client on asyncio streams
    (uvloop): kept-alive connections, one request at a time on each, a new connection only
    when none is idle. aiohttp's client costs several times the CPU per request, taken from
    the same two cores as the controller and PostgreSQL."""
    out: dict[str, list[float]] = {"get": [], "list": [], "errors": []}
    rnd = random.Random(1)
    idle: dict[str, list[_Conn]] = {b: [] for b in bases}
    slots = asyncio.Semaphore(256)  # at most as many connections as `load` lets aiohttp open
    sent = 0

    async def one(kind: str, path: str) -> None:
        nonlocal sent
        base = bases[(sent // 2) % len(bases)]
        sent += 1
        host = base.split("//", 1)[1]
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n").encode()
        t = time.perf_counter()
        ok = False
        async with slots:
            conn = idle[base].pop() if idle[base] else None
            try:
                if conn is None:
                    h, port = host.rsplit(":", 1)
                    conn = _Conn(*await asyncio.open_connection(h, int(port)))
                ok = await conn.get(request) == 200
                idle[base].append(conn)
            except (
                OSError,
                ConnectionError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ):
                if conn is not None:
                    conn.writer.close()
        out[kind if ok else "errors"].append((time.perf_counter() - t) * 1000)

    await _drive(one, out, rnd, rate, seconds, max_id)
    for conns in idle.values():
        for c in conns:
            c.writer.close()
    return out


def _uvloop() -> None:
    """Run on uvloop, as `probefleet controller` does (controller/cli.py)."""
    import uvloop

    uvloop.install()


# One request at a time, for the cost of each request style alone (no queueing).
SEQUENTIAL = (
    ("GET /monitors/{id}", "/api/v1/monitors/{id}"),
    ("filtered list of 100, cursor style", LIST_PATH),
    ("filtered list of 100, page style (with total count)", LIST_PATH + "&page=3"),
    ("unfiltered list of 100, page style, page 3", "/api/v1/monitors?limit=100&page=3"),
    ("unfiltered list of 100, page style, page 500 (offset 49,900)", "/api/v1/monitors?limit=100&page=500"),
    ("search list (`search=1234`, 20 matches)", "/api/v1/monitors?search=1234&limit=100"),
)


async def sequential(base: str, key: str, count: int, max_id: int) -> dict[str, list[float]]:
    """Latencies in ms of `count` requests of each SEQUENTIAL style, one at a time."""
    out: dict[str, list[float]] = {}
    rnd = random.Random(2)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        for label, path in SEQUENTIAL:
            times = out[label] = []
            for i in range(count + 10):
                t = time.perf_counter()
                async with s.get(base + path.replace("{id}", str(rnd.randint(1, max_id)))) as r:
                    await r.read()
                    assert r.status == 200, (path, r.status)
                if i >= 10:  # the first ones warm up
                    times.append((time.perf_counter() - t) * 1000)
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


async def seed_uptimes(dsn: str) -> None:
    """A cached uptime row for every monitor, as the rollup loop keeps them, so reads
    join real rows (the percentages are computed per response)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO monitor_uptimes SELECT id, 1430 - id % 7, 1440, 10000 - id % 11, 10080,"
            " 43000 - id % 13, 43200, now(), last_round FROM monitors"
        )
        await conn.execute("ANALYZE monitor_uptimes")
    finally:
        await conn.close()


def _rows(rate: float, n: int, res: dict[str, list[float]], cpu: dict[str, float]) -> list[str]:
    elapsed = res["elapsed"][0]
    sent = len(res["get"]) + len(res["list"]) + len(res["errors"])
    pct = {k: f"{v / elapsed * 100:.0f} %" for k, v in {**cpu, "load": res["cpu"][0]}.items()}
    per = " / ".join(
        f"{v / max(sent, 1) * 1000:.2f}" for v in (cpu["controllers"], cpu["postgres"], res["cpu"][0])
    )
    out = []
    for kind, label in (("get", "GET /monitors/{id}"), ("list", "filtered list of 100")):
        v = res[kind]
        out.append(
            f"| {n} | {rate:.0f} | {sent / elapsed:.0f} | {len(res['errors'])} |"
            f" {pct['controllers']} | {pct['postgres']} | {pct['load']} | {per} |"
            f" {label} | {percentile(v, 0.5):.1f} | {percentile(v, 0.95):.1f} |"
            f" {percentile(v, 0.99):.1f} | {max(v):.1f} |"
        )
    return out


async def serve(dsn: str, nats_url: str) -> None:
    """A controller in this process until stdin closes; prints its base URL."""
    from aiohttp import web

    from probefleet.controller.app import build_app
    from probefleet.controller.config import ControllerConfig

    runner = web.AppRunner(
        build_app(ControllerConfig(database_url=dsn, nats_url=nats_url, port=0)),
        handle_signals=False,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


async def main(args: argparse.Namespace) -> None:
    from aiohttp import web

    from probefleet.controller import keys
    from probefleet.controller.app import build_app
    from probefleet.controller.config import ControllerConfig
    from probefleet.controller.storage import api_keys, db
    from probefleet.shared.devstack import create_database, embedded_stack

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pf-bench-api-") as tmp, embedded_stack(Path(tmp)) as stack:
        dsn = stack.postgres.dsn("bench")
        await create_database(stack.postgres.dsn(), "bench")
        await db.migrate(dsn)
        t = time.perf_counter()
        await seed(dsn, args.monitors)
        await seed_uptimes(dsn)
        seeded = time.perf_counter() - t
        cfg = ControllerConfig(database_url=dsn, nats_url=stack.nats.url, port=0)
        app = build_app(cfg)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bases = [f"http://127.0.0.1:{runner.addresses[0][1]}"]
        key, _ = await api_keys.create(app[keys.POOL], "bench", ["monitors:read"], rate_limit=10_000_000)
        pg_pid = stack.postgres.proc.pid if stack.postgres.proc else 0
        seq_rows = []
        if not args.no_sequential:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.api_latency",
                "--sequential",
                bases[0],
                "--key",
                key,
                "--monitors",
                str(args.monitors),
                stdout=subprocess.PIPE,
            )
            seq = json.loads((await proc.communicate())[0])
            seq_rows = [
                f"| {label} | {percentile(v, 0.5):.1f} | {percentile(v, 0.99):.1f} |"
                for label, v in seq.items()
            ]
        rows = []
        loop_flag = ["--no-uvloop"] if args.no_uvloop else []
        for n in args.controllers:
            extra = []
            for _ in range(n - 1):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.api_latency",
                    "--serve",
                    dsn,
                    "--nats",
                    stack.nats.url,
                    *loop_flag,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                assert proc.stdout is not None
                bases.append((await proc.stdout.readline()).decode().strip())
                extra.append(proc)
            if extra:
                # A controller joining makes the others reload their schedule (ownership
                # moves): let that settle, it is not what this measures.
                await asyncio.sleep(3 * cfg.controller_heartbeat_interval + 2)
            for rate in args.rates:
                pids = [os.getpid(), *(p.pid for p in extra)]
                c0, p0 = sum(cpu_seconds(p) for p in pids), tree_cpu(pg_pid)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.api_latency",
                    "--load",
                    ",".join(bases),
                    "--key",
                    key,
                    "--rates",
                    str(rate),
                    "--seconds",
                    str(args.seconds),
                    "--monitors",
                    str(args.monitors),
                    "--client",
                    args.client,
                    *loop_flag,
                    stdout=subprocess.PIPE,
                )
                out, _ = await proc.communicate()
                res = json.loads(out)
                cpu = {
                    "controllers": sum(cpu_seconds(p) for p in pids) - c0,
                    "postgres": tree_cpu(pg_pid) - p0,
                }
                rows += _rows(rate, n, res, cpu)
            for proc in extra:
                assert proc.stdin is not None
                proc.stdin.close()
                await proc.wait()
            bases = bases[:1]
        await runner.cleanup()
    body = f"""
{args.monitors:,} monitors stored (seeded with one INSERT ... SELECT generate_series in {seeded:.1f} s,
with a cached uptime row each, as the rollup loop keeps them).
Load from a separate process, open loop for {args.seconds:.0f} s per offered rate: half
`GET /api/v1/monitors/{{id}}` (random id), half `GET {LIST_PATH}` (a filtered list of 100,
cursor style), round-robin over the controller processes (one API key, cached by each
controller). Event loop: {"asyncio" if args.no_uvloop else "uvloop"}; load generator:
{"aiohttp's client" if args.client == "aiohttp" else "a minimal HTTP/1.1 client on asyncio streams"}.
Controllers, the load generator, embedded PostgreSQL 16 (fsync off) and NATS
share the same 2 cores. CPU columns are percent of one core over the run. Load average
before the run: {load0:.2f}.

{HEADER}
{"|---" * len(COLUMNS)}|
{chr(10).join(rows)}

Goals: p99 under 20 ms at 500 requests/s (issue 5); p99 under 10 ms at 1,000 requests/s
(issue 24). Run: `.venv/bin/python -m bench.api_latency`.
"""
    if seq_rows:
        body += f"""
Each request style alone (one controller, 200 requests one at a time from the load
process, after the same seeding; page style adds a `count(*)` with the filters):

| request | p50 ms | p99 ms |
|---|---|---|
{chr(10).join(seq_rows)}
"""
    print(body)
    if not args.no_record:
        record("API latency (issue 5)", body)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")], default=[100.0, 250.0, 500.0])
    p.add_argument("--controllers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--monitors", type=int, default=100_000)
    p.add_argument("--load")
    p.add_argument("--serve")
    p.add_argument("--sequential")
    p.add_argument("--nats")
    p.add_argument("--key")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--no-sequential", action="store_true", help="skip the one-at-a-time table")
    p.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator: a minimal HTTP/1.1 client (default) or aiohttp's (as recorded before)",
    )
    p.add_argument(
        "--no-uvloop", action="store_true", help="controllers on asyncio's own loop (as recorded before)"
    )
    a = p.parse_args()
    if not a.no_uvloop:
        _uvloop()
    if a.load:
        gen = load_raw if a.client == "raw" else load
        result = asyncio.run(gen(a.load.split(","), a.key, a.rates[0], a.seconds, a.monitors))
        print(json.dumps(result))
    elif a.sequential:
        print(json.dumps(asyncio.run(sequential(a.sequential, a.key, 200, a.monitors))))
    elif a.serve:
        asyncio.run(serve(a.serve, a.nats))
    else:
        asyncio.run(main(a))
