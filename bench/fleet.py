"""Fleet benchmarks on the secure path: enrollment to first job taken, revocation to
disconnection.

Real processes: PostgreSQL and an operator-mode TLS nats-server from the embedded stack
with a fresh fleet trust (as `probefleet dev` runs them), one controller, a keep-alive
target, and `--monitors` HTTP monitors checking every second from a region of the
benchmark's own. Then `--enrollments` times, one probe at a time:

- enrollment to first job taken: from the request for a one-use enrollment token
  (`POST /regions/{name}/enrollment-tokens`), through `probefleet probe run --enroll` (a new
  process: its own nkey, the exchange over HTTP, the connection to NATS with its own
  credential, its first heartbeat heard, the next round's job taken and run), to its first
  result on the region's results subject;
- revocation to disconnection: from `DELETE /probes/{id}` to the probe process's exit (NATS
  closes its connection when it takes the account update; the probe exits 78).

    python -m bench.fleet --enrollments 20

`secure_nats` also serves bench/e2e.py's `--nats secure`: the same server with a credential
per probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec
import nats

from bench.common import calibration, load_average, machine, percentile, record, stop_processes
from probefleet.controller.cluster import trust as trust_mod
from probefleet.controller.storage import api_keys, db
from probefleet.shared import devstack, natscreds, subjects, wire

REGION = "bench-fleet"
# Seconds past a controller's start before it sends jobs only to regions with a live probe
# (its fleet window: 3 missed heartbeats of 2 s), with a margin.
START_WINDOW = 7.0
SOURCE = "127.0.0.14"
# Variables of the caller's environment that would point the processes elsewhere.
NATS_VARIABLES = ("PROBEFLEET_NATS_INSECURE", "PROBEFLEET_NATS_CREDENTIALS", "PROBEFLEET_NATS_TLS_CA")


@dataclass
class SecureNats:
    """The fleet's trust under `trust_dir`, for an embedded stack whose NATS runs it."""

    trust_dir: Path
    nats_url: str = ""

    def controller_env(self) -> dict[str, str]:
        return {
            "PROBEFLEET_NATS_URL": self.nats_url,
            "PROBEFLEET_FLEET_TRUST_DIR": str(self.trust_dir),
            "PROBEFLEET_NATS_CREDENTIALS": str(self.trust_dir / "controller.creds"),
            "PROBEFLEET_NATS_TLS_CA": str(self.trust_dir / "ca.pem"),
        }

    def probe_env(self, region: str, probe_id: str) -> dict[str, str]:
        """A credential of its own for one probe (minted as enrollment does, without the API)."""
        fleet = trust_mod.FleetTrust.load(self.trust_dir, nats_urls=[self.nats_url])
        seed, public = natscreds.new_user_keypair()
        creds = self.trust_dir / "probes" / f"{probe_id}.creds"
        creds.parent.mkdir(exist_ok=True)
        natscreds.write_creds(
            creds, fleet.issue_probe(public_key=public, probe_id=probe_id, region=region), seed
        )
        return {
            "PROBEFLEET_NATS_URL": self.nats_url,
            "PROBEFLEET_NATS_CREDENTIALS": str(creds),
            "PROBEFLEET_NATS_TLS_CA": str(self.trust_dir / "ca.pem"),
        }


