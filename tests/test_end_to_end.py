"""The whole path: API -> scheduler -> NATS -> probes in three regions -> JetStream ->
results consumer -> PostgreSQL -> consensus -> monitor status, all real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from probefleet.controller import keys
from tests.controller.conftest import Running, start_controller
from tests.fleet import REGION_ADDRESSES, RegionalTarget, start_probes, stop_probes


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


async def wait_for(pred: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_it_checks_from_three_regions_and_follows_the_target(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    ctl = await start_controller(database, nats_url)
    probes = await start_probes(nats_url)
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    try:
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            r = await api.post(
                "/api/v1/monitors", json={"name": "t", "url": target.url, "check_interval": 1, "timeout": 2}
            )
            assert r.status == 201
            mid = (await r.json())["data"]["id"]

            async def status() -> str:
                return str((await (await api.get(f"/api/v1/monitors/{mid}")).json())["data"]["status"])

            await wait_for(lambda: _is(status, "up"))
            regions = await ctl.app[keys.POOL].fetch(
                "SELECT DISTINCT region FROM check_results WHERE monitor_id = $1", mid
            )
            assert {r["region"] for r in regions} == set(REGION_ADDRESSES)
            assert set(target.hits) == set(REGION_ADDRESSES.values())

            target.fail_all()
            await wait_for(lambda: _is(status, "down"))
            body = (await (await api.get(f"/api/v1/monitors/{mid}")).json())["data"]
            assert body["is_ok"] is False and body["last_failure"] is not None

            target.recover()
            await wait_for(lambda: _is(status, "up"))
    finally:
        await stop_probes(probes)
        await ctl.stop()


async def _is(get: Callable[[], Awaitable[str]], want: str) -> bool:
    return await get() == want


async def test_it_loses_and_duplicates_no_result_across_a_controller_restart(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    ctl: Running = await start_controller(database, nats_url)
    probes = await start_probes(nats_url)
    pool = ctl.app[keys.POOL]
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
        ids = []
        for i in range(20):
            r = await api.post(
                "/api/v1/monitors",
                json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 2},
            )
            ids.append((await r.json())["data"]["id"])
    await asyncio.sleep(2.5)
    await ctl.stop()  # results keep streaming into JetStream while no controller runs
    await asyncio.sleep(1.0)
    await stop_probes(probes)
    hits_published = sum(target.hits.values())
    ctl = await start_controller(database, nats_url)
    pool = ctl.app[keys.POOL]
    try:

        async def stored() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM check_results")
            return bool(n >= hits_published)

        # Rounds the stopped controller opened still get their results after restart.
        await wait_for(stored)
        total, distinct = await pool.fetchrow(
            "SELECT count(*), count(DISTINCT (monitor_id, due, region, attempt)) FROM check_results"
        )
        assert total == distinct == hits_published
    finally:
        await ctl.stop()
