"""The chaos harness's results accounting (`Stack._check_results`) on real NATS and
PostgreSQL, without the processes: results published as a probe publishes them, stored by
the results consumer, then counted by the same tap and the same check as a scenario's."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from probefleet.controller.engine import results
from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT
from probefleet.controller.storage import db
from probefleet.controller.storage import results as results_store
from probefleet.shared import subjects, wire
from probefleet.shared.streams import ensure_streams
from tests.chaos.harness import Observer, Stack
from tests.helpers import eventually

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await db.migrate(database)
    p = await db.create_pool(database, max_size=4)
    yield p
    await p.close()


def scaled_apart(start: float) -> float:
    """The first due from `start` on whose float product with 1e6 rounds to another
    microsecond than the timestamp the controller stores (about one raw time.time() in
    eight; a few steps of the float's last digit away)."""
    due = start
    while round(due * 1_000_000) == (results_store.ts(due) - _EPOCH) // dt.timedelta(microseconds=1):
        due = math.nextafter(due, math.inf)
    return due


async def test_diagnoses_with_raw_due_times_count_as_stored(
    pool: asyncpg.Pool, nats_url: str, tmp_path: Path
) -> None:
    """A diagnosis (attempt 2000) is due at the raw time.time() its incident was handled,
    not on a scheduled round's millisecond grid. Published and stored, it is neither lost
    nor stored twice: the accounting must find it stored. (It counted one whose due's
    microseconds end near a half as published and neither stored nor held, the chaos
    cluster scenario's failure once in three runs.)"""
    now = time.time()
    dues = {
        "us-east": round(now - 5, 3),  # a scheduled round's due
        "eu-west": scaled_apart(now - 4),
        "ap-south": now - 3,
    }
    sent = [
        wire.CheckResult(
            monitor_id=7,
            due=due,
            region=region,
            attempt=0 if region == "us-east" else DIAGNOSTIC_ATTEMPT,
            probe_id=f"p-{region}",
            status=wire.Status.OK,
            message="diagnosed",
            started_at=due,
        )
        for region, due in dues.items()
    ]
    stack = Stack(tmp_path)
    stack.pool = pool
    stack.observer = Observer([nats_url])
    stack.observer.start()
    nc = await nats.connect(nats_url)
    stop = asyncio.Event()
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await results.ensure_consumer(js)
        consumer = asyncio.create_task(results.consume(js, pool, batch=50, stop=stop))
        try:
            for r in sent:  # as a probe publishes: the job id as msg id, until JetStream acknowledges
                await js.publish(
                    subjects.results(r.region), wire.encode(r), headers={"Nats-Msg-Id": r.job_id}
                )

            async def all_in() -> bool:
                info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
                stored = await pool.fetchval("SELECT count(*) FROM check_results")
                tapped = len(stack.observer.results_seen()[0])
                return tapped == stored == 3 and info.num_ack_pending == 0 and info.num_pending == 0

            await eventually(all_in, timeout=15, what="three results tapped, stored and acknowledged")
        finally:
            stop.set()
            await consumer
        figures = await stack._check_results()
    finally:
        await nc.close()
        stack.observer.stop()
    assert figures["results_published"] == figures["results_stored"] == 3, figures
    assert figures["diagnoses_stored"] == 2 and figures["results_held_for_redelivery"] == 0, figures
