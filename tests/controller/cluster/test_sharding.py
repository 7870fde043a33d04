"""Schedule leases when the database cannot be reached: a controller keeps its shards
past its lease until another controller announces that it read the members without it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import nats
import pytest
from nats.aio.msg import Msg

from probefleet.controller import keys, metrics
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.cluster.sharding import SHARDS, Membership, owner, shard_of
from probefleet.controller.engine.scheduler import Scheduler, phase
from probefleet.controller.storage import db
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import PostgresServer, create_database
from tests.controller.conftest import Running, start_controller
from tests.fleet import RegionalTarget, start_probes
from tests.helpers import eventually


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, so freezing it stalls no other test."""
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_pool(own_postgres: PostgresServer) -> AsyncIterator[asyncpg.Pool]:
    await create_database(own_postgres.dsn(), "t", drop=True)
    await db.migrate(own_postgres.dsn("t"))
    pool = await db.create_pool(own_postgres.dsn("t"), max_size=3)
    yield pool
    own_postgres.thaw()
    await pool.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_800_000_000.0


def lease_expired() -> float | None:
    return metrics.REGISTRY.get_sample_value("probefleet_schedule_lease_expired")


def test_each_shard_has_one_owner_and_a_leaving_member_moves_only_its_own() -> None:
    three, two = ("a", "b", "c"), ("a", "b")
    moved = [s for s in range(SHARDS) if owner(s, three) != owner(s, two)]
    assert moved and all(owner(s, three) == "c" for s in moved)
    assert 0 <= shard_of(12345) < SHARDS


