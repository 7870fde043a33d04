"""Heartbeat pings per second and their latency, through the real controller.

    .venv/bin/python -m bench.heartbeat_pings [--seconds 20] [--connections 64] [--heartbeats 100]

Embedded PostgreSQL runs with fsync and synchronous_commit ON, so an acknowledged ping
is on disk. The controller (`probefleet controller serve`, uvloop) is pinned to core 0;
the load generator, wrk from Debian's package (installed with apt-get when missing),
runs in its own process on core 1 with keep-alive connections and picks a random
heartbeat and signal (success GET, success POST with a body, /start?rid, /0) per
request. PostgreSQL and NATS are not pinned. After the run, the stored ping rows are
counted and compared with the 200 answers wrk saw. Results go to bench/RESULTS.md,
section "Heartbeat pings (issue 6)".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg

from bench.common import cpu_seconds, record
from probefleet.shared import devstack

SUT_CORE, LOAD_CORE = "0", "1"
GOAL_RPS, GOAL_P99_MS = 5000, 50.0

LUA = """
local paths = {%s}
local bodies = {"", "backup ok: 1.2 GB", ""}
math.randomseed(os.time())
request = function()
  local p = paths[math.random(#paths)]
  local r = math.random(10)
  if r <= 5 then return wrk.format("GET", p) end
  if r <= 8 then return wrk.format("POST", p, nil, "backup ok: 1.2 GB") end
  if r == 9 then return wrk.format("POST", p .. "/start?rid=run-" .. math.random(1000)) end
  return wrk.format("POST", p .. "/0")
end
response = function(status, headers, body)
  if status ~= 200 then errors_seen = (errors_seen or 0) + 1 end
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


async def seed(base: str, dsn: str, n: int) -> list[str]:
    """n heartbeats created through the API; their tokens."""
    import aiohttp

    from probefleet.controller.storage import api_keys, db

    pool = await db.create_pool(dsn, max_size=2)
    try:
        key, _ = await api_keys.create(pool, "bench", ["admin"])
    finally:
        await pool.close()
    tokens = []
    async with aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        for i in range(n):
            r = await api.post(
                "/api/v1/heartbeats", json={"name": f"job-{i}", "run_interval": 3600, "grace_period": 3600}
            )
            tokens.append((await r.json())["data"]["token"])
    return tokens


async def count_pings(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM heartbeat_pings")
        return n
    finally:
        await conn.close()


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    assert m, value
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * factor


def parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {}
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{q}"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert m, out
    res["requests"] = float(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    res["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = float(sum(int(x) for x in re.findall(r"\d+", m.group(1)))) if m else 0.0
    return res


def run(seconds: int, connections: int, heartbeats: int, workdir: Path) -> dict[str, float]:
    wrk = ensure_wrk()
    pg = devstack.PostgresServer(workdir / "pg", ephemeral=True, durable=True)
    nats = devstack.NatsServer(workdir / "nats")
    nats.start()
    pg.start()
    controller: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(devstack.create_database(pg.dsn(), "bench", drop=True))
        dsn = pg.dsn("bench")
        port = devstack.free_port()
        env = {
            **os.environ,
            "PROBEFLEET_DATABASE_URL": dsn,
            "PROBEFLEET_NATS_URL": nats.url,
            "PROBEFLEET_LOG_LEVEL": "WARNING",
        }
        controller = subprocess.Popen(
            [
                "taskset",
                "-c",
                SUT_CORE,
                sys.executable,
                "-m",
                "probefleet.shared.cli",
                "controller",
                "serve",
                "--port",
                str(port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/v1/health")
        tokens = asyncio.run(seed(base, dsn, heartbeats))
        script = workdir / "pings.lua"
        script.write_text(LUA % ", ".join(f'"/api/v1/heartbeat/{t}"' for t in tokens))
        cmd = ["taskset", "-c", LOAD_CORE, wrk, "-t1", f"-c{connections}", "--latency", "-s", str(script)]
        subprocess.run([*cmd, "-d3s", base], check=True, capture_output=True)  # warm-up
        before = asyncio.run(count_pings(dsn))
        cpu0 = cpu_seconds(controller.pid)
        out = subprocess.run([*cmd, f"-d{seconds}s", base], check=True, capture_output=True, text=True).stdout
        cpu = cpu_seconds(controller.pid) - cpu0
        stored = asyncio.run(count_pings(dsn)) - before
        res = parse_wrk(out)
        res.update(stored=stored, controller_cpu=cpu / seconds, seconds=seconds)
        print(out)
        return res
    finally:
        if controller is not None:
            controller.send_signal(signal.SIGTERM)
            try:
                controller.wait(20)
            except subprocess.TimeoutExpired:
                controller.kill()
        pg.stop()
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--heartbeats", type=int, default=100)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pf-hb-bench-") as tmp:
        res = run(args.seconds, args.connections, args.heartbeats, devstack.reachable_dir(Path(tmp)))
    res["load"] = load
    print(res)
    met = res["rps"] >= GOAL_RPS and res.get("p99", 1e9) < GOAL_P99_MS
    command = (
        f".venv/bin/python -m bench.heartbeat_pings --seconds {args.seconds}"
        f" --connections {args.connections} --heartbeats {args.heartbeats}"
    )
    cells = [
        f"{res['rps']:,.0f}",
        *(f"{res.get(q, 0):.2f}" for q in ("p50", "p75", "p90", "p99")),
        *(f"{res[k]:,.0f}" for k in ("requests", "non2xx", "socket_errors", "stored")),
        f"{res['controller_cpu']:.0%}",
    ]
    header = [
        "pings/s",
        "p50 ms",
        "p75 ms",
        "p90 ms",
        "p99 ms",
        "requests",
        "non-200",
        "socket errors",
        "rows stored",
        "controller CPU",
    ]
    table = "\n".join("| " + " | ".join(row) + " |" for row in (header, ["---"] * len(header), cells))
    verdict = "met" if met else "not met"
    load = res["load"]
    body = f"""
Command: `{command}`

{args.heartbeats} heartbeats; wrk {args.connections} keep-alive connections, 1 thread, pinned to
core 1; the controller (one process, uvloop) pinned to core 0; PostgreSQL with fsync and
synchronous_commit on (a 200 means the ping's transaction committed) and NATS unpinned.
Mix: 50 % GET success, 30 % POST success with a body, 10 % /start?rid, 10 % /0. Measured
{args.seconds} s after a 3 s warm-up.

{table}

"Rows stored" also counts the requests in flight when wrk stopped. Load average when the
run started: {load:.1f} (the 2 cores are shared with other work); the controller used
{res["controller_cpu"]:.0%} of core 0, the rest of a ping's cost is PostgreSQL's.

Goal ({GOAL_RPS:,} pings/s sustained, p99 under {GOAL_P99_MS:.0f} ms): **{verdict}**.
"""
    if not args.no_record:
        record("Heartbeat pings (issue 6)", body)
    print(body)


if __name__ == "__main__":
    main()
