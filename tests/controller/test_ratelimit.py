"""Per-key token buckets: headers on every authenticated response, 429 with Retry-After."""

from __future__ import annotations

import aiohttp
import pytest

from controller.ratelimit import RateLimiter
from tests.controller.conftest import Running, start_controller


def test_the_bucket_refills_continuously() -> None:
    lim = RateLimiter(limit=2, window=10.0)
    assert lim.take(1, now=100.0).remaining == 1
    assert lim.take(1, now=100.0).allowed
    denied = lim.take(1, now=100.0)
    assert not denied.allowed and denied.retry_after == 5 and denied.headers()["Retry-After"] == "5"
    assert lim.take(2, now=100.0).allowed  # another key has its own bucket
    assert lim.take(1, now=105.0).allowed
    assert lim.take(1, now=200.0, limit=5).remaining == 4  # a key's own limit


def test_it_forgets_full_buckets_when_full_of_keys() -> None:
    lim = RateLimiter(limit=1, window=1.0, max_keys=2)
    lim.take(1, now=0.0)
    lim.take(2, now=0.0)
    lim.take(3, now=10.0)
    assert set(lim.buckets) == {3}


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
    from controller import keys
    from controller.storage import api_keys

    other, _ = await api_keys.create(limited.app[keys.POOL], "other", ["monitors:read"], rate_limit=10)
    async with aiohttp.ClientSession(base_url=limited.base, headers={"X-API-Key": other}) as api:
        r = await api.get("/api/v1/monitors/424242")
        assert r.status == 404 and r.headers["X-RateLimit-Limit"] == "10"
    async with aiohttp.ClientSession(base_url=limited.base) as anon:
        r = await anon.get("/api/v1/health")
        assert r.status == 200 and "X-RateLimit-Limit" not in r.headers
