"""HTTP checks per second of one probe process on one core, beside blackbox_exporter.

    .venv/bin/python -m bench.probe_throughput [--seconds 10] [--concurrency 64]
    .venv/bin/python -m bench.probe_throughput --probe-only --runs 5 --seconds 5

Core 0 runs the system under test (the probe, then blackbox_exporter with
GOMAXPROCS=1); core 1 runs the keep-alive target and, for blackbox_exporter, the
client that drives its /probe endpoint with the same concurrency. The probe drives
itself: `Agent.handle_job` plus msgpack encoding of each result, i.e. everything but
the NATS round trip. Then: peak RSS of a probe holding 5,000 checks in flight.
Results go to bench/RESULTS.md, section "Probe throughput (issue 3)", with a CPU
calibration figure (bench.common.calibration): absolute rates differ about 2x between
machines of one kind, the ratio to blackbox_exporter in one run does not.

--probe-only runs the probe alone `--runs` times (no blackbox_exporter, no memory run,
nothing recorded) and prints each run's CPU microseconds per check and their median: the
A/B of a change to the probe's check path, run before and after on the same machine.

--probe-only --nats-rate 50 runs the whole agent instead (`Agent.start`): a nats-server
with the streams, and a dispatcher on core 1 that sends jobs as the controller does with
its 1 s lookahead (every 0.5 s, one message of the jobs due 0.5-1 s on, each due at its own
evenly spread time; 50 checks a second is what each probe of bench/e2e.py's 1,000 monitors
x 20 s x 3 regions gets). It prints the probe process's CPU microseconds per check (all its
threads, from /proc, after a 3 s warm-up) and the results per message. At such rates the
event loop's wake-ups, not the check path, are most of a probe's CPU per check
(docs/architecture/probe.md).

    .venv/bin/python -m bench.probe_throughput --probe-only --nats-rate 50 --runs 3 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import calibration, cpu_seconds, load_average, machine, percentile, record

SUT_CORE, AUX_CORE = "0", "1"
BLACKBOX = "prometheus-blackbox-exporter"
BLACKBOX_CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
"""

# ---------------------------------------------------------------- the target


