"""results.ingest on real PostgreSQL: quiet rounds are written in bulk with the same
compare-and-set as `incidents.apply`, and state changes still go through `apply`; the
sweeper's `Backlog` from consumer states."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, SequenceInfo, StreamState

from probefleet.controller import metrics
from probefleet.controller.engine import results
from probefleet.controller.engine.ondemand import ON_DEMAND_ATTEMPT
from probefleet.controller.storage import db
from probefleet.controller.storage import results as store
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import PostgresServer
from probefleet.shared.streams import ensure_streams
from tests.helpers import eventually

REGIONS = ["us-east", "eu-west", "ap-south"]


async def monitor(pool: asyncpg.Pool, status: str = "up") -> int:
    mid: int = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, status)"
        ' VALUES (\'m\', \'http\', \'{"type": "http", "url": "http://127.0.0.1/"}\', 60, 5, $1, $2)'
        " RETURNING id",
        REGIONS,
        status,
    )
    return mid


async def round_results(
    pool: asyncpg.Pool, mid: int, due: float, ms: tuple[float, ...], status: wire.Status = wire.Status.OK
) -> list[wire.CheckResult]:
    await store.insert_rounds(pool, [(mid, store.ts(due), 0, REGIONS, store.ts(due + 3600))])
    return [
        wire.CheckResult(
            monitor_id=mid,
            due=due,
            region=r,
            probe_id=f"p-{r}",
            status=status,
            started_at=due,
            duration_ms=d,
            reason=None if status == wire.Status.OK else wire.Reason.TIMEOUT,
        )
        for r, d in zip(REGIONS, ms, strict=True)
    ]


async def state(pool: asyncpg.Pool, mid: int) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT status, pass_streak, fail_streak, last_round, response_time_ms, last_success"
        " FROM monitors WHERE id = $1",
        mid,
    )
    assert row is not None
    return dict(row)


async def test_a_passing_round_refreshes_the_monitor_and_writes_no_event(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    due = time.time() - 10
    assert await results.ingest(pool, await round_results(pool, mid, due, (10, 30, 20))) == 3
    s = await state(pool, mid)
    assert s["status"] == "up" and s["pass_streak"] == 1 and s["response_time_ms"] == 20
    assert s["last_round"] == store.ts(due) and s["last_success"] is not None
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    assert await pool.fetchval("SELECT verdict FROM rounds WHERE monitor_id = $1", mid) == "up"


async def test_an_older_round_never_overwrites_a_newer_one(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    t = time.time() - 100
    await results.ingest(pool, await round_results(pool, mid, t + 60, (5, 5, 5)))
    await results.ingest(pool, await round_results(pool, mid, t, (50, 50, 50)))
    s = await state(pool, mid)
    assert s["last_round"] == store.ts(t + 60) and s["response_time_ms"] == 5 and s["pass_streak"] == 1


async def test_two_rounds_of_one_monitor_in_a_batch_apply_in_order(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    t = time.time() - 100
    batch = await round_results(pool, mid, t, (5, 5, 5)) + await round_results(pool, mid, t + 60, (7, 7, 7))
    await results.ingest(pool, batch)
    s = await state(pool, mid)
    assert s["pass_streak"] == 2 and s["last_round"] == store.ts(t + 60) and s["response_time_ms"] == 7


async def test_a_failing_round_still_goes_through_the_incident_engine(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    await results.ingest(pool, await round_results(pool, mid, time.time() - 10, (1, 1, 1), wire.Status.FAIL))
    assert (await state(pool, mid))["status"] == "down"
    kinds = {r["kind"] for r in await pool.fetch("SELECT kind FROM events WHERE monitor_id = $1", mid)}
    assert {"monitor.down", "incident.opened"} <= kinds


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def info(delivered: int, floor: int, pending: int, unacked: int) -> ConsumerInfo:
    return ConsumerInfo(
        name="controller",
        stream_name="PROBEFLEET_RESULTS",
        config=ConsumerConfig(),
        created=T0,
        delivered=SequenceInfo(consumer_seq=delivered, stream_seq=delivered),
        ack_floor=SequenceInfo(consumer_seq=floor, stream_seq=floor),
        num_pending=pending,
        num_ack_pending=unacked,
    )


# (delivered, ack floor, pending, unacked) at T0 + 0, 1, 2 ... s; the expected caught_up_at.
@pytest.mark.parametrize(
    ("states", "caught_up"),
    [
        ([(10, 10, 0, 0)], 0),
        ([(10, 8, 5, 2)], None),
        ([(10, 8, 5, 2), (15, 14, 3, 1)], None),
        ([(10, 8, 5, 2), (15, 15, 3, 0)], 0),
        ([(10, 8, 5, 2), (16, 14, 4, 2), (20, 20, 1, 0)], 1),
        ([(10, 8, 5, 2), (10, 8, 5, 2), (10, 8, 5, 2)], None),
        ([(10, 8, 5, 2), (15, 15, 0, 0)], 1),
    ],
    ids=[
        "idle-is-caught-up-now",
        "backlog-not-yet",
        "floor-short-of-the-head",
        "floor-reaches-the-first-head",
        "floor-reaches-the-second-head",
        "unacked-held-by-a-dead-controller",
        "drained",
    ],
)
def test_it_tracks_when_the_consumer_caught_up(
    states: list[tuple[int, int, int, int]], caught_up: int | None
) -> None:
    backlog = results.Backlog()
    for second, state in enumerate(states):
        backlog.observe(info(*state), T0 + dt.timedelta(seconds=second))
    assert backlog.caught_up_at == (None if caught_up is None else T0 + dt.timedelta(seconds=caught_up))


def stream(first: int, last: int) -> StreamState:
    return StreamState(
        messages=max(0, last - first + 1), bytes=0, first_seq=first, last_seq=last, consumer_count=1
    )


def test_a_consumer_that_has_not_seen_what_the_stream_acknowledged_is_not_caught_up() -> None:
    """Just after the results stream's leader changed, the probes' publishes are acknowledged
    (the stream holds sequences 11 and 12, so the probes report nothing held) while the
    consumer's replica counts neither: idle in its own info. It is caught up only once its
    ack floor, or the stream's first sequence, is past what the stream held when it was
    asked. (The consumer's info alone said caught up at T0: the chaos cluster scenario's rounds
    closed unknown 0.7 s before their ok answers were stored.)"""
    backlog = results.Backlog()
    backlog.observe(info(10, 10, 0, 0), T0, stream(11, 12))
    assert backlog.caught_up_at is None
    backlog.observe(info(12, 10, 0, 2), T0 + dt.timedelta(seconds=1), stream(11, 14))
    assert backlog.caught_up_at is None
    # 11 and 12 stored and acknowledged (gone from the work-queue stream), 13 and 14 not yet.
    backlog.observe(info(14, 10, 0, 2), T0 + dt.timedelta(seconds=2), stream(13, 14))
    assert backlog.caught_up_at == T0
    backlog.observe(info(14, 14, 0, 0), T0 + dt.timedelta(seconds=3), stream(15, 14))
    assert backlog.caught_up_at == T0 + dt.timedelta(seconds=3)


# ------------------------------------------------------------ the database unavailable


async def test_the_consumer_keeps_its_batch_through_a_frozen_database_and_stores_each_result_once(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await results.ensure_consumer(js)
    mid = await monitor(own_pool)
    due = time.time()
    await store.insert_rounds(own_pool, [(mid, store.ts(due), 0, REGIONS, store.ts(due + 3600))])
    stop = asyncio.Event()

    def failures() -> float:
        return (
            metrics.REGISTRY.get_sample_value("probefleet_database_failures_total", {"loop": "results"})
            or 0.0
        )

    before = failures()
    with db.bounded(1.0):  # the controller's database_background_timeout, short for the test
        consumer = asyncio.create_task(results.consume(js, own_pool, batch=2, stop=stop))
    try:
        own_postgres.freeze()
        try:
            for region in REGIONS:
                result = wire.CheckResult(
                    monitor_id=mid,
                    due=due,
                    region=region,
                    probe_id="p",
                    status=wire.Status.OK,
                    started_at=due,
                )
                await js.publish(subjects.results(region), wire.encode(result))

            async def held() -> bool:
                info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
                unacked, waiting = info.num_ack_pending, info.num_pending
                return unacked >= 1 and unacked + waiting == 3 and failures() >= before + 2

            # the first batch (up to 2) is held: not acknowledged, nothing more fetched, retried
            await eventually(held, timeout=15, what="a batch held and retried while frozen")
            await asyncio.sleep(4)  # retries back off: a few in these seconds, not a storm
            assert failures() - before <= 8
        finally:
            own_postgres.thaw()

        async def drained() -> bool:
            info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(drained, timeout=20, what="every result stored and acknowledged")
        rows = await own_pool.fetch("SELECT region FROM check_results WHERE monitor_id = $1", mid)
        assert sorted(r["region"] for r in rows) == sorted(REGIONS)
        rnd = await own_pool.fetchrow("SELECT closed_at, verdict FROM rounds WHERE monitor_id = $1", mid)
        assert rnd is not None and rnd["closed_at"] is not None and rnd["verdict"] == "up"
        info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
        assert info.num_redelivered == 0
        assert not consumer.done()
    finally:
        stop.set()
        await consumer
        await nc.close()


# ------------------------------------------------------------ messages: single results and batches


@contextlib.asynccontextmanager
async def consuming(
    nats_url: str, pool: asyncpg.Pool, gather: float = 0.0
) -> AsyncIterator[JetStreamContext]:
    """The results stream and consumer, with `consume` running on them until the block ends."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await results.ensure_consumer(js)
    stop = asyncio.Event()
    consumer = asyncio.create_task(results.consume(js, pool, batch=50, stop=stop, gather=gather))
    try:
        yield js
    finally:
        stop.set()
        await consumer
        await nc.close()


