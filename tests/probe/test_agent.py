from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext

from probefleet.probe.agent import Agent, _Slots
from probefleet.probe.checkers import CHECKERS, Checker, base, capabilities
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.config import ProbeConfig
from probefleet.probe.metrics import serve
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import NatsServer
from probefleet.shared.streams import ensure_streams
from probefleet.shared.wire import CheckJob, CheckResult, HttpSpec, Reason, Status
from tests.helpers import eventually
from tests.probe.conftest import start_app

REGION = "eu-west"


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = nc.jetstream()
    await ensure_streams(js, max_bytes=64 << 20)
    yield nc, js
    await nc.close()


def config(nats_url: str, **fields: Any) -> ProbeConfig:
    defaults: dict[str, Any] = {"heartbeat_interval": 0.1, "drain_timeout": 5.0}
    return ProbeConfig(region=REGION, nats_url=nats_url, probe_id="p1", **defaults | fields)


@pytest.fixture
async def agent(nats_url: str, js: object) -> AsyncIterator[Agent]:
    a = Agent(config(nats_url, source_address="127.0.0.12"))
    await a.start()
    yield a
    await a.stop()


def job(
    url: str, monitor_id: int = 1, timeout: float = 2.0, deadline_in: float = 5.0, *, batch: bool = False
) -> CheckJob:
    now = time.time()
    return CheckJob(
        monitor_id=monitor_id,
        due=now,
        deadline=now + deadline_in,
        region=REGION,
        timeout=timeout,
        spec=HttpSpec(url=url),
        batch_results=batch,
    )


