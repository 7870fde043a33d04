"""/api/v1/health (anonymous), /api/v1/health/details (admin) and /metrics (Prometheus text);
the bound of every request's database work.

/health answers from memory: storage/db.DatabaseProbe runs a `SELECT 1` every second with a short
timeout in the background, so a stalled PostgreSQL makes /health say 503 at once instead of
hanging with it. `database_middleware` gives a request's database work, all of it together
(pool acquires, statements, releases), `database_timeout` (storage/db.budget) and answers 503
with Retry-After when the database did not answer in time or is unreachable.
"""

from __future__ import annotations

import logging
import time

import aiohttp
import asyncpg
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from probefleet.controller import keys, metrics
from probefleet.controller.api.common import json_response, now_utc, ok, require
from probefleet.controller.api.errors import ApiError, Handler
from probefleet.controller.api.regions import worker_regions
from probefleet.controller.storage import db as db_store
from probefleet.shared.version import VERSION

log = logging.getLogger("probefleet.api")

# What a request's database work raises when PostgreSQL stalls, restarts or is unreachable:
# the client should retry, not report a bug.
UNAVAILABLE = (
    TimeoutError,
    OSError,  # connection refused or reset while a new connection is made
    asyncpg.QueryCanceledError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


@web.middleware
async def database_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound the request's database work, all of it together, by `database_timeout`; 503
    when it ran out."""
    seconds = request.app[keys.CONFIG].database_timeout
    try:
        with db_store.bounded(seconds), db_store.budget(seconds):
            return await handler(request)
    except UNAVAILABLE as e:
        if isinstance(e, aiohttp.ClientError):
            raise  # an outbound HTTP call of the handler (OSError too), not the database
        log.warning("database unavailable path=%s error=%s", request.path, type(e).__name__)
        raise ApiError(
            503, "unavailable", "the database did not answer in time; retry", headers={"Retry-After": "1"}
        ) from None


async def health(request: web.Request) -> web.Response:
    """ok when the database answered its last probe and NATS is connected; degraded
    otherwise. Answers from memory. Reveals nothing else."""
    app = request.app
    db_ok = app[keys.DATABASE].ok(time.monotonic())
    state = "ok" if db_ok and app[keys.NC].is_connected else "degraded"
    return json_response({"status": state, "timestamp": now_utc()}, 200 if state == "ok" else 503)


async def prometheus(request: web.Request) -> web.Response:
    request.app[keys.FLEET].update_metrics(request.app[keys.REGIONS].ids())
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health_details(request: web.Request) -> web.Response:
    """Admin view: database, NATS, scheduler, probes per region, version, server time."""
    await require(request, "admin")
    app = request.app
    started = time.perf_counter()
    db: dict[str, object] = {"status": "ok"}
    try:
        await db_store.ping(app[keys.POOL])
        db["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    except Exception as e:
        db = {"status": "error", "error": type(e).__name__}
    pool = app[keys.POOL]
    db.update(pool_size=pool.get_size(), pool_idle=pool.get_idle_size())
    nc = app[keys.NC]
    scheduler = app[keys.SCHEDULER]
    regions = msgspec.to_builtins(worker_regions(app))
    ok_all = db["status"] == "ok" and nc.is_connected
    return ok(
        {
            "status": "ok" if ok_all else "degraded",
            "version": VERSION,
            "server_time": now_utc(),
            "controller_id": app[keys.CONFIG].controller_id,
            "database": db,
            "nats": {
                "status": "ok" if nc.is_connected else "disconnected",
                "server": nc.connected_url.netloc if nc.connected_url else None,
            },
            "scheduler": {"monitors_scheduled": len(scheduler.entries)},
            "regions": [
                {"id": r["id"], "is_active": r["is_active"], "probe_count": r["probe_count"]} for r in regions
            ],
        }
    )
