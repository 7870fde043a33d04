"""Config as code at scale: `probefleet apply -f` of a file with 5,000 monitors (every
probe kind and heartbeats, with channels they notify), then the same file again (no
changes), `probefleet diff` of it, and an apply that changes one monitor in ten.

    .venv/bin/python -m bench.apply [--monitors 5000] [--no-record]

A controller runs in this process on the embedded PostgreSQL and NATS; each command runs
as the operator would run it, `python -m probefleet.shared.cli ...` in a child process,
so its time includes reading and checking the file. Targets (issue 18): the first apply
under 10 s, a re-apply with no changes under 3 s. Results go to bench/RESULTS.md under
"Config as code (issue 18)".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import record, tree_cpu

KINDS = ("http", "tcp", "dns", "tls", "icmp", "udp", "heartbeat")


def monitor(i: int, variant: int = 0) -> dict[str, object]:
    kind = KINDS[i % len(KINDS)]
    m: dict[str, object] = {"name": f"m{i:05d}", "tags": [f"team-{i % 20}"]}
    if kind == "heartbeat":
        return {**m, "type": "heartbeat", "run_interval": 3600 + variant, "grace_period": 300}
    m["type"] = kind
    m["notifications"] = [f"hook-{i % 5}"]
    host = f"host{i}.bench.invalid"
    if kind == "http":
        m["url"] = f"https://{host}/health?v={variant}"
    elif kind == "dns":
        m["domain"] = host
    else:
        m["host"] = host
    if kind in ("tcp", "udp"):
        m["port"] = 1000 + i % 1000
    m["check_interval"] = 60 + variant
    return m


def write(path: Path, count: int, changed_every: int = 0) -> None:
    data = {
        "channels": [
            {"name": f"hook-{k}", "kind": "webhook", "config": {"url": f"https://hooks.bench.invalid/{k}"}}
            for k in range(5)
        ],
        "monitors": [monitor(i, 1 if changed_every and i % changed_every == 0 else 0) for i in range(count)],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run(base: str, key: str, *args: str) -> tuple[float, int, str]:
    env = {**os.environ, "PROBEFLEET_URL": base, "PROBEFLEET_API_KEY": key}
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "probefleet.shared.cli", *args], env=env, capture_output=True, text=True
    )
    return time.perf_counter() - t, done.returncode, done.stdout + done.stderr


async def main(args: argparse.Namespace) -> None:
    from aiohttp import web

    from probefleet.controller import keys
    from probefleet.controller.app import build_app
    from probefleet.controller.config import ControllerConfig
    from probefleet.controller.storage import api_keys, db
    from probefleet.shared.devstack import create_database, embedded_stack

    with tempfile.TemporaryDirectory(prefix="pf-bench-apply-") as tmp, embedded_stack(Path(tmp)) as stack:
        dsn = stack.postgres.dsn("bench")
        await create_database(stack.postgres.dsn(), "bench")
        await db.migrate(dsn)
        app = build_app(ControllerConfig(database_url=dsn, nats_url=stack.nats.url, port=0))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        key, _ = await api_keys.create(app[keys.POOL], "bench", ["admin"], rate_limit=10_000_000)
        pg_pid = stack.postgres.proc.pid if stack.postgres.proc else 0
        path = Path(tmp) / "monitors.yaml"
        write(path, args.monitors)
        changed = Path(tmp) / "changed.yaml"
        write(changed, args.monitors, changed_every=10)
        rows = []
        steps = [
            ("first apply (creates every monitor)", ["apply", "-f", str(path), "--owner", "bench"], 0),
            ("re-apply, no changes", ["apply", "-f", str(path), "--owner", "bench"], 0),
            ("diff, no changes", ["diff", "-f", str(path), "--owner", "bench"], 0),
            ("apply changing one monitor in ten", ["apply", "-f", str(changed), "--owner", "bench"], 0),
        ]
        for title, command, want in steps:
            pg0 = tree_cpu(pg_pid) if pg_pid else 0.0
            seconds, code, output = await asyncio.to_thread(run, base, key, *command)
            pg = (tree_cpu(pg_pid) if pg_pid else 0.0) - pg0
            if code != want:
                raise SystemExit(f"{title}: exit {code}\n{output}")
            plan = next((line for line in output.splitlines() if line.startswith("Plan:")), "")
            rows.append(f"| {title} | {seconds:.2f} | {pg:.2f} | {plan.removeprefix('Plan: ')} |")
            print(rows[-1], flush=True)
        await runner.cleanup()
    body = f"""`python -m bench.apply --monitors {args.monitors}`: a file of {args.monitors} monitors
({", ".join(KINDS)}, round robin; every probe monitor notifies one of 5 webhook channels),
applied with `probefleet apply -f` as a child process against one controller on the
embedded PostgreSQL. Targets: first apply under 10 s, re-apply with no changes under 3 s.

| step | wall s | PostgreSQL CPU s | plan |
|---|---|---|---|
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_record:
        record("Config as code (issue 18)", body)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--monitors", type=int, default=5000)
    p.add_argument("--no-record", action="store_true")
    asyncio.run(main(p.parse_args()))
