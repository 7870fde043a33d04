"""build_app: the controller's aiohttp application and its lifecycles (cleanup_ctx only)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import msgspec
import nats
from aiohttp import WSCloseCode, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from probefleet.controller import keys, metrics, state_metrics
from probefleet.controller.api import auth, health, public_pages, ratelimit, request_ids, routes
from probefleet.controller.api import fleet as fleet_api
from probefleet.controller.api import regions as regions_api
from probefleet.controller.api import status_pages as status_pages_api
from probefleet.controller.api.errors import error_middleware
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.cluster.sharding import Membership
from probefleet.controller.config import ControllerConfig
from probefleet.controller.console import accounts, audit, templating
from probefleet.controller.engine import diagnostics, heartbeats, incidents, results
from probefleet.controller.engine.scheduler import Scheduler
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.dispatcher import Dispatcher
from probefleet.controller.notifications.realtime import Hub
from probefleet.controller.outage import Outage
from probefleet.controller.stats import retention, rollups
from probefleet.controller.status_pages import access as page_access
from probefleet.controller.status_pages import subscribers
from probefleet.controller.status_pages.cache import PageCache
from probefleet.controller.storage import db
from probefleet.controller.storage import probes as probe_store
from probefleet.shared import natscreds, subjects, wire
from probefleet.shared.redact import redact_url
from probefleet.shared.streams import ensure_streams

if TYPE_CHECKING:
    from probefleet.controller.cluster.trust import FleetTrust

log = logging.getLogger("probefleet.controller")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = routes.canonical_path(route.canonical) if route is not None else "unmatched"
    start = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    metrics.HTTP_DURATION.labels(name).observe(time.perf_counter() - start)
    metrics.HTTP_REQUESTS.labels(request.method, name, str(response.status)).inc()
    return response


def _spawn(
    app: web.Application,
    loop: Callable[[], Coroutine[Any, Any, None]],
    name: str,
    bound: float | None = None,
) -> None:
    """Run `loop()` as a background task until the workers' stop event is set; should it
    raise (a bug: loops handle the database's and NATS' failures themselves), log it and
    start it again after a backoff (1 s doubling to 30 s), so no loop dies for good.
    Database calls in the task wait at most `bound` (default `database_background_timeout`)."""
    stop = app[keys.STOP]

    async def supervised() -> None:
        delay = 1.0
        while not stop.is_set():
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task failed, restarting task=%s", name)
                metrics.TASK_RESTARTS.labels(name).inc()
            else:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(30.0, delay * 2)

    with db.bounded(bound or app[keys.CONFIG].database_background_timeout):
        app[keys.TASKS].append(asyncio.create_task(supervised(), name=name))


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[keys.CONFIG]
    await db.migrate(cfg.database_url)
    app[keys.POOL] = await db.create_pool(cfg.database_url, max_size=cfg.db_pool_max)
    probe = app[keys.DATABASE] = db.DatabaseProbe(app[keys.POOL])
    metrics.DATABASE_AVAILABLE.set_function(lambda: float(probe.ok(time.monotonic())))
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop), name="database-probe")
    yield
    stop.set()
    await asyncio.gather(task, return_exceptions=True)
    await app[keys.POOL].close()


async def nats_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[keys.CONFIG]

    async def disconnected() -> None:
        log.warning("nats disconnected")
        # No heartbeat reaches us now: the probes are unheard, not gone.
        if keys.FLEET in app:
            app[keys.FLEET].disconnected()

    async def reconnected() -> None:
        log.info("nats reconnected")
        if keys.FLEET in app:
            app[keys.FLEET].reconnected()
        # Status-page changes announced while we were cut off did not reach us: end every
        # page stream, and the browsers' reconnects are checked against the pages as they are.
        if keys.HUB in app:
            app[keys.HUB].close_page(None)

    nc = await _connect(cfg, disconnected, reconnected)
    js = nc.jetstream()
    await ensure_streams(js, replicas=cfg.nats_stream_replicas)
    await results.ensure_consumer(js, cfg.results_ack_wait)
    app[keys.NC] = nc
    app[keys.JS] = js
    yield
    if keys.FLEET in app:
        app[keys.FLEET].clear_metrics()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 5)


async def notifications_ctx(app: web.Application) -> AsyncIterator[None]:
    """The dispatcher, its HTTP session (the session's timeout bounds every delivery; it
    connects only to public addresses unless notification_channels_allow_private) and its
    status-page subscribers, whose webhooks have their own setting: anonymous visitors choose
    them, API-key holders choose channels, and allowing one must not allow the other."""
    cfg = app[keys.CONFIG]
    timeout = aiohttp.ClientTimeout(total=10, connect=5)
    async with contextlib.AsyncExitStack() as stack:
        allow = cfg.notification_channels_allow_private
        session = await stack.enter_async_context(destinations.session(allow_private=allow, timeout=timeout))
        hooks = session
        if cfg.subscriber_webhooks_allow_private != allow:
            hooks = await stack.enter_async_context(
                destinations.session(allow_private=cfg.subscriber_webhooks_allow_private, timeout=timeout)
            )
        app[keys.DISPATCHER] = Dispatcher(
            pool=app[keys.POOL],
            session=session,
            subscribers=subscribers.from_config(cfg, hooks),
            base_url=cfg.public_url or f"http://{cfg.host}:{cfg.port}",
        )
        yield


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Fleet, scheduler, results consumer, round sweeper and partition upkeep."""
    cfg = app[keys.CONFIG]
    nc, pool = app[keys.NC], app[keys.POOL]
    stop = app[keys.STOP] = asyncio.Event()
    app[keys.TASKS] = []
    fleet = app[keys.FLEET] = Fleet(interval=cfg.probe_heartbeat_interval, missed=cfg.probe_missed_heartbeats)
    decoder = msgspec.msgpack.Decoder(wire.ProbeHeartbeat)

    async def on_heartbeat(msg: Msg) -> None:
        try:
            hb = decoder.decode(msg.data)
        except msgspec.DecodeError:
            return
        if msg.subject != subjects.heartbeat(hb.region):
            # A probe may publish only on its own region's subject; claiming another region
            # in the body would make that region look served.
            metrics.REGION_MISMATCH.labels("heartbeat").inc()
            log.warning(
                "heartbeat dropped: region=%s on subject=%s probe_id=%s", hb.region, msg.subject, hb.probe_id
            )
            return
        if fleet.observe(hb):
            log.info("probe joined probe_id=%s region=%s", hb.probe_id, hb.region)

    async def publish(subject: str, data: bytes) -> None:
        # While NATS is away the client would buffer the jobs and flush them all at the
        # reconnect, at or near their deadlines: a probe would run some with a sliver of
        # their timeout and report the target failing. Such a job reaches no probe in time
        # anyway, so it is not sent; its round has no answer from that region (unknown).
        if not nc.is_connected:
            return
        await nc.publish(subject, data)

    membership = Membership(
        pool=pool, controller_id=cfg.controller_id, lease=cfg.controller_heartbeat_interval * 3
    )
    await membership.beat()
    app[ratelimit.LIMITER].controllers = lambda: len(membership.members)
    scheduler = app[keys.SCHEDULER] = Scheduler(
        pool=pool,
        publish=publish,
        fleet=fleet,
        round_grace=cfg.round_grace,
        owns=membership.owns,
        active=membership.scheduling,
        result_batches=membership.result_batches,
        buffer_max=cfg.schedule_buffer_rounds,
        lookahead=cfg.dispatch_lookahead,
    )

    async def on_recheck(rechecks: list[incidents.Recheck]) -> None:
        await scheduler.open_rechecks(rechecks)

    async def on_monitor_change(msg: Msg) -> None:
        # An unavailable database loses this refresh; the 5-minute resync (_upkeep) repairs it.
        with contextlib.suppress(ValueError, asyncpg.PostgresError, OSError), db.bounded(bound):
            await scheduler.refresh(int(msg.data))

    async def on_members(msg: Msg) -> None:
        membership.hear(msg.data)

    bound = cfg.database_background_timeout
    subs = [
        await nc.subscribe(subjects.heartbeat_all(), cb=on_heartbeat),
        await nc.subscribe(subjects.monitor_changes(), cb=on_monitor_change),
        await nc.subscribe(subjects.controller_members(), cb=on_members),
    ]
    await scheduler.load()
    js = app[keys.JS]
    _spawn(app, lambda: scheduler.run(stop), "scheduler")
    _spawn(
        app,
        lambda: results.consume(
            js,
            pool,
            batch=cfg.results_batch,
            stop=stop,
            on_recheck=on_recheck,
            ack_wait=cfg.results_ack_wait,
            gather=cfg.results_gather,
        ),
        "results",
    )
    _spawn(
        app,
        lambda: results.sweep_loop(pool, stop, on_recheck=on_recheck, js=js, settled=fleet.settled_until),
        "sweeper",
    )
    interval = cfg.controller_heartbeat_interval
    _spawn(app, lambda: _membership(membership, scheduler, nc, interval, stop), "membership")
    _spawn(app, lambda: _upkeep(app, stop), "upkeep")
    # A rollup step over a large installation's backlog can take tens of seconds: these
    # loops keep the pool's own statement bound (60 s) unless the setting is longer.
    slow = max(cfg.database_background_timeout, db.COMMAND_TIMEOUT)
    _spawn(app, lambda: rollups.run(pool, stop, interval=cfg.rollup_interval), "rollups", slow)
    _spawn(app, lambda: retention.run(pool, stop, retention.from_config(cfg)), "retention", slow)
    _spawn(app, lambda: app[keys.DISPATCHER].run(stop), "dispatcher")
    yield
    stop.set()
    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    tasks = app[keys.TASKS]
    _, pending = await asyncio.wait(tasks, timeout=1.5) if tasks else (set(), set())
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    with contextlib.suppress(Exception):
        await membership.leave()