async def test_a_controller_that_cannot_renew_keeps_its_shards_until_another_claims_them(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    clock = Clock(1000.0)
    a = Membership(pool=own_pool, controller_id="a", lease=6.0, clock=clock)
    assert await a.beat() is True
    assert a.scheduling() and a.members == ("a",)
    own_postgres.freeze()
    try:
        clock.now = 1010.0  # past the lease by our own clock: nobody else could renew either
        with db.bounded(0.5), pytest.raises(TimeoutError):
            await a.beat()
        assert a.scheduling() is True
        assert lease_expired() == 1
        # announcements that leave us in change nothing; one that leaves us out stops us
        assert a.hear(a.announcement()) is False
        assert a.hear(b'{"by": "b", "members": ["a", "b"]}') is False
        assert a.hear(b"not json") is False
        assert a.hear(b'{"by": "b", "members": ["b"]}') is True
        assert a.scheduling() is False
    finally:
        own_postgres.thaw()
    assert await a.beat() is False  # the members did not change; the lease is ours again
    assert a.scheduling() is True
    assert lease_expired() == 0


async def test_a_controller_whose_lease_expired_is_announced_gone_by_the_others(pool: asyncpg.Pool) -> None:
    a = Membership(pool=pool, controller_id="a", lease=6.0)
    b = Membership(pool=pool, controller_id="b", lease=6.0)
    await a.beat()
    await b.beat()
    await a.beat()
    assert a.members == b.members == ("a", "b")
    assert a.hear(b.announcement()) is False
    await pool.execute("UPDATE controllers SET lease_until = now() - interval '1 second' WHERE id = 'a'")
    assert await b.beat() is True and b.members == ("b",)
    assert a.hear(b.announcement()) is True
    assert a.scheduling() is False
    assert await a.beat() is False and a.members == ("a", "b")  # its own view never changed
    assert a.scheduling() is True


async def test_after_a_missed_renewal_members_are_kept_for_a_lease_before_their_shards_move(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    clock = Clock(1000.0)
    a = Membership(pool=own_pool, controller_id="a", lease=6.0, clock=clock)
    b = Membership(pool=own_pool, controller_id="b", lease=6.0)
    await a.beat()
    await b.beat()
    await a.beat()
    assert a.members == ("a", "b")
    own_postgres.freeze()
    try:
        with db.bounded(0.5), pytest.raises(TimeoutError):
            await a.beat()
    finally:
        own_postgres.thaw()
    # b's lease ran out during the outage and b has not renewed yet
    await own_pool.execute("UPDATE controllers SET lease_until = now() - interval '1 second' WHERE id = 'b'")
    clock.now = 1020.0
    assert await a.beat() is False and a.members == ("a", "b")
    clock.now = 1025.9
    assert await a.beat() is False
    clock.now = 1026.0  # a lease after the renewal came back: b is gone for good
    assert await a.beat() is True and a.members == ("a",)


# How a controller of the previous version renews its lease: it knows nothing of the wire.
PREVIOUS_RENEWAL = (
    "INSERT INTO controllers (id, heartbeat_at, lease_until) VALUES ($1, now(), now() + interval '6 s')"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), lease_until = EXCLUDED.lease_until"
)


async def test_jobs_allow_result_batches_only_while_every_live_controller_decodes_them(
    pool: asyncpg.Pool,
) -> None:
    a = Membership(pool=pool, controller_id="a", lease=6.0)
    published: list[bytes] = []

    async def publish(subject: str, data: bytes) -> None:
        published.append(data)

    sched = Scheduler(pool=pool, publish=publish, fleet=Fleet(), result_batches=a.result_batches)
    monitor = {"id": 1, "kind": "http", "spec": {"type": "http", "url": "http://127.0.0.1/"}}
    sched.upsert(monitor | {"interval_s": 1, "timeout_s": 0.5, "locations": ["us-east"]}, now=T0)

    async def allowed() -> bool:
        """Whether the job of the monitor's next round allows result batches."""
        await a.beat()
        published.clear()
        due = max(due for due, _, _ in sched.heap)
        beat = wire.ProbeHeartbeat(
            probe_id="p",
            region="us-east",
            version="t",
            concurrency=1,
            in_flight=0,
            started_at=T0,
            sent_at=due,
        )
        sched.fleet.observe(beat, now=due)
        await sched.tick(due)
        [job] = [wire.decode_job(d) for d in published]
        return job.batch_results

    assert await allowed() is True  # alone, and new
    await pool.execute(PREVIOUS_RENEWAL, "b")  # a controller of the previous version joins
    assert await allowed() is False and a.members == ("a", "b")
    b = Membership(pool=pool, controller_id="b", lease=6.0)
    await b.beat()  # b upgraded
    assert await allowed() is True
    await pool.execute(PREVIOUS_RENEWAL, "b")  # b rolled back under the same id: wire 2 stays written
    assert await allowed() is False
    await pool.execute("UPDATE controllers SET lease_until = now() - interval '1 s' WHERE id = 'b'")
    assert await allowed() is True and a.members == ("a",)


class PausableProxy:
    """A TCP relay to PostgreSQL for one controller: `pause` holds every byte both ways (that
    controller's database hangs, as if frozen) while other clients reach the server."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.dsn = dsn
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        """Start; the DSN that goes through the relay."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return self.dsn.replace(f":{self.port}/", f":{port}/")

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        self.resume()
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.close()


def _grid(monitor_id: int, start: float, end: float) -> set[float]:
    """The due times of a 1 s monitor in [start, end]."""
    offset = phase(monitor_id, 1.0)
    first = math.ceil(start - offset) + offset
    return {round(first + k, 3) for k in range(int(end - first) + 1)}


def _membership(c: Running) -> Membership:
    return c.app[keys.SCHEDULER].owns.__self__  # type: ignore[attr-defined, no-any-return]


async def test_a_controller_cut_off_from_the_database_stops_once_another_takes_its_shards(
    database: str, nats_url: str
) -> None:
    proxy = PausableProxy(database)
    settings = {"controller_heartbeat_interval": 0.5, "database_background_timeout": 2.0}
    a = await start_controller(await proxy.start(), nats_url, controller_id="a", **settings)
    b = await start_controller(database, nats_url, controller_id="b", **settings)
    target = RegionalTarget()
    await target.start()
    probes = await start_probes(nats_url)
    jobs: Counter[tuple[int, float]] = Counter()

    async def on_job(msg: Msg) -> None:
        for job in wire.decode_jobs(msg.data):
            jobs[(job.monitor_id, round(job.due, 3))] += 1

    watcher = await nats.connect(nats_url)
    await watcher.subscribe(subjects.jobs("us-east"), cb=on_job)
    sa, sb = a.app[keys.SCHEDULER], b.app[keys.SCHEDULER]

    def exactly_once(ids: list[int], start: float, end: float) -> None:
        for mid in ids:
            counts = [jobs[(mid, due)] for due in sorted(_grid(mid, start, end))]
            assert counts and set(counts) == {1}, f"monitor {mid}: jobs per due {counts} in [{start}, {end}]"

    try:
        await eventually(lambda: _membership(a).members == _membership(b).members == ("a", "b"))
        headers = {"Authorization": f"Bearer {b.admin_key}"}
        async with aiohttp.ClientSession(base_url=b.base, headers=headers) as api:
            ids = []
            for i in range(16):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
                )
                assert r.status == 201, await r.text()
                ids.append((await r.json())["data"]["id"])
        await eventually(
            lambda: set(sa.entries) | set(sb.entries) == set(ids), what="every monitor scheduled"
        )
        assert sa.entries and sb.entries
        start = time.time()
        await asyncio.sleep(2.5)
        exactly_once(ids, start + 0.5, time.time() - 1.0)

        # a loses its database, b does not: b takes a's shards once a's lease ran out, and a,
        # told so over NATS, stops at once although it cannot renew
        proxy.pause()
        await eventually(lambda: set(sb.entries) == set(ids), timeout=15, what="b schedules every monitor")
        await eventually(lambda: not sa.active(), what="a stops scheduling")
        taken = time.time()
        await asyncio.sleep(3.0)
        exactly_once(ids, taken + 0.5, time.time() - 1.0)

        # a's database is back: a renews, the shards split again, still one job per due
        proxy.resume()
        await eventually(lambda: sa.active() and sb.entries and set(sb.entries) != set(ids), timeout=15)
        settled = time.time()
        await asyncio.sleep(3.0)
        exactly_once(ids, settled + 1.0, time.time() - 1.0)
        assert set(sa.entries) | set(sb.entries) == set(ids) and not set(sa.entries) & set(sb.entries)
    finally:
        await watcher.close()
        # side by side: each stop runs the jobs it holds up to a lookahead ahead (~1 s)
        await asyncio.gather(*(p.stop() for p in probes))
        await target.stop()
        await proxy.stop()
        for c in (a, b):
            with contextlib.suppress(Exception):
                await c.stop()