class _Target(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 server: "ok", or after ?s=N seconds on /sleep."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1]
            delay = float(path.rsplit(b"=", 1)[1]) if path.startswith(b"/sleep") else 0.0
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
            if delay:
                asyncio.get_running_loop().call_later(delay, self._send, reply)
            else:
                self._send(reply)

    def _send(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)


async def _serve_target(port_file: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Target, "127.0.0.1", 0, backlog=8192)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


# ---------------------------------------------------------------- workers

_AGENT_WARMUP = 3.0
_LOOKAHEAD = 1.0


def _job(url: str, timeout: float) -> Any:
    from probefleet.shared.wire import CheckJob, HttpSpec

    now = time.time()
    return CheckJob(
        monitor_id=1,
        due=now,
        deadline=now + 3600,
        region="bench",
        timeout=timeout,
        spec=HttpSpec(url=url),
    )


async def _probe_throughput(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    from probefleet.probe.agent import Agent
    from probefleet.probe.checkers import http
    from probefleet.probe.config import ProbeConfig
    from probefleet.shared import wire

    agent = Agent(ProbeConfig(region="bench", concurrency=concurrency))
    job = _job(url, 5.0)
    latencies: list[float] = []
    failures = 0
    measuring = False
    stop_at = time.perf_counter() + 1.0 + seconds

    async def loop() -> None:
        nonlocal failures
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            result = await agent.handle_job(job)
            wire.encode(result)
            if measuring:
                latencies.append(time.perf_counter() - start)
                failures += result.status != "ok"

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up: connections, caches
    measuring, cpu0, t0 = True, cpu_seconds(os.getpid()), time.perf_counter()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(os.getpid()) - cpu0
    await http.close_sessions()
    return _summary(latencies, failures, wall, cpu)


async def _blackbox_driver(probe_url: str, concurrency: int, seconds: float, pid: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    failures = 0
    measuring = False
    stop_at = time.perf_counter() + 1.0 + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal failures
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.get(probe_url) as resp:
                    body = await resp.read()
                if measuring:
                    latencies.append(time.perf_counter() - start)
                    failures += b"probe_success 1" not in body

        tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)
        measuring, cpu0, t0 = True, cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return _summary(latencies, failures, wall, cpu_seconds(pid) - cpu0)


def _summary(latencies: list[float], failures: int, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "checks": len(latencies),
        "failures": failures,
        "rate": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_util": cpu / wall,
        "per_cpu_second": len(latencies) / cpu if cpu else float("nan"),
    }


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


async def _probe_memory(url: str, n: int, hold: float) -> dict[str, Any]:
    from probefleet.probe.agent import Agent
    from probefleet.probe.checkers import http
    from probefleet.probe.config import ProbeConfig

    agent = Agent(ProbeConfig(region="bench", concurrency=n, max_pending=0))
    baseline = _vm("VmRSS")
    job = _job(f"{url}/sleep?s={hold}", hold + 10)
    for _ in range(n):
        agent.submit(job)
    await asyncio.sleep(hold * 0.8)
    in_flight = agent._in_flight
    await asyncio.wait(set(agent._tasks))
    ok = sum(1 for _ in range(agent._results.qsize()) if agent._results.get_nowait().result.status == "ok")
    await http.close_sessions()
    return {"baseline_rss": baseline, "peak_rss": _vm("VmHWM"), "in_flight": in_flight, "ok": ok}


async def _dispatch(nats_url: str, url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Jobs for region "bench" at `rate` a second for `seconds`, sent ahead as the controller
    sends them: every half lookahead, one message of those due within the lookahead."""
    import nats

    from probefleet.shared import subjects, wire
    from probefleet.shared.wire import CheckJob, HttpSpec

    nc = await nats.connect(nats_url)
    start = time.time()
    due, monitor, sent = start + _LOOKAHEAD, 0, 0
    while time.time() - start < seconds:
        now = time.time()
        jobs = []
        while due < now + _LOOKAHEAD:
            monitor = monitor % 1000 + 1
            job = CheckJob(
                monitor_id=monitor,
                due=due,
                deadline=due + 20,
                region="bench",
                timeout=5.0,
                spec=HttpSpec(url=url),
                interval=20.0,
                batch_results=True,
            )
            jobs.append(wire.encode(job))
            due += 1 / rate
        await nc.publish(subjects.jobs("bench"), wire.encode_job_batch(jobs))
        sent += len(jobs)
        await asyncio.sleep(max(0.0, _LOOKAHEAD / 2 - (time.time() - now)))
    await nc.close()
    return {"sent": sent}


async def _agent_rate(nats_url: str, seconds: float) -> dict[str, Any]:
    """The whole agent on NATS for a warm-up and `seconds`: its CPU per check, results per message."""
    from probefleet.probe.agent import Agent
    from probefleet.probe.config import ProbeConfig

    agent = Agent(ProbeConfig(region="bench", nats_url=nats_url, probe_id="bench-1"))
    await agent.start()
    await asyncio.sleep(_AGENT_WARMUP)
    messages = agent.metrics.result_messages
    cpu0, checks0, msgs0 = cpu_seconds(os.getpid()), agent.checks_total, messages._value.get()
    await asyncio.sleep(seconds)
    cpu = cpu_seconds(os.getpid()) - cpu0
    checks, msgs = agent.checks_total - checks0, messages._value.get() - msgs0
    await agent.stop()
    return {"cpu": cpu, "checks": checks, "messages": msgs}


def _worker(argv: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    kind, *args = argv
    if kind == "target":
        uvloop.run(_serve_target(args[0]))
        return
    if kind == "probe":
        out = uvloop.run(_probe_throughput(args[0], int(args[1]), float(args[2])))
    elif kind == "dispatch":
        out = uvloop.run(_dispatch(args[0], args[1], float(args[2]), float(args[3])))
    elif kind == "agent":
        out = uvloop.run(_agent_rate(args[0], float(args[1])))
    elif kind == "blackbox":
        out = uvloop.run(_blackbox_driver(args[0], int(args[1]), float(args[2]), int(args[3])))
    else:
        out = uvloop.run(_probe_memory(args[0], int(args[1]), float(args[2])))
    print(json.dumps(out))


# ---------------------------------------------------------------- orchestration


def _spawn(core: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = ["taskset", "-c", core, sys.executable, "-m", "bench.probe_throughput", "--worker", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _run_worker(core: str, *args: str) -> dict[str, Any]:
    proc = _spawn(core, *args)
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed with {proc.returncode}")
    return dict(json.loads(out))


def _blackbox_binary() -> str:
    found = shutil.which(BLACKBOX)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", BLACKBOX], check=True, env=env)
    return shutil.which(BLACKBOX) or "/usr/bin/" + BLACKBOX


def _wait_port(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise SystemExit("target did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _blackbox_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def _run_blackbox(binary: str, target: str, concurrency: int, seconds: float, tmp: Path) -> dict[str, Any]:
    config = tmp / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG)
    port = _free_port()
    env = {**os.environ, "GOMAXPROCS": "1"}
    cmd = [
        "taskset",
        "-c",
        SUT_CORE,
        binary,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=error",
    ]
    exporter = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}/probe?module=http_2xx&target={target}"
        return _run_worker(AUX_CORE, "blackbox", url, str(concurrency), str(seconds), str(exporter.pid))
    finally:
        exporter.terminate()
        exporter.wait(10)


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=5000)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--probe-only", action="store_true", help="the probe alone, --runs times; no record")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--nats-rate",
        type=float,
        default=0.0,
        help="with --probe-only: the whole agent on NATS at this many checks/s",
    )
    args = parser.parse_args()
    if args.probe_only:
        _probe_only(args)
        return
    binary = _blackbox_binary()
    calib, load0 = calibration(), load_average()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        target_proc = _spawn(AUX_CORE, "target", str(tmp / "port"))
        try:
            target = f"http://127.0.0.1:{_wait_port(tmp / 'port')}"
            conc, secs = str(args.concurrency), str(args.seconds)
            probe = _run_worker(SUT_CORE, "probe", f"{target}/", conc, secs)
            blackbox = _run_blackbox(binary, f"{target}/", args.concurrency, args.seconds, tmp)
            memory = _run_worker(SUT_CORE, "memory", target, str(args.in_flight), "4")
        finally:
            target_proc.terminate()
            target_proc.wait(10)
    body = _report(args, probe, blackbox, memory, _blackbox_version(binary))
    body += (
        f"\n\nLoad average before: {load0}; after: {load_average()}. Calibration: a fixed pure-Python "
        f"loop takes {calib:.1f} ms on this machine (quote ratios between runs of different machines)."
    )
    print(body)
    if not args.no_record:
        record("Probe throughput (issue 3)", body)


def _probe_only(args: argparse.Namespace) -> None:
    """The probe's CPU per check, `args.runs` times against one target, and the median."""
    if args.nats_rate > 0:
        _agent_only(args)
        return
    calib = calibration()
    per_check: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        target_proc = _spawn(AUX_CORE, "target", str(Path(tmp_name) / "port"))
        try:
            url = f"http://127.0.0.1:{_wait_port(Path(tmp_name) / 'port')}/"
            for i in range(args.runs):
                r = _run_worker(SUT_CORE, "probe", url, str(args.concurrency), str(args.seconds))
                per_check.append(1e6 / r["per_cpu_second"])
                print(
                    f"run {i + 1}: {per_check[-1]:.1f} us CPU per check, "
                    f"{r['per_cpu_second']:,.0f} checks per CPU-second, {r['cpu_util']:.0%} of core 0, "
                    f"{r['failures']} failures",
                    flush=True,
                )
        finally:
            target_proc.terminate()
            target_proc.wait(10)
    median = percentile(per_check, 0.5)
    print(
        f"median: {median:.1f} us CPU per check ({1e6 / median:,.0f} checks per CPU-second) over "
        f"{args.runs} runs of {args.seconds:g} s; calibration loop {calib:.1f} ms; "
        f"load average {load_average()}"
    )


def _agent_only(args: argparse.Namespace) -> None:
    """--probe-only --nats-rate: the whole agent on NATS, `args.runs` times, and the median."""
    import nats

    from probefleet.shared.devstack import NatsServer
    from probefleet.shared.streams import ensure_streams

    async def streams(url: str) -> None:
        nc = await nats.connect(url)
        await ensure_streams(nc.jetstream())
        await nc.close()

    calib = calibration()
    per_check: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(tmp / "nats")
        nats_url = server.start()
        target_proc = _spawn(AUX_CORE, "target", str(tmp / "port"))
        try:
            asyncio.run(streams(nats_url))
            url = f"http://127.0.0.1:{_wait_port(tmp / 'port')}/"
            for i in range(args.runs):
                span = str(_AGENT_WARMUP + args.seconds + 1)
                dispatcher = _spawn(AUX_CORE, "dispatch", nats_url, url, str(args.nats_rate), span)
                r = _run_worker(SUT_CORE, "agent", nats_url, str(args.seconds))
                dispatcher.communicate(timeout=60)
                per_check.append(1e6 * r["cpu"] / max(r["checks"], 1))
                print(
                    f"run {i + 1}: {per_check[-1]:.0f} us CPU per check, {r['checks']} checks, "
                    f"{r['checks'] / max(r['messages'], 1):.2f} results per message",
                    flush=True,
                )
        finally:
            target_proc.terminate()
            target_proc.wait(10)
            server.stop()
    median = percentile(per_check, 0.5)
    print(
        f"median: {median:.0f} us CPU per check at {args.nats_rate:g} checks/s through NATS over "
        f"{args.runs} runs of {args.seconds:g} s; calibration loop {calib:.1f} ms; "
        f"load average {load_average()}"
    )


def _report(
    args: argparse.Namespace,
    probe: dict[str, Any],
    bb: dict[str, Any],
    memory: dict[str, Any],
    bb_version: str,
) -> str:
    ratio = probe["rate"] / bb["rate"]
    cpu_ratio = probe["per_cpu_second"] / bb["per_cpu_second"]
    if min(probe["cpu_util"], bb["cpu_util"]) >= 0.95:
        saturation = (
            "Both use all of core 0, so the two ratios agree: this is each one's ceiling on one core."
        )
    else:
        saturation = (
            "Not both reach 100 % of core 0 (the target and driver on core 1 set the pace, or "
            "the machine is shared), so checks per CPU-second is the fairer figure."
        )

    def row(name: str, r: dict[str, Any]) -> str:
        cells = [
            name,
            f"{r['rate']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['cpu_util']:.0%}",
            f"{r['per_cpu_second']:,.0f}",
            f"{r['checks']:,}",
            str(r["failures"]),
        ]
        return "| " + " | ".join(cells) + " |"

    return "\n".join(
        [
            f"Command: `.venv/bin/python -m bench.probe_throughput --seconds {args.seconds:g} "
            f"--concurrency {args.concurrency}`",
            f"Machine: {machine()}; nproc {os.cpu_count()}.",
            "",
            f"HTTP GET checks against one local keep-alive target, {args.concurrency} concurrent, "
            f"{args.seconds:g} s measured after 1 s warm-up. Each system under test is pinned to "
            "core 0 (`taskset -c 0`, blackbox_exporter also with GOMAXPROCS=1); the target and "
            "the client driving blackbox_exporter's /probe endpoint run on core 1. The probe "
            "runs `Agent.handle_job` and encodes each result (everything but the NATS publish). "
            f"blackbox_exporter: {bb_version}, module `http_2xx`.",
            "",
            "| system | checks/s | p50 ms | p99 ms | CPU of core 0 | checks per CPU-second | checks "
            "| failures |",
            "|---|---|---|---|---|---|---|---|",
            row("probefleet probe", probe),
            row("blackbox_exporter /probe", bb),
            "",
            f"**Ratio: {ratio:.2f}x** blackbox_exporter's checks per second on one core "
            f"({cpu_ratio:.2f}x per CPU-second of the system under test; goal: 5x per CPU-second). "
            f"The probe spends {1e6 / probe['per_cpu_second']:.1f} us of CPU per check, "
            f"blackbox_exporter {1e6 / bb['per_cpu_second']:.1f}. {saturation}",
            "",
            f"Memory: a probe holding {memory['in_flight']:,} HTTP checks in flight (target answers "
            f"after 4 s): peak RSS {_mib(memory['peak_rss'])} (baseline {_mib(memory['baseline_rss'])}, "
            f"{(memory['peak_rss'] - memory['baseline_rss']) / max(1, memory['in_flight']) / 1024:.1f} "
            f"KiB per in-flight check); {memory['ok']:,} of them ended ok.",
        ]
    )


if __name__ == "__main__":
    main()
