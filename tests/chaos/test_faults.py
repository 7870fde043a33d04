"""Scripted faults against one running system (single NATS server): each scenario injects
its fault under the load of 100 monitors at 1 s in three regions, then checks the
invariants of issue 15 (harness.Stack.check). PROBEFLEET_CHAOS=full (`make chaos`) runs the
long form: 10 kills, a 20 s freeze, a 10-minute controller outage (10 s in the short form)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import nats
import pytest

from probefleet.controller.storage.db import _MIGRATION_LOCK
from probefleet.shared import subjects
from tests.chaos.harness import STEADY, Stack, pick, wait

pytestmark = pytest.mark.timeout(pick(2400, 300))


async def test_it_survives_controller_kills(stack: Stack) -> None:
    since = time.time()
    kills = []
    for _ in range(pick(10, 1)):
        await stack.steady_for(pick(5.0, 2.0))
        kills.append(time.time())
        stack.kill_controller("ctl-a")
        await stack.restart_controller("ctl-a")
        await stack.rounds_decided_after(time.time(), STEADY)
    # A round written just before the kill whose jobs were not yet published has no answer:
    # unknown is its right verdict (one scheduler tick, a second, before each kill).
    windows = [(k - 1.5, k + 0.1) for k in kills]
    await stack.check(f"controller kill -9 and restart, {len(kills)} times", since, unknown_windows=windows)


async def test_it_keeps_one_incident_when_one_of_two_controllers_dies_mid_incident(stack: Stack) -> None:
    since = time.time()
    await stack.start_controller("ctl-b")

    async def both_members() -> bool:
        n = await stack.db.fetchval("SELECT count(*) FROM controllers WHERE lease_until > now()")
        return bool(n == 2)

    await wait(both_members, 30, "two live controllers")
    mid = stack.flips["flip-0"]
    start = time.time()
    stack.observer.down.add("flip-0")

    async def incident_open() -> bool:
        return bool(
            await stack.db.fetchval(
                "SELECT count(*) FROM incidents WHERE monitor_id = $1 AND status = 'active'", mid
            )
        )

    await wait(incident_open, 20, "the incident of flip-0 open")
    stack.kill_controller("ctl-a")
    await asyncio.sleep(pick(5.0, 2.0))
    stack.observer.down.discard("flip-0")
    end = time.time()
    await stack.check("two controllers, one killed mid-incident", since, outages={"flip-0": (start, end)})
    # Back to one controller for the next scenarios.
    await stack.restart_controller("ctl-a")
    stack.observer.set_alive("ctl-b", False)
    stack.controllers["ctl-b"].stop()


async def test_it_survives_a_nats_kill(stack: Stack) -> None:
    assert stack.nats is not None
    since = time.time()
    await stack.steady_for(1.0)
    port = stack.nats.port
    lo = time.time()
    stack.nats.kill()
    await asyncio.sleep(pick(15.0, 3.0))
    stack.nats.start(port=port)
    hi = time.time()
    await stack.rounds_decided_after(hi + 1, STEADY, within=60)
    # With NATS gone the fleet is unreachable: rounds due then have no answers (unknown, never
    # down). The probes never stopped: a region event would be false (issue 15, item 6).
    await stack.check(
        f"NATS kill -9, {pick(15, 3)} s down, restart", since, unknown_windows=[(lo - 1.5, hi + 3)]
    )


async def test_it_loses_only_the_region_of_a_killed_probe(stack: Stack) -> None:
    since = time.time()
    stack.probes["eu-west"].kill()
    await asyncio.sleep(2.0)  # the controller forgets the probe after 3 missed heartbeats (1.5 s)
    outage = await stack.outage("flip-1", 4.0)
    await asyncio.sleep(pick(15.0, 0.5))
    stack.probes["eu-west"].start()
    await stack.rounds_decided_after(time.time() + 1, STEADY)
    # Every monitor available in the region again before the check: the region's events
    # belong to this scenario, not to the next one's window.
    await stack.all_up()
    await stack.check("probe killed", since, outages={"flip-1": outage}, region_events={"eu-west"})


async def test_it_loses_only_the_region_of_a_probe_stopped_past_its_deadlines(stack: Stack) -> None:
    since = time.time()
    probe = stack.probes["us-east"]
    probe.signal(signal.SIGSTOP)
    await asyncio.sleep(pick(5.0, 3.0))
    probe.signal(signal.SIGCONT)
    await stack.rounds_decided_after(time.time() + 1, STEADY)
    await stack.all_up()
    await stack.check("probe slowed past its deadlines (SIGSTOP)", since, region_events={"us-east"})


async def test_it_stalls_nothing_beyond_bounds_during_a_migration_under_load(stack: Stack) -> None:
    since = time.time()
    env = {"PROBEFLEET_DATABASE_URL": stack.database}
    done = subprocess.run(
        [*stack.controllers["ctl-a"].argv[:3], "controller", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # A harmless migration that takes the monitors table's strongest lock for a while, as a
    # column added with a rewrite would: the API answers 503 in time, the pipeline waits.
    async with stack.db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("ALTER TABLE monitors ADD COLUMN chaos_note text")
        await conn.execute("SELECT pg_sleep($1)", pick(5.0, 2.0))
        await conn.execute("ALTER TABLE monitors DROP COLUMN chaos_note")
    await stack.rounds_decided_after(time.time() + 1, STEADY)
    await stack.check("migration under load", since)


async def test_it_answers_the_api_with_500_slow_clients_connected(stack: Stack) -> None:
    since = time.time()
    port = stack.controllers["ctl-a"].port
    writers = []
    try:
        for _ in range(500):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/v1/monitors HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            writers.append(writer)
        # A header line every second, never the blank line that ends the request.
        for i in range(int(pick(20, 3))):
            for w in writers:
                w.write(f"X-Slow-{i}: 1\r\n".encode())
            await asyncio.sleep(1.0)
    finally:
        for w in writers:
            w.close()
    await stack.check(f"500 slow clients for {pick(20, 3)} s", since)


async def test_it_survives_postgres_frozen(stack: Stack) -> None:
    since = time.time()
    stack.postgres.freeze()
    try:
        await asyncio.sleep(pick(20.0, 4.0))
    finally:
        stack.postgres.thaw()
    await stack.rounds_decided_after(time.time() + 1, STEADY, within=60)
    await stack.check(f"PostgreSQL frozen (SIGSTOP) {pick(20, 4)} s", since)


async def test_it_survives_postgres_stopped_and_restarted(stack: Stack) -> None:
    since = time.time()
    port = stack.postgres.port
    stack.postgres.stop()
    await asyncio.sleep(pick(10.0, 2.0))
    stack.postgres.start(port=port)
    await stack.reset_pool()
    await stack.rounds_decided_after(time.time() + 1, STEADY, within=60)
    await stack.check(f"PostgreSQL stopped {pick(10, 2)} s and restarted", since)


async def test_it_replays_the_backlog_after_a_long_controller_outage(stack: Stack) -> None:
    since = time.time()
    stack.kill_controller("ctl-a")
    # 10 s at the load is a backlog of about 3,000 results (and longer than ACK_WAIT: what the
    # killed controller had fetched is redelivered by the time it is back).
    await asyncio.sleep(pick(600.0, 10.0))
    restarted = time.time()
    await stack.restart_controller("ctl-a")
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()

        async def caught_up() -> bool:
            info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending < STEADY * 3

        await wait(caught_up, 60, "results consumer caught up")
    finally:
        await nc.close()
    caught = time.time() - restarted
    await stack.rounds_decided_after(time.time(), STEADY)
    await stack.check(
        f"controller down {pick(600, 10)} s, backlog replay",
        since,
        open_age=10.0,
        extra={"caught_up_after_restart_s": round(caught, 2)},
    )