async def results(js: JetStreamContext, n: int, wait: float = 5.0) -> list[tuple[CheckResult, str]]:
    """The next n results on the stream, with their Nats-Msg-Id."""
    sub = await js.pull_subscribe(subjects.results_all(), durable=None)
    got: list[tuple[CheckResult, str]] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(n - len(got), timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
            got.append((wire.decode_result(msg.data), (msg.headers or {}).get("Nats-Msg-Id", "")))
    # A work-queue stream allows one consumer per subject filter at a time.
    info = await sub.consumer_info()
    await sub.unsubscribe()
    await js.delete_consumer(subjects.RESULTS_STREAM, info.name)
    return got


async def messages(
    js: JetStreamContext, n: int, wait: float = 5.0
) -> list[tuple[list[CheckResult], str, float]]:
    """The next n messages on the results stream: the results each carries, its Nats-Msg-Id,
    and when it was read (Unix time)."""
    sub = await js.pull_subscribe(subjects.results_all(), durable=None)
    got: list[tuple[list[CheckResult], str, float]] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(n - len(got), timeout=0.2)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
            msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
            got.append((wire.decode_results(msg.data), msg_id, time.time()))
    info = await sub.consumer_info()
    await sub.unsubscribe()
    await js.delete_consumer(subjects.RESULTS_STREAM, info.name)
    return got


async def _instant(spec: object, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
    return Outcome(status=Status.OK)


async def test_it_turns_a_job_into_a_result_on_the_stream(
    agent: Agent, js: tuple[Client, JetStreamContext], http_target: str
) -> None:
    nc, jsc = js
    sent = job(f"{http_target}/echo", monitor_id=7)
    await nc.publish(subjects.jobs(REGION), wire.encode(sent))
    [(result, msg_id)] = await results(jsc, 1)
    assert (result.monitor_id, result.status, result.probe_id) == (7, Status.OK, "p1")
    assert msg_id == sent.job_id == result.job_id
    assert result.started_at < sent.deadline


async def test_it_holds_jobs_sent_ahead_in_one_message_until_their_due_time(
    agent: Agent, js: tuple[Client, JetStreamContext], http_target: str
) -> None:
    nc, jsc = js
    now = time.time()
    ahead = [
        CheckJob(
            monitor_id=i,
            due=now + 0.4 + i / 10,
            deadline=now + 5 + i / 10,
            region=REGION,
            timeout=2.0,
            spec=HttpSpec(url=f"{http_target}/"),
        )
        for i in range(1, 4)
    ]
    await nc.publish(subjects.jobs(REGION), wire.encode_job_batch([wire.encode(j) for j in ahead]))
    await eventually(lambda: len(agent._held) == 3, timeout=5, what="the three jobs held")
    # Held jobs count as taken: the sweeper must not close their rounds for want of answers.
    assert agent.heartbeat().unacked_since == ahead[0].due
    assert agent.checks_total == 0
    got = await results(jsc, 3)
    by_monitor = {r.monitor_id: r for r, _ in got}
    assert sorted(by_monitor) == [1, 2, 3]
    for sent in ahead:
        result = by_monitor[sent.monitor_id]
        assert result.status == Status.OK
        assert result.started_at >= sent.due  # at its due time, not before
    assert agent.heartbeat().unacked_since is None


async def test_a_stopping_probe_runs_the_jobs_due_within_the_drain_and_skips_the_others(
    nats_url: str, js: tuple[Client, JetStreamContext], http_target: str
) -> None:
    nc, jsc = js
    agent = Agent(config(nats_url, drain_timeout=2.0))
    await agent.start()
    now = time.time()
    soon, late = (
        CheckJob(
            monitor_id=i,
            due=now + due_in,
            deadline=now + due_in + 5,
            region=REGION,
            timeout=2.0,
            spec=HttpSpec(url=f"{http_target}/"),
        )
        for i, due_in in ((1, 0.8), (2, 60.0))
    )
    await nc.publish(subjects.jobs(REGION), wire.encode_job_batch([wire.encode(soon), wire.encode(late)]))
    await eventually(lambda: len(agent._held) == 2, timeout=5, what="both jobs held")
    await agent.stop()
    got = {r.monitor_id: r for r, _ in await results(jsc, 2)}
    assert (got[1].status, got[1].started_at >= soon.due) == (Status.OK, True)
    assert (got[2].status, got[2].reason, got[2].attempt) == (Status.SKIPPED, Reason.PROBE_STOPPED, 0)
    assert got[2].due == late.due and got[2].probe_id == "p1"


async def test_it_sends_the_results_of_jobs_that_allow_it_in_one_message(
    nats_url: str, js: tuple[Client, JetStreamContext]
) -> None:
    _, jsc = js
    # A long linger: every result is ready well within it, so all go in one message.
    agent = Agent(config(nats_url, result_linger=1.0), checkers={"http": _instant})
    await agent.start()
    try:
        sent = [job("http://x/", monitor_id=i, deadline_in=30, batch=True) for i in range(1, 6)]
        assert all(agent.submit(j) for j in sent)
        [(batch, msg_id, _)] = await messages(jsc, 1)
        assert [r.monitor_id for r in sorted(batch, key=lambda r: r.monitor_id)] == [1, 2, 3, 4, 5]
        assert msg_id == wire.batch_id([r.job_id for r in batch])
        assert await messages(jsc, 1, wait=0.5) == []
        await eventually(lambda: agent.heartbeat().unacked_since is None, what="every result settled")
        metrics = agent.metrics
        assert metrics.published._value.get() == 5 and metrics.result_messages._value.get() == 1
        assert metrics.registry.get_sample_value("probefleet_probe_results_per_message_sum") == 5
        assert (
            metrics.registry.get_sample_value("probefleet_probe_results_per_message_bucket", {"le": "2.0"})
            == 0
        )
    finally:
        await agent.stop()


async def test_it_sends_the_results_of_jobs_that_do_not_allow_a_batch_one_by_one(
    nats_url: str, js: tuple[Client, JetStreamContext]
) -> None:
    _, jsc = js
    agent = Agent(config(nats_url, result_linger=1.0), checkers={"http": _instant})
    await agent.start()
    try:
        sent = [job("http://x/", monitor_id=i, deadline_in=30) for i in range(1, 4)]
        assert all(agent.submit(j) for j in sent)
        got = await messages(jsc, 3)
        assert sorted((len(rs), msg_id) for rs, msg_id, _ in got) == sorted((1, j.job_id) for j in sent)
        assert await messages(jsc, 1, wait=0.5) == []
        await eventually(lambda: agent.heartbeat().unacked_since is None, what="every result settled")
        assert agent.metrics.result_messages._value.get() == 3
    finally:
        await agent.stop()


async def test_a_result_waits_for_others_no_longer_than_its_jobs_deadline_allows(
    nats_url: str, js: tuple[Client, JetStreamContext]
) -> None:
    _, jsc = js
    # A linger far past the job's deadline: the result still goes before the deadline.
    agent = Agent(config(nats_url, result_linger=60.0, deadline_margin=0.25), checkers={"http": _instant})
    await agent.start()
    try:
        sent = job("http://x/", monitor_id=1, deadline_in=1.5, batch=True)
        assert agent.submit(sent)
        [(rs, msg_id, read_at)] = await messages(jsc, 1, wait=10)
        assert [r.job_id for r in rs] == [msg_id] == [sent.job_id]  # a batch of one goes alone
        assert read_at < sent.deadline
    finally:
        await agent.stop()


async def test_a_result_nobody_allowed_to_batch_ends_the_wait_for_others(
    nats_url: str, js: tuple[Client, JetStreamContext]
) -> None:
    _, jsc = js
    # A linger of a minute: only the unflagged result (a "check now", someone waits) ends it.
    agent = Agent(config(nats_url, result_linger=60.0), checkers={"http": _instant})
    await agent.start()
    try:
        flagged = job("http://x/", monitor_id=1, deadline_in=120, batch=True)
        assert agent.submit(flagged)
        await eventually(
            lambda: agent._collecting.locked() and agent._results.empty(), what="a batch waiting"
        )
        waiting = job("http://x/", monitor_id=2, deadline_in=120)
        assert agent.submit(waiting)
        got = await messages(jsc, 2, wait=5)
        assert sorted(msg_id for _, msg_id, _ in got) == sorted([flagged.job_id, waiting.job_id])
    finally:
        await agent.stop()


async def test_a_batch_waits_for_no_timer_when_no_other_result_can_come_before_it_ends(nats_url: str) -> None:
    release = asyncio.Event()

    async def held(spec: object, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        await release.wait()
        return Outcome(status=Status.OK)

    a = Agent(config(nats_url), checkers={"http": held})
    assert not a._none_before(0.05)  # nothing held (no jobs sent ahead): what comes is unknown
    ahead = msgspec.structs.replace(job("http://x/", monitor_id=1, deadline_in=60), due=time.time() + 30)
    a.submit(ahead)
    assert a._none_before(0.05) and not a._none_before(40)  # the held job is due within 40 s
    a.submit(job("http://x/", monitor_id=2, batch=True))
    assert not a._none_before(0.05)  # a check is running
    release.set()
    await eventually(lambda: a._results.qsize() == 1, what="the running check's result")
    assert a._none_before(0.05)
    a._skip_held(after=0)
    assert not a._held and not a._none_before(0.05)


async def test_a_retried_batch_is_one_message_on_the_stream(
    nats_url: str, js: tuple[Client, JetStreamContext]
) -> None:
    _, jsc = js
    agent = Agent(config(nats_url))
    await agent.start()
    try:
        batch = [
            await agent.handle_job(job("http://127.0.0.1:1/", monitor_id=i, timeout=0.5)) for i in (1, 2)
        ]
        other = [batch[0], await agent.handle_job(job("http://127.0.0.1:1/", monitor_id=3, timeout=0.5))]
        await agent.publish_batch(batch)
        await agent.publish_batch(batch)  # the same batch again, as after a lost acknowledgement
        await agent.publish_batch(other)  # another batch, sharing a result: not dropped
        got = await messages(jsc, 3, wait=2)
        assert [[r.monitor_id for r in rs] for rs, _, _ in got] == [[1, 2], [1, 3]]
        assert len({msg_id for _, msg_id, _ in got}) == 2
    finally:
        await agent.stop()


async def test_it_skips_a_job_past_its_deadline(nats_url: str) -> None:
    a = Agent(config(nats_url))
    result = await a.handle_job(job("http://127.0.0.1:1/", deadline_in=-1))
    assert (result.status, result.reason) == (Status.SKIPPED, Reason.DEADLINE_PASSED)
    assert a.metrics.late._value.get() == 1
    assert a.checks_total == 0


async def test_it_answers_before_the_deadline_even_if_the_target_hangs(
    nats_url: str, http_target: str
) -> None:
    a = Agent(config(nats_url, deadline_margin=0.2))
    sent = job(f"{http_target}/slow?s=5", timeout=10, deadline_in=0.6)
    result = await a.handle_job(sent)
    assert result.reason == Reason.TIMEOUT
    assert time.time() < sent.deadline


async def test_the_guard_answers_each_checker_that_overruns_its_budget_before_its_deadline(
    nats_url: str,
) -> None:
    """Checkers that ignore their budget, started longest first so that a later, shorter
    guard comes due first, beside one that takes a while and answers within its budget."""

    async def checker(spec: HttpSpec, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        if spec.url.endswith("/hang"):
            await asyncio.sleep(60)
        await asyncio.sleep(0.8)
        return Outcome(status=Status.OK)

    a = Agent(config(nats_url, deadline_margin=0.2), checkers={"http": checker})
    sent = [
        job("http://127.0.0.1:1/hang", monitor_id=1, timeout=30, deadline_in=1.2),
        job("http://127.0.0.1:1/hang", monitor_id=2, timeout=30, deadline_in=0.6),
        job("http://127.0.0.1:1/slow", monitor_id=3, timeout=30, deadline_in=5),
    ]
    results = await asyncio.gather(*(a.handle_job(j) for j in sent))
    for j, r in zip(sent[:2], results[:2], strict=True):
        assert (r.status, r.reason) == (Status.FAIL, Reason.TIMEOUT)
        assert r.message.startswith("no answer within")
        assert r.started_at + r.duration_ms / 1000 < j.deadline
    assert results[2].status == Status.OK
    # In this task: the guard's cancel is taken back, and the task's next check runs.
    late = await a.handle_job(job("http://127.0.0.1:1/hang", monitor_id=4, timeout=30, deadline_in=0.5))
    assert late.reason == Reason.TIMEOUT and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert (await a.handle_job(sent[2])).status == Status.OK
    assert not any(timers._running for timers in base._timers.values())


async def test_a_cancel_from_outside_a_guarded_check_propagates(nats_url: str) -> None:
    started = asyncio.Event()

    async def hang(spec: object, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        started.set()
        await asyncio.sleep(60)
        return Outcome(status=Status.OK)

    a = Agent(config(nats_url), checkers={"http": hang})
    running = asyncio.create_task(a.handle_job(job("http://x/", timeout=30, deadline_in=60)))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not any(timers._running for timers in base._timers.values())


def _tracking(delay: float) -> tuple[Checker, dict[str, int]]:
    seen = {"now": 0, "max": 0}

    async def checker(spec: object, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(delay)
        seen["now"] -= 1
        return Outcome(status=Status.OK)

    return checker, seen


async def test_it_holds_the_concurrency_bound_and_drops_overload(nats_url: str) -> None:
    checker, seen = _tracking(0.05)
    a = Agent(config(nats_url, concurrency=3, max_pending=5), checkers={"http": checker})
    accepted = [a.submit(job("http://x/", monitor_id=i)) for i in range(12)]
    assert accepted.count(True) == 8
    assert a.metrics.dropped.labels("overload")._value.get() == 4
    await asyncio.wait(set(a._tasks))
    assert seen["max"] == 3
    assert a._results.qsize() == 8


async def test_checks_waiting_for_a_slot_start_in_arrival_order_and_a_cancelled_one_holds_none(
    nats_url: str,
) -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def held(spec: HttpSpec, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        started.append(int(spec.url.rsplit("/", 1)[1]))
        await release.wait()
        return Outcome(status=Status.OK)

    a = Agent(config(nats_url, concurrency=1), checkers={"http": held})
    running = [asyncio.create_task(a.handle_job(job(f"http://x/{i}", monitor_id=i))) for i in range(4)]
    await eventually(lambda: started == [0] and len(a._slots.waiting) == 3, what="one running, three waiting")
    running[1].cancel()
    release.set()
    done = await asyncio.gather(*running, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert started == [0, 2, 3]
    assert (a._slots.free, len(a._slots.waiting)) == (1, 0)


async def test_a_slot_handed_to_a_check_cancelled_before_it_ran_goes_to_the_next() -> None:
    slots = _Slots(1)
    await slots.wait()
    first = asyncio.create_task(slots.wait())
    second = asyncio.create_task(slots.wait())
    await eventually(lambda: len(slots.waiting) == 2, what="two waiting")
    slots.release()  # handed to `first`, which is cancelled before it resumes
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert (slots.free, len(slots.waiting)) == (0, 0)
    slots.release()
    assert slots.free == 1


async def test_it_reports_a_crashing_checker_as_internal_error(nats_url: str) -> None:
    async def crash(spec: object, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        raise RuntimeError("bug")

    a = Agent(config(nats_url), checkers={"http": crash})
    result = await a.handle_job(job("http://x/"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.INTERNAL_ERROR)


async def test_it_sends_heartbeats(agent: Agent, js: tuple[Client, JetStreamContext]) -> None:
    nc, _ = js
    sub = await nc.subscribe(subjects.heartbeat(REGION))
    beat = wire.decode_heartbeat((await sub.next_msg(timeout=2)).data)
    assert (beat.probe_id, beat.region, beat.source_address) == ("p1", REGION, "127.0.0.12")
    assert beat.concurrency == agent.config.concurrency
    assert beat.host == socket.gethostname()
    assert beat.capabilities == capabilities(agent.checkers)
    assert beat.job_batches
    assert {"http", "tcp", "udp", "dns", "tls"} <= set(beat.capabilities)


@pytest.mark.parametrize("batch", [False, True], ids=["alone", "batched"])
async def test_its_heartbeat_names_the_oldest_job_whose_result_is_not_acknowledged(
    nats_url: str, http_target: str, batch: bool
) -> None:
    """No results stream yet (a stream without a leader answers no better): the results are
    retried (alone, or as one batch), and the heartbeats say the oldest due time held; once
    JetStream acknowledges them, that nothing is held."""
    agent = Agent(config(nats_url))
    await agent.start()
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(subjects.heartbeat(REGION))

        async def reports(expected: float | None) -> bool:
            beat = wire.decode_heartbeat((await sub.next_msg(timeout=2)).data)
            return beat.unacked_since == expected

        assert await reports(None)
        older = job(f"{http_target}/", monitor_id=1, batch=batch)
        newer = job(f"{http_target}/", monitor_id=2, batch=batch)
        assert older.due < newer.due
        assert agent.submit(older) and agent.submit(newer)
        await eventually(lambda: agent.checks_total == 2, timeout=5, what="both checks run")
        await eventually(lambda: reports(older.due), timeout=5, what="the older job reported held")
        jsc = nc.jetstream()
        await ensure_streams(jsc, max_bytes=64 << 20)
        await eventually(lambda: reports(None), timeout=10, what="nothing held once acknowledged")
        got = [r for rs, _, _ in await messages(jsc, 2, wait=2) for r in rs]
        assert sorted(r.monitor_id for r in got) == [1, 2]
    finally:
        await agent.stop()
        await nc.close()


def test_a_probe_not_allowed_icmp_sockets_does_not_announce_icmp() -> None:
    """Root may open raw ICMP sockets; `nobody`, with this kernel's ping_group_range, may
    open neither kind: the same code run as each announces icmp or leaves it out."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody in a child")
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = (int(x) for x in f.read().split())
    nobody = pwd.getpwnam("nobody")
    if low <= nobody.pw_gid <= high:
        pytest.skip("ping_group_range lets nobody's group send ICMP here")
    assert "icmp" in capabilities()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody (modules are loaded already), answer, exit
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write, ",".join(capabilities()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        kinds = f.read().split(",")
    os.waitpid(pid, 0)
    assert "icmp" not in kinds
    assert {"http", "tcp", "udp", "dns", "tls"} <= set(kinds)


async def test_it_serves_metrics(agent: Agent, http_target: str) -> None:
    await agent.handle_job(job(f"{http_target}/"))
    runner = await serve(agent.metrics, "127.0.0.1:0")
    port = runner.addresses[0][1]
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    await runner.cleanup()
    assert 'probefleet_probe_checks_total{kind="http",status="ok"} 1.0' in text
    for name in ("check_duration_seconds", "checks_in_flight", "jobs_dropped", "jobs_late"):
        assert f"probefleet_probe_{name}" in text


async def test_check_metrics_count_each_check_by_kind_and_status_and_those_in_flight() -> None:
    release = asyncio.Event()

    async def held(spec: HttpSpec, *, timeout: float, source_address: str | None) -> Outcome:  # noqa: ASYNC109
        await release.wait()
        return Outcome(status=Status.FAIL if spec.url.endswith("/down") else Status.OK)

    agent = Agent(config("nats://127.0.0.1:1"), checkers={"http": held})

    def sample(name: str, **labels: str) -> float | None:
        return agent.metrics.registry.get_sample_value(name, labels)

    urls = ["http://127.0.0.1:1/up", "http://127.0.0.1:1/up", "http://127.0.0.1:1/down"]
    running = [asyncio.create_task(agent.handle_job(job(u, monitor_id=i))) for i, u in enumerate(urls)]
    await eventually(lambda: sample("probefleet_probe_checks_in_flight") == 3, what="3 checks in flight")
    release.set()
    await asyncio.gather(*running)
    assert sample("probefleet_probe_checks_in_flight") == 0
    assert sample("probefleet_probe_checks_total", kind="http", status="ok") == 2
    assert sample("probefleet_probe_checks_total", kind="http", status="fail") == 1
    assert sample("probefleet_probe_check_duration_seconds_count", kind="http") == 3


async def test_healthz_and_readyz_follow_the_nats_subscription(
    nats_url: str, nats_server: NatsServer, js: object
) -> None:
    agent = Agent(config(nats_url, source_address="127.0.0.12"))
    runner = await serve(
        agent.metrics, "127.0.0.1:0", healthy=lambda: agent.healthy, ready=lambda: agent.ready
    )
    port = runner.addresses[0][1]

    async with aiohttp.ClientSession() as s:

        async def codes() -> tuple[int, int]:
            async with (
                s.get(f"http://127.0.0.1:{port}/healthz") as h,
                s.get(f"http://127.0.0.1:{port}/readyz") as r,
            ):
                return h.status, r.status

        try:
            # Not started: neither connected nor subscribed.
            assert await codes() == (503, 503)
            await agent.start()
            assert await codes() == (200, 200)
            # NATS away: not healthy until the client is back.
            nats_port = nats_server.port
            nats_server.stop()
            await eventually(lambda: not agent.healthy, timeout=5, what="the probe noticing NATS gone")
            assert await codes() == (503, 503)
            nats_server.start(port=nats_port)
            await eventually(lambda: agent.healthy, timeout=10, what="the probe reconnected")
            assert await codes() == (200, 200)
            # Stopped (drained, connection closed).
            await agent.stop()
            assert await codes() == (503, 503)
        finally:
            await runner.cleanup()


async def test_it_survives_a_nats_restart(
    agent: Agent, nats_server: NatsServer, js: tuple[Client, JetStreamContext], http_target: str
) -> None:
    nc, jsc = js
    port = nats_server.port
    nats_server.stop()
    # A result produced while NATS is down waits in the buffer.
    agent.submit(job(f"{http_target}/", monitor_id=1))
    await eventually(lambda: agent.checks_total == 1, timeout=5, what="the check while NATS is down")
    nats_server.start(port=port)
    await eventually(
        lambda: agent.nc is not None and agent.nc.is_connected and nc.is_connected,
        timeout=5,
        what="both clients reconnected",
    )
    await nc.publish(subjects.jobs(REGION), wire.encode(job(f"{http_target}/", monitor_id=2)))
    got = await results(jsc, 2, wait=8)
    assert sorted(r.monitor_id for r, _ in got) == [1, 2]
    assert await results(jsc, 1, wait=0.5) == []
    assert agent.checks_total == 2


async def test_it_drains_in_flight_checks_on_sigterm(nats_url: str) -> None:
    started = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal started
        started += 1
        await asyncio.sleep(0.8)
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/slow", slow)
    target, port = await start_app(app)
    nc = await nats.connect(nats_url)
    jsc = nc.jetstream()
    await ensure_streams(jsc, max_bytes=64 << 20)
    beats = await nc.subscribe(subjects.heartbeat(REGION))
    env = {**os.environ, "PROBEFLEET_NATS_URL": nats_url, "PROBEFLEET_PROBE_ID": "sub"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "probefleet.shared.cli", "probe", "run", "--region", REGION],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await beats.next_msg(timeout=10)
        for i in range(3):
            await nc.publish(subjects.jobs(REGION), wire.encode(job(f"http://127.0.0.1:{port}/slow", i)))
        await nc.flush()
        await eventually(lambda: started == 3, timeout=5, what="the three checks in flight")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        got = await results(jsc, 3)
        assert sorted((r.monitor_id, r.status) for r, _ in got) == [(i, Status.OK) for i in range(3)]
    finally:
        if proc.returncode is None:
            proc.kill()
        await nc.close()
        await target.cleanup()


def test_it_has_a_checker_for_every_kind() -> None:
    assert set(CHECKERS) == set(wire.PROBE_KINDS)
