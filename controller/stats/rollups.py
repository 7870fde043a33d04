"""Rollups: raw results and round verdicts -> minute -> 5 minutes -> hour -> day, incrementally.

Each level has a watermark: everything before it is rolled up. A step recomputes whole
buckets from the level below and upserts them (replace, not add), so re-running a step
is harmless; the step runs under a transaction-scoped advisory lock and moves the
watermark with compare-and-set, so two controllers never do the same work twice.

The minute watermark trails `now` by `lag` and never passes the due time of a round that
is still open (its results and verdict are still coming), unless that round is older
than `max_lag` (a stuck round must not stop statistics). Results that arrive after their
minute was rolled up stay in the raw table but are not in the rollups.

The 5-minute level came later (migration 0026): on an installation that had the others,
its watermark starts at the oldest minute partition and the level fills from the minute
rows; meanwhile the hour step reads minute rows for spans the 5-minute level does not
cover yet, and reads use minute rows above its watermark (storage/stats.py pieces()).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time

import asyncpg

from probefleet.controller.outage import Outage
from probefleet.controller.storage import DB, Tx, db, uptime_cache
from probefleet.controller.storage import stats as store
from probefleet.controller.storage.stats import MINUTE, floor_to

log = logging.getLogger("probefleet.rollups")

LOCK = 0x73746174  # "stat"
UPTIME_LOCK = 0x75707469  # "upti"
# How much one step may cover at each level, to keep each transaction short.
MAX_SPAN = {
    "minute": dt.timedelta(minutes=15),
    "5min": dt.timedelta(hours=2),
    "hour": dt.timedelta(days=2),
    "day": dt.timedelta(days=60),
}
# Partition span of each rollup level's tables.
SPAN = {"minute": "day", "5min": "day", "hour": "month", "day": "year"}


def partition_start(t: dt.datetime, span: str) -> dt.date:
    d = t.astimezone(dt.UTC).date()
    match span:
        case "day":
            return d
        case "month":
            return d.replace(day=1)
        case _:
            return d.replace(month=1, day=1)


def next_start(d: dt.date, span: str) -> dt.date:
    match span:
        case "day":
            return d + dt.timedelta(days=1)
        case "month":
            return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        case _:
            return d.replace(year=d.year + 1)


async def ensure_partitions(conn: DB, level: str, start: dt.datetime, end: dt.datetime) -> None:
    """Partitions of the level's tables covering [start, end)."""
    span = SPAN[level]
    d = partition_start(start, span)
    while dt.datetime.combine(d, dt.time(), dt.UTC) < end:
        nxt = next_start(d, span)
        for parent in (f"stats_{level}", f"verdicts_{level}"):
            await store.ensure_partition(conn, parent, f"{parent}_{d:%Y%m%d}", d, nxt)
        d = nxt


