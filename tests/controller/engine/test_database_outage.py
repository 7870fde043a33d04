"""A database outage loses no check: a real controller, probes in three regions and NATS,
while monitors are checked every second and a heartbeat client pings every 2 s, with the
test's own PostgreSQL frozen (SIGSTOP of every server process: connections hang) for 6 s,
or stopped (connections closed, new ones refused) and started again after 5 s. Either outage
outlasts the controller's lease (1.5 s here), the probes' heartbeat window (1.5 s) and a
heartbeat's deadline (4 s), as the 12 s and 8 s of the defaults' lease (6 s) did."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from probefleet.controller import keys, metrics
from probefleet.controller.engine.scheduler import phase
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import PostgresServer, create_database
from tests.controller.conftest import Running, start_controller
from tests.fleet import RegionalTarget, start_probes
from tests.helpers import eventually


@pytest.fixture
def restartable_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own that keeps its data when stopped, to start it again."""
    server = PostgresServer(tmp_path / "pg", durable=False)
    server.start()
    yield server
    server.ephemeral = True  # remove the data with the server
    server.stop()
    shutil.rmtree(tmp_path / "pg", ignore_errors=True)


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


class HeartbeatClient:
    """A job that pings every `every` seconds and, when refused, retries with backoff (1 s
    doubling to 8 s, as curl --retry does) until the ping is stored: after the outage its
    ping gets through up to 8 s late, later than the deadline checker's first tick."""

    def __init__(self, session: aiohttp.ClientSession, path: str, every: float) -> None:
        self.session, self.path, self.every = session, path, every
        self.stored: list[float] = []
        self.refused = 0

    async def run(self) -> None:
        while True:
            backoff = 1.0
            while not await self._ping():
                self.refused += 1
                await asyncio.sleep(backoff)
                backoff = min(8.0, backoff * 2)
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
    samples = [s for m in metrics.TASK_RESTARTS.collect() for s in m.samples]
    return sum(s.value for s in samples if s.name.endswith("_total"))


def _grid(monitor_id: int, start: float, end: float) -> set[float]:
    """The due times of a 1 s monitor in [start, end]."""
    offset = phase(monitor_id, 1.0)
    first = math.ceil(start - offset) + offset
    return {round(first + k, 3) for k in range(int(end - first) + 1)}


