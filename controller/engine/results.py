"""Results consumer: batched, idempotent inserts; rounds close when every expected
region answered or their deadline passed, and their verdicts are applied.

A batch is stored, its rounds decided and the monitors updated in one transaction;
the JetStream messages are acknowledged only after it commits, so a controller that
dies mid-batch loses nothing (the batch is redelivered and the primary key drops the
duplicates).

The sweeper closes a round that misses answers only once the shared consumer has caught
up with everything published before the round's deadline (`Backlog`): after a restart
or a NATS outage the missing answers are usually still in JetStream, and closing the
round first would decide it without them.

While the database is unavailable the consumer keeps the batch it fetched and tries it
again with backoff, telling JetStream every 10 s that it is still working on it
(`in_progress`), so the batch is neither acknowledged nor handed to another controller,
and nothing more is fetched; the rest waits in the stream. Unacknowledged, the batch holds the consumer's ack
floor, so the sweeper's `Backlog` does not move either: no round is closed for missing
answers until the results stored after the outage are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamState

from probefleet.controller import metrics
from probefleet.controller.cluster import fleet
from probefleet.controller.engine import consensus, incidents
from probefleet.controller.monitors import maintenance
from probefleet.controller.outage import Outage
from probefleet.controller.storage import Tx, db
from probefleet.controller.storage import results as store
from probefleet.shared import subjects, wire

log = logging.getLogger("probefleet.results")

# The monitor id of an on-demand run of a monitor that is not saved yet (the console's
# "test now"): its results are not stored.
UNSAVED_MONITOR = 0

# Opens confirmation rounds after the batch commits.
OnRecheck = Callable[[list[incidents.Recheck]], Awaitable[object]]


async def finish_rounds(
    conn: Tx, closed: list[dict[str, Any]], now: dt.datetime, rechecks: list[incidents.Recheck] | None = None
) -> int:
    """Decide closed rounds and apply their verdicts; return how many changed a monitor.
    `closed` comes from `store.store_batch` or `store.close_expired`: each round with its
    answers, its monitor's row (locked) and the maintenance windows that apply to it.
    Confirmation rounds to open are appended to `rechecks`."""
    if not closed:
        return 0
    late: dict[store.Key, list[dict[str, Any]]] = defaultdict(list)
    if missing := store.missing_answers(closed):
        for r in await store.results_for(conn, missing):
            late[(r["monitor_id"], r["due"], r["attempt"])].append(r)
    verdicts: list[tuple[store.Key, str]] = []
    applied: list[tuple[dict[str, Any], int, incidents.MonitorState, consensus.Verdict]] = []
    quiet: list[tuple[dict[str, Any], dt.datetime, consensus.Verdict, incidents.MonitorState]] = []
    quiet_attempts: dict[int, int] = {}
    once = {mid for mid, n in Counter(r["monitor_id"] for r in closed).items() if n == 1}
    for rnd in sorted(closed, key=lambda r: r["due"]):
        key = (rnd["monitor_id"], rnd["due"], rnd["attempt"])
        monitor = rnd["monitor"]
        if monitor is None:
            continue
        answers = late.get(key) or rnd["answers"]
        found = [
            consensus.RegionResult(
                region=r["region"],
                status=r["status"],
                reason=r["reason"],
                message=r["message"],
                duration_ms=r["duration_ms"],
            )
            for r in answers
        ]
        windows = [maintenance.from_row(w) for w in monitor["windows"]]
        rule = consensus.Rule(mode=monitor["consensus"], quorum=monitor["quorum"])
        verdict = consensus.decide(found, list(rnd["regions"]), rule)
        verdicts.append((key, verdict.state))
        metrics.VERDICTS.labels(verdict.state).inc()
        current = incidents.MonitorState(
            status=monitor["status"], fail_streak=monitor["fail_streak"], pass_streak=monitor["pass_streak"]
        )
        planned = incidents.transition(
            current, verdict, retry_count=monitor["retry_count"], recovery_count=monitor["recovery_count"]
        )
        if monitor["id"] in once and incidents.is_quiet(
            monitor, verdict, planned, windows, now, rnd["regions"]
        ):
            quiet.append((monitor, rnd["due"], verdict, planned))
            quiet_attempts[monitor["id"]] = rnd["attempt"]
            continue
        new = await incidents.apply(conn, monitor, rnd["due"], verdict, now, windows, rnd["regions"])
        if new is not None:
            # Later rounds of the same monitor in this batch start from this state.
            monitor.update(status=new.status, fail_streak=new.fail_streak, pass_streak=new.pass_streak)
            applied.append((monitor, rnd["attempt"], new, verdict))
    written = await write_verdicts(conn, quiet, verdicts, now)
    applied += [(m, quiet_attempts[m["id"]], n, v) for m, _, v, n in quiet if m["id"] in written]
    for monitor, attempt, new, verdict in applied:
        monitor.update(status=new.status, fail_streak=new.fail_streak, pass_streak=new.pass_streak)
        if rechecks is not None and incidents.needs_recheck(
            verdict,
            new,
            attempt,
            retry_count=monitor["retry_count"],
            recovery_count=monitor["recovery_count"],
        ):
            rechecks.append(incidents.Recheck(monitor=monitor, attempt=attempt + 1))
    return len(applied)


async def write_verdicts(
    conn: Tx,
    quiet: list[tuple[dict[str, Any], dt.datetime, consensus.Verdict, incidents.MonitorState]],
    verdicts: list[tuple[store.Key, str]],
    now: dt.datetime,
) -> set[int]:
    """The quiet rounds' monitor updates (with `incidents.apply`'s compare-and-set on
    `last_round`) and every round's verdict, in one statement; the ids of the monitors
    written."""
    rounds = [
        (m["id"], due, n.status, n.fail_streak, n.pass_streak, v.response_time_ms) for m, due, v, n in quiet
    ]
    return await store.write_verdicts(conn, rounds, verdicts, now)


async def ingest(
    pool: asyncpg.Pool,
    results: list[wire.CheckResult],
    now: dt.datetime | None = None,
    on_recheck: OnRecheck | None = None,
) -> int:
    """Store one batch and finish the rounds it completes; return results newly stored."""
    now = now or dt.datetime.now(dt.UTC)
    rechecks: list[incidents.Recheck] = []
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.store_batch(conn, results)
        await finish_rounds(conn, stored.closed, now, rechecks)
    if rechecks and on_recheck is not None:
        await on_recheck(rechecks)
    metrics.RESULTS_STORED.inc(stored.count)
    metrics.RESULTS_DUPLICATE.inc(len(results) - stored.count)
    stamp = now.timestamp()
    for r in results:
        metrics.RESULT_LAG.observe(max(0.0, stamp - r.started_at - r.duration_ms / 1000))
    fleet.FLOW.observe(results, stamp)
    return stored.count


async def sweep(
    pool: asyncpg.Pool,
    now: dt.datetime | None = None,
    on_recheck: OnRecheck | None = None,
    *,
    before: dt.datetime | None = None,
) -> int:
    """Close rounds whose deadline is earlier than `before` (default `now`) with the
    results they have; return how many."""
    return len((await _sweep(pool, now, on_recheck, before=before)).closed)


async def _sweep(
    pool: asyncpg.Pool,
    now: dt.datetime | None = None,
    on_recheck: OnRecheck | None = None,
    *,
    before: dt.datetime | None = None,
) -> store.Expired:
    now = now or dt.datetime.now(dt.UTC)
    rechecks: list[incidents.Recheck] = []
    async with pool.acquire() as conn, conn.transaction():
        expired = await store.close_expired(conn, min(now, before or now))
        await finish_rounds(conn, expired.closed, now, rechecks)
    if rechecks and on_recheck is not None:
        await on_recheck(rechecks)
    return expired


def sweep_delay(
    expired: store.Expired,
    now: dt.datetime,
    *,
    interval: float,
    idle: float,
    margin: float,
    limit: int = 5000,
) -> float:
    """Seconds until the next sweep may close something: `interval` while rounds wait to be
    closed (a full sweep, a deadline passed), else until the earliest open deadline plus
    `margin`, at most `idle`. Rounds opened after this sweep are not in `next_deadline`,
    but their deadlines are at least `round_grace` (2 s) after it (due + timeout +
    round_grace), so an `idle` up to that delays none of them."""
    if len(expired.closed) >= limit:
        return interval
    if expired.next_deadline is None:
        return idle
    # Just past deadline + margin: a round closes once its deadline is before (not at) that.
    wait = (expired.next_deadline - now).total_seconds() + margin + 0.05
    return min(idle, max(interval, wait))


@dataclass
class Backlog:
    """Up to when the shared results consumer is known to have stored everything.

    Each `observe` notes the stream's head at `now`; once the consumer's ack floor
    reaches a noted head, every result published before that time is stored (acked
    only after commit), so `caught_up_at` moves there. The stream holds only result
    subjects, so its head is the last delivered sequence plus the pending count, or the
    stream's own last sequence when its state (`StreamState`, read from the stream's leader
    before the consumer's info) says more: a result whose publish the stream acknowledged
    is in it, while the consumer's replica may not count it yet (just after the stream's
    leader changed), so the consumer looked idle and a round closed without the answer its
    probe no longer held. What the (work-queue) stream no longer holds below its first
    sequence was acknowledged. A message held by a killed controller stays unacked until
    `ack_wait` and holds the floor back: its round waits for the redelivery instead of
    closing without it."""

    caught_up_at: dt.datetime | None = None
    marks: list[tuple[dt.datetime, int]] = field(default_factory=list)

    def observe(self, info: ConsumerInfo, now: dt.datetime, stream: StreamState | None = None) -> None:
        pending, unacked = info.num_pending or 0, info.num_ack_pending or 0
        delivered = info.delivered.stream_seq if info.delivered else 0
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        head = delivered + pending
        idle = pending == 0 and unacked == 0
        if stream is not None:
            head = max(head, stream.last_seq)
            floor = max(floor, stream.first_seq - 1)
            idle = floor >= head
        if idle:
            self.caught_up_at, self.marks = now, []
            return
        self.marks.append((now, head))
        while self.marks and self.marks[0][1] <= floor:
            self.caught_up_at = self.marks.pop(0)[0]
        del self.marks[:-1000]  # a consumer stuck for long: keep the newest marks only


async def sweep_loop(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    interval: float = 0.5,
    on_recheck: OnRecheck | None = None,
    *,
    js: JetStreamContext,
    margin: float = 0.5,
    settled: Callable[[], float | None] | None = None,
    idle: float = 2.0,
) -> None:
    """Sweep every `interval` while rounds wait to be closed, and otherwise sleep until the
    earliest open deadline (at most `idle`; `sweep_delay`), closing only rounds whose
    deadline is `margin` seconds (a result's way from probe to stream) before the consumer's
    `Backlog.caught_up_at` and before `settled()` (`Fleet.settled_until`: up to when no live
    probe holds a result JetStream has not acknowledged); while the consumer's state is
    unknown (NATS down) nothing is closed for missing answers. While the database fails,
    sweeps back off (`Outage`)."""
    backlog = Backlog()
    outage = Outage("sweeper")
    delay = interval
    while not stop.is_set():
        now = dt.datetime.now(dt.UTC)
        try:
            # The stream first: what it acknowledged before this is at or below its head.
            stream = (await js.stream_info(subjects.RESULTS_STREAM)).state
            consumer = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            backlog.observe(consumer, now, stream)
        except Exception as e:  # NATS reconnecting: sweep up to what is known
            log.warning("results stream or consumer info failed error=%s", e)
        delay = interval
        if backlog.caught_up_at is not None:
            try:
                before = backlog.caught_up_at
                if settled is not None and (held := settled()) is not None:
                    before = min(before, dt.datetime.fromtimestamp(held, dt.UTC))
                before -= dt.timedelta(seconds=margin)
                with outage.bounded():
                    expired = await _sweep(pool, now, on_recheck=on_recheck, before=before)
            except Exception as e:
                if not db.unavailable(e):
                    log.exception("round sweep failed")
                delay = max(interval, outage.failed(e))
            else:
                outage.succeeded()
                delay = sweep_delay(expired, now, interval=interval, idle=idle, margin=margin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


# Seconds JetStream waits for a result message's acknowledgement before it hands the message
# to another consumer (the controller's `results_ack_wait`).
ACK_WAIT = 30.0


async def ensure_consumer(js: JetStreamContext, ack_wait: float = ACK_WAIT) -> None:
    """The shared durable results consumer; `ack_wait` is how long the results a controller
    fetched and did not acknowledge (it was killed) wait before another controller gets them."""
    config = ConsumerConfig(
        durable_name=subjects.RESULTS_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=20000,
        filter_subject=subjects.results_all(),
    )
    await js.add_consumer(subjects.RESULTS_STREAM, config)


async def consume(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    *,
    batch: int = 500,
    stop: asyncio.Event,
    on_recheck: OnRecheck | None = None,
    ack_wait: float = ACK_WAIT,
    gather: float = 0.0,
) -> None:
    """Fetch, store, acknowledge; forever until `stop` is set. A fetch asks for as many
    messages as hold about `batch` results at the last fetch's results per message, so that
    probes' batches (up to 200 results each) do not make a transaction hundreds of times
    larger, as after an outage when the stream holds a backlog of full batches. After a
    fetch that found fewer messages than it asked for, the next waits `gather` seconds: what
    arrives meanwhile is stored in one transaction instead of one per fetch (a fetch
    returns as soon as one message is there). A result waits at most `gather` longer."""
    psub = await js.pull_subscribe_bind(subjects.RESULTS_CONSUMER, stream=subjects.RESULTS_STREAM)
    outage = Outage("results")
    want = batch
    while not stop.is_set():
        try:
            msgs: list[Msg] = await psub.fetch(want, timeout=0.5)
        except TimeoutError:
            continue
        except Exception as e:  # NATS reconnecting: wait and fetch again
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # nats-py answers a cancel of a fetch on a closed connection with
                # ConnectionClosedError: the task was cancelled, so it ends.
                raise asyncio.CancelledError from e
            log.warning("results fetch failed error=%s", e)
            await asyncio.sleep(0.5)
            continue
        good: list[wire.CheckResult] = []
        for m in msgs:
            taken = _results_of(m)
            if taken is None:
                await m.term()
                continue
            good += taken
        if msgs:
            want = max(1, min(batch, batch * len(msgs) // max(len(good), 1)))
        # A run of a monitor not saved yet (id 0: the console's "test now") is for its caller,
        # who hears it on the core subject (ondemand.py); it belongs to no monitor's history.
        good = [r for r in good if r.monitor_id != UNSAVED_MONITOR]
        if good and not await _store(pool, good, msgs, outage, stop, on_recheck, ack_wait):
            continue
        await _ack_all(msgs)
        if gather > 0 and len(msgs) < want:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), gather)


async def _ack_all(msgs: list[Msg]) -> None:
    """Acknowledge each message in turn: an ack is a publish into the client's buffer, so a
    task per message (as with gather) cost more than the acks. One that fails (NATS
    reconnecting) leaves its message to be redelivered after ack_wait and stored once."""
    for m in msgs:
        if m.metadata is None:
            continue
        try:
            await m.ack()
        except Exception as e:  # the connection closing: the rest fail alike
            log.debug("results ack failed error=%s", e)


def _results_of(m: Msg) -> list[wire.CheckResult] | None:
    """The results one message carries (one result, or a probe's batch of them); None when
    the whole message is to be terminated: undecodable, or any result naming another region
    than the subject it came on."""
    try:
        taken = wire.decode_results(m.data)
    except msgspec.DecodeError:
        log.warning("undecodable result dropped subject=%s", m.subject)
        return None
    for result in taken:
        if m.subject != subjects.results(result.region):
            # NATS lets a probe publish only on its own region's subject; a body naming
            # another region would answer (or fake an outage in) a region it is not in. One
            # such result spoils its batch: the probe that sent it is not to be trusted.
            metrics.REGION_MISMATCH.labels("result").inc()
            log.warning(
                "result dropped: region=%s on subject=%s probe_id=%s results=%d",
                result.region,
                m.subject,
                result.probe_id,
                len(taken),
            )
            return None
    return taken


async def _store(
    pool: asyncpg.Pool,
    results: list[wire.CheckResult],
    msgs: list[Msg],
    outage: Outage,
    stop: asyncio.Event,
    on_recheck: OnRecheck | None,
    ack_wait: float = ACK_WAIT,
) -> bool:
    """Ingest one fetched batch; True once stored. While the database is unavailable the
    batch is kept and tried again with backoff (and a longer bound each time), its
    messages marked in progress three times per `ack_wait` meanwhile so that JetStream
    redelivers them to nobody else. False when the database refused the
    batch (redelivered after ack_wait) or on `stop` (redelivered to whoever consumes next)."""
    keeper = asyncio.create_task(_keep_in_progress(msgs, ack_wait / 3))
    try:
        while not stop.is_set():
            try:
                with outage.bounded():
                    await ingest(pool, results, on_recheck=on_recheck)
            except Exception as e:
                if not db.unavailable(e):
                    log.warning("storing results failed, will be redelivered error=%s", e)
                    await asyncio.sleep(1.0)
                    return False
                delay = outage.failed(e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            outage.succeeded()
            return True
        return False
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def _keep_in_progress(msgs: list[Msg], every: float) -> None:
    """Mark a batch being stored in progress every `every` seconds (a third of ack_wait)."""
    while True:
        await asyncio.sleep(every)
        marks = [m.in_progress() for m in msgs if m.metadata is not None]
        await asyncio.gather(*marks, return_exceptions=True)