async def drained(js: JetStreamContext) -> bool:
    info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


def batch(rs: list[wire.CheckResult]) -> bytes:
    return wire.encode_batch([wire.encode(r) for r in rs])


async def test_the_consumer_stores_single_results_and_batches_alike(
    pool: asyncpg.Pool, nats_url: str
) -> None:
    a, b = await monitor(pool), await monitor(pool)
    due = time.time() - 5
    first, second = await round_results(pool, a, due, (1, 2, 3)), await round_results(pool, b, due, (4, 5, 6))
    async with consuming(nats_url, pool) as js:
        # us-east and ap-south batch both monitors' answers, eu-west sends them one by one.
        await js.publish(subjects.results("us-east"), batch([first[0], second[0]]))
        for r in (first[1], second[1]):
            await js.publish(subjects.results("eu-west"), wire.encode(r))
        await js.publish(subjects.results("ap-south"), batch([first[2], second[2]]))
        await eventually(lambda: drained(js), timeout=10, what="every message stored and acknowledged")
    for mid in (a, b):
        rnd = await pool.fetchrow("SELECT answered, verdict FROM rounds WHERE monitor_id = $1", mid)
        assert rnd is not None and sorted(rnd["answered"]) == sorted(REGIONS) and rnd["verdict"] == "up"
    assert await pool.fetchval("SELECT count(*) FROM check_results") == 6


