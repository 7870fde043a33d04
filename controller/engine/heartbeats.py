"""Heartbeat (cron) monitors: the job reports in, silence is the failure.

Pure part: `next_expected`, `deadline`, `evaluate(state, now)` and `signal(state, ping)`
decide from a heartbeat's schedule and its last signals whether it is late, without I/O.

I/O part, one testable step each:
- `record(pool, pings)` writes one batch of pings in one transaction: the ping rows, the
  monitors' state through `incidents.apply` (events and incidents in the same
  transaction) and the heartbeats' new deadlines. `PingWriter` groups concurrent pings
  into such batches (group commit) and answers each ping only after its batch
  committed, so an acknowledged ping is durable.
- `tick(pool, now)` finds heartbeats past their cached deadline with one indexed query,
  re-evaluates them under row locks (SKIP LOCKED: two controllers never take the same
  one) and marks them down.

A database outage is not the job's fault: its pings were refused (503) while the database
was unavailable. `excused` moves a deadline past every outage that overlaps its grace
window, by the outage's length plus `OUTAGE_ALLOWANCE` for the client's retry, and the
deadline checker applies it with the outages the controller's `DatabaseProbe` saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from probefleet.controller import metrics
from probefleet.controller.engine import incidents
from probefleet.controller.engine.consensus import Verdict
from probefleet.controller.monitors import maintenance
from probefleet.controller.monitors.heartbeat import (
    MAX_OPEN_RUNS,
    Deadline,
    Ping,
    State,
    decode_spec,
    next_expected,
)
from probefleet.controller.outage import Outage
from probefleet.controller.storage import Tx
from probefleet.controller.storage import heartbeats as store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage.db import DatabaseProbe, bounded, unavailable

if TYPE_CHECKING:
    pass

log = logging.getLogger("probefleet.heartbeats")

# Signals that resume a paused heartbeat, as Healthchecks does: the job is back, so is its
# monitoring. A start or a log leaves it paused (they say nothing about the outcome).
RESUMING = frozenset({"success", "fail"})
# Two lanes: one batch's round trips and commit overlap the other's Python work (bench:
# about 5,800 pings/s against about 4,500 with one lane; four were no faster than two).
PING_LANES = 2
# After the database returns, the time a client has to get a refused ping through: it was
# told Retry-After: 1, and the API accepts pings again within a second of the database
# answering (the probe's period). Generous, for clients that back off further.
OUTAGE_ALLOWANCE = dt.timedelta(seconds=15)

# A span of wall-clock time during which the database was unavailable.
Span = tuple[dt.datetime, dt.datetime]


def deadline(state: State) -> Deadline | None:
    """The earliest moment the heartbeat counts as late; None when it cannot be."""
    if not state.enabled or state.status in ("paused", "down"):
        return None
    grace = dt.timedelta(seconds=state.spec.grace_period)
    base = max(state.anchor, state.last_success) if state.last_success else state.anchor
    best = Deadline(at=next_expected(state.spec, base) + grace, reason="heartbeat_missed")
    if state.runs:
        started = min(state.runs.values())
        if started + grace < best.at:
            best = Deadline(at=started + grace, reason="run_timeout")
    return best


def excused(d: Deadline, grace: float, outages: Sequence[Span]) -> Deadline:
    """`d` moved past the database outages that overlap its grace window `[d.at - grace,
    d.at]` (one during which the deadline passed included): by each outage's length, plus
    OUTAGE_ALLOWANCE once. The clock stops while the database cannot store pings, and the
    client gets time to retry the ping refused meanwhile."""
    at, opens, hit = d.at, d.at - dt.timedelta(seconds=grace), False
    for start, end in sorted(outages):
        if start < at and end > opens:
            at += end - start
            hit = True
    return Deadline(at=at + OUTAGE_ALLOWANCE, reason=d.reason) if hit else d


def evaluate(state: State, now: dt.datetime, outages: Sequence[Span] = ()) -> Verdict | None:
    """A failing verdict when `now` is past the deadline (`excused` for `outages`), else None."""
    d = deadline(state)
    if d is not None and outages:
        d = excused(d, state.spec.grace_period, outages)
    if d is None or now < d.at:
        return None
    when = d.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    message = (
        f"no success ping by {when}"
        if d.reason == "heartbeat_missed"
        else f"a run started and did not finish by {when}"
    )
    return Verdict(state="down", reason=d.reason, message=message)


def signal(state: State, ping: Ping) -> tuple[Verdict | None, float | None]:
    """Apply one ping to `state` in place; the verdict it gives (if any) and the run's
    duration in seconds when the ping closes a run it can be paired with."""
    if ping.kind == "log":
        return None, None
    if ping.kind == "start":
        state.runs[ping.rid or ""] = ping.at
        while len(state.runs) > MAX_OPEN_RUNS:
            del state.runs[min(state.runs, key=lambda k: state.runs[k])]
        return None, None
    started = state.runs.pop(ping.rid or "", None)
    duration = (ping.at - started).total_seconds() if started is not None else None
    if ping.kind == "success":
        state.last_success = ping.at
        return Verdict(state="up", passing=(), response_time_ms=None), duration
    message = ping.body[:500] or (f"exit code {ping.exit_code}" if ping.exit_code else "fail signal")
    return Verdict(state="down", reason="heartbeat_failed", message=message), duration


# ------------------------------------------------------------------ I/O


def state_of(row: dict[str, Any]) -> State:
    runs = msgspec.convert(row["runs"] or {}, dict[str, dt.datetime])
    spec = decode_spec(row["spec"])
    assert spec is not None
    return State(
        spec=spec,
        status=row["status"],
        anchor=row["anchor_at"],
        enabled=row["enabled"],
        last_success=row["last_success"],
        runs=runs,
    )


def _after(t: dt.datetime | None, at: dt.datetime) -> dt.datetime:
    """A `due` for incidents.apply that is later than the last applied one (CAS order)."""
    if t is None or at > t:
        return at
    return t + dt.timedelta(microseconds=1)


async def _apply(conn: Tx, monitor: dict[str, Any], verdict: Verdict, at: dt.datetime) -> None:
    due = _after(monitor.get("last_round"), at)
    new = await incidents.apply(conn, monitor, due, verdict, at)
    if new is not None:
        monitor.update(
            status=new.status, fail_streak=new.fail_streak, pass_streak=new.pass_streak, last_round=due
        )


async def record(pool: asyncpg.Pool, pings: list[Ping]) -> list[bool]:
    """Store one batch in one transaction; per ping, whether its heartbeat still exists."""
    async with pool.acquire() as conn:
        return await record_on(conn, pings)


async def record_on(conn: Tx, pings: list[Ping]) -> list[bool]:
    """`record` on a connection the caller holds (PingWriter keeps one per lane)."""
    async with conn.transaction():
        rows = {r["monitor_id"]: r for r in await store.lock(conn, sorted({p.monitor_id for p in pings}))}
        states = {mid: state_of(r) for mid, r in rows.items()}
        quick: dict[int, list[dt.datetime]] = {}  # successes of monitors already up
        stored: list[tuple[Ping, float | None]] = []
        for ping in pings:
            row = rows.get(ping.monitor_id)
            if row is None:
                continue
            state = states[ping.monitor_id]
            if row["status"] == "paused" and ping.kind in RESUMING:
                await _resume(conn, row, state, ping)
            verdict, duration = signal(state, ping)
            stored.append((ping, duration))
            if verdict is None or not state.enabled or row["status"] == "paused":
                continue
            if verdict.state == "up" and row["status"] == "up":
                quick.setdefault(ping.monitor_id, []).append(ping.at)
                continue
            await _flush_quick(conn, rows, quick)
            await _apply(conn, row, verdict, ping.at)
            state.status = row["status"]
        last = {p.monitor_id: p for p, _ in stored}
        await store.finish_batch(
            conn,
            stored,
            [(mid, states[mid], last[mid], deadline(states[mid])) for mid in last],
            _touches(rows, quick),
        )
    for kind, n in Counter(p.kind for p, _ in stored).items():
        metrics.HEARTBEAT_PINGS.labels(kind).inc(n)
    return [p.monitor_id in rows for p in pings]


async def _resume(conn: Tx, row: dict[str, Any], state: State, ping: Ping) -> None:
    """A paused heartbeat pinged with an outcome: resume it (monitor.resumed, reason
    "ping"); its schedule restarts at the ping, which is then applied as usual."""
    changed = await monitor_store.set_paused(conn, row["id"], False, None)
    if changed is None:
        return
    previous = changed.pop("previous_status")
    await incidents.emit(
        conn,
        "monitor.resumed",
        ping.at,
        monitor=changed,
        status=changed["status"],
        previous=previous,
        extra={"reason": "ping"},
    )
    row.update(status=changed["status"], enabled=True)
    state.status, state.enabled, state.anchor = changed["status"], True, ping.at
    await store.set_anchor(conn, row["id"], ping.at)


Touch = tuple[int, dt.datetime, dt.datetime, int]


def _touches(rows: dict[int, dict[str, Any]], quick: dict[int, list[dt.datetime]]) -> list[Touch]:
    """(monitor id, last success, due, count) for successes that leave an up monitor up."""
    updates = []
    for mid, times in quick.items():
        row = rows[mid]
        due = _after(row.get("last_round"), max(times))
        row["last_round"] = due
        updates.append((mid, max(times), due, len(times)))
    quick.clear()
    return updates


async def _flush_quick(
    conn: Tx,
    rows: dict[int, dict[str, Any]],
    quick: dict[int, list[dt.datetime]],
) -> None:
    """Before a state change: write the successes seen so far, in one UPDATE."""
    if quick:
        await store.touch_monitors(conn, _touches(rows, quick))


async def tick(
    pool: asyncpg.Pool,
    now: dt.datetime,
    limit: int = 500,
    outages: Callable[[], Sequence[Span]] = tuple,
) -> int:
    """Mark every heartbeat past its deadline down; return how many went down.

    `outages` is asked once the rows are locked, i.e. after the database answered: a tick
    that waited through an outage sees it. A heartbeat it excuses gets the moved deadline
    cached, so it is not read again before then.

    Nothing due (nearly every tick): one statement, not a transaction of three."""
    down = 0
    if not await store.any_due(pool, now):
        return down
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await store.lock_due(conn, now, limit)
            spans = outages() if rows else ()
            for row in rows:
                state = state_of(row)
                verdict = evaluate(state, now, spans)
                if verdict is not None:
                    await _apply(conn, row, verdict, now)
                    state.status = row["status"]
                    if state.status == "down":
                        down += 1
                        await _missed_event(conn, row, verdict, now)
                due = deadline(state)
                if verdict is None and due is not None and due.at <= now:
                    due = excused(due, state.spec.grace_period, spans)
                    metrics.HEARTBEAT_DEADLINES_EXCUSED.inc()
                await store.set_deadline(conn, row["monitor_id"], due)
        if len(rows) < limit:
            return down


async def _missed_event(conn: Tx, row: dict[str, Any], verdict: Verdict, now: dt.datetime) -> None:
    windows = [
        maintenance.from_row(w)
        for w in await incident_store.windows_for(conn, row["id"], list(row["tags"] or []))
    ]
    if maintenance.active(windows, now):
        return
    await incidents.emit(
        conn,
        "heartbeat.missed",
        now,
        monitor=row,
        status=row["status"],
        extra={"reason": verdict.reason, "message": verdict.message},
    )


async def refresh(pool: asyncpg.Pool, monitor_id: int) -> None:
    """Recompute one heartbeat's deadline after its monitor changed (schedule, pause, resume)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await store.lock(conn, [monitor_id])
        if not rows:
            return
        row = rows[0]
        if row["status"] == "pending" and row["updated_at"] > row["anchor_at"]:
            # Resumed (or never pinged and edited): the schedule starts over from now.
            row["anchor_at"] = row["updated_at"]
            await store.set_anchor(conn, monitor_id, row["anchor_at"])
        await store.set_deadline(conn, monitor_id, deadline(state_of(row)))


