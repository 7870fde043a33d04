"""The per-controller API key cache: a revoke on one controller is refused at once by
another, expiry and last-use recording still hold for cached keys."""

from __future__ import annotations

import datetime as dt

import aiohttp

from probefleet.controller import keys
from probefleet.controller.storage import api_keys
from tests.controller.conftest import Running, start_controller


async def new_key(api: aiohttp.ClientSession, name: str) -> dict[str, object]:
    r = await api.post("/api/v1/api-keys", json={"name": name, "scopes": ["monitors:read"]})
    assert r.status == 201
    data: dict[str, object] = (await r.json())["data"]
    return data


async def status(base: str, key: object) -> int:
    async with aiohttp.ClientSession(base_url=base, headers={"X-API-Key": str(key)}) as s:
        return (await s.get("/api/v1/monitors")).status


async def test_a_key_revoked_on_one_controller_is_refused_at_once_by_another(
    controller: Running, api: aiohttp.ClientSession, database: str, nats_url: str
) -> None:
    other = await start_controller(database, nats_url)
    try:
        created = await new_key(api, "shared")
        assert await status(other.base, created["key"]) == 200
        digest = api_keys.digest(str(created["key"]))
        assert other.app[keys.KEYCACHE].get(digest) is not None  # served from memory next time
        assert await status(other.base, created["key"]) == 200
        assert (await api.delete(f"/api/v1/api-keys/{created['id']}")).status == 204
        assert await status(other.base, created["key"]) == 401
        assert await status(controller.base, created["key"]) == 401
        assert other.app[keys.KEYCACHE].get(digest) is None
    finally:
        await other.stop()


async def test_it_checks_expiry_and_records_use_of_cached_keys(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    created = await new_key(api, "cached")
    assert await status(controller.base, created["key"]) == 200
    cached = controller.app[keys.KEYCACHE].get(api_keys.digest(str(created["key"])))
    assert cached is not None
    pool = controller.app[keys.POOL]
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await pool.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", created["id"], long_ago)
    assert await status(controller.base, created["key"]) == 200
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", created["id"]) == long_ago
    cached["last_used_at"] = long_ago  # as if a minute had passed since the last write
    assert await status(controller.base, created["key"]) == 200
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", created["id"]) > long_ago
    cached["expires_at"] = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert await status(controller.base, created["key"]) == 401
