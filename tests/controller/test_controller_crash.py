"""A controller killed with SIGKILL (no clean leave): the survivor takes over its
monitors once the lease expires, within two intervals; and a restarted controller
decides the rounds that were in flight from their redelivered results."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import nats
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.cluster.sharding import shard_of
from probefleet.controller.storage import api_keys
from probefleet.shared import subjects
from probefleet.shared.devstack import PostgresServer, free_port
from tests.controller.conftest import start_controller
from tests.fleet import RegionalTarget, start_probes
from tests.helpers import eventually

REPO = Path(__file__).resolve().parents[2]


async def test_it_takes_over_the_monitors_of_a_killed_controller(
    database: str, nats_url: str, tmp_path: Path
) -> None:
    b = await start_controller(database, nats_url, controller_id="ctl-b", controller_heartbeat_interval=0.5)
    config = tmp_path / "a.toml"
    config.write_text(
        'controller_id = "ctl-a"\ncontroller_heartbeat_interval = 0.5\nround_grace = 1.0\n'
        'regions = [{id = "us-east"}, {id = "eu-west"}, {id = "ap-south"}]\n'
    )
    a = _serve(config, database, nats_url, free_port())
    pool = b.app[keys.POOL]
    try:
        headers = {"Authorization": f"Bearer {b.admin_key}"}
        async with aiohttp.ClientSession(base_url=b.base, headers=headers) as api:
            ids = []
            for i in range(24):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": "http://127.0.0.1:9/", "check_interval": 1, "timeout": 1},
                )
                ids.append((await r.json())["data"]["id"])
        scheduler = b.app[keys.SCHEDULER]

        async def both_members_and_split() -> bool:
            rows = await pool.fetch("SELECT id FROM controllers WHERE lease_until > now()")
            return {r["id"] for r in rows} == {"ctl-a", "ctl-b"} and len(scheduler.entries) < len(ids)

        await eventually(both_members_and_split, what="A and B both members, B holding a share only")
        a_ids = [m for m in ids if m not in scheduler.entries]
        assert a_ids, "controller A should own some monitors"

        async def a_schedules_its_share() -> bool:
            seen = await pool.fetchval(
                "SELECT count(DISTINCT monitor_id) FROM rounds WHERE monitor_id = ANY($1)", a_ids
            )
            return bool(seen == len(a_ids))

        # A really schedules its share: rounds exist for its monitors.
        await eventually(a_schedules_its_share, timeout=1.5, what="rounds of every monitor A owns")

        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.time()
        # Lease 1.5 s, then every monitor must be ours and get rounds again: within the lease,
        # two intervals and a second, counted from the kill.
        deadline = killed + 1.5 + 2 * 1.0 + 1.0

        async def all_rounds_again() -> bool:
            after = await pool.fetchval(
                "SELECT count(DISTINCT monitor_id) FROM rounds"
                " WHERE monitor_id = ANY($1) AND due > to_timestamp($2)",
                a_ids,
                killed + 1.5,
            )
            return bool(after == len(a_ids))

        await eventually(
            all_rounds_again, timeout=deadline - time.time(), what="rounds of A's monitors after the lease"
        )
        assert set(ids) <= set(scheduler.entries), {shard_of(m) for m in set(ids) - set(scheduler.entries)}
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        await b.stop()


class HeldTarget(RegionalTarget):
    """A RegionalTarget whose answers wait while `held` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.released.set()
        self.waiting = 0

    async def _handle(self, request: web.Request) -> web.Response:
        if not self.released.is_set():
            self.waiting += 1
            await self.released.wait()
        return await super()._handle(request)


async def test_it_decides_rounds_in_flight_at_a_kill_from_their_redelivered_results(
    database: str, nats_url: str, postgres: PostgresServer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    target = HeldTarget()
    await target.start()
    probes = await start_probes(nats_url)
    config = tmp_path / "a.toml"
    # The killed controller's fetched results come back after results_ack_wait: 2 s here, not
    # the default 30, to keep the test short (the same redelivery either way; a batch being
    # stored is marked in progress three times per ack_wait, so it is not handed over).
    config.write_text(
        'controller_id = "ctl-a"\nround_grace = 1.0\nprobe_heartbeat_interval = 0.5\n'
        "results_ack_wait = 2.0\n"
        'regions = [{id = "us-east"}, {id = "eu-west"}, {id = "ap-south"}]\n'
    )
    port = free_port()
    a = _serve(config, database, nats_url, port)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        key, _ = await api_keys.create(pool, "test-admin", ["admin"])
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as api:

            async def answers() -> bool:
                try:
                    return (await api.get("/api/v1/health")).status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(answers, what="controller A serving")
            for i in range(12):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
                )
                assert r.status == 201, await r.text()

        async def rounds_up() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM rounds WHERE verdict = 'up'") >= 24)

        await eventually(rounds_up, what="rounds decided up")

        # Checks in flight answer while the database is stalled: A fetches their results
        # and cannot store or acknowledge them; kill A right then.
        async def unacked() -> bool:
            info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            return bool(info.num_ack_pending)

        target.released.clear()
        await eventually(lambda: target.waiting > 0, what="checks in flight")
        postgres.freeze()
        target.released.set()
        try:
            await eventually(unacked, what="results delivered to A and not acknowledged")
            a.send_signal(signal.SIGKILL)
            a.wait()
        finally:
            postgres.thaw()
        killed = time.time()
        a = _serve(config, database, nats_url, free_port())

        async def in_flight_closed() -> bool:
            info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            open_ = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE closed_at IS NULL AND due < to_timestamp($1)", killed
            )
            return info.num_pending == 0 and info.num_ack_pending == 0 and open_ == 0

        # The held results come back after the consumer's ack_wait (results_ack_wait, 2 s).
        await eventually(in_flight_closed, timeout=60, what="rounds in flight at the kill closed")
        late = await pool.fetch(
            "SELECT r.monitor_id, r.due, c.region, r.verdict FROM rounds r JOIN check_results c"
            " USING (monitor_id, due, attempt) WHERE c.received_at > r.closed_at"
        )
        assert late == [], "rounds closed before a published result was stored"
        # A round whose jobs A never got to publish has no answer to wait for: unknown is right.
        unknown = await pool.fetch(
            "SELECT r.monitor_id, r.due FROM rounds r WHERE r.verdict = 'unknown' AND EXISTS"
            " (SELECT 1 FROM check_results c WHERE (c.monitor_id, c.due, c.attempt)"
            " = (r.monitor_id, r.due, r.attempt))"
        )
        assert unknown == [], "rounds closed unknown although their results were published"
        kinds = await pool.fetch("SELECT kind FROM events WHERE kind LIKE 'region.%'")
        assert kinds == [], "probes kept heartbeating: no region event"
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        await nc.close()
        # side by side: each stop runs the jobs it holds up to a lookahead ahead (~1 s)
        await asyncio.gather(*(p.stop() for p in probes))
        await target.stop()


def _serve(config: Path, database: str, nats_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROBEFLEET_DATABASE_URL": database, "PROBEFLEET_NATS_URL": nats_url}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "probefleet.shared.cli",
            "controller",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
    )