async def _membership(
    membership: Membership, scheduler: Scheduler, nc: Any, interval: float, stop: asyncio.Event
) -> None:
    """Renew our lease and announce the members read; reload the schedule when controllers
    join or leave. While the database fails, keep trying every `interval` (a lease cannot
    wait for a backoff); each try waits at most a lease."""
    outage = Outage("membership")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        try:
            with db.bounded(membership.lease):  # a beat later than that cannot keep the lease anyway
                changed = await membership.beat()
        except Exception as e:
            outage.failed(e)
            continue
        outage.succeeded()
        with contextlib.suppress(Exception):  # NATS reconnecting: the next beat announces again
            await nc.publish(subjects.controller_members(), membership.announcement())
        if changed:
            log.info("controllers changed members=%s", ",".join(membership.members))
            try:
                await scheduler.load()
            except Exception as e:
                outage.failed(e)


async def _upkeep(app: web.Application, stop: asyncio.Event) -> None:
    """Every few seconds: forget silent probes, save the fleet; every 5 minutes: partitions, resync."""
    pool, fleet, scheduler = app[keys.POOL], app[keys.FLEET], app[keys.SCHEDULER]
    last_slow = time.monotonic()
    outage = Outage("upkeep")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), fleet.interval)
        for hb in fleet.prune():
            log.warning("probe lost probe_id=%s region=%s", hb.probe_id, hb.region)
        try:
            await probe_store.save(pool, fleet.live())
            if time.monotonic() - last_slow > 300:
                await db.ensure_partitions(pool, dt.datetime.now(dt.UTC))
                await scheduler.load()
                last_slow = time.monotonic()
        except Exception as e:
            if not db.unavailable(e):
                log.warning("upkeep failed error=%s", e)
            outage.failed(e)
        else:
            outage.succeeded()