@dataclass
class Scene:
    """Three 1 s monitors and a heartbeat pinged every 2 s on a real controller and probes,
    with every job of one region and every result seen on NATS."""

    controller: Running
    nats_url: str
    target: RegionalTarget
    ids: list[int] = field(default_factory=list)
    heartbeat: int = 0
    jobs: dict[int, set[float]] = field(default_factory=dict)
    results: set[tuple[int, float, str]] = field(default_factory=set)
    client: HeartbeatClient | None = None
    restarts: float = 0.0

    @property
    def pool(self) -> asyncpg.Pool:
        return self.controller.app[keys.POOL]

    async def on_job(self, msg: Msg) -> None:
        for job in wire.decode_jobs(msg.data):
            self.jobs.setdefault(job.monitor_id, set()).add(round(job.due, 3))

    async def on_result(self, msg: Msg) -> None:
        for r in wire.decode_results(msg.data):  # one result or a probe's batch
            self.results.add((r.monitor_id, round(r.due, 3), r.region))

    async def through(self, begin: Callable[[], None], end: Callable[[], None], seconds: float) -> None:
        """Set up, bring everything up, run `begin`, wait `seconds`, run `end`, and check
        that the outage lost no check and changed no state."""
        self.restarts = _restarts()
        probes = await start_probes(self.nats_url)
        watcher: NatsClient = await nats.connect(self.nats_url)
        await watcher.subscribe(subjects.jobs("us-east"), cb=self.on_job)
        await watcher.subscribe(subjects.results_all(), cb=self.on_result)
        headers = {"Authorization": f"Bearer {self.controller.admin_key}"}
        session = aiohttp.ClientSession(base_url=self.controller.base, headers=headers)
        pinger: asyncio.Task[None] | None = None
        try:
            pinger = await self._create(session)
            began = time.time()
            begin()
            try:
                await asyncio.sleep(seconds)
                assert self.client is not None and self.client.refused > 0, "pings were refused meanwhile"
            finally:
                end()
            ended = time.time()
            await self._check((began + 1.0, ended - 1.0), ended, session)
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
            await session.close()
            await watcher.close()
            # side by side: each stop runs the jobs it holds up to a lookahead ahead (~1 s)
            await asyncio.gather(*(p.stop() for p in probes))

    async def _create(self, session: aiohttp.ClientSession) -> asyncio.Task[None]:
        for i in range(3):
            monitor = {"name": f"m{i}", "url": self.target.url, "check_interval": 1, "timeout": 1}
            r = await session.post("/api/v1/monitors", json=monitor)
            assert r.status == 201, await r.text()
            self.ids.append((await r.json())["data"]["id"])
        job = {"name": "job", "run_interval": 2, "grace_period": 2}
        r = await session.post("/api/v1/heartbeats", json=job)
        assert r.status == 201, await r.text()
        beat = (await r.json())["data"]
        self.heartbeat = beat["id"]
        self.client = HeartbeatClient(session, f"/api/v1/heartbeat/{beat['token']}", every=2.0)
        pinger = asyncio.create_task(self.client.run())

        async def all_up() -> bool:
            rows = await self.pool.fetch("SELECT status FROM monitors WHERE id = ANY($1)", self.all_ids)
            return [r["status"] for r in rows] == ["up"] * 4

        await eventually(all_up, what="monitors and heartbeat up")
        return pinger

    @property
    def all_ids(self) -> list[int]:
        return [*self.ids, self.heartbeat]

    async def _check(self, window: tuple[float, float], ended: float, session: aiohttp.ClientSession) -> None:
        pool, ids = self.pool, self.ids
        # the scheduler went on publishing: every round due meanwhile has its job
        for mid in ids:
            missing = _grid(mid, *window) - self.jobs.get(mid, set())
            assert not missing, f"monitor {mid}: no job for dues {sorted(missing)} during the outage"

        # results published meanwhile are all stored after it, none twice, rounds decided up
        during = {k for k in self.results if window[0] <= k[1] <= window[1]}
        assert during, "the probes answered during the outage"

        async def stored() -> bool:
            rows = await pool.fetch(
                "SELECT monitor_id, extract(epoch FROM due)::float8 AS due, region FROM check_results"
                " WHERE due BETWEEN to_timestamp($1) AND to_timestamp($2)",
                *window,
            )
            return during <= {(r["monitor_id"], round(r["due"], 3), r["region"]) for r in rows}

        await eventually(stored, timeout=30, what="every result published during the outage stored")

        scheduler = self.controller.app[keys.SCHEDULER]

        async def decided() -> bool:
            if scheduler.pending:  # rounds buffered during the outage, not written yet
                return False
            open_ = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE closed_at IS NULL AND due <= to_timestamp($1)", window[1]
            )
            return open_ == 0

        await eventually(decided, timeout=30, what="rounds of the outage written and closed")
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

        # the heartbeat's client got through after the outage
        assert self.client is not None
        client = self.client
        await eventually(lambda: any(t > ended for t in client.stored), what="a ping stored after")
        settle = time.time() + 5

        # no loop died: the controller keeps checking after the outage (meanwhile the
        # deadline checker ticks a few times past the ping)
        after = time.time()

        async def fresh_rounds() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE verdict = 'up' AND due > to_timestamp($1)", after
            )
            return n >= len(ids) * 2

        await eventually(fresh_rounds, what="rounds decided after the outage")
        app = self.controller.app
        assert all(not t.done() for t in app[keys.TASKS])
        assert _restarts() == self.restarts
        assert (await session.get("/api/v1/health")).status == 200

        # the heartbeat stays up through a few deadline checks past the ping
        await eventually(lambda: time.time() > settle, timeout=10, what="a few deadline checks")
        assert await pool.fetchval("SELECT status FROM monitors WHERE id = $1", self.heartbeat) == "up"

        # nothing changed state because of the outage
        changes = await pool.fetch(
            "SELECT kind, monitor_id FROM events WHERE kind LIKE ANY($1)",
            ["monitor.%", "incident.%", "region.%", "heartbeat.%"],
        )
        assert changes == []


async def _start(server: PostgresServer, nats_url: str) -> Running:
    await create_database(server.dsn(), "t", drop=True)
    # A short lease (3 heartbeats of 0.5 s): the outages below outlast it several times over.
    return await start_controller(
        server.dsn("t"), nats_url, database_timeout=1.0, controller_heartbeat_interval=0.5
    )


async def test_a_frozen_database_loses_no_check_and_changes_no_state(
    own_postgres: PostgresServer, nats_url: str, target: RegionalTarget
) -> None:
    controller = await _start(own_postgres, nats_url)
    try:
        await Scene(controller, nats_url, target).through(own_postgres.freeze, own_postgres.thaw, 6.0)
    finally:
        own_postgres.thaw()
        await controller.stop()


async def test_a_database_stopped_and_started_again_loses_no_check_and_changes_no_state(
    restartable_postgres: PostgresServer, nats_url: str, target: RegionalTarget
) -> None:
    server = restartable_postgres
    port = server.port
    controller = await _start(server, nats_url)
    try:
        await Scene(controller, nats_url, target).through(server.stop, lambda: server.start(port=port), 5.0)
    finally:
        await controller.stop()
