"""controller/api/auth.py: `authenticate` (known, unrevoked, unexpired keys only; the
per-controller cache trusted only while NATS is connected), `announce_revoked` (refused on
every live controller once it returns) and the revocation listener, on real controllers,
PostgreSQL and NATS. Where the key is read from a request and scope checks are
api/common.py's (tests/controller/api/test_common.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from probefleet.controller import keys
from probefleet.controller.api import auth
from probefleet.controller.api.keycache import KeyCache
from probefleet.controller.storage import api_keys
from probefleet.shared import subjects
from tests.controller.conftest import Running, start_controller

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


async def new_key(controller: Running, **fields: Any) -> tuple[str, dict[str, Any]]:
    return await api_keys.create(controller.app[keys.POOL], "k", ["monitors:read"], **fields)


def cached(app: web.Application, key: str) -> dict[str, Any] | None:
    return app[keys.KEYCACHE].get(api_keys.digest(key))


@pytest.fixture
async def other(controller: Running, database: str, nats_url: str) -> AsyncIterator[Running]:
    """A second controller on the same database and NATS."""
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


@pytest.mark.parametrize(
    "key",
    ["", "pf_short", "sk_" + "a" * 40, "Bearer pf_" + "a" * 40],
    ids=["empty", "too-short", "other-prefix", "header-not-key"],
)
async def test_it_refuses_what_is_not_a_key(controller: Running, key: str) -> None:
    assert await auth.authenticate(controller.app, key, NOW) is None


async def test_it_returns_the_row_of_a_known_key_and_records_its_use(controller: Running) -> None:
    key, created = await new_key(controller)
    row = await auth.authenticate(controller.app, key, NOW)
    assert row is not None and row["id"] == created["id"] and list(row["scopes"]) == ["monitors:read"]
    used = await controller.app[keys.POOL].fetchval(
        "SELECT last_used_at FROM api_keys WHERE id=$1", created["id"]
    )
    assert used == NOW


async def test_it_refuses_an_unknown_key_with_a_known_prefix(controller: Running) -> None:
    key, _ = await new_key(controller)
    assert await auth.authenticate(controller.app, key[:-4] + "AAAA", NOW) is None


async def test_it_refuses_a_revoked_key(controller: Running) -> None:
    key, created = await new_key(controller)
    await api_keys.revoke(controller.app[keys.POOL], created["id"])
    assert await auth.authenticate(controller.app, key, NOW) is None
    assert cached(controller.app, key) is None


async def test_it_refuses_an_expired_key_also_from_the_cache(controller: Running) -> None:
    expires = NOW + dt.timedelta(hours=1)
    key, _ = await new_key(controller, expires_at=expires)
    assert await auth.authenticate(controller.app, key, NOW) is not None
    assert cached(controller.app, key) is not None
    assert await auth.authenticate(controller.app, key, expires) is None
    assert await auth.authenticate(controller.app, key, expires - dt.timedelta(seconds=1)) is not None


def app_with(controller: Running, cache: KeyCache, nc: NATS | None) -> web.Application:
    """An app with the controller's pool, `cache` and `nc` (none when None)."""
    app = web.Application()
    app[keys.POOL], app[keys.KEYCACHE] = controller.app[keys.POOL], cache
    if nc is not None:
        app[keys.NC] = nc
    return app


async def test_it_trusts_its_cache_only_while_nats_is_connected(controller: Running) -> None:
    """A revoke that could not be announced is missed by a cache until its ttl; without
    NATS no revoke can arrive, so the database answers."""
    key, created = await new_key(controller)
    cache = KeyCache(ttl=3600)
    connected = app_with(controller, cache, controller.app[keys.NC])
    assert await auth.authenticate(connected, key, NOW) is not None
    await api_keys.revoke(controller.app[keys.POOL], created["id"])  # not announced
    assert await auth.authenticate(connected, key, NOW) is not None  # the cache answers
    closed = await nats.connect(controller.app[keys.CONFIG].nats_url)
    await closed.close()
    assert await auth.authenticate(app_with(controller, cache, closed), key, NOW) is None
    assert await auth.authenticate(app_with(controller, cache, None), key, NOW) is None


async def test_it_announces_a_revoke_so_every_controller_refuses_the_key_when_it_returns(
    controller: Running, other: Running
) -> None:
    key, created = await new_key(controller)
    for running in (controller, other):
        assert await auth.authenticate(running.app, key, NOW) is not None
        assert cached(running.app, key) is not None
    prefix = await api_keys.revoke(controller.app[keys.POOL], created["id"])
    assert prefix is not None
    await auth.announce_revoked(controller.app, prefix)
    for running in (controller, other):
        assert cached(running.app, key) is None
        assert await auth.authenticate(running.app, key, NOW) is None


async def test_it_forgets_a_key_announced_by_anyone_and_confirms(controller: Running) -> None:
    key, _ = await new_key(controller)
    assert await auth.authenticate(controller.app, key, NOW) is not None
    nc = await nats.connect(controller.app[keys.CONFIG].nats_url)
    try:
        reply = await nc.request(subjects.api_key_revoked(), key[:12].encode(), timeout=5)
    finally:
        await nc.close()
    assert reply.data == b"ok"
    assert cached(controller.app, key) is None


async def test_it_waits_for_a_slow_controller_to_confirm_a_revoke(controller: Running) -> None:
    """A third live controller that takes 0.3 s to drop the key: the announce returns
    only after it confirmed."""
    await controller.app[keys.POOL].execute(
        "INSERT INTO controllers (id, heartbeat_at, lease_until)"
        " VALUES ('slow', now(), now() + interval '1 hour')"
    )
    dropped: list[str] = []
    nc = await nats.connect(controller.app[keys.CONFIG].nats_url)

    async def slow(msg: Msg) -> None:
        await asyncio.sleep(0.3)
        dropped.append(msg.data.decode())
        await msg.respond(b"ok")

    try:
        await nc.subscribe(subjects.api_key_revoked(), cb=slow)
        await nc.flush()
        await auth.announce_revoked(controller.app, "pf_slowkey12")
        assert dropped == ["pf_slowkey12"]
    finally:
        await nc.close()


async def test_it_drops_a_revoked_key_here_even_when_nats_is_down(controller: Running) -> None:
    key, _ = await new_key(controller)
    cache = KeyCache(ttl=3600)
    assert await auth.authenticate(app_with(controller, cache, controller.app[keys.NC]), key, NOW) is not None
    closed = await nats.connect(controller.app[keys.CONFIG].nats_url)
    await closed.close()
    await auth.announce_revoked(app_with(controller, cache, closed), key[:12])
    assert cache.get(api_keys.digest(key)) is None
