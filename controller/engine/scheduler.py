"""In-memory schedule of every enabled monitor this controller owns.

Each monitor fires at a stable phase offset inside its interval (a hash of its id), so
monitors with the same interval spread evenly instead of firing together. At each due
time the scheduler opens a round (one row) and publishes one check job per expected
region. `tick(now)` is the whole step; `run` is the loop around it.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from probefleet.controller import metrics
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.engine.incidents import Recheck
from probefleet.controller.monitors.config import decode_spec
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import results as result_store
from probefleet.shared import subjects, wire

log = logging.getLogger("probefleet.scheduler")

Publish = Callable[[str, bytes], Awaitable[None]]


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


@dataclass
class Scheduler:
    pool: asyncpg.Pool
    publish: Publish
    fleet: Fleet
    round_grace: float = 2.0
    min_tick: float = 0.02
    owns: Callable[[int], bool] = lambda _id: True
    entries: dict[int, Entry] = field(default_factory=dict)
    heap: list[tuple[float, int, int]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # updated_at of the newest row applied per monitor (the max for a deleted one), so a
    # row read before a newer change was applied cannot undo it (see _newest).
    applied: dict[int, dt.datetime] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

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
        heartbeats for a full window after start)."""
        if now - self.started < self.fleet.interval * 1.5:
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

    async def tick(self, now: float) -> int:
        """Open every round due by `now` and publish its jobs; return rounds opened."""
        due_now: list[tuple[float, Entry]] = []
        while (wake := self.next_wakeup()) is not None and wake <= now:
            due, mid, _ = heapq.heappop(self.heap)
            entry = self.entries[mid]
            # After a stall, skip missed rounds rather than firing them in a burst.
            nxt = next_due(max(due, now - entry.interval), entry.interval, entry.offset)
            heapq.heappush(self.heap, (nxt, mid, entry.version))
            if now - due <= entry.interval:
                due_now.append((due, entry))
        if not due_now:
            return 0
        await self.open_rounds(due_now, now)
        return len(due_now)

    async def open_rounds(self, due_now: list[tuple[float, Entry]], now: float, attempt: int = 0) -> None:
        rounds = []
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
                    )
                )
        ours = await result_store.insert_rounds(self.pool, rounds)
        for job in jobs:
            if (job.monitor_id, result_store.ts(job.due), job.attempt) not in ours:
                continue
            await self.publish(subjects.jobs(job.region), wire.encode(job))
            metrics.JOBS_PUBLISHED.labels(job.region).inc()
        for due, _ in due_now:
            metrics.SCHEDULE_LAG.observe(max(0.0, now - due))

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
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.tick(time.time())
            except (asyncpg.PostgresError, OSError) as e:
                log.warning("scheduler tick failed error=%s", e)
            wake = self.next_wakeup()
            # At least `min_tick` between ticks: rounds due within it share one INSERT.
            delay = 1.0 if wake is None else min(1.0, max(self.min_tick, wake - time.time()))
            if delay > 0:
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