async def test_results_arriving_while_the_consumer_gathers_are_stored_in_one_transaction(
    pool: asyncpg.Pool, nats_url: str
) -> None:
    """After a fetch that found less than it asked for, the consumer waits `gather` before
    the next: what arrives meanwhile is one transaction (received_at is the transaction's
    now()). Without the wait each answer published alone would be a fetch of its own."""
    mid = await monitor(pool)
    us, eu, ap = await round_results(pool, mid, time.time() - 5, (1, 2, 3))
    async with consuming(nats_url, pool, gather=1.0) as js:
        await js.publish(subjects.results("us-east"), wire.encode(us))
        await eventually(
            lambda: pool.fetchval("SELECT count(*) FROM check_results"), timeout=10, what="us-east stored"
        )
        # The consumer now waits a second before its next fetch: both arrive meanwhile.
        await js.publish(subjects.results("eu-west"), wire.encode(eu))
        await js.publish(subjects.results("ap-south"), wire.encode(ap))
        await eventually(lambda: drained(js), timeout=10, what="every message stored and acknowledged")
    stored = {
        r["region"]: r["received_at"]
        for r in await pool.fetch("SELECT region, received_at FROM check_results")
    }
    assert stored["eu-west"] == stored["ap-south"] != stored["us-east"], stored
    rnd = await pool.fetchrow("SELECT answered, verdict FROM rounds WHERE monitor_id = $1", mid)
    assert rnd is not None and sorted(rnd["answered"]) == sorted(REGIONS) and rnd["verdict"] == "up"


