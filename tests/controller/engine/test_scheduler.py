"""The scheduler step with a fixed clock: phases spread, rounds open once, changes apply at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from probefleet.controller import keys, metrics
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.engine.scheduler import BATCH_BYTES, BATCH_JOBS, Scheduler, next_due, phase, split
from probefleet.controller.storage.results import ts as wire_ts
from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import PostgresServer
from tests.controller.conftest import REGIONS, start_controller
from tests.fleet import REGION_ADDRESSES, RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

T0 = 1_800_000_000.0


def row(mid: int, interval: int = 60, **kw: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "kind": "http",
        "spec": {"type": "http", "url": "http://127.0.0.1/"},
        "interval_s": interval,
        "timeout_s": 5.0,
        "locations": ["us-east", "eu-west"],
        "enabled": True,
        **kw,
    }


class Published(list[tuple[str, bytes]]):
    async def __call__(self, subject: str, data: bytes) -> None:
        self.append((subject, data))


def make(pool: asyncpg.Pool) -> tuple[Scheduler, Published]:
    published = Published()
    return Scheduler(pool=pool, publish=published, fleet=Fleet(), started=T0 - 3600), published


def beat(sched: Scheduler, now: float, region: str, probe_id: str = "", *, job_batches: bool = False) -> None:
    """A heartbeat from a probe of `region` (one per region unless named) heard at `now`."""
    sched.fleet.observe(
        wire.ProbeHeartbeat(
            probe_id=probe_id or f"p-{region}",
            region=region,
            version="t",
            concurrency=1,
            in_flight=0,
            started_at=T0,
            sent_at=now,
            job_batches=job_batches,
        ),
        now=now,
    )


async def tick_live(
    sched: Scheduler,
    now: float,
    regions: tuple[str, ...] = ("us-east", "eu-west", "ap-south"),
    *,
    job_batches: bool = False,
) -> int:
    """Tick with a heartbeat from one probe in each of `regions` at `now`."""
    for region in regions:
        beat(sched, now, region, job_batches=job_batches)
    return await sched.tick(now)


def test_it_spreads_monitors_evenly_over_the_interval() -> None:
    offsets = [phase(i, 60) for i in range(1, 10_001)]
    assert all(0 <= o < 60 for o in offsets)
    per_second = [0] * 60
    for o in offsets:
        per_second[int(o)] += 1
    # 10,000 monitors over 60 s: about 167 a second, never a burst.
    assert max(per_second) < 1.3 * 10_000 / 60
    assert statistics.pstdev(per_second) < 0.1 * 10_000 / 60


@pytest.mark.parametrize(
    ("after", "want"),
    [(100.0, 107.0), (107.0, 167.0), (106.999, 107.0)],
    ids=["before", "on-the-due-time", "just-before"],
)
def test_it_computes_the_next_due_time_on_the_grid(after: float, want: float) -> None:
    assert next_due(after, 60, 47) == want


async def test_it_opens_each_round_once_and_publishes_a_job_per_region(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    fleet_now = T0
    for mid in (1, 2, 3):
        sched.upsert(row(mid), now=fleet_now)
    # Over one interval every monitor fires exactly once, each with two regions.
    for t in range(0, 61):
        await tick_live(sched, T0 + t)
    jobs = [wire.decode_job(d) for _, d in published]
    assert sorted(j.monitor_id for j in jobs) == [1, 1, 2, 2, 3, 3]
    assert {s for s, _ in published} == {"probefleet.jobs.us-east", "probefleet.jobs.eu-west"}
    for j in jobs:
        assert abs((j.due - phase(j.monitor_id, 60)) % 60) < 1e-6
        assert j.deadline > j.due + j.timeout
    rounds = await pool.fetch("SELECT monitor_id, regions FROM rounds ORDER BY monitor_id")
    assert [(r["monitor_id"], r["regions"]) for r in rounds] == [
        (m, ["us-east", "eu-west"]) for m in (1, 2, 3)
    ]


async def test_it_applies_changes_and_deletes_at_once(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    sched.upsert(row(1, interval=10), now=T0)
    sched.upsert(row(1, interval=10, enabled=False), now=T0)
    for t in range(0, 21):
        await tick_live(sched, T0 + t)
    assert published == []
    sched.upsert(row(2, interval=10, locations=["ap-south"]), now=T0)
    sched.remove(2)
    sched.upsert(row(3, interval=10, locations=["ap-south"]), now=T0)
    for t in range(0, 21):
        await tick_live(sched, T0 + t)
    assert {wire.decode_job(d).monitor_id for _, d in published} == {3}


async def test_an_older_row_does_not_undo_a_newer_change(pool: asyncpg.Pool) -> None:
    """A refresh reads a row while the API applies a newer write of its own (pause, then
    resume at once): the stale read arrives last and must not win."""
    sched, _ = make(pool)
    t1 = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    t2 = t1 + dt.timedelta(milliseconds=5)
    sched.upsert(row(1, updated_at=t2), now=T0)  # resumed
    sched.upsert(row(1, enabled=False, updated_at=t1), now=T0)  # the pause, read late
    assert 1 in sched.entries
    sched.upsert(row(1, enabled=False, updated_at=t2 + dt.timedelta(seconds=1)), now=T0)
    assert 1 not in sched.entries  # a newer pause does apply
    sched.upsert(row(2, updated_at=t1), now=T0)
    sched.remove(2, deleted=True)
    sched.upsert(row(2, updated_at=t2), now=T0)  # read before the delete committed
    assert 2 not in sched.entries


async def test_a_refresh_applies_what_the_database_holds(pool: asyncpg.Pool) -> None:
    sched, _ = make(pool)
    mid = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " VALUES ('m', 'http', '{\"type\": \"http\", \"url\": \"http://127.0.0.1/\"}', 60, 5, '{us-east}')"
        " RETURNING id"
    )
    await sched.refresh(mid)
    assert mid in sched.entries
    await pool.execute("UPDATE monitors SET enabled = false, updated_at = now() WHERE id = $1", mid)
    await sched.refresh(mid)
    assert mid not in sched.entries
    await pool.execute("DELETE FROM monitors WHERE id = $1", mid)
    await sched.refresh(mid)
    assert sched.applied[mid] == dt.datetime.max.replace(tzinfo=dt.UTC)


async def test_it_skips_missed_rounds_after_a_stall_instead_of_bursting(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    sched.upsert(row(1, interval=1), now=T0)
    await tick_live(sched, T0 + 120)  # two minutes without a tick
    assert len(published) <= 2  # at most the one round still within an interval, per region


async def test_it_leaves_regions_without_live_probes_out(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    sched.upsert(row(1), now=T0)
    for t in range(0, 61):
        await tick_live(sched, T0 + t, ("eu-west",))
    assert {s for s, _ in published} == {"probefleet.jobs.eu-west"}


async def test_it_publishes_nothing_for_a_round_another_controller_opened(pool: asyncpg.Pool) -> None:
    first, published_first = make(pool)
    second, published_second = make(pool)
    for s in (first, second):
        s.upsert(row(1), now=T0)
    for t in range(0, 61):
        await tick_live(first, T0 + t)
        await tick_live(second, T0 + t)
    assert len(published_first) == 2 and published_second == []


# ------------------------------------------------------------ jobs sent ahead, in batches


def sent(published: Published, since: int = 0) -> list[tuple[str, list[wire.CheckJob]]]:
    """The job messages published from index `since` on: (subject, the jobs in it)."""
    return [(s, wire.decode_jobs(d)) for s, d in published[since:] if s.startswith("probefleet.jobs.")]


async def test_it_sends_a_ticks_jobs_ahead_in_one_message_per_region(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    sched.lookahead = 1.0
    for mid in range(1, 201):
        sched.upsert(row(mid, interval=10), now=T0)
    opened, messages = 0, 0
    for step in range(0, 19):  # a tick every half lookahead, over one interval
        now = T0 + step / 2
        before = len(published)
        opened += await tick_live(sched, now, job_batches=True)
        for subject, jobs in sent(published, before):
            messages += 1
            # Sent ahead: due after the tick, within the lookahead; one message per region.
            assert all(now < j.due <= now + 1.0 for j in jobs)
            assert {j.region for j in jobs} == {subject.removeprefix("probefleet.jobs.")}
        per_region = [s for s, _ in sent(published, before)]
        assert len(per_region) == len(set(per_region))
    jobs = [j for _, batch in sent(published) for j in batch]
    assert opened == 200
    assert sorted((j.monitor_id, j.region) for j in jobs) == sorted(
        (m, r) for m in range(1, 201) for r in ("us-east", "eu-west")
    )
    assert messages <= 2 * 19 and messages < len(jobs) / 5
    assert await pool.fetchval("SELECT count(*) FROM rounds") == 200


async def test_it_splits_a_regions_jobs_over_its_live_probes(pool: asyncpg.Pool) -> None:
    sched, published = make(pool)
    sched.lookahead = 1.0
    for mid in range(1, 101):
        sched.upsert(row(mid, interval=10, locations=["eu-west"]), now=T0)
    for step in range(0, 19):
        now = T0 + step / 2
        before = len(published)
        for probe_id in ("a", "b"):
            beat(sched, now, "eu-west", probe_id, job_batches=True)
        await sched.tick(now)
        sizes = [len(jobs) for _, jobs in sent(published, before)]
        # Two live probes: at least two messages whenever there are two jobs, evenly filled.
        assert len(sizes) == min(2, sum(sizes))
        assert max(sizes, default=0) - min(sizes, default=0) <= 1
    assert sum(len(jobs) for _, jobs in sent(published)) == 100


async def test_a_region_with_an_older_probe_gets_single_jobs_at_their_due_time(pool: asyncpg.Pool) -> None:
    """us-east has a probe that does not say it takes batches: the rounds of monitors there
    open at their due time, with one job per message to us-east; a monitor of eu-west alone
    still goes ahead."""
    sched, published = make(pool)
    sched.lookahead = 1.0
    for mid in range(1, 41):
        sched.upsert(row(mid, interval=10, locations=["us-east", "eu-west"]), now=T0)
    for mid in range(41, 61):
        sched.upsert(row(mid, interval=10, locations=["eu-west"]), now=T0)
    for step in range(0, 1001):  # a tick every 10 ms, as the loop's would be for due times
        now = T0 + step / 100
        before = len(published)
        beat(sched, now, "us-east", "new", job_batches=True)
        beat(sched, now, "us-east", "old")
        beat(sched, now, "eu-west", job_batches=True)
        await sched.tick(now, ahead=step % 50 == 0)
        for subject, jobs in sent(published, before):
            if subject == "probefleet.jobs.us-east":
                assert len(jobs) == 1
            for j in jobs:
                if j.monitor_id <= 40:  # a round with us-east: opened at its due time
                    assert now - 0.01 < j.due <= now
                else:
                    assert now < j.due <= now + 1.0
    jobs = [j for _, batch in sent(published) for j in batch]
    assert sorted((j.monitor_id, j.region) for j in jobs) == sorted(
        [(m, r) for m in range(1, 41) for r in ("us-east", "eu-west")]
        + [(m, "eu-west") for m in range(41, 61)]
    )
    assert not sched.waiting or all(due > T0 + 10 for due, _, _ in sched.waiting)


async def test_two_controllers_looking_ahead_publish_each_round_once(pool: asyncpg.Pool) -> None:
    first, published_first = make(pool)
    second, published_second = make(pool)
    for s in (first, second):
        s.lookahead = 1.0
        for mid in range(1, 21):
            s.upsert(row(mid, interval=10), now=T0)
    for step in range(0, 21):
        now = T0 + step / 2
        await tick_live(first, now, job_batches=True)
        await tick_live(second, now + 0.25, job_batches=True)
        await tick_live(second, now, job_batches=True)  # and the other way round
        await tick_live(first, now + 0.25, job_batches=True)
    jobs = [j for _, batch in sent(published_first) + sent(published_second) for j in batch]
    rounds = await pool.fetch("SELECT monitor_id, due FROM rounds")
    assert {r["monitor_id"] for r in rounds} == set(range(1, 21))
    # Each round's job for each region published once, by one of the two.
    assert sorted((j.monitor_id, j.due, j.region) for j in jobs) == sorted(
        (r["monitor_id"], r["due"].timestamp(), region) for r in rounds for region in ("us-east", "eu-west")
    )
    assert sent(published_first) and sent(published_second)


async def test_probes_answer_every_round_of_jobs_sent_ahead_and_share_a_regions_work(
    database: str, nats_url: str
) -> None:
    """A controller with its default lookahead, a probe in each region and a second one in
    eu-west: jobs reach the probes several to a message, every round is answered by every
    region, no check starts before its due time, and both eu-west probes take work."""
    target = RegionalTarget()
    await target.start()
    ctl = await start_controller(database, nats_url)
    probes = await start_probes(nats_url)
    second = Agent(
        ProbeConfig(
            nats_url=nats_url,
            region="eu-west",
            source_address=REGION_ADDRESSES["eu-west"],
            probe_id="test-eu-west-2",
            heartbeat_interval=0.5,
        )
    )
    await second.start()
    probes.append(second)
    messages: Counter[str] = Counter()
    jobs: Counter[str] = Counter()

    async def on_job(msg: Msg) -> None:
        messages[msg.subject] += 1
        jobs[msg.subject] += len(wire.decode_jobs(msg.data))

    watcher = await nats.connect(nats_url)
    await watcher.subscribe(subjects.jobs("*"), cb=on_job)
    pool = ctl.app[keys.POOL]
    try:
        headers = {"Authorization": f"Bearer {ctl.admin_key}"}
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            for i in range(30):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
                )
                assert r.status == 201, await r.text()
        sched = ctl.app[keys.SCHEDULER]
        await eventually(
            lambda: sched.batching(time.time()).get("eu-west") == 2, what="two eu-west probes heard"
        )
        # Rounds taken ahead of time before that wait for their due time; then all go ahead.
        await eventually(lambda: not sched.waiting, what="no round waiting for its due time")
        since = time.time() + 1.0
        messages.clear()
        jobs.clear()

        async def rounds_closed() -> int:
            n = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE due > to_timestamp($1) AND closed_at IS NOT NULL", since
            )
            return int(n) >= 30 * 4

        await eventually(rounds_closed, what="four rounds of every monitor closed")
        rounds = await pool.fetch(
            "SELECT regions, answered, verdict FROM rounds"
            " WHERE due > to_timestamp($1) AND closed_at IS NOT NULL",
            since,
        )
        assert all(sorted(r["answered"]) == sorted(r["regions"]) == sorted(REGIONS) for r in rounds)
        assert {r["verdict"] for r in rounds} == {"up"}
        early = await pool.fetchval(
            "SELECT count(*) FROM check_results WHERE due > to_timestamp($1) AND started_at < due", since
        )
        assert early == 0
        for region in REGIONS:
            subject = subjects.jobs(region)
            assert jobs[subject] >= 4 * messages[subject], (region, jobs[subject], messages[subject])
        assert probes[-1].checks_total > 0 and probes[1].checks_total > 0
    finally:
        await watcher.close()
        await stop_probes(probes)
        await ctl.stop()
        await target.stop()


class OldProbe(Agent):
    """A probe of the previous version: its heartbeat says nothing of batches, and it reads one
    job per message (an array fails to decode) and starts it on arrival."""

    arrivals: list[tuple[float, float]]

    def heartbeat(self) -> wire.ProbeHeartbeat:
        return msgspec.structs.replace(super().heartbeat(), job_batches=False)

    async def _on_message(self, msg: Msg) -> None:
        job = wire.decode_job(msg.data)
        self.arrivals.append((time.time(), job.due))
        self.submit(job)


async def test_a_region_with_a_probe_of_the_previous_version_gets_single_jobs_at_their_due_time(
    database: str, nats_url: str
) -> None:
    target = RegionalTarget()
    await target.start()
    ctl = await start_controller(database, nats_url)
    probes = await start_probes(nats_url, ["us-east", "eu-west"])
    old = OldProbe(
        ProbeConfig(
            nats_url=nats_url,
            region="ap-south",
            source_address=REGION_ADDRESSES["ap-south"],
            probe_id="test-ap-south-old",
            heartbeat_interval=0.5,
        )
    )
    old.arrivals = []
    await old.start()
    probes.append(old)
    pool = ctl.app[keys.POOL]
    try:
        headers = {"Authorization": f"Bearer {ctl.admin_key}"}
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            for i in range(10):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
                )
                assert r.status == 201, await r.text()
        sched = ctl.app[keys.SCHEDULER]
        await eventually(lambda: len(sched.fleet.live()) == 3, what="the three probes heard")
        since = time.time() + 1.0

        async def rounds_closed() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE due > to_timestamp($1) AND closed_at IS NOT NULL", since
            )
            return int(n) >= 10 * 3

        await eventually(rounds_closed, what="three rounds of every monitor closed")
        rounds = await pool.fetch(
            "SELECT answered FROM rounds WHERE due > to_timestamp($1) AND closed_at IS NOT NULL", since
        )
        assert all(sorted(r["answered"]) == sorted(REGIONS) for r in rounds)
        assert sched.batching(time.time()) == {"us-east": 1, "eu-west": 1}
        # Every job reached the old probe alone and no earlier than its due time.
        assert old.arrivals and all(arrived >= due for arrived, due in old.arrivals)
    finally:
        await stop_probes(probes)
        await ctl.stop()
        await target.stop()


def test_a_batch_holds_at_most_its_caps_and_a_large_job_goes_alone() -> None:
    small = [b"x" * 100] * (BATCH_JOBS * 2 + 1)
    assert [len(m) for m in split(small, 1)] == [BATCH_JOBS * 2 // 3 + 1] * 2 + [BATCH_JOBS * 2 // 3]
    assert [len(m) for m in split(small[:5], 3)] == [2, 2, 1]
    assert [len(m) for m in split(small[:2], 3)] == [1, 1]
    big = [b"y" * (BATCH_BYTES // 3)] * 7
    assert all(sum(map(len, m)) <= BATCH_BYTES for m in split(big, 1))
    huge = [b"z" * (BATCH_BYTES + 1), b"x" * 100]
    assert sorted(len(m) for m in split(huge, 1)) == [1, 1]


# ------------------------------------------------------------ the database unavailable


async def test_it_publishes_from_memory_while_the_database_is_frozen_and_writes_the_rounds_after(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    sched, published = make(own_pool)
    for mid in (1, 2):
        sched.upsert(row(mid, interval=1, locations=["us-east"]), now=T0)
    own_postgres.freeze()
    try:
        # Each tick returns while the database is frozen (bounded: a write that waited for
        # PostgreSQL would never return), with every due round's jobs published.
        for second in range(1, 6):
            async with asyncio.timeout(10):
                assert await tick_live(sched, T0 + second) == 2
        assert len(published) == 10
        assert len(sched.pending) == 10
        assert metrics.REGISTRY.get_sample_value("probefleet_rounds_buffered") == 10
    finally:
        own_postgres.thaw()
    assert await sched.write_pending() == 10
    assert not sched.pending
    rows = await own_pool.fetch("SELECT monitor_id, due FROM rounds ORDER BY due, monitor_id")
    dues = sorted((wire.decode_job(data).monitor_id, wire.decode_job(data).due) for _, data in published)
    assert [(r["monitor_id"], r["due"].timestamp()) for r in rows] == sorted(dues, key=lambda k: (k[1], k[0]))
    # back to writing before publishing: a round another controller opened is not published
    await own_pool.execute(
        "INSERT INTO rounds (monitor_id, due, attempt, regions, deadline) VALUES (1, to_timestamp($1), 0,"
        " '{us-east}', to_timestamp($1 + 10))",
        next_due(T0 + 6, 1, phase(1, 1)),
    )
    assert await tick_live(sched, T0 + 7) == 2
    assert [wire.decode_job(data).monitor_id for _, data in published[10:]] == [2]
    assert not sched.pending


async def test_it_sends_nothing_ahead_while_the_database_is_frozen(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    """A controller that cannot write its rounds cannot tell whether its shards are still
    its own: a job sent ahead past its lease would run twice once another controller takes
    the shard over. So while rounds wait in the buffer, each is opened at its due time."""
    sched, published = make(own_pool)
    sched.lookahead = 1.0
    for mid in range(1, 21):
        sched.upsert(row(mid, interval=2), now=T0)
    assert await tick_live(sched, T0, job_batches=True) > 0
    assert any(j.due > T0 for _, jobs in sent(published) for j in jobs), "sent ahead before the freeze"
    own_postgres.freeze()
    try:
        for step in range(1, 9):
            now = T0 + step / 2
            before = len(published)
            async with asyncio.timeout(10):
                await tick_live(sched, now, job_batches=True)
            assert sched.pending, "rounds buffered"
            if step == 1:
                continue  # the tick whose write finds the database gone had sent them already
            late = [j.due for _, jobs in sent(published, before) for j in jobs if j.due > now]
            assert late == [], f"sent ahead while the database was frozen: {late}"
    finally:
        own_postgres.thaw()
    assert await sched.write_pending() > 0
    # The first tick's write finds the database back; from the next one on, ahead again.
    await tick_live(sched, T0 + 5, job_batches=True)
    before = len(published)
    await tick_live(sched, T0 + 5.5, job_batches=True)
    assert any(j.due > T0 + 5.5 for _, jobs in sent(published, before) for j in jobs), "ahead again after"


async def test_a_full_buffer_drops_its_oldest_rounds(pool: asyncpg.Pool) -> None:
    sched = Scheduler(pool=pool, publish=Published(), fleet=Fleet(), buffer_max=3)
    before = metrics.REGISTRY.get_sample_value("probefleet_rounds_dropped_total") or 0.0
    rows = [(mid, wire_ts(T0), 0, ["us-east"], wire_ts(T0 + 5)) for mid in range(1, 6)]
    sched._buffer(rows)
    assert [r[0] for r in sched.pending] == [3, 4, 5]
    assert metrics.REGISTRY.get_sample_value("probefleet_rounds_dropped_total") == before + 2


async def test_the_writer_loop_writes_what_the_ticks_buffered(pool: asyncpg.Pool) -> None:
    sched, _ = make(pool)
    sched._buffer([(7, wire_ts(T0), 0, ["us-east"], wire_ts(T0 + 5))])
    stop = asyncio.Event()
    loop = asyncio.create_task(sched.write_loop(stop))
    try:
        await eventually(lambda: not sched.pending, what="the buffer written")
        assert await pool.fetchval("SELECT count(*) FROM rounds WHERE monitor_id = 7") == 1
    finally:
        stop.set()
        await loop