async def heartbeats_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the ping writer, the deadline checker and monitor-change refreshes.
    Listed after the database and NATS contexts so it stops first, after aiohttp has
    finished the requests in flight, and drains the buffered pings before the pool closes."""
    pool, nc = app[keys.POOL], app[keys.NC]
    cfg = app[keys.CONFIG]
    writer = app[keys.PINGS] = heartbeats.PingWriter(
        pool, lanes=heartbeats.PING_LANES, timeout=cfg.heartbeat_ping_timeout, bound=cfg.database_timeout
    )
    stop = asyncio.Event()

    bound = cfg.database_background_timeout

    async def on_change(msg: Any) -> None:
        with contextlib.suppress(ValueError, asyncpg.PostgresError, OSError), db.bounded(bound):
            await heartbeats.refresh(pool, int(msg.data))

    sub = await nc.subscribe(subjects.monitor_changes(), cb=on_change)
    tasks = [asyncio.create_task(writer.run(stop), name="ping-writer")]
    with db.bounded(bound):
        deadlines = heartbeats.deadline_loop(pool, stop, probe=app[keys.DATABASE])
        tasks.append(asyncio.create_task(deadlines, name="heartbeat-deadlines"))
    yield
    stop.set()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    await asyncio.gather(*tasks, return_exceptions=True)


async def realtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """The events hub (WebSocket and SSE push), status-page changes from any controller
    (ours included), and the diagnostics that follow the hub's incident.opened events."""
    cfg = app[keys.CONFIG]
    hub = app[keys.HUB] = Hub(app[keys.POOL])
    await hub.start()
    secret = await page_access.cookie_secret(app[keys.POOL], cfg.status_page_secret)
    app[keys.STATUS_PAGES] = PageCache(secret=secret)

    async def on_page_changed(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            status_pages_api.drop_page(app, int(msg.data))
        if msg.reply:
            await msg.respond(b"ok")

    sub = await app[keys.NC].subscribe(subjects.status_page_changed(), cb=on_page_changed)
    stop = asyncio.Event()
    tasks = []
    with db.bounded(cfg.database_background_timeout):
        tasks.append(asyncio.create_task(hub.run(stop), name="realtime"))
        if cfg.diagnostics_per_region_minute > 0 and keys.SCHEDULER in app:
            nc = app[keys.NC]

            async def publish(subject: str, data: bytes) -> None:
                if nc.is_connected:  # as the scheduler: a job buffered through an outage is late
                    await nc.publish(subject, data)

            diagnoser = diagnostics.Diagnostics(
                pool=app[keys.POOL],
                hub=hub,
                fleet=app[keys.FLEET],
                publish=publish,
                owns=app[keys.SCHEDULER].owns,
                per_minute=cfg.diagnostics_per_region_minute,
                grace=cfg.round_grace,
            )
            tasks.append(asyncio.create_task(diagnoser.run(stop), name="diagnostics"))
    yield
    stop.set()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close_realtime(app: web.Application) -> None:
    """Long-lived WebSocket/SSE handlers end here, before the server waits for handlers:
    SSE streams end with their hub clients, and each open WebSocket is closed with 1001
    (going away), since its handler waits for the client's next message, which a browser
    left open on a page never sends (the shutdown then waited out its whole timeout)."""
    if keys.HUB in app:
        hub = app[keys.HUB]
        hub.close_all()
        sockets = list(hub.sockets)
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"controller stopping") for ws in sockets),
            return_exceptions=True,
        )