class PingWriter:
    """Group commit: pings arriving together share one transaction; each caller waits
    for the commit that made its ping durable.

    Pings are spread over `lanes` by monitor id. A lane writes one batch at a time, so
    the signals of one heartbeat are applied in arrival order, while the lanes commit
    side by side (PostgreSQL groups their WAL flushes too); under load a lane's next
    batch fills while its current one commits. Each lane keeps its own connection: no
    pool acquire and no reset query per batch (a round trip before the pings are answered).

    A caller waits at most `timeout` seconds for its commit, then gets TimeoutError (the API
    answers 503, the client retries): a ping still buffered is dropped, one whose batch is
    already being written may still be stored when the database answers. Each statement of a
    batch, and acquiring a lane's connection, waits at most `bound` seconds, so a lane stuck on
    a stalled database fails its batch and starts over rather than waiting for PostgreSQL's
    return."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lanes: int = 1,
        window: float = 0.001,
        max_batch: int = 2000,
        timeout: float | None = None,
        bound: float | None = None,
    ) -> None:
        self.pool = pool
        self.window = window
        self.max_batch = max_batch
        self.timeout = timeout
        self.bound = bound
        self.closed = False
        self._bufs: list[list[tuple[Ping, asyncio.Future[bool]]]] = [[] for _ in range(lanes)]
        self._wakes = [asyncio.Event() for _ in range(lanes)]
        self._conns: list[PoolConnectionProxy[Any] | None] = [None] * lanes
        self._outage = Outage("pings")

    async def submit(self, ping: Ping) -> bool:
        """True once stored; False if the heartbeat no longer exists."""
        if self.closed:
            raise RuntimeError("ping writer stopped")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane = ping.monitor_id % len(self._bufs)
        entry = (ping, fut)
        self._bufs[lane].append(entry)
        self._wakes[lane].set()
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._bufs[lane].remove(entry)
            fut.cancel()  # the batch that holds it, if any, leaves it alone
            raise

    async def flush_once(self, lane: int = 0) -> int:
        """Write what one lane buffered (up to max_batch); return how many pings it took."""
        buf = self._bufs[lane]
        batch = buf[: self.max_batch]
        del buf[: self.max_batch]
        if not batch:
            return 0
        metrics.HEARTBEAT_BATCH_SIZE.observe(len(batch))
        started = time.perf_counter()
        try:
            conn = self._conns[lane]
            pings = [p for p, _ in batch]
            results = await (record(self.pool, pings) if conn is None else record_on(conn, pings))
            metrics.HEARTBEAT_WRITE_SECONDS.observe(time.perf_counter() - started)
        except Exception as e:  # the caller answers 503 and the client retries
            if unavailable(e):
                self._outage.failed(e)
            else:
                log.warning("storing pings failed count=%d error=%s", len(batch), e)
            await self._release(lane)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return len(batch)
        self._outage.succeeded()
        for (_, fut), stored in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(stored)
        return len(batch)

    async def _release(self, lane: int) -> None:
        conn, self._conns[lane] = self._conns[lane], None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection is discarded by the pool
                await self.pool.release(conn)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set and every lane is empty."""
        try:
            await asyncio.gather(*(self._lane(i, stop) for i in range(len(self._bufs))))
        finally:
            self.closed = True
            for lane in range(len(self._conns)):
                await self._release(lane)

    async def _lane(self, lane: int, stop: asyncio.Event) -> None:
        if self.bound is not None:
            with bounded(self.bound):
                return await self._lane_loop(lane, stop)
        return await self._lane_loop(lane, stop)

    async def _lane_loop(self, lane: int, stop: asyncio.Event) -> None:
        buf, wake = self._bufs[lane], self._wakes[lane]
        idle = True
        while True:
            if not buf:
                if stop.is_set():
                    return
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                idle = True
                continue
            # After idling, wait a window for company; after a batch, what arrived while it
            # committed goes at once (waiting more would only add latency under load).
            if idle and len(buf) < self.max_batch:
                await asyncio.sleep(self.window)
            idle = False
            if self._conns[lane] is None:
                with contextlib.suppress(Exception):  # else flush_once fails the batch: 503
                    self._conns[lane] = await self.pool.acquire()
            await self.flush_once(lane)


def outages_of(probe: DatabaseProbe) -> Callable[[], list[Span]]:
    """The outages `probe` saw, as spans for `tick`."""

    def spans() -> list[Span]:
        return [(_utc(a), _utc(b)) for a, b in probe.outages()]

    return spans


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def deadline_loop(
    pool: asyncpg.Pool, stop: asyncio.Event, interval: float = 1.0, probe: DatabaseProbe | None = None
) -> None:
    """`tick` every `interval`, excusing the outages `probe` saw; backs off while the
    database fails. Old pings leave with their partitions (controller/retention.py)."""
    outage = Outage("heartbeat_deadlines")
    spans = outages_of(probe) if probe is not None else tuple
    while not stop.is_set():
        delay = interval
        try:
            with outage.bounded():
                await tick(pool, dt.datetime.now(dt.UTC), outages=spans)
        except Exception as e:
            if not unavailable(e):
                log.exception("heartbeat deadline check failed")
            delay = max(interval, outage.failed(e))
        else:
            outage.succeeded()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
