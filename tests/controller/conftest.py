"""A real controller (aiohttp on port 0) against the test's own NATS and database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP

from probefleet.controller import keys
from probefleet.controller.app import build_app
from probefleet.controller.config import ControllerConfig, Region
from probefleet.controller.storage import api_keys, db

REGIONS = ["us-east", "eu-west", "ap-south"]


@dataclass
class Running:
    app: web.Application
    runner: web.AppRunner
    base: str
    admin_key: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_controller(database: str, nats_url: str, **overrides: object) -> Running:
    # Test receivers listen on 127.0.0.1: notification channels may name loopback unless a
    # test says otherwise.
    overrides = {"notification_channels_allow_private": True, **overrides}
    overrides.setdefault("regions", [Region(id=r) for r in REGIONS])
    cfg = ControllerConfig(
        database_url=database, nats_url=nats_url, probe_heartbeat_interval=0.5, round_grace=1.0, **overrides
    )  # type: ignore[arg-type]
    app = build_app(cfg)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    key, _ = await api_keys.create(app[keys.POOL], "test-admin", ["admin"])
    return Running(app=app, runner=runner, base=f"http://127.0.0.1:{port}", admin_key=key)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's migrated database (the controller's own codecs), closed after."""
    await db.migrate(database)
    p = await db.create_pool(database, max_size=5)
    yield p
    await p.close()


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


@pytest.fixture
async def api(controller: Running) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session with the admin key, rooted at the controller."""
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession(base_url=controller.base, headers=headers) as session:
        yield session


@pytest.fixture
async def smtp() -> AsyncIterator[list[Any]]:
    """An aiosmtpd server on loopback in this loop; the list holds its port, then envelopes."""
    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope)
            return "250 OK"

    server = await asyncio.get_running_loop().create_server(lambda: SMTP(Handler()), "127.0.0.1", 0)
    got.append(server.sockets[0].getsockname()[1])
    yield got
    server.close()
    await server.wait_closed()
