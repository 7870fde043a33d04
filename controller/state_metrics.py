"""The fleet-state gauges of /metrics (monitors by status, open incidents, overdue
heartbeats, queued deliveries, outbox lag): one set of queries every
`state_metrics_interval`, never per request or per scrape. `refresh(pool, now)` is the
step; `state_metrics_ctx` runs it in a loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from probefleet.controller import keys, metrics
from probefleet.controller.outage import Outage
from probefleet.controller.storage import DB, db
from probefleet.controller.storage import state as state_store

log = logging.getLogger("probefleet.controller")


async def refresh(conn: DB, now: dt.datetime) -> state_store.FleetState:
    """Read the fleet's state and set the gauges to it (labels that went away are removed)."""
    state = await state_store.read(conn, now)
    metrics.MONITORS_BY_STATUS.clear()
    for (kind, status), n in state.monitors.items():
        metrics.MONITORS_BY_STATUS.labels(kind, status).set(n)
    metrics.INCIDENTS_OPEN.clear()
    for severity, n in state.incidents_open.items():
        metrics.INCIDENTS_OPEN.labels(severity).set(n)
    metrics.HEARTBEATS_OVERDUE.set(state.heartbeats_overdue)
    metrics.DELIVERIES_QUEUED.clear()
    for (kind, status), n in state.deliveries_queued.items():
        metrics.DELIVERIES_QUEUED.labels(kind, status).set(n)
    metrics.OUTBOX_PENDING.set(state.outbox_pending)
    lag = (now - state.outbox_oldest).total_seconds() if state.outbox_oldest is not None else 0.0
    metrics.OUTBOX_LAG.set(max(0.0, lag))
    metrics.STATE_REFRESHED.set(now.timestamp())
    return state


async def state_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: refresh the gauges at start and every state_metrics_interval."""
    interval = app[keys.CONFIG].state_metrics_interval
    stop = asyncio.Event()
    task = asyncio.create_task(_loop(app, interval, stop), name="state_metrics")
    yield
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _loop(app: web.Application, interval: float, stop: asyncio.Event) -> None:
    outage = Outage("state_metrics")
    while not stop.is_set():
        try:
            with db.bounded(app[keys.CONFIG].database_background_timeout):
                await refresh(app[keys.POOL], dt.datetime.now(dt.UTC))
        except Exception as e:
            if not db.unavailable(e):
                log.warning("state metrics failed error=%s", e)
            outage.failed(e)
        else:
            outage.succeeded()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
