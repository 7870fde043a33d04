"""Upgrades miss no round: a two-probe region restarted one probe at a time under a steady
load of jobs loses none and runs none twice.

Real probe processes (`probefleet probe run`), a real nats-server with the results
stream, a real HTTP target that holds each answer a little so checks are in flight when
SIGTERM arrives. Every job published gets exactly one result in the stream, and no
probe published a second result for any job (counted on a core subscription, which sees
retries the stream's duplicate window would hide).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

import nats
import pytest
from aiohttp import web
from nats.aio.msg import Msg

from probefleet.shared import streams, subjects, wire
from probefleet.shared.wire import CheckJob, HttpSpec
from tests.helpers import eventually

REGION = "roll"
SOURCE = "127.0.0.21"


@pytest.fixture
async def slow_target() -> AsyncIterator[str]:
    """Answers 200 after 300 ms, so a restart always finds checks in flight."""

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


def _probe(nats_url: str, probe_id: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PROBEFLEET_NATS_INSECURE="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "probefleet.shared.cli",
            "probe",
            "run",
            "--region",
            REGION,
            "--nats-url",
            nats_url,
            "--source-address",
            SOURCE,
            "--probe-id",
            probe_id,
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def test_restarting_each_probe_in_turn_loses_and_repeats_no_check(
    nats_url: str, slow_target: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await streams.ensure_streams(js, max_bytes=64 << 20)

    heartbeats: dict[str, float] = {}
    published_results: Counter[str] = Counter()

    async def on_heartbeat(msg: Msg) -> None:
        hb = wire.decode_heartbeat(msg.data)
        heartbeats[hb.probe_id] = hb.started_at

    async def on_result(msg: Msg) -> None:
        published_results[wire.decode_result(msg.data).job_id] += 1

    await nc.subscribe(subjects.heartbeat(REGION), cb=on_heartbeat)
    await nc.subscribe(subjects.results(REGION), cb=on_result)
    await nc.flush()

    probes = {pid: _probe(nats_url, pid) for pid in ("roll-a", "roll-b")}
    jobs: list[str] = []
    stop_load = asyncio.Event()

    async def load() -> None:
        # 40 jobs/s, each with a 300 ms check and a 10 s deadline, as the scheduler sends them.
        n = 0
        while not stop_load.is_set():
            now = time.time()
            job = CheckJob(
                monitor_id=n + 1,
                due=now,
                deadline=now + 10,
                region=REGION,
                timeout=5,
                spec=HttpSpec(url=slow_target),
            )
            await nc.publish(subjects.jobs(REGION), wire.encode(job))
            jobs.append(job.job_id)
            n += 1
            await asyncio.sleep(0.025)

    try:
        await eventually(lambda: set(heartbeats) >= set(probes), timeout=20, what="both probes heartbeat")
        loader = asyncio.create_task(load())
        await eventually(lambda: len(published_results) >= 40, timeout=20, what="results flowing")
        for pid in list(probes):
            started = heartbeats[pid]
            probes[pid].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(probes[pid].wait, 30) == 0, f"{pid} did not drain and exit 0"
            probes[pid] = _probe(nats_url, pid)
            await eventually(
                lambda pid=pid, started=started: heartbeats[pid] != started, timeout=20, what=f"{pid} back"
            )
            seen = len(published_results)
            await eventually(
                lambda seen=seen: len(published_results) >= seen + 40,
                timeout=20,
                what=f"results flowing after restarting {pid}",
            )
        stop_load.set()
        await loader

        expected = set(jobs)
        await eventually(
            lambda: set(published_results) >= expected, timeout=30, what="a result for every job published"
        )
        info = await js.stream_info(subjects.RESULTS_STREAM)
        assert info.state.messages == len(expected), "the stream holds one result per job"
        repeated = {j: c for j, c in published_results.items() if c > 1}
        assert repeated == {}, f"jobs whose result was published more than once: {repeated}"
        assert set(published_results) == expected
    finally:
        stop_load.set()
        for proc in probes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in probes.values():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await nc.close()