async def test_a_batch_with_a_result_of_another_region_is_terminated_whole(
    pool: asyncpg.Pool, nats_url: str
) -> None:
    mid = await monitor(pool)
    us, eu, _ = await round_results(pool, mid, time.time() - 5, (1, 2, 3))
    mismatches = metrics.REGION_MISMATCH.labels("result")
    before = mismatches._value.get()
    async with consuming(nats_url, pool) as js:
        # us-east's subject: its own answer and one that claims to be eu-west's.
        await js.publish(subjects.results("us-east"), batch([us, eu]))
        await eventually(lambda: drained(js), timeout=10, what="the batch terminated, not redelivered")
        assert mismatches._value.get() == before + 1
        assert await pool.fetchval("SELECT count(*) FROM check_results") == 0
        # The consumer goes on: an honest batch after it is stored.
        await js.publish(subjects.results("us-east"), batch([us]))
        await eventually(
            lambda: pool.fetchval("SELECT count(*) FROM check_results WHERE region = 'us-east'"),
            timeout=10,
            what="the honest result stored",
        )
    assert await pool.fetchval("SELECT count(*) FROM check_results") == 1


async def test_a_batch_sent_again_is_stored_once(pool: asyncpg.Pool, nats_url: str) -> None:
    mid = await monitor(pool)
    answers = await round_results(pool, mid, time.time() - 5, (1, 2, 3))
    us_east = [answers[0], answers[0].__copy__()]
    us_east[1].attempt = 1  # a confirmation round's answer in the same batch
    await store.insert_rounds(
        pool, [(mid, store.ts(answers[0].due), 1, ["us-east"], store.ts(time.time() + 3600))]
    )
    data, msg_id = batch(us_east), wire.batch_id([r.job_id for r in us_east])
    async with consuming(nats_url, pool) as js:
        # A probe's retry after a lost acknowledgement: JetStream drops the copy.
        for _ in range(2):
            await js.publish(subjects.results("us-east"), data, headers={"Nats-Msg-Id": msg_id})
        info = await js.stream_info(subjects.RESULTS_STREAM)
        assert info.state.messages <= 1 and info.state.last_seq == 1
        await eventually(lambda: drained(js), timeout=10, what="the batch stored")
        # Sent again past the duplicate window (another msg id): the database keeps one of each.
        duplicates = metrics.RESULTS_DUPLICATE._value.get()
        await js.publish(subjects.results("us-east"), data, headers={"Nats-Msg-Id": "later"})
        await eventually(
            lambda: metrics.RESULTS_DUPLICATE._value.get() == duplicates + 2, timeout=10, what="the copy seen"
        )
    rows = await pool.fetch("SELECT attempt FROM check_results WHERE monitor_id = $1 ORDER BY attempt", mid)
    assert [r["attempt"] for r in rows] == [0, 1]


async def test_answers_stored_at_once_by_three_controllers_close_each_round_once(pool: asyncpg.Pool) -> None:
    # Each region's answer in its own batch, all three at once (three controllers sharing
    # the consumer): the one UPDATE that records answers and closes a complete round queues
    # on the round's row, so exactly one batch closes it, with every answer counted.
    mid = await monitor(pool)
    start = time.time() - 600
    for i in range(5):
        batch = await round_results(pool, mid, start + 60 * i, (10, 20, 30))
        stored = await asyncio.gather(*(results.ingest(pool, [r]) for r in batch))
        assert stored == [1, 1, 1]
    rounds = await pool.fetch(
        "SELECT answered, closed_at, verdict FROM rounds WHERE monitor_id = $1 ORDER BY due", mid
    )
    assert [sorted(r["answered"]) for r in rounds] == [sorted(REGIONS)] * 5
    assert all(r["closed_at"] is not None and r["verdict"] == "up" for r in rounds)
    assert (await state(pool, mid))["pass_streak"] == 5
    # A redelivered batch stores nothing and closes nothing again.
    assert await results.ingest(pool, batch) == 0
    assert (await state(pool, mid))["pass_streak"] == 5


