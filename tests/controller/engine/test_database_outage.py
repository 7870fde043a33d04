"""A database outage loses no check: a real controller, probes in three regions and NATS,
with the test's own PostgreSQL frozen (SIGSTOP of every server process) for 12 s while
monitors are checked every second and a heartbeat client pings every 2 s."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest

from probefleet.controller import keys, metrics
from probefleet.controller.engine.scheduler import phase
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import PostgresServer, create_database
from tests.controller.conftest import Running, start_controller
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

FREEZE = 12.0


@pytest.fixture
async def controller(own_postgres: PostgresServer, nats_url: str) -> AsyncIterator[Running]:
    await create_database(own_postgres.dsn(), "t", drop=True)
    running = await start_controller(own_postgres.dsn("t"), nats_url, database_timeout=1.0)
    yield running
    own_postgres.thaw()
    await running.stop()


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


class HeartbeatClient:
    """A job that pings every `every` seconds and, when refused, retries every second (the
    API's Retry-After) until the ping is stored."""

    def __init__(self, session: aiohttp.ClientSession, path: str, every: float) -> None:
        self.session, self.path, self.every = session, path, every
        self.stored: list[float] = []
        self.refused = 0

    async def run(self) -> None:
        while True:
            while not await self._ping():
                self.refused += 1
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.every)

    async def _ping(self) -> bool:
        try:
            async with self.session.post(self.path, timeout=aiohttp.ClientTimeout(total=5)) as r:
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
        if ok:
            self.stored.append(time.time())
        return ok


def _restarts() -> float:
    return sum(
        s.value for m in metrics.TASK_RESTARTS.collect() for s in m.samples if s.name.endswith("_total")
    )


def _grid(monitor_id: int, start: float, end: float) -> set[float]:
    """The due times of a 1 s monitor in [start, end]."""
    offset = phase(monitor_id, 1.0)
    first = math.ceil(start - offset) + offset
    return {round(first + k, 3) for k in range(int(end - first) + 1)}


async def test_a_frozen_database_loses_no_check_and_changes_no_state(
    controller: Running, own_postgres: PostgresServer, nats_url: str, target: RegionalTarget
) -> None:
    pool = controller.app[keys.POOL]
    restarts = _restarts()
    probes = await start_probes(nats_url)
    watcher = await nats.connect(nats_url)
    jobs: dict[int, set[float]] = {}
    published: set[tuple[int, float, str]] = set()

    async def on_job(msg: nats.aio.msg.Msg) -> None:
        job = wire.decode_job(msg.data)
        jobs.setdefault(job.monitor_id, set()).add(round(job.due, 3))

    async def on_result(msg: nats.aio.msg.Msg) -> None:
        r = wire.decode_result(msg.data)
        published.add((r.monitor_id, round(r.due, 3), r.region))

    await watcher.subscribe(subjects.jobs("us-east"), cb=on_job)
    await watcher.subscribe(subjects.results_all(), cb=on_result)
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    session = aiohttp.ClientSession(base_url=controller.base, headers=headers)
    pinger: asyncio.Task[None] | None = None
    try:
        ids = []
        for i in range(3):
            r = await session.post(
                "/api/v1/monitors",
                json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
            )
            assert r.status == 201, await r.text()
            ids.append((await r.json())["data"]["id"])
        r = await session.post(
            "/api/v1/heartbeats", json={"name": "job", "run_interval": 2, "grace_period": 2}
        )
        assert r.status == 201, await r.text()
        beat = (await r.json())["data"]
        client = HeartbeatClient(session, f"/api/v1/heartbeat/{beat['token']}", every=2.0)
        pinger = asyncio.create_task(client.run())

        async def all_up() -> bool:
            rows = await pool.fetch("SELECT status FROM monitors WHERE id = ANY($1)", [*ids, beat["id"]])
            return [r["status"] for r in rows] == ["up"] * 4

        await eventually(all_up, what="monitors and heartbeat up")

        own_postgres.freeze()
        frozen_at = time.time()
        try:
            # (a) the scheduler goes on publishing: every round due while frozen has its job
            await asyncio.sleep(FREEZE)
            assert client.refused > 0, "the heartbeat client's pings were refused while frozen"
        finally:
            own_postgres.thaw()
        thawed_at = time.time()
        window = (frozen_at + 1.0, thawed_at - 1.0)
        for mid in ids:
            missing = _grid(mid, *window) - jobs.get(mid, set())
            assert not missing, f"monitor {mid}: no job for dues {sorted(missing)} while frozen"

        # (b) results published while frozen are all stored after the thaw, none twice,
        # and their rounds decided up
        during = {k for k in published if window[0] <= k[1] <= window[1]}
        assert during, "the probes answered while frozen"

        async def stored() -> bool:
            rows = await pool.fetch(
                "SELECT monitor_id, extract(epoch FROM due)::float8 AS due, region FROM check_results"
                " WHERE due BETWEEN to_timestamp($1) AND to_timestamp($2)",
                *window,
            )
            have = {(r["monitor_id"], round(r["due"], 3), r["region"]) for r in rows}
            return during <= have

        await eventually(stored, timeout=30, what="every result published while frozen stored")

        async def decided() -> bool:
            open_ = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE closed_at IS NULL AND due <= to_timestamp($1)", window[1]
            )
            return open_ == 0

        await eventually(decided, timeout=30, what="rounds of the outage closed")
        twice = await pool.fetchval(
            "SELECT count(*) - count(DISTINCT (monitor_id, due, region, attempt)) FROM check_results"
        )
        assert twice == 0
        verdicts = await pool.fetch(
            "SELECT verdict, count(*) AS n FROM rounds WHERE monitor_id = ANY($1)"
            " AND due BETWEEN to_timestamp($2) AND to_timestamp($3) GROUP BY verdict",
            ids,
            *window,
        )
        assert {r["verdict"]: r["n"] for r in verdicts}.keys() == {"up"}, verdicts
        assert sum(r["n"] for r in verdicts) >= len(ids) * int(window[1] - window[0])

        # (c) the heartbeat stays up: its client got through after the thaw
        await eventually(lambda: any(t > thawed_at for t in client.stored), what="a ping stored after thaw")
        settle = time.time() + 5
        await eventually(lambda: time.time() > settle, timeout=10, what="a few deadline checks")
        assert await pool.fetchval("SELECT status FROM monitors WHERE id = $1", beat["id"]) == "up"

        # nothing changed state because of the outage
        changes = await pool.fetch(
            "SELECT kind, monitor_id FROM events WHERE kind LIKE ANY($1)",
            ["monitor.%", "incident.%", "region.%", "heartbeat.%"],
        )
        assert changes == []

        # (d) no loop died: the controller keeps checking after the outage
        after = time.time()

        async def fresh_rounds() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE verdict = 'up' AND due > to_timestamp($1)", after
            )
            return n >= len(ids) * 2

        await eventually(fresh_rounds, what="rounds decided after the outage")
        assert all(not t.done() for t in controller.app[keys.TASKS])
        assert _restarts() == restarts
        assert len(controller.app[keys.SCHEDULER].pending) == 0
        r = await session.get("/api/v1/health")
        assert r.status == 200
    finally:
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        await session.close()
        await watcher.close()
        await stop_probes(probes)
