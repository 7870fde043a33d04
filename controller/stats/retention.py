"""Retention: old raw results, rounds, rollups and heartbeat pings leave by dropping whole
partitions.

A partition is dropped when its whole range is older than its level's retention and the
level above has already rolled it up (its range ends at or before that level's
watermark), so dropping never loses data that is not yet summarised. Heartbeat pings are
not rolled up: only their retention counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re

import asyncpg
import msgspec

from probefleet.controller import metrics
from probefleet.controller.config import ControllerConfig
from probefleet.controller.outage import Outage
from probefleet.controller.stats.rollups import SPAN, next_start
from probefleet.controller.storage import db
from probefleet.controller.storage import stats as store

log = logging.getLogger("probefleet.retention")


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    """Days kept at each level; None keeps forever."""

    raw: float | None = 7
    minute: float | None = 30
    hour: float | None = 365
    day: float | None = None
    pings: float | None = 30


def from_config(cfg: ControllerConfig) -> Retention:
    return Retention(
        raw=cfg.retention_raw_days,
        minute=cfg.retention_minute_days,
        hour=cfg.retention_hour_days,
        day=cfg.retention_day_days,
        pings=cfg.heartbeat_ping_retention_days,
    )


# Levels that read each level (their watermarks must have passed a partition before it
# goes): the hour step reads minute rows where the 5-minute level does not reach yet.
READERS = {"raw": ("minute",), "minute": ("5min", "hour"), "5min": ("hour",), "hour": ("day",)}
# The 5-minute level is kept as long as the minute level.
KEPT_AS = {"5min": "minute"}
# parent table -> (retention level, partition span, watermarks that must have passed it)
TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "check_results": ("raw", "day", READERS["raw"]),
    "rounds": ("raw", "day", READERS["raw"]),
    **{
        f"{kind}_{level}": (KEPT_AS.get(level, level), SPAN[level], READERS.get(level, ()))
        for level in ("minute", "5min", "hour", "day")
        for kind in ("stats", "verdicts")
    },
    "heartbeat_pings": ("pings", "day", ()),
}


def expired(
    parent: str, names: list[str], now: dt.datetime, keep: Retention, marks: dict[str, dt.datetime]
) -> list[str]:
    """The partitions of `parent` (named parent_YYYYMMDD by range start) to drop."""
    level, span, guards = TABLES[parent]
    days = getattr(keep, level)
    if days is None:
        return []
    cutoff = now - dt.timedelta(days=days)
    for guard in guards:
        if guard not in marks:
            return []
        cutoff = min(cutoff, marks[guard])
    pattern = re.compile(rf"^{re.escape(parent)}_(\d{{8}})$")
    out = []
    for name in names:
        m = pattern.match(name)
        if m is None:
            continue
        start = dt.datetime.strptime(m.group(1), "%Y%m%d").date()
        end = dt.datetime.combine(next_start(start, span), dt.time(), dt.UTC)
        if end <= cutoff:
            out.append(name)
    return out


async def tick(pool: asyncpg.Pool, now: dt.datetime, keep: Retention) -> list[str]:
    """Drop every expired partition; return their names."""
    marks = await store.watermarks(pool)
    dropped = []
    for parent in TABLES:
        for name in expired(parent, await store.partitions(pool, parent), now, keep, marks):
            if await store.drop_partition(pool, name):
                dropped.append(name)
                metrics.PARTITIONS_DROPPED.labels(parent).inc()
                log.info("partition dropped table=%s", name)
    return dropped


async def run(pool: asyncpg.Pool, stop: asyncio.Event, keep: Retention, *, interval: float = 3600.0) -> None:
    outage = Outage("retention")
    while not stop.is_set():
        try:
            await tick(pool, dt.datetime.now(dt.UTC), keep)
        except Exception as e:
            if db.unavailable(e):  # logged once per outage; the next period tries again
                outage.failed(e)
            elif isinstance(e, asyncpg.PostgresError):
                log.warning("retention failed error=%s", e)
            else:
                raise
        else:
            outage.succeeded()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
