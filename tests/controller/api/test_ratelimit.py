"""Per-key token buckets: headers on every authenticated response, 429 with Retry-After,
one budget per key across controllers, and a 403 spends like any other answer."""

from __future__ import annotations

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.api.ratelimit import LIMITER, RateLimiter
from probefleet.controller.storage import api_keys
from tests.controller.conftest import Running, start_controller
from tests.helpers import eventually


def test_the_bucket_refills_continuously() -> None:
    lim = RateLimiter(limit=2, window=10.0)
    assert lim.take(1, now=100.0).remaining == 1
    assert lim.take(1, now=100.0).allowed
    denied = lim.take(1, now=100.0)
    assert not denied.allowed and denied.retry_after == 5 and denied.headers()["Retry-After"] == "5"
    assert lim.take(2, now=100.0).allowed  # another key has its own bucket
    assert lim.take(1, now=105.0).allowed
    assert lim.take(1, now=200.0, limit=5).remaining == 4  # a key's own limit


def test_each_controller_spends_its_share_of_the_key_budget() -> None:
    """Two live controllers: a request costs two tokens here (the other controller serves as
    many), so the two together allow the limit; the headers count for both."""
    lim = RateLimiter(limit=10, window=60.0, controllers=lambda: 2)
    got = [lim.take(1, now=100.0) for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert [d.remaining for d in got] == [8, 6, 4, 2, 0, 0] and {d.limit for d in got} == {10}
    assert got[-1].retry_after == 12  # two tokens at 10 per 60 s
    assert lim.take(1, now=112.0).allowed
    few = RateLimiter(limit=1, window=60.0, controllers=lambda: 3)
    assert few.take(1, now=0.0).allowed and not few.take(1, now=30.0).allowed
    assert few.take(1, now=60.0).allowed  # a limit below the controllers: one per window each


def test_it_forgets_full_buckets_when_full_of_keys() -> None:
    lim = RateLimiter(limit=1, window=1.0, max_keys=2)
    lim.take(1, now=0.0)
    lim.take(2, now=0.0)
    lim.take(3, now=10.0)
    assert set(lim.buckets) == {3}


def test_it_keeps_a_bucket_below_its_own_limit_when_forgetting() -> None:
    """Full means full at the key's own limit: a key allowed 100 that spent 50 is not
    forgotten (and refilled) because it holds more than the default limit's tokens."""
    lim = RateLimiter(limit=1, window=1000.0, max_keys=2)
    for _ in range(50):
        lim.take(1, now=0.0, limit=100)  # refills 0.1 per s
    lim.take(2, now=0.0, limit=1000)  # refills 1 per s
    lim.take(3, now=50.0)  # key 2 is full again, key 1 holds 55 of 100
    assert set(lim.buckets) == {1, 3}
    assert lim.take(1, now=50.0, limit=100).remaining == 54


@pytest.fixture
async def limited(database: str, nats_url: str) -> Running:
    running = await start_controller(database, nats_url, rate_limit_requests=3, rate_limit_window=60.0)
    yield running  # type: ignore[misc]
    await running.stop()


async def test_it_limits_each_key_and_says_when_to_retry(limited: Running) -> None:
    headers = {"Authorization": f"Bearer {limited.admin_key}"}
    async with aiohttp.ClientSession(base_url=limited.base, headers=headers) as api:
        seen = []
        for _ in range(3):
            r = await api.get("/api/v1/monitors")
            assert r.status == 200
            seen.append(int(r.headers["X-RateLimit-Remaining"]))
            assert r.headers["X-RateLimit-Limit"] == "3" and int(r.headers["X-RateLimit-Reset"]) > 0
        assert seen == [2, 1, 0]
        r = await api.get("/api/v1/monitors/1")
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "rate_limited"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        # A new key has its own budget; error responses carry the headers too.
        r = await api.post("/api/v1/api-keys", json={"name": "other", "scopes": ["admin"]})
        assert r.status == 429
    other, _ = await api_keys.create(limited.app[keys.POOL], "other", ["monitors:read"], rate_limit=10)
    async with aiohttp.ClientSession(base_url=limited.base, headers={"X-API-Key": other}) as api:
        r = await api.get("/api/v1/monitors/424242")
        assert r.status == 404 and r.headers["X-RateLimit-Limit"] == "10"
    async with aiohttp.ClientSession(base_url=limited.base) as anon:
        r = await anon.get("/api/v1/health")
        assert r.status == 200 and "X-RateLimit-Limit" not in r.headers


async def test_a_missing_scope_spends_a_token(limited: Running) -> None:
    """A 403 is an answer like any other: a client looping on one is slowed down too."""
    key, _ = await api_keys.create(limited.app[keys.POOL], "reader", ["monitors:read"], rate_limit=2)
    async with aiohttp.ClientSession(base_url=limited.base, headers={"X-API-Key": key}) as api:
        for left in ("1", "0"):
            r = await api.post("/api/v1/monitors", json={"name": "m", "url": "http://127.0.0.1:9/"})
            assert r.status == 403 and r.headers["X-RateLimit-Remaining"] == left
        r = await api.get("/api/v1/monitors")
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1


async def test_two_controllers_share_one_budget_per_key(database: str, nats_url: str) -> None:
    """Round-robin over two controllers gets the key's limit, not twice it; a client held on
    one controller gets half; once the other leaves, the survivor allows the whole limit."""
    conf = {"controller_heartbeat_interval": 0.3, "rate_limit_window": 3600.0}
    a = await start_controller(database, nats_url, **conf)
    b = await start_controller(database, nats_url, **conf)
    running = [a, b]
    try:
        await eventually(
            lambda: all(c.app[LIMITER].controllers() == 2 for c in running), what="both limiters count two"
        )
        pool = a.app[keys.POOL]
        key, _ = await api_keys.create(pool, "shared", ["monitors:read"], rate_limit=10)
        statuses, remaining = [], []
        async with aiohttp.ClientSession(headers={"X-API-Key": key}) as api:
            for i in range(16):
                r = await api.get(f"{running[i % 2].base}/api/v1/monitors")
                statuses.append(r.status)
                assert r.headers["X-RateLimit-Limit"] == "10"
                remaining.append(int(r.headers["X-RateLimit-Remaining"]))
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert (await r.json())["error"]["code"] == "rate_limited"
        assert statuses == [200] * 10 + [429] * 6
        assert remaining[:10] == [8, 8, 6, 6, 4, 4, 2, 2, 0, 0]

        sticky, _ = await api_keys.create(pool, "sticky", ["monitors:read"], rate_limit=10)
        async with aiohttp.ClientSession(base_url=a.base, headers={"X-API-Key": sticky}) as api:
            assert [(await api.get("/api/v1/monitors")).status for _ in range(6)] == [200] * 5 + [429]

        await b.stop()
        running.remove(b)
        await eventually(lambda: a.app[LIMITER].controllers() == 1, what="a's limiter counts one")
        alone, _ = await api_keys.create(pool, "alone", ["monitors:read"], rate_limit=10)
        async with aiohttp.ClientSession(base_url=a.base, headers={"X-API-Key": alone}) as api:
            assert [(await api.get("/api/v1/monitors")).status for _ in range(11)] == [200] * 10 + [429]
    finally:
        for c in running:
            await c.stop()


async def test_a_websocket_connection_spends_a_token(limited: Running) -> None:
    key, _ = await api_keys.create(limited.app[keys.POOL], "ws", ["monitors:read"], rate_limit=2)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.ws_connect(f"{limited.base}/api/v1/ws?api_key={key}") as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        bearer = {"Authorization": f"Bearer {key}"}
        async with s.ws_connect(f"{limited.base}/api/v1/ws", headers=bearer) as ws:
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "error" and frame["code"] == "rate_limited"
            await ws.receive(timeout=5)
            assert ws.close_code == 4429
