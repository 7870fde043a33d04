"""In-memory schedule of every enabled monitor this controller owns.

Each monitor fires at a stable phase offset inside its interval (a hash of its id), so
monitors with the same interval spread evenly instead of firing together. For each due
time the scheduler opens a round (one row) and publishes one check job per expected
region. `tick(now)` is the whole step; `run` is the loop around it.

A round whose regions all take batches (every live probe of each says so in its
heartbeat, `Fleet.batching`) is opened `lookahead` seconds before its due time, and the
jobs a tick opens for one region go out together, several to a message (`split`); the
probe holds each job until its due time. The loop opens rounds ahead at most every half
lookahead, so a tick's jobs span that much of the schedule. Any other round waits in
`waiting` and is opened at its due time, as without lookahead: its jobs for a region that
takes no batches (a probe there of an earlier version) go one per message.

A job goes on its region's subject, or on its kind's subject in a region whose probes
differ (`Fleet.kind_routes`: only the probes able to run the kind hear it there); a batch
holds one subject's jobs.

The schedule is in memory, so it goes on while the database is unavailable. A tick
writes its rounds before publishing their jobs, waiting at most `write_wait` for that;
should the write fail or take longer, the jobs are published at once and the rows wait
in `pending`, which `write_pending` (a loop of its own, with backoff) writes when the
database answers again. Until the buffer is empty, ticks only add to it: rows are
written in the order they were opened, and no tick waits on a database that failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from probefleet.controller import metrics
from probefleet.controller.cluster.fleet import Fleet, job_route, no_capable_probe
from probefleet.controller.engine.incidents import Recheck
from probefleet.controller.monitors.config import decode_spec
from probefleet.controller.outage import Outage
from probefleet.controller.storage import db
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import results as result_store
from probefleet.shared import subjects, wire

log = logging.getLogger("probefleet.scheduler")

Publish = Callable[[str, bytes], Awaitable[None]]
# A rounds row: monitor id, due, attempt, expected regions, deadline.
RoundRow = tuple[int, dt.datetime, int, list[str], dt.datetime]
# Rows per INSERT when a backlog is written.
WRITE_CHUNK = 5000
# Jobs and bytes per job message at most: far below NATS' max_payload (1 MiB by default),
# and a batch that a probe decodes in about a millisecond.
BATCH_JOBS = 500
BATCH_BYTES = 256 * 1024


def phase(monitor_id: int, interval: float) -> float:
    """A stable offset in [0, interval) derived from the monitor id."""
    digest = hashlib.blake2b(str(monitor_id).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % max(1, int(interval * 1000))) / 1000.0


def next_due(after: float, interval: float, offset: float) -> float:
    """The first due time strictly after `after` on the grid offset + k*interval."""
    k = math.floor((after - offset) / interval) + 1
    return k * interval + offset


_DELETED = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass
class Entry:
    id: int
    interval: float
    timeout: float
    locations: list[str]
    spec: wire.CheckSpec
    offset: float
    version: int = 0
    # Carried in each job for the probe's per-monitor metrics (its name label, tag filter).
    name: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class Scheduler:
    pool: asyncpg.Pool
    publish: Publish
    fleet: Fleet
    round_grace: float = 2.0
    min_tick: float = 0.02
    owns: Callable[[int], bool] = lambda _id: True
    # Whether this controller may schedule at all now (Membership.scheduling: false once
    # another controller took its shards over while it could not renew its lease).
    active: Callable[[], bool] = lambda: True
    # Whether probes may batch the results of the jobs published now (CheckJob.batch_results;
    # Membership.result_batches: every live controller decodes batches).
    result_batches: Callable[[], bool] = lambda: False
    # Seconds a tick waits for its rounds' INSERT (each pool acquire and statement) before
    # it publishes the jobs anyway and leaves the rows to `write_pending`.
    write_wait: float = 0.5
    # Rows kept for `write_pending` at most; beyond, the oldest are dropped.
    buffer_max: int = 100_000
    # Seconds before its due time a round whose regions all take batches is opened and its
    # jobs sent (0: every round at its due time, one job per message).
    lookahead: float = 0.0
    entries: dict[int, Entry] = field(default_factory=dict)
    heap: list[tuple[float, int, int]] = field(default_factory=list)
    # Rounds taken from `heap` ahead of time that are opened at their due time (a region of
    # theirs takes no batches): (due, monitor id, version), like `heap`.
    waiting: list[tuple[float, int, int]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # updated_at of the newest row applied per monitor (the max for a deleted one), so a
    # row read before a newer change was applied cannot undo it (see _newest).
    applied: dict[int, dt.datetime] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Rounds opened and published, not written yet (oldest first).
    pending: deque[RoundRow] = field(default_factory=deque)
    _pending_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _outage: Outage = field(default_factory=lambda: Outage("scheduler"))

    # ------------------------------------------------------------ schedule changes

    def _newest(self, row: dict[str, Any]) -> bool:
        """Whether `row` is at least as new as what was applied for its monitor (and note
        it). A refresh reads the row while the API may apply a newer write of its own: a
        pause's announcement read before a resume committed must not undo the resume."""
        stamp = row.get("updated_at")
        if stamp is None:
            return True
        last = self.applied.get(row["id"])
        if last is not None and stamp < last:
            return False
        self.applied[row["id"]] = stamp
        return True

    def upsert(self, row: dict[str, Any], now: float | None = None) -> None:
        """Add or replace a monitor (a row of the monitors table), unless a newer version
        of it was applied already."""
        if not self._newest(row):
            return
        if not row.get("enabled", True) or row["kind"] == "heartbeat" or not self.owns(row["id"]):
            self.remove(row["id"])
            return
        spec = decode_spec(row["kind"], row["spec"])
        if spec is None:
            self.remove(row["id"])
            return
        old = self.entries.get(row["id"])
        interval = float(row["interval_s"])
        entry = Entry(
            id=row["id"],
            interval=interval,
            timeout=float(row["timeout_s"]),
            locations=list(row["locations"]),
            spec=spec,
            offset=phase(row["id"], interval),
            version=old.version + 1 if old else 0,
            name=row.get("name") or "",
            tags=list(row.get("tags") or ()),
        )
        self.entries[entry.id] = entry
        now = time.time() if now is None else now
        heapq.heappush(self.heap, (next_due(now, interval, entry.offset), entry.id, entry.version))
        metrics.MONITORS.set(len(self.entries))
        self._wake.set()

    def remove(self, monitor_id: int, *, deleted: bool = False) -> None:
        """Drop a monitor from the schedule; `deleted`: for good (no older row brings it back)."""
        if deleted:
            self.applied[monitor_id] = _DELETED
        if self.entries.pop(monitor_id, None) is not None:
            metrics.MONITORS.set(len(self.entries))

    async def load(self, now: float | None = None) -> None:
        """Replace the schedule with what the database holds."""
        rows = await monitor_store.all_schedulable(self.pool)
        seen = set()
        for row in rows:
            row["enabled"] = True
            seen.add(row["id"])
            old = self.entries.get(row["id"])
            if old is None or old.interval != row["interval_s"] or self.owns(row["id"]) is False:
                self.upsert(row, now)
            else:
                spec = decode_spec(row["kind"], row["spec"])
                if spec is not None:
                    old.spec, old.timeout = spec, float(row["timeout_s"])
                    old.locations = list(row["locations"])
                    old.name, old.tags = row["name"], list(row["tags"])
        for gone in set(self.entries) - seen:
            self.remove(gone)
        # The schedule (one entry per monitor, 100,000s of objects) lives until the next
        # load: keep it out of the cyclic collector, whose full passes over it paused the
        # event loop for up to 300 ms (bench/api_latency.py). Replaced entries are freed by
        # reference counting; only cyclic garbage alive at this instant is kept.
        gc.freeze()

    async def refresh(self, monitor_id: int) -> None:
        """Re-read one monitor after another controller told us it changed."""
        row = await monitor_store.get(self.pool, monitor_id)
        if row is None:
            self.remove(monitor_id, deleted=True)
        else:
            self.upsert(row)

    # ------------------------------------------------------------ the step

    def expected_regions(self, entry: Entry, now: float) -> list[str]:
        """The monitor's regions that have a live probe (all of them until we have heard
        heartbeats for a full window after start: the time after which a silent probe is
        forgotten, so a live one has been heard by then)."""
        if now - self.started < self.fleet.window:
            return list(entry.locations)
        live = self.fleet.live_regions(now)
        return [r for r in entry.locations if live.get(r)]

    def next_wakeup(self) -> float | None:
        while self.heap:
            due, mid, version = self.heap[0]
            entry = self.entries.get(mid)
            if entry is None or entry.version != version:
                heapq.heappop(self.heap)
                continue
            return due
        return None

    def batching(self, now: float) -> dict[str, int]:
        """The regions that get jobs ahead and in batches, with their live probes (none
        without a lookahead, or until heartbeats are known)."""
        if self.lookahead <= 0 or now - self.started < self.fleet.window:
            return {}
        return self.fleet.batching(now)

    async def tick(self, now: float, *, ahead: bool = True) -> int:
        """Open every round due by `now`, and by `now + lookahead` those whose regions all
        take batches (`ahead`: look ahead at all), and publish their jobs; return rounds
        opened."""
        due_now: list[tuple[float, Entry]] = []
        active = self.active()
        batching = self.batching(now)
        live = self.fleet.live_regions(now) if batching else {}

        def all_batching(entry: Entry) -> bool:
            regions = [r for r in entry.locations if live.get(r)]
            return bool(regions) and all(r in batching for r in regions)

        while self.waiting and self.waiting[0][0] <= now:
            due, mid, version = heapq.heappop(self.waiting)
            entry = self.entries.get(mid)
            if entry is not None and entry.version == version and now - due <= entry.interval and active:
                due_now.append((due, entry))
        # While rounds cannot be written (the database unavailable, or a backlog of them
        # still buffered) nothing is opened ahead: this controller cannot tell whether its
        # shards are still its own, and a job sent ahead for a due time past its lease would
        # run a second time when another controller takes the shard over.
        ahead = ahead and not self.pending and not self._outage.down
        horizon = now + self.lookahead if ahead else now
        while (wake := self.next_wakeup()) is not None and wake <= horizon:
            due, mid, _ = heapq.heappop(self.heap)
            entry = self.entries[mid]
            # After a stall, skip missed rounds rather than firing them in a burst.
            nxt = next_due(max(due, now - entry.interval), entry.interval, entry.offset)
            heapq.heappush(self.heap, (nxt, mid, entry.version))
            if now - due > entry.interval or not active:
                continue
            if due > now and not all_batching(entry):
                heapq.heappush(self.waiting, (due, mid, entry.version))
                continue
            due_now.append((due, entry))
        if not due_now:
            return 0
        await self.open_rounds(due_now, now)
        return len(due_now)

    async def open_rounds(self, due_now: list[tuple[float, Entry]], now: float, attempt: int = 0) -> None:
        rounds: list[RoundRow] = []
        jobs: list[wire.CheckJob] = []
        for due, entry in due_now:
            regions = self.expected_regions(entry, now)
            deadline = due + entry.timeout + self.round_grace
            rounds.append((entry.id, result_store.ts(due), attempt, regions, result_store.ts(deadline)))
            for region in regions:
                jobs.append(
                    wire.CheckJob(
                        monitor_id=entry.id,
                        due=due,
                        region=region,
                        deadline=due + entry.timeout + self.round_grace / 2,
                        timeout=entry.timeout,
                        spec=entry.spec,
                        attempt=attempt,
                        interval=entry.interval,
                        name=entry.name,
                        tags=entry.tags,
                        batch_results=self.result_batches(),
                    )
                )
        ours = await self._write_now(rounds)
        # What each region's live probes can run (none judged until heartbeats are known).
        judged = now - self.started >= self.fleet.window
        able = self.fleet.runnable(now) if judged else {}
        # The kinds a mixed region's able probes take on a subject of their own (none until
        # heartbeats are known: every job then goes to the region subject).
        routes = self.fleet.kind_routes(now) if judged else {}
        batching = self.batching(now)
        # Per subject: its region, the live probes that hear it and its encoded jobs. A
        # batch holds one subject's jobs only.
        batches: dict[str, tuple[str, int, list[bytes]]] = {}
        for job in jobs:
            # A round another controller opened first is not ours to publish (shards
            # moving); unknown while the rows wait in the buffer: publish them all.
            if ours is not None and (job.monitor_id, result_store.ts(job.due), job.attempt) not in ours:
                continue
            if (skipped := no_capable_probe(job, able, now)) is not None:
                # Answered for the region through the results stream, like a probe's result.
                await self.publish(subjects.results(job.region), wire.encode(skipped))
                continue
            subject, takers = job_route(job, routes)
            if job.region in batching:
                batch = batches.get(subject)
                if batch is None:
                    # Spread over the probes that hear the subject: the region's live
                    # probes, or those taking the kind on its own subject.
                    batch = batches[subject] = (job.region, takers or batching[job.region], [])
                batch[2].append(wire.encode(job))
                continue
            await self.publish(subject, wire.encode(job))
            metrics.JOBS_PUBLISHED.labels(job.region).inc()
        for subject, (region, takers, parts) in batches.items():
            for message in split(parts, takers):
                await self.publish(subject, wire.encode_job_batch(message))
            metrics.JOBS_PUBLISHED.labels(region).inc(len(parts))
        for due, _ in due_now:
            metrics.SCHEDULE_LAG.observe(max(0.0, now - due))

    async def _write_now(self, rounds: list[RoundRow]) -> set[result_store.Key] | None:
        """Insert `rounds`, waiting at most `write_wait`; the keys this call created, or None
        when the rows were left in the buffer (a backlog being written, the database slow
        or unavailable)."""
        if not self.pending and not self._writing.locked():
            async with self._writing:
                try:
                    with db.bounded(self.write_wait):
                        ours = await result_store.insert_rounds(self.pool, rounds)
                except Exception as e:
                    if not db.unavailable(e):
                        raise
                    self._outage.failed(e)
                else:
                    self._outage.succeeded()
                    return ours
        self._buffer(rounds)
        return None

    def _buffer(self, rounds: list[RoundRow]) -> None:
        self.pending.extend(rounds)
        over = len(self.pending) - self.buffer_max
        if over > 0:
            for _ in range(over):
                self.pending.popleft()
            metrics.ROUNDS_DROPPED.inc(over)
            log.warning("round buffer full, oldest rounds dropped count=%d", over)
        metrics.ROUNDS_BUFFERED.set(len(self.pending))
        self._pending_wake.set()

    async def write_pending(self) -> int:
        """Write the buffered rounds, oldest first, in chunks; return how many were written.
        Raises when the database fails: what was not written stays in the buffer (an
        INSERT that timed out may have committed; writing its rows again is harmless)."""
        written = 0
        async with self._writing:
            while self.pending:
                # Taken out while being written, so that a full buffer dropping its oldest
                # rows meanwhile cannot drop these or make us remove others.
                chunk = [self.pending.popleft() for _ in range(min(WRITE_CHUNK, len(self.pending)))]
                try:
                    await result_store.insert_rounds(self.pool, chunk)
                except BaseException:
                    self.pending.extendleft(reversed(chunk))
                    raise
                written += len(chunk)
                metrics.ROUNDS_BUFFERED.set(len(self.pending))
        return written

    async def write_loop(self, stop: asyncio.Event) -> None:
        """Write the buffer whenever it has rows, backing off while the database fails."""
        delay = 0.0
        while not stop.is_set():
            if not self.pending:
                self._pending_wake.clear()
                await _wait_any(stop, self._pending_wake, None)
                continue
            if delay:
                await _wait_any(stop, None, delay)
            try:
                with self._outage.bounded():
                    written = await self.write_pending()
            except Exception as e:
                if not db.unavailable(e):
                    log.exception("writing buffered rounds failed")
                delay = self._outage.failed(e)
                continue
            delay = 0.0
            self._outage.succeeded()
            if written:
                log.info("buffered rounds written count=%d", written)

    async def open_rechecks(self, rechecks: Sequence[Recheck]) -> int:
        """Open each confirmation round at once (due now, attempt + 1) and publish its jobs.

        Its due is now rather than the first round's: a round's deadline is due + timeout +
        grace, and the first round may have used all of that already. A monitor this
        controller does not schedule (its shard moved) is re-checked all the same."""
        now = time.time()
        groups: dict[int, list[tuple[float, Entry]]] = {}
        for r in rechecks:
            m = r.monitor
            entry = self.entries.get(m["id"])
            if entry is None:
                spec = decode_spec(m["kind"], m["spec"])
                if spec is None:
                    continue
                entry = Entry(
                    id=m["id"],
                    interval=float(m["interval_s"]),
                    timeout=float(m["timeout_s"]),
                    locations=list(m["locations"]),
                    spec=spec,
                    offset=0.0,
                )
            groups.setdefault(r.attempt, []).append((now, entry))
        for attempt, due_now in groups.items():
            await self.open_rounds(due_now, now, attempt=attempt)
        return sum(len(g) for g in groups.values())

    async def run(self, stop: asyncio.Event) -> None:
        """The tick loop and the buffer's writer, until `stop`."""
        await asyncio.gather(self._tick_loop(stop), self.write_loop(stop))

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        # Rounds are opened ahead at most every half lookahead (from `ahead_at` on): a
        # tick's jobs for a region then span that much of the schedule and share messages,
        # each sent between half the lookahead and the whole of it before its due time.
        ahead_at = 0.0
        while not stop.is_set():
            self._wake.clear()
            now = time.time()
            ahead = now >= ahead_at
            try:
                await self.tick(now, ahead=ahead)
            except Exception:  # a bug, not the database (its failures are buffered)
                log.exception("scheduler tick failed")
            if ahead:
                ahead_at = now + self.lookahead / 2
            times = [self.waiting[0][0]] if self.waiting else []
            if (wake := self.next_wakeup()) is not None:
                times.append(max(wake - self.lookahead, ahead_at))
            # At least `min_tick` between ticks: rounds due within it share one INSERT.
            delay = 1.0 if not times else min(1.0, max(self.min_tick, min(times) - time.time()))
            if delay > 0:
                await _wait_any(stop, self._wake, delay)
            if self._wake.is_set():
                # A monitor added or changed: its first round may be due before `ahead_at`.
                ahead_at = 0.0


def split(parts: list[bytes], at_least: int) -> list[list[bytes]]:
    """One region's encoded jobs in as few messages as `BATCH_JOBS` and `BATCH_BYTES` allow,
    but in at least `at_least` (the region's live probes, so that its queue group spreads
    them) when there are as many jobs. Jobs are dealt out in turn, so each message spans
    the tick's due times rather than a slice of them. A job above `BATCH_BYTES` goes alone."""
    n = len(parts)
    size = sum(len(p) for p in parts)
    count = min(n, max(at_least, -(-n // BATCH_JOBS), -(-size // BATCH_BYTES)))
    while True:
        messages = [parts[i::count] for i in range(count)]
        if count == n or all(sum(len(p) for p in m) <= BATCH_BYTES for m in messages):
            return messages
        count = min(n, count * 2)


async def _wait_any(stop: asyncio.Event, event: asyncio.Event | None, seconds: float | None) -> None:
    """Until `stop` or `event` is set, or `seconds` passed."""
    waits = [asyncio.ensure_future(stop.wait())]
    if event is not None:
        waits.append(asyncio.ensure_future(event.wait()))
    await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