async def test_a_round_missing_a_region_stays_open_until_the_sweep(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    due = time.time() - 10
    batch = await round_results(pool, mid, due, (10, 20, 30))
    assert await results.ingest(pool, batch[:2]) == 2
    row = await pool.fetchrow("SELECT answered, closed_at FROM rounds WHERE monitor_id = $1", mid)
    assert row is not None and sorted(row["answered"]) == sorted(REGIONS[:2]) and row["closed_at"] is None
    assert await results.sweep(pool, now=store.ts(due + 7200)) == 1  # past its deadline
    assert await pool.fetchval("SELECT verdict FROM rounds WHERE monitor_id = $1", mid) == "up"
    # The late answer is stored but the closed round is not decided again.
    assert await results.ingest(pool, batch[2:]) == 1
    assert (await state(pool, mid))["pass_streak"] == 1


async def test_results_for_returns_exactly_the_answers_of_the_rounds_asked(pool: asyncpg.Pool) -> None:
    # One index probe per round (a LATERAL lookup, so no plan reads the day's partition):
    # the answers of other rounds, attempts and monitors stay out.
    a, b = await monitor(pool), await monitor(pool)
    t = time.time() - 600
    for mid in (a, b):
        for due in (t, t + 60):
            async with pool.acquire() as conn:
                await store.store_batch(conn, await round_results(pool, mid, due, (1, 2, 3)))
    recheck = (await round_results(pool, a, t, (4, 5, 6)))[0]
    recheck.attempt = 1
    async with pool.acquire() as conn:
        await store.store_batch(conn, [recheck])
        keys = [(a, store.ts(t), 0), (b, store.ts(t + 60), 0), (a, store.ts(t), 1)]
        found = await store.results_for(conn, keys)
    assert sorted((r["monitor_id"], r["due"], r["attempt"], r["region"]) for r in found) == sorted(
        [(a, store.ts(t), 0, r) for r in REGIONS]
        + [(b, store.ts(t + 60), 0, r) for r in REGIONS]
        + [(a, store.ts(t), 1, "us-east")]
    )


async def test_a_round_closed_after_waiting_for_another_batch_decides_with_that_batchs_answer(
    pool: asyncpg.Pool,
) -> None:
    # The statement that stores a batch and closes its rounds reads their answers from its
    # snapshot, taken before it waited for another batch's lock on the round: that batch's
    # answer is recorded in the round but not in the snapshot, and is read again. Without
    # it the median response time would be 55 ms (10 and 100), not 90.
    mid = await monitor(pool)
    batch = await round_results(pool, mid, time.time() - 10, (10, 90, 100))
    assert await results.ingest(pool, batch[:1]) == 1
    async with pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        try:
            assert (await store.store_batch(other, batch[1:2])).count == 1  # holds the round's row
            closing = asyncio.create_task(results.ingest(pool, batch[2:]))

            async def waiting() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'WITH new AS%'"
                    )
                )

            await eventually(waiting, timeout=10, what="the last answer's batch waiting for the round")
        finally:
            await tx.commit()
        assert await closing == 1
    s = await state(pool, mid)
    assert s["response_time_ms"] == 90 and s["pass_streak"] == 1
    row = await pool.fetchrow("SELECT answered, closed_at, verdict FROM rounds WHERE monitor_id = $1", mid)
    assert row is not None and sorted(row["answered"]) == sorted(REGIONS) and row["verdict"] == "up"