async def _connect(
    cfg: ControllerConfig,
    disconnected: Callable[[], Awaitable[None]],
    reconnected: Callable[[], Awaitable[None]],
) -> NATS:
    """The controller's NATS connection: retried while NATS is unreachable (and reconnected
    forever after), but NatsRefusedError at once when NATS refuses it as configured (a wrong
    or revoked credential, an untrusted certificate), which no retry can fix. Each distinct
    error is logged once, not at every attempt."""
    refused: list[str] = []
    last = [""]
    connecting: asyncio.Task[NATS] | None = None

    async def error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if connecting is not None and not connecting.done() and natscreds.refused_at_connect(exc):
            refused.append(text)
            connecting.cancel()
        elif text != last[0]:
            last[0] = text
            log.warning("nats error=%s", text)

    async def back(_: object = None) -> None:
        last[0] = ""
        await reconnected()

    connecting = asyncio.create_task(
        nats.connect(
            cfg.nats_url,
            name=f"controller-{cfg.controller_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=error,
            disconnected_cb=disconnected,
            reconnected_cb=back,
            **_connect_options(cfg),
        )
    )
    try:
        return await connecting
    except asyncio.CancelledError:
        if refused:
            raise natscreds.NatsRefusedError(
                f"NATS at {redact_url(cfg.nats_url)} refused the controller: {refused[-1]} (check "
                "nats_credentials / fleet_trust_dir and nats_tls_ca)"
            ) from None
        raise


def _connect_options(cfg: ControllerConfig) -> dict[str, Any]:
    cert, key = cfg.nats_tls_cert_files()
    return natscreds.connect_options(
        _path(cfg.nats_credentials_file()),
        _path(cfg.nats_tls_ca_file()),
        url=cfg.nats_url,
        cert_file=_path(cert),
        key_file=_path(key),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def load_trust(cfg: ControllerConfig) -> FleetTrust | None:
    """The fleet's trust when `fleet_trust_dir` is set (TrustError when it cannot be used)."""
    if not cfg.fleet_trust_dir:
        return None
    # Imported only here: cryptography and nkeys are about 9 MiB of a controller that most
    # installations (no fleet trust) would carry for nothing.
    from probefleet.controller.cluster.trust import FleetTrust

    return FleetTrust.load(
        Path(cfg.fleet_trust_dir),
        nats_urls=cfg.fleet_nats_urls or [cfg.nats_url],
        connect_url=cfg.nats_url,
        tls_ca=_path(cfg.nats_tls_ca_file()),
        tls_cert=_path(cfg.nats_tls_cert_files()[0]),
        tls_key=_path(cfg.nats_tls_cert_files()[1]),
    )


def build_app(cfg: ControllerConfig) -> web.Application:
    app = web.Application(
        middlewares=[
            metrics_middleware,
            ratelimit.ratelimit_middleware,
            audit.audit_middleware,
            error_middleware,
            health.database_middleware,
        ],
        client_max_size=2 << 20,
    )
    app[keys.CONFIG] = cfg
    app[keys.TRUST] = load_trust(cfg)
    ratelimit.setup(app)
    auth.setup(app)
    accounts.setup(app)
    templating.setup(app)
    fleet_api.setup(app)
    request_ids.setup(app)
    app.on_response_prepare.append(public_pages.harden_unmatched)
    app.cleanup_ctx.extend(
        [
            database_ctx,
            nats_ctx,
            regions_api.regions_ctx,
            fleet_api.revocations_ctx,
            auth.keycache_ctx,
            notifications_ctx,
            workers_ctx,
            heartbeats_ctx,
            realtime_ctx,
            state_metrics.state_metrics_ctx,
        ]
    )
    app.on_shutdown.append(_close_realtime)
    app.add_routes(routes.routes())
    return app
