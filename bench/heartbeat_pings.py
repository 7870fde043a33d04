"""Heartbeat pings per second and their latency, through the real controller; beside it,
in the same run, Healthchecks' ping endpoint under the same load (`--peer healthchecks`).

    .venv/bin/python -m bench.heartbeat_pings [--seconds 20] [--connections 64] [--heartbeats 100]
        [--peer healthchecks]

Embedded PostgreSQL runs with fsync and synchronous_commit ON, so an acknowledged ping
is on disk. The controller (`probefleet controller serve`, uvloop) is pinned to core 0;
the load generator, wrk from Debian's package (installed with apt-get when missing),
runs in its own process on core 1 with keep-alive connections and picks a random
heartbeat and signal (success GET, success POST with a body, /start?rid, /0) per
request. PostgreSQL and NATS are not pinned. After the run, the stored ping rows are
counted and compared with the 200 answers wrk saw. CPU is counted for every process of
the system (the controller, nats-server, PostgreSQL's postmaster and all its backends,
live or reaped: bench.common.tree_cpu), and pings per CPU-second are the 200 answers over
that sum. A CPU calibration figure (bench.common.calibration, a fixed pure-Python loop) is
printed and recorded with the run: absolute rates differ about 2x between machines of one
kind, ratios do not.

`--peer healthchecks` then runs Healthchecks (bench/healthchecks.py, installed outside the
repository under $PROBEFLEET_HEALTHCHECKS_DIR) with the same wrk load, mix, connections and
windows against its own ping URLs (GET /ping/<uuid>, POST with the body, /start?rid=<uuid>,
/0), gunicorn pinned to core 0 as the controller is, on its own durable PostgreSQL, and
reports the ratio of pings per CPU-second. Results go to bench/RESULTS.md, section
"Heartbeat pings (issue 6)".
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import click

from bench import healthchecks as hc_peer
from bench.common import calibration, children_map, load_average, memory_kib, process_tree, record, tree_cpu
from probefleet.shared import devstack

SUT_CORE, LOAD_CORE = "0", "1"
GOAL_RPS, GOAL_P99_MS = 5000, 50.0
GOAL_PEER_RATIO, GOAL_PEER_P99_MS = 20.0, 20.0  # issue 24: >= 20x Healthchecks per CPU-second
WARM_UP_S = 3
PEERS = ("healthchecks",)

# %(paths)s: the ping URLs; %(rid)s: a Lua expression for a run id (Healthchecks takes UUIDs only).
LUA = """
local paths = {%(paths)s}
math.randomseed(os.time())
request = function()
  local p = paths[math.random(#paths)]
  local r = math.random(10)
  if r <= 5 then return wrk.format("GET", p) end
  if r <= 8 then return wrk.format("POST", p, nil, "backup ok: 1.2 GB") end
  if r == 9 then return wrk.format("POST", p .. "/start?rid=" .. %(rid)s) end
  return wrk.format("POST", p .. "/0")
end
response = function(status, headers, body)
  if status ~= 200 then errors_seen = (errors_seen or 0) + 1 end
end
"""
RID_PROBEFLEET = '"run-" .. math.random(1000)'
RID_HEALTHCHECKS = 'string.format("00000000-0000-4000-8000-%012d", math.random(1000))'


def lua(paths: list[str], rid: str) -> str:
    return LUA % {"paths": ", ".join(f'"{p}"' for p in paths), "rid": rid}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    """Until `url` answers 2xx; the server's migrations take a while on a busy machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.2)
    # The log is in the run's temporary folder, removed on the way out: its end goes here.
    what = f"exited ({proc.returncode})" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
    raise RuntimeError(f"the controller {what}; its log ends:\n{log.read_text(errors='replace')[-3000:]}")


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


def system_cpu(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of every process of a system, by component: each root and all
    its descendants, live or reaped (bench.common.tree_cpu)."""
    return {name: sum(tree_cpu(pid) for pid in pids) for name, pids in roots.items()}


def system_memory(roots: dict[str, list[int]]) -> tuple[dict[str, tuple[int, int]], int]:
    """RSS and PSS KiB by component (each root's live tree), and how many processes."""
    children = children_map()
    trees = {name: [q for pid in pids for q in process_tree(pid, children)] for name, pids in roots.items()}
    return {name: memory_kib(pids) for name, pids in trees.items()}, sum(len(t) for t in trees.values())


def settled(stored: Callable[[], int], timeout: float = 60, interval: float = 0.5) -> int:
    """The stored pings once the count stops moving: the requests a server still held when
    wrk stopped (up to one per connection) are finished, so a window counts each ping it
    started, and the CPU it took, once."""
    last, deadline = stored(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = stored()
        if now == last:
            return now
        last = now
    raise RuntimeError(f"stored pings still moving after {timeout:.0f} s with no load")


def measure(
    wrk: str,
    script: Path,
    base: str,
    seconds: int,
    connections: int,
    roots: dict[str, list[int]],
    stored: Callable[[], int],
) -> dict[str, Any]:
    """A warm-up, then one wrk window: its latency and rate, the pings stored in it, and the
    CPU of every process of the system over it."""
    cmd = ["taskset", "-c", LOAD_CORE, wrk, "-t1", f"-c{connections}", "--latency", "--timeout", "10s"]
    cmd += ["-s", str(script)]
    subprocess.run([*cmd, f"-d{WARM_UP_S}s", base], check=True, capture_output=True)
    before = settled(stored)  # the warm-up's requests still in the server are done
    cpu0, t0 = system_cpu(roots), time.monotonic()
    out = subprocess.run([*cmd, f"-d{seconds}s", base], check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - t0  # the window, for the per-second figures
    memory, processes = system_memory(roots)
    pings = settled(stored) - before  # and the window's, with the CPU they took
    cpu1 = system_cpu(roots)
    res: dict[str, Any] = dict(parse_wrk(out))
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    res.update(
        stored=pings,
        seconds=seconds,
        elapsed=elapsed,
        cpu=cpu,
        cpu_total=sum(cpu.values()),
        # The pings the system stored over the CPU all its processes spent meanwhile.
        per_cpu_s=pings / max(sum(cpu.values()), 1e-9),
        memory_kib=memory,
        processes=processes,
        wrk=out,
    )
    return res


def run(seconds: int, connections: int, heartbeats: int, workdir: Path) -> dict[str, Any]:
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
            "PROBEFLEET_NATS_INSECURE": "1",  # the bench's own NATS, on loopback, as bench.e2e's
        }
        log = workdir / "controller.log"
        with log.open("wb") as out:
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
                stdout=out,
                stderr=out,
            )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/v1/health", controller, log)
        tokens = asyncio.run(seed(base, dsn, heartbeats))
        script = workdir / "pings.lua"
        script.write_text(lua([f"/api/v1/heartbeat/{t}" for t in tokens], RID_PROBEFLEET))
        assert pg.proc is not None and nats.proc is not None
        roots = {"controller": [controller.pid], "nats": [nats.proc.pid], "postgres": [pg.proc.pid]}
        res = measure(wrk, script, base, seconds, connections, roots, lambda: asyncio.run(count_pings(dsn)))
        res["code"] = "probefleet"
        print(res["wrk"])
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


def run_healthchecks(
    seconds: int, connections: int, checks: int, workdir: Path, root: Path
) -> dict[str, Any]:
    """The same load on Healthchecks (bench/healthchecks.py starts and stops it)."""
    wrk = ensure_wrk()

    def drive(
        base: str, paths: list[str], roots: dict[str, list[int]], stored: Callable[[], int]
    ) -> dict[str, Any]:
        script = workdir / "healthchecks.lua"
        script.write_text(lua(paths, RID_HEALTHCHECKS))
        res = measure(wrk, script, base, seconds, connections, roots, stored)
        print(res["wrk"])
        return res

    return hc_peer.run(root, checks, SUT_CORE, drive)


def _cpu_cell(res: dict[str, Any]) -> str:
    seconds = res["elapsed"]
    parts = ", ".join(f"{k} {v / seconds:.2f}" for k, v in res["cpu"].items())
    return f"{res['cpu_total'] / seconds:.2f} ({parts})"


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "system",
        "pings/s",
        "p50 ms",
        "p75 ms",
        "p90 ms",
        "p99 ms",
        "requests",
        "non-200",
        "socket errors",
        "pings stored",
        "CPU s per s, every process (by component)",
        "pings per CPU-second",
        "RSS MiB (PSS), processes",
    ]
    rows = [header, ["---"] * len(header)]
    for res in results:
        rss = sum(v[0] for v in res["memory_kib"].values()) / 1024
        pss = sum(v[1] for v in res["memory_kib"].values()) / 1024
        rows.append(
            [
                res["code"],
                f"{res['rps']:,.0f}",
                *(f"{res.get(q, 0):.2f}" for q in ("p50", "p75", "p90", "p99")),
                *(f"{res[k]:,.0f}" for k in ("requests", "non2xx", "socket_errors", "stored")),
                _cpu_cell(res),
                f"{res['per_cpu_s']:,.0f}",
                f"{rss:.0f} ({pss:.0f}), {res['processes']}",
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--heartbeats", type=int, default=100)
    parser.add_argument(
        "--peer",
        choices=PEERS,
        help="also run Healthchecks' ping endpoint with the same load in the same run"
        f" (installed outside the repository, ${hc_peer.ENV}; see bench/healthchecks.py)",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    for name in ("seconds", "connections", "heartbeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.peer == "healthchecks":
        try:
            args.peer_root = hc_peer.hc_dir()  # before any run: fail fast
        except click.UsageError as e:
            parser.error(e.message)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    calib, load = calibration(), load_average()
    results = []
    with tempfile.TemporaryDirectory(prefix="pf-hb-bench-") as tmp:
        workdir = devstack.reachable_dir(Path(tmp))
        results.append(run(args.seconds, args.connections, args.heartbeats, workdir))
        if args.peer == "healthchecks":
            results.append(
                run_healthchecks(args.seconds, args.connections, args.heartbeats, workdir, args.peer_root)
            )
    ours = results[0]
    for res in results:
        print({k: v for k, v in res.items() if k != "wrk"})
    met = ours["rps"] >= GOAL_RPS and ours.get("p99", 1e9) < GOAL_P99_MS
    command = (
        f".venv/bin/python -m bench.heartbeat_pings --seconds {args.seconds}"
        f" --connections {args.connections} --heartbeats {args.heartbeats}"
        + (f" --peer {args.peer}" if args.peer else "")
    )
    verdict = "met" if met else "not met"
    peer_text = ""
    if len(results) > 1:
        peer = results[1]
        ratio = ours["per_cpu_s"] / max(peer["per_cpu_s"], 1e-9)
        peer_met = ratio >= GOAL_PEER_RATIO and ours.get("p99", 1e9) < GOAL_PEER_P99_MS
        peer_text = f"""
{peer["code"]}, side by side in the same run (bench/healthchecks.py; how to provide it:
docs/architecture/scale.md, "Heartbeat pings beside Healthchecks"): its own ping endpoint
served by gunicorn ({hc_peer.WORKERS} workers of {hc_peer.THREADS} threads, pinned to core
{SUT_CORE} as the controller is), `manage.py sendalerts` beside it, its own PostgreSQL (durable, as
probefleet's), persistent database connections, {args.heartbeats} checks, the same wrk
load against /ping/<uuid> (GET, POST with the body, /start?rid=<uuid>, /0). Every process
of each system counted from /proc.

probefleet / Healthchecks, pings per CPU-second: **{ratio:.1f}x** (goal
{GOAL_PEER_RATIO:.0f}x with probefleet's p99 under {GOAL_PEER_P99_MS:.0f} ms:
**{"met" if peer_met else "not met"}**).
"""
    body = f"""
Command: `{command}`

{args.heartbeats} heartbeats; wrk {args.connections} keep-alive connections, 1 thread, pinned to
core {LOAD_CORE}; the controller (one process, uvloop) pinned to core {SUT_CORE}; PostgreSQL with fsync
and synchronous_commit on (a 200 means the ping's transaction committed) and NATS unpinned.
Mix: 50 % GET success, 30 % POST success with a body, 10 % /start?rid, 10 % /0. Measured
{args.seconds} s after a {WARM_UP_S} s warm-up. CPU is that of every process of the system
(PostgreSQL's postmaster with all its backends, live or reaped) over the window.

{table(results)}

"Pings stored": the pings each system stored from the window's requests (the count is read
once it stops moving, so requests in flight when wrk stopped are in, with their CPU), over
the CPU of every process for "pings per CPU-second". Load average when the
run started: {load} (the 2 cores are shared with other work). CPU calibration: a fixed
pure-Python loop (bench.common.calibration) takes {calib:.1f} ms on this machine; quote
ratios between runs on different machines.

Goal ({GOAL_RPS:,} pings/s sustained, p99 under {GOAL_P99_MS:.0f} ms): **{verdict}**.
{peer_text}"""
    if not args.no_record:
        record("Heartbeat pings (issue 6)", body)
    print(body)


if __name__ == "__main__":
    main()