async def tick(pool: asyncpg.Pool, now: dt.datetime, *, lag: float = 30.0, max_lag: float = 600.0) -> bool:
    """One rollup step at every level; True when more is waiting (call again at once)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await db.try_xact_lock(conn, LOCK):
            return False
        marks = await store.watermarks(conn)
        more = await _minute(conn, now, marks, lag, max_lag)
        await _start_5min(conn, marks)
        more = await _coarser(conn, ("minute",), "5min", marks) or more
        more = await _coarser(conn, ("5min", "minute"), "hour", marks) or more
        more = await _coarser(conn, ("hour",), "day", marks) or more
    return more


async def rewind(pool: asyncpg.Pool, since: dt.datetime) -> None:
    """Move every watermark back to `since` (after a backfill of older raw data): the
    buckets from there are recomputed by the next steps, and reads use raw rows meanwhile."""
    async with pool.acquire() as conn, conn.transaction():
        await db.xact_lock(conn, LOCK)
        for level, upto in (await store.watermarks(conn)).items():
            back = floor_to(since, store.LEVELS[level])
            if back < upto:
                await _move(conn, level, upto, back)


async def _move(conn: Tx, level: str, old: dt.datetime | None, new: dt.datetime) -> None:
    if not await store.set_watermark(conn, level, old, new):
        raise RuntimeError(f"rollup watermark {level} moved under the advisory lock")


async def _minute(
    conn: Tx, now: dt.datetime, marks: dict[str, dt.datetime], lag: float, max_lag: float
) -> bool:
    target = floor_to(now - dt.timedelta(seconds=lag), MINUTE)
    open_due = await store.oldest_open_round(conn)
    if open_due is not None:
        floor = floor_to(now - dt.timedelta(seconds=max_lag), MINUTE)
        target = min(target, max(floor_to(open_due, MINUTE), floor))
    old = marks.get("minute")
    if old is None:
        oldest = await store.oldest_raw(conn)
        start = floor_to(min(oldest, target) if oldest else target, MINUTE)
        for level, step in store.LEVELS.items():
            marks[level] = floor_to(start, step)
            await _move(conn, level, None, marks[level])
    start = marks["minute"]
    end = min(target, start + MAX_SPAN["minute"])
    if end <= start:
        return False
    await ensure_partitions(conn, "minute", start, end)
    await store.rollup_raw(conn, start, end)
    await _move(conn, "minute", marks["minute"], end)
    marks["minute"] = end
    return end < target


async def _start_5min(conn: Tx, marks: dict[str, dt.datetime]) -> None:
    """An installation from before the 5-minute level: start its watermark at the oldest
    minute partition (or at the minute watermark when there is none), to be filled from there."""
    if "5min" in marks or "minute" not in marks:
        return
    names = await store.partitions(conn, "stats_minute")
    starts = [
        dt.datetime.strptime(n[-8:], "%Y%m%d").replace(tzinfo=dt.UTC) for n in names if n[-8:].isdigit()
    ]
    start = floor_to(min([*starts, marks["minute"]]), store.FIVE)
    await _move(conn, "5min", None, start)
    marks["5min"] = start


async def _coarser(conn: Tx, sources: tuple[str, ...], dest: str, marks: dict[str, dt.datetime]) -> bool:
    """Roll the next span of `dest` up from the first of `sources` whose watermark covers it
    (the 5-minute level may trail the minute level while it fills after an upgrade)."""
    step = store.LEVELS[dest]
    target = floor_to(max(marks[s] for s in sources), step)
    start = marks[dest]
    end = min(target, start + MAX_SPAN[dest])
    if end <= start:
        return False
    source = next(s for s in sources if marks[s] >= end)
    await ensure_partitions(conn, dest, start, end)
    await store.rollup_level(conn, source, dest, start, end)
    await _move(conn, dest, start, end)
    marks[dest] = end
    return end < target


async def refresh_uptimes(
    pool: asyncpg.Pool, now: dt.datetime, *, min_age: float = 50.0, max_age: float = 600.0, batch: int = 500
) -> int:
    """Refresh the cached uptimes (storage/uptime_cache.py) of every monitor with a new
    round since its last refresh at least `min_age` s ago, or refreshed more than
    `max_age` s ago (its windows slid); one statement per `batch` monitors. One controller
    at a time (session advisory lock, released at the end). Returns how many."""
    async with pool.acquire() as conn:
        if not await db.try_session_lock(conn, UPTIME_LOCK):
            return 0
        try:
            ids = await uptime_cache.due(
                conn, now, min_age=dt.timedelta(seconds=min_age), max_age=dt.timedelta(seconds=max_age)
            )
            marks = await store.watermarks(conn)
            for i in range(0, len(ids), batch):
                await uptime_cache.refresh(conn, ids[i : i + batch], now, marks)
            await uptime_cache.forget_orphans(conn)
        finally:
            await db.session_unlock(conn, UPTIME_LOCK)
    return len(ids)


async def run(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    *,
    interval: float = 10.0,
    lag: float = 30.0,
    max_lag: float = 600.0,
    uptime_every: float = 60.0,
) -> None:
    last_uptimes = -math.inf
    outage = Outage("rollups")
    while not stop.is_set():
        more = False
        try:
            more = await tick(pool, dt.datetime.now(dt.UTC), lag=lag, max_lag=max_lag)
            if time.monotonic() - last_uptimes >= uptime_every:
                last_uptimes = time.monotonic()
                await refresh_uptimes(pool, dt.datetime.now(dt.UTC), min_age=uptime_every * 5 / 6)
        except Exception as e:
            if db.unavailable(e):  # logged once per outage; the next period tries again
                outage.failed(e)
            elif isinstance(e, asyncpg.PostgresError | RuntimeError):
                log.warning("rollup failed error=%s", e)
            else:
                raise
        else:
            outage.succeeded()
        if not more:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
