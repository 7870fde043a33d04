"""/api/v1/health and the API under a stalled PostgreSQL: the test's own server frozen with
SIGSTOP (postmaster and backends), so connections stay open and nothing answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api import health
from probefleet.controller.api.errors import error_middleware
from probefleet.controller.config import ControllerConfig
from probefleet.controller.storage import db
from probefleet.shared.devstack import PostgresServer, create_database
from tests.controller.conftest import Running, start_controller
from tests.helpers import eventually

# Generous bounds for "answers in time": failures, never speed measures. Health answers from
# memory; a ping waits heartbeat_ping_timeout (1 s here) for its commit; other requests wait
# database_timeout (1 s here) for all their database work together.
HEALTH_BOUND = 0.5
PING_BOUND = 3.0
REQUEST_BOUND = 5.0


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, so freezing it stalls no other test."""
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def stallable(own_postgres: PostgresServer, nats_url: str) -> AsyncIterator[Running]:
    await create_database(own_postgres.dsn(), "t", drop=True)
    running = await start_controller(
        own_postgres.dsn("t"), nats_url, database_timeout=1.0, heartbeat_ping_timeout=1.0
    )
    yield running
    own_postgres.thaw()
    await running.stop()


async def _timed(session: aiohttp.ClientSession, method: str, path: str) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    async with session.request(method, path) as r:
        await r.read()
        return r.status, dict(r.headers), time.monotonic() - started


async def test_health_says_ok_when_the_database_and_nats_answer(stallable: Running) -> None:
    async with aiohttp.ClientSession(base_url=stallable.base) as anon:
        r = await anon.get("/api/v1/health")
        assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_a_stalled_database_gets_fast_503s_and_the_api_recovers(
    stallable: Running, own_postgres: PostgresServer
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {stallable.admin_key}"}
    async with (
        aiohttp.ClientSession(base_url=stallable.base, timeout=timeout) as anon,
        aiohttp.ClientSession(base_url=stallable.base, timeout=timeout, headers=headers) as api,
    ):
        job = {"name": "job", "run_interval": 3600, "grace_period": 60}
        r = await api.post("/api/v1/heartbeats", json=job)
        assert r.status == 201, await r.text()
        ping = f"/api/v1/heartbeat/{(await r.json())['data']['token']}"
        assert (await _timed(anon, "POST", ping))[0] == 200

        own_postgres.freeze()
        try:

            async def health_degraded() -> bool:
                status, _, took = await _timed(anon, "GET", "/api/v1/health")
                assert took < HEALTH_BOUND, f"/health took {took:.2f} s"
                return status == 503

            await eventually(health_degraded, timeout=10, what="/health 503 while the database is frozen")

            status, headers_, took = await _timed(anon, "POST", ping)
            assert (status, headers_.get("Retry-After")) == (503, "1"), status
            assert took < PING_BOUND, f"the ping took {took:.2f} s"

            status, headers_, took = await _timed(api, "GET", "/api/v1/monitors")
            assert (status, headers_.get("Retry-After")) == (503, "1"), status
            assert took < REQUEST_BOUND, f"GET /monitors took {took:.2f} s"
            status, _, took = await _timed(anon, "GET", "/api/v1/health")
            assert status == 503 and took < HEALTH_BOUND
        finally:
            own_postgres.thaw()

        async def health_ok() -> bool:
            return (await _timed(anon, "GET", "/api/v1/health"))[0] == 200

        await eventually(health_ok, timeout=20, what="/health 200 after the database returned")

        async def ping_ok() -> bool:
            return (await _timed(anon, "POST", ping))[0] == 200

        await eventually(ping_ok, timeout=20, what="a stored ping after the database returned")
        r = await api.get("/api/v1/monitors")
        assert r.status == 200


async def test_a_database_that_is_gone_gets_503s_not_500s(
    stallable: Running, own_postgres: PostgresServer
) -> None:
    headers = {"Authorization": f"Bearer {stallable.admin_key}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=stallable.base, timeout=timeout, headers=headers) as api:
        assert (await _timed(api, "GET", "/api/v1/monitors"))[0] == 200
        own_postgres.stop()  # a fast shutdown: open connections are closed, new ones refused

        async def health_degraded() -> bool:
            return (await _timed(api, "GET", "/api/v1/health"))[0] == 503

        await eventually(health_degraded, timeout=10, what="/health 503 without a database")
        for path in ("/api/v1/monitors", "/api/v1/heartbeats", "/api/v1/events"):
            status, headers_, took = await _timed(api, "GET", path)
            assert (status, headers_.get("Retry-After")) == (503, "1"), (path, status)
            assert took < REQUEST_BOUND, f"{path} took {took:.2f} s"


async def test_the_database_timeout_bounds_a_requests_database_work_as_a_whole(
    own_postgres: PostgresServer,
) -> None:
    """A handler with two statements, each on a connection of its own, against a frozen
    server: 503 within database_timeout (plus slack for a loaded machine), not one
    timeout per acquire and statement (2 s and more before)."""
    seconds, slack = 1.0, 0.6
    pool = await db.create_pool(own_postgres.dsn(), max_size=2)

    async def two_statements(request: web.Request) -> web.Response:
        first = await pool.fetchval("SELECT 1")
        second = await pool.fetchval("SELECT 2")
        return web.json_response({"sum": first + second})

    app = web.Application(middlewares=[error_middleware, health.database_middleware])
    app[keys.CONFIG] = ControllerConfig(database_timeout=seconds)
    app.router.add_get("/two", two_statements)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=30)) as client:
            status, _, _ = await _timed(client, "GET", "/two")
            assert status == 200
            own_postgres.freeze()
            try:
                status, headers_, took = await _timed(client, "GET", "/two")
                assert (status, headers_.get("Retry-After")) == (503, "1"), status
                assert took < seconds + slack, f"two statements took {took:.2f} s"
            finally:
                own_postgres.thaw()

            async def answers() -> bool:
                return (await _timed(client, "GET", "/two"))[0] == 200

            await eventually(answers, timeout=20, what="the handler answering after the thaw")
    finally:
        own_postgres.thaw()
        await runner.cleanup()
        await pool.close()
