"""api_flow checks of 5 steps per second on one core.

    .venv/bin/python -m bench.api_flow [--seconds 10] [--concurrency 32] [--flows N] [--no-record]

Core 0 runs the checker (this process: `api_flow.check` on the http checker's keep-alive
session, with a variable extracted in step 1 and used in the others, assertions on each
step); core 1 runs the keep-alive target of bench/probe_throughput.py. `--flows N` stops
after N flows instead of after `--seconds` (a quick check that it works). Results go to
bench/RESULTS.md, section "API flow checks (issue 23)".
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

from bench.common import cpu_seconds, machine, percentile, record

SUT_CORE, AUX_CORE = 0, 1
STEPS = 5


def _spec(base: str) -> object:
    from probefleet.shared.wire import ApiFlowSpec, Extract, FlowStep

    first = FlowStep(
        name="start",
        url=f"{base}/start",
        expected_status=[200],
        extract=[Extract(name="word", source="regex", path=r"(o\w*)")],
    )
    rest = [
        FlowStep(
            name=f"step{i}", url=f"{base}/step/{i}?w={{{{word}}}}", expected_content="ok", max_latency_ms=5000
        )
        for i in range(2, STEPS + 1)
    ]
    return ApiFlowSpec(steps=[first, *rest])


def _start_target(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    port_file = Path(folder) / "port"
    code = (
        "import asyncio, sys; from bench.probe_throughput import _serve_target;"
        " asyncio.run(_serve_target(sys.argv[1]))"
    )
    proc = subprocess.Popen(["taskset", "-c", str(AUX_CORE), sys.executable, "-c", code, str(port_file)])
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the target did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


async def _drive(base: str, seconds: float, concurrency: int, flows: int | None) -> dict[str, float]:
    from probefleet.probe.checkers import api_flow, http
    from probefleet.shared.wire import Status

    spec = _spec(base)
    latencies: list[float] = []
    failures = 0
    done = 0
    # Warm-up: the session's connections.
    for _ in range(concurrency):
        await api_flow.check(spec, timeout=10.0, source_address=None)  # type: ignore[arg-type]
    stop_at = time.perf_counter() + seconds
    cpu_before = cpu_seconds(os.getpid())
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal failures, done
        while (flows is None and time.perf_counter() < stop_at) or (flows is not None and done < flows):
            done += 1
            t0 = time.perf_counter()
            out = await api_flow.check(spec, timeout=10.0, source_address=None)  # type: ignore[arg-type]
            latencies.append((time.perf_counter() - t0) * 1000)
            if out.status != Status.OK:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(os.getpid()) - cpu_before
    await http.close_sessions()
    return {
        "flows": len(latencies),
        "failures": failures,
        "elapsed": elapsed,
        "cpu": cpu,
        "per_s": len(latencies) / elapsed,
        "per_cpu_s": len(latencies) / cpu if cpu else float("nan"),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--flows", type=int, default=None, help="stop after this many flows")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {SUT_CORE})
    with tempfile.TemporaryDirectory() as folder:
        target, port = _start_target(folder)
        try:
            r = asyncio.run(_drive(f"http://127.0.0.1:{port}", args.seconds, args.concurrency, args.flows))
        finally:
            target.terminate()
            target.wait(10)
    command = (
        f".venv/bin/python -m bench.api_flow --seconds {args.seconds:g} --concurrency {args.concurrency}"
    )
    row = (
        f"| {r['per_s']:,.0f} | {r['per_cpu_s']:,.0f} | {r['per_s'] * STEPS:,.0f} | {r['p50']:.2f}"
        f" | {r['p99']:.2f} | {r['flows']:,.0f} | {r['failures']:.0f} |"
    )
    body = f"""Command: `{command}`
Machine: {machine()}.

{STEPS}-step api_flow checks (a regex extraction in step 1, its variable in the URL of steps
2-5, a status, body and latency assertion per step) against one local keep-alive target on
core 1; the checker pinned to core 0, {args.concurrency} flows at once.

| flows/s | flows per CPU-second | HTTP requests/s | p50 ms | p99 ms | flows | failures |
|---|---|---|---|---|---|---|
{row}
"""
    print(body)
    if not args.no_record:
        record("API flow checks (issue 23)", body)


if __name__ == "__main__":
    main()
