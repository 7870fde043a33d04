"""controller/cluster/broadcast.py `announce`: True only once every live controller (a
lease in `controllers`) answered, False within `wait` when one stays silent or NATS is
down; real controllers, PostgreSQL and NATS. The controllers' revocation listener
(api/auth.py) is the listener: it forgets the key, then answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import nats
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.cluster import broadcast
from probefleet.shared import subjects
from tests.controller.conftest import Running, start_controller
from tests.helpers import eventually


async def live(controller: Running) -> int:
    n: int = await controller.app[keys.POOL].fetchval(
        "SELECT count(*) FROM controllers WHERE lease_until > now()"
    )
    return n


@pytest.fixture
async def other(controller: Running, database: str, nats_url: str) -> AsyncIterator[Running]:
    """A second live controller on the same database and NATS."""
    running = await start_controller(database, nats_url)

    async def both() -> bool:
        return await live(controller) == 2

    await eventually(both, what="two live leases")
    yield running
    await running.stop()


async def test_it_returns_true_once_every_live_controller_acted(controller: Running, other: Running) -> None:
    assert await live(controller) == 2
    before = [c.app[keys.KEYCACHE].generation for c in (controller, other)]
    confirmed = await broadcast.announce(
        controller.app, subjects.api_key_revoked(), b"pf_gone", wait=5.0, what="test revoke"
    )
    assert confirmed is True
    # Each listener forgets (bumping its cache generation) before it answers.
    assert [c.app[keys.KEYCACHE].generation for c in (controller, other)] == [g + 1 for g in before]


async def test_it_returns_false_by_the_deadline_when_a_live_controller_stays_silent(
    controller: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await controller.app[keys.POOL].execute(
        "INSERT INTO controllers (id, heartbeat_at, lease_until)"
        " VALUES ('silent', now(), now() + interval '1 hour')"
    )
    assert await live(controller) == 2
    started = time.monotonic()
    confirmed = await broadcast.announce(
        controller.app, subjects.api_key_revoked(), b"pf_gone", wait=0.5, what="test revoke"
    )
    elapsed = time.monotonic() - started
    assert confirmed is False
    assert 0.5 <= elapsed < 3.0
    assert "test revoke not confirmed by every controller live=2" in caplog.text


async def test_it_waits_for_answers_not_for_the_deadline(controller: Running) -> None:
    started = time.monotonic()
    assert await broadcast.announce(
        controller.app, subjects.api_key_revoked(), b"pf_gone", wait=30.0, what="t"
    )
    assert time.monotonic() - started < 10.0


async def test_it_returns_false_at_once_when_nats_is_down(
    controller: Running, caplog: pytest.LogCaptureFixture
) -> None:
    closed = await nats.connect(controller.app[keys.CONFIG].nats_url)
    await closed.close()
    app = web.Application()
    app[keys.NC], app[keys.POOL] = closed, controller.app[keys.POOL]
    started = time.monotonic()
    assert (
        await broadcast.announce(app, subjects.api_key_revoked(), b"pf_gone", wait=30.0, what="test revoke")
        is False
    )
    assert time.monotonic() - started < 10.0
    assert "test revoke not confirmed: NATS disconnected" in caplog.text