async def test_a_closed_rounds_monitor_comes_with_the_maintenance_windows_that_apply_to_it(
    pool: asyncpg.Pool,
) -> None:
    # The windows are read in the statement that closes the round, so a window created
    # just before a batch holds that batch's verdict: no monitor.down, no incident.
    mid = await monitor(pool)
    await results.ingest(pool, await round_results(pool, mid, time.time() - 100, (1, 1, 1)))
    now = dt.datetime.now(dt.UTC)
    await pool.execute(
        "INSERT INTO maintenance_windows (name, monitor_ids, starts_at, ends_at) VALUES ('w', $1, $2, $3)",
        [mid],
        now - dt.timedelta(minutes=5),
        now + dt.timedelta(minutes=5),
    )
    await pool.execute("INSERT INTO maintenance_windows (name, tags) VALUES ('other', '{elsewhere}')")
    batch = await round_results(pool, mid, time.time() - 10, (1, 1, 1), wire.Status.FAIL)
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.store_batch(conn, batch)
        [closed] = stored.closed
        assert [w["name"] for w in closed["monitor"]["windows"]] == ["w"]
        await results.finish_rounds(conn, stored.closed, dt.datetime.now(dt.UTC))
    assert (await state(pool, mid))["status"] == "down"
    kinds = {r["kind"] for r in await pool.fetch("SELECT kind FROM events WHERE monitor_id = $1", mid)}
    assert not kinds & {"monitor.down", "incident.opened"}
    assert await pool.fetchval("SELECT count(*) FROM maintenance_periods WHERE monitor_id = $1", mid) == 1


def expired(closed: int = 0, next_in: float | None = None) -> store.Expired:
    rounds: list[dict[str, Any]] = [{}] * closed
    return store.Expired(
        closed=rounds, next_deadline=None if next_in is None else T0 + dt.timedelta(seconds=next_in)
    )


# (rounds closed, seconds to the earliest open deadline) -> seconds to the next sweep
@pytest.mark.parametrize(
    ("closed", "next_in", "delay"),
    [
        (0, None, 2.0),
        (3, None, 2.0),
        (5000, None, 0.5),
        (0, 0.7, 1.25),
        (0, 30.0, 2.0),
        (0, 0.0, 0.55),
        (0, -4.0, 0.5),
    ],
    ids=[
        "nothing-open-sleeps-idle",
        "closed-some-nothing-left",
        "a-full-sweep-sweeps-again-soon",
        "wakes-past-the-next-deadline",
        "a-far-deadline-sleeps-idle",
        "a-deadline-now",
        "a-deadline-held-back-by-the-backlog",
    ],
)
def test_the_sweeper_sleeps_until_a_round_may_close(closed: int, next_in: float | None, delay: float) -> None:
    got = results.sweep_delay(expired(closed, next_in), T0, interval=0.5, idle=2.0, margin=0.5)
    assert got == pytest.approx(delay)


async def test_a_sweep_tells_the_earliest_deadline_still_open(pool: asyncpg.Pool) -> None:
    mid = await monitor(pool)
    now = time.time()
    for due, deadline in ((now - 100, now - 50), (now - 10, now + 30), (now - 5, now + 20)):
        await store.insert_rounds(pool, [(mid, store.ts(due), 0, REGIONS, store.ts(deadline))])
    async with pool.acquire() as conn, conn.transaction():
        swept = await store.close_expired(conn, store.ts(now))
    assert [c["due"] for c in swept.closed] == [store.ts(now - 100)]
    assert swept.next_deadline == store.ts(now + 20)
    async with pool.acquire() as conn, conn.transaction():
        swept = await store.close_expired(conn, store.ts(now + 60))
    assert len(swept.closed) == 2 and swept.next_deadline is None


async def test_a_run_of_a_monitor_not_saved_yet_is_not_stored(pool: asyncpg.Pool, nats_url: str) -> None:
    mid = await monitor(pool)
    due = time.time()
    run = {
        m: wire.CheckResult(
            monitor_id=m,
            due=due,
            region="us-east",
            attempt=ON_DEMAND_ATTEMPT,
            probe_id="p1",
            status=wire.Status.OK,
            started_at=due,
        )
        for m in (results.UNSAVED_MONITOR, mid)
    }
    async with consuming(nats_url, pool) as js:
        # The console's "test now" of an unsaved form, then a run of a stored monitor.
        await js.publish(subjects.results("us-east"), wire.encode(run[results.UNSAVED_MONITOR]))
        await js.publish(subjects.results("us-east"), wire.encode(run[mid]))
        await eventually(lambda: drained(js), timeout=10, what="both acknowledged")
    rows = await pool.fetch("SELECT monitor_id, attempt FROM check_results")
    assert [(r["monitor_id"], r["attempt"]) for r in rows] == [(mid, ON_DEMAND_ATTEMPT)]
