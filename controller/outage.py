"""A background loop's bookkeeping of a database outage: logged once, counted, retried
with backoff. The loops (scheduler's round writer, results consumer, sweeper, heartbeat
deadlines, ping writer, leases, upkeep) each keep one; `storage/db.unavailable` tells them
an outage from a statement the database refused."""

from __future__ import annotations

import logging
import random
import time

from probefleet.controller import metrics
from probefleet.controller.storage import db

log = logging.getLogger("probefleet.database")


class Outage:
    """One background loop's view of a database outage: its first failure is logged (a
    warning naming the loop), every failure counted in
    `probefleet_database_failures_total{loop}`, and the first success after it logs the
    recovery with the outage's length, so a loop retrying for minutes writes two lines.
    `failed` returns the backoff before the next try: `base` doubling up to `cap`, with
    jitter so that the loops of several controllers do not retry in step; `bounded` the
    bound for it."""

    def __init__(self, loop: str, *, base: float = 0.5, cap: float = 5.0) -> None:
        self.loop = loop
        self.base = base
        self.cap = cap
        self.since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, e: BaseException) -> float:
        """Note a failed call; the seconds to wait before the next one."""
        metrics.DATABASE_FAILURES.labels(self.loop).inc()
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("database unavailable, retrying loop=%s error=%s", self.loop, _describe(e))
        step = min(self.cap, self.base * 2 ** min(self.failures - 1, 16))
        return step * random.uniform(0.8, 1.2)

    def bounded(self) -> db.Bounded:
        """The bound for the next try (`db.bounded`): the task's own, doubled for each
        failure of this outage up to the pool's 60 s. A statement that is slow rather than
        stalled (a backlog on a busy database) gets through on a later try instead of being
        cut off at the same bound forever; a stalled one answers as soon as the database
        does, whatever its bound."""
        base = db.current_bound()
        if base is None or not self.failures:
            return db.bounded(base)
        return db.bounded(min(db.COMMAND_TIMEOUT, base * 2 ** min(self.failures, 8)))

    def succeeded(self) -> None:
        if self.since is not None:
            took = time.monotonic() - self.since
            log.info("database back loop=%s after_s=%.1f failures=%d", self.loop, took, self.failures)
        self.since = None
        self.failures = 0


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}" if str(e) else type(e).__name__