def secure_nats(stack: devstack.EmbeddedStack, trust_dir: Path) -> SecureNats:
    """Make the trust and set `stack`'s NATS to run it (operator mode, TLS); call before
    `stack.start()`, then set `.nats_url`."""
    trust_mod.generate(trust_dir, hostnames=["localhost"])
    stack.nats.trust_conf = trust_mod.server_config(trust_dir, resolver_dir=stack.nats.data_dir / "resolver")
    stack.nats.tls = True
    return SecureNats(trust_dir=trust_dir)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NATS_VARIABLES}


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def _api(base: str, key: str, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the controller exited with code {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/api/v1/health", timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{base} not ready")


class FirstResults:
    """The time each probe id's first result reached the region's results subject."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    async def on_result(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            for result in wire.decode_results(msg.data):  # one result or a probe's batch
                self.first.setdefault(result.probe_id, time.time())


async def _one(
    base: str, key: str, work: Path, env: dict[str, str], seen: FirstResults, i: int, limit: float
) -> tuple[float, float]:
    """One enrollment and its revocation: (seconds to first result, seconds to exit)."""
    state = work / f"probe-{i}"
    t0 = time.time()
    token = _api(base, key, "POST", f"/api/v1/regions/{REGION}/enrollment-tokens", {"max_uses": 1})["data"][
        "token"
    ]
    args = ["-m", "probefleet.shared.cli", "probe", "run", "--enroll", token, "--controller", base]
    args += ["--state-dir", str(state), "--source-address", SOURCE, "--log-level", "WARNING"]
    proc = _spawn(args, env, work / f"probe-{i}.log")
    try:
        probe_id = ""
        deadline = time.monotonic() + limit
        while not probe_id or probe_id not in seen.first:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"probe {i} took no job (exit {proc.poll()}); see {work / f'probe-{i}.log'}"
                )
            if not probe_id and (state / "probe.json").exists():
                probe_id = json.loads((state / "probe.json").read_text())["probe_id"]
            await asyncio.sleep(0.01)
        enrolled = seen.first[probe_id] - t0
        t1 = time.time()
        _api(base, key, "DELETE", f"/api/v1/probes/{probe_id}")
        while proc.poll() is None:
            if time.time() - t1 > limit:
                raise RuntimeError(f"probe {probe_id} still runs {limit:.0f} s after its revocation")
            await asyncio.sleep(0.005)
        return enrolled, time.time() - t1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()


async def _no_live_probe(base: str, key: str) -> None:
    """Until the region has no live probe (the last one's heartbeats have run out), so that
    each probe starts as a region's first: jobs go to it only once its heartbeat is heard."""
    for _ in range(300):
        if not _api(base, key, "GET", f"/api/v1/regions/{REGION}")["data"]["live_probes"]:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{REGION} still has a live probe after 60 s")


async def _admin_key(dsn: str) -> str:
    await db.migrate(dsn)
    pool = await db.create_pool(dsn, max_size=1)
    try:
        key, _ = await api_keys.create(pool, "bench-fleet", ["admin"])
    finally:
        await pool.close()
    return key


async def _run(
    base: str, key: str, secure: SecureNats, work: Path, enrollments: int, monitors: int, target: str
) -> tuple[list[float], list[float]]:
    _api(base, key, "POST", "/api/v1/regions", {"name": REGION})
    # A controller sends jobs to every region until it has heard a full heartbeat window
    # (scheduler.expected_regions): wait that out, or the first probe would find jobs waiting.
    await asyncio.sleep(START_WINDOW)
    for n in range(monitors):
        body = {"name": f"bench-fleet-{n}", "url": target, "check_interval": 1, "locations": [REGION]}
        _api(base, key, "POST", "/api/v1/monitors", body)
    ca = secure.trust_dir / "ca.pem"
    nc = await nats.connect(
        secure.nats_url,
        **natscreds.connect_options(secure.trust_dir / "controller.creds", ca, url=secure.nats_url),
    )
    seen = FirstResults()
    await nc.subscribe(subjects.results(REGION), cb=seen.on_result)
    env = {**clean_env(), "PROBEFLEET_LOG_LEVEL": "WARNING"}
    enroll_s: list[float] = []
    revoke_s: list[float] = []
    try:
        for i in range(enrollments):
            await _no_live_probe(base, key)
            enrolled, revoked = await _one(base, key, work, env, seen, i, limit=60)
            click.echo(
                f"enrollment {i + 1}: first result after {enrolled:.2f} s, exit {revoked:.3f} s after revoke"
            )
            enroll_s.append(enrolled)
            revoke_s.append(revoked)
    finally:
        await nc.close()
    return enroll_s, revoke_s


@click.command()
@click.option("--enrollments", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option(
    "--monitors",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="HTTP monitors in the benchmark's region, every 1 s: the jobs a new probe can take.",
)
@click.option("--no-record", is_flag=True, help="Print only; leave bench/RESULTS.md alone.")
def main(enrollments: int, monitors: int, no_record: bool) -> None:
    calib, load0 = calibration(), load_average()
    with tempfile.TemporaryDirectory(prefix="pf-bench-fleet-") as tmp:
        work = Path(tmp)
        stack = devstack.EmbeddedStack(work / "stack", ephemeral=True)
        secure = secure_nats(stack, work / "trust")
        stack.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            secure.nats_url = stack.nats.url
            asyncio.run(devstack.create_database(stack.postgres.dsn(), "bench", drop=True))
            dsn = stack.postgres.dsn("bench")
            key = asyncio.run(_admin_key(dsn))
            target_port = devstack.free_port()
            procs.append(_spawn(["-m", "bench.target", str(target_port)], clean_env(), work / "target.log"))
            env = {
                **clean_env(),
                **secure.controller_env(),
                "PROBEFLEET_DATABASE_URL": dsn,
                "PROBEFLEET_LOG_LEVEL": "WARNING",
            }
            port = devstack.free_port()
            controller = _spawn(
                ["-m", "probefleet.shared.cli", "controller", "serve", "--port", str(port)],
                env,
                work / "controller.log",
            )
            procs.append(controller)
            base = f"http://127.0.0.1:{port}"
            _wait_up(base, controller)
            enroll_s, revoke_s = asyncio.run(
                _run(base, key, secure, work, enrollments, monitors, f"http://127.0.0.1:{target_port}/")
            )
        finally:
            stop_processes(procs)
            stack.stop()
    body = (
        f"Command: `python -m bench.fleet --enrollments {enrollments} --monitors {monitors}`.\n"
        f"Machine: {machine()}. Load average before: {load0}; after: {load_average()}.\n"
        f"Calibration: a fixed pure-Python loop takes {calib:.1f} ms on this machine.\n\n"
        "PostgreSQL and an operator-mode TLS nats-server (the fleet's trust, as `probefleet dev`),\n"
        f"one controller, {monitors} HTTP monitors every 1 s in the benchmark's region. One probe at\n"
        "a time: a one-use token from the API, `probe run --enroll` as a new process (its nkey, the\n"
        "exchange, NATS with its own credential, its first heartbeat heard, the next round's job),\n"
        "until its first result is on the results subject; then `DELETE /probes/{id}` until the\n"
        "process has exited (NATS closed its connection; the probe exits 78).\n\n"
        "| measure | goal | p50 | max | n |\n|---|---:|---:|---:|---:|\n"
        f"| enrollment to first job taken | 30 s | {percentile(enroll_s, 0.5):.2f} s | {max(enroll_s):.2f} s "
        f"| {len(enroll_s)} |\n"
        f"| revocation to disconnection (process exit) | 10 s | {percentile(revoke_s, 0.5):.3f} s "
        f"| {max(revoke_s):.3f} s | {len(revoke_s)} |\n"
    )
    if not no_record:
        record("Fleet: enrollment and revocation (issue 16)", body)
    click.echo(body)


if __name__ == "__main__":
    main()
