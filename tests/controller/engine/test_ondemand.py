"""controller/engine/ondemand.py `run`: one job per region with a live probe, the real
probes' results and their verdict back, unavailable and silent regions reported, a bound
on the wait, results of other runs ignored, and no round opened. Real controller, NATS,
PostgreSQL, probes and HTTP targets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.engine import consensus, ondemand
from probefleet.probe.agent import Agent
from probefleet.shared import wire
from tests.controller.conftest import Running
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

ANY = consensus.Rule(mode="any")


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture
async def probes(controller: Running, nats_url: str) -> AsyncIterator[list[Agent]]:
    """Probes in us-east and eu-west (none in ap-south), live in the controller's fleet."""
    agents = await start_probes(nats_url, ["us-east", "eu-west"])
    fleet = controller.app[keys.FLEET]
    await eventually(lambda: len(fleet.live_regions()) == 2, what="both probes live")
    yield agents
    await stop_probes(agents)


async def new_monitor(
    api: aiohttp.ClientSession, url: str, locations: list[str], *, enabled: bool = True
) -> int:
    """A monitor whose scheduled checks (hourly, or none when not enabled) stay out of the way."""
    body = {"name": "m", "url": url, "locations": locations, "check_interval": 3600, "is_enabled": enabled}
    r = await api.post("/api/v1/monitors", json=body)
    assert r.status == 201, await r.text()
    monitor_id: int = (await r.json())["data"]["id"]
    return monitor_id


async def run(
    controller: Running,
    monitor_id: int,
    url: str,
    locations: list[str],
    *,
    fleet: Fleet | None = None,
    check_timeout: float = 5.0,
    grace: float = 1.0,
) -> dict[str, Any]:
    return await ondemand.run(
        controller.app[keys.NC],
        fleet or controller.app[keys.FLEET],
        monitor_id=monitor_id,
        spec=wire.HttpSpec(url=url),
        check_timeout=check_timeout,
        locations=locations,
        rule=ANY,
        grace=grace,
    )


async def test_it_returns_every_regions_result_and_their_verdict(
    controller: Running, api: aiohttp.ClientSession, probes: list[Agent], target: RegionalTarget
) -> None:
    target.fail_regions("eu-west")
    locations = ["us-east", "eu-west", "ap-south"]
    monitor_id = await new_monitor(api, target.url, locations, enabled=False)
    out = await run(controller, monitor_id, target.url, locations)
    by = {r["region"]: r for r in out["regions"]}
    assert [r["region"] for r in out["regions"]] == locations
    assert (by["us-east"]["status"], by["us-east"]["status_code"], by["us-east"]["is_ok"]) == (
        "ok",
        200,
        True,
    )
    assert by["us-east"]["probe_id"] == "test-us-east" and by["us-east"]["checked_at"].endswith("Z")
    assert (by["eu-west"]["status"], by["eu-west"]["status_code"], by["eu-west"]["is_ok"]) == (
        "fail",
        503,
        False,
    )
    assert by["ap-south"] == {
        "region": "ap-south",
        "status": "unavailable",
        "is_ok": None,
        "reason": None,
        "error": "no live probe in this region",
        "response_time": None,
        "status_code": None,
        "probe_id": None,
        "checked_at": None,
    }
    assert (out["status"], out["is_ok"], out["attempt"]) == ("down", False, ondemand.ON_DEMAND_ATTEMPT)
    assert sum(target.hits.values()) == 2  # one job per region with a live probe


async def test_it_stores_the_results_but_opens_no_round_and_leaves_the_monitor_alone(
    controller: Running, api: aiohttp.ClientSession, probes: list[Agent], target: RegionalTarget
) -> None:
    target.fail_all()
    monitor_id = await new_monitor(api, target.url, ["us-east", "eu-west"])
    out = await run(controller, monitor_id, target.url, ["us-east", "eu-west"])
    assert out["status"] == "down"
    pool = controller.app[keys.POOL]

    async def stored() -> int | None:
        n: int = await pool.fetchval(
            "SELECT count(*) FROM check_results WHERE monitor_id = $1 AND attempt = $2",
            monitor_id,
            ondemand.ON_DEMAND_ATTEMPT,
        )
        # Both regions' (the results consumer may store them in two batches).
        return n if n >= 2 else None

    assert await eventually(stored, what="the run's results stored") == 2
    rounds = await pool.fetchval(
        "SELECT count(*) FROM rounds WHERE monitor_id = $1 AND attempt = $2",
        monitor_id,
        ondemand.ON_DEMAND_ATTEMPT,
    )
    assert rounds == 0
    r = await api.get(f"/api/v1/monitors/{monitor_id}")
    assert (await r.json())["data"]["status"] == "pending"


async def test_it_reports_a_live_region_that_never_answers_and_gives_up_by_the_deadline(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """A probe that sent heartbeats but takes no job: its region ends as no_answer once
    check_timeout + grace has passed."""
    fleet = Fleet(interval=60)
    now = time.time()
    fleet.observe(
        wire.ProbeHeartbeat(
            probe_id="gone",
            region="ap-south",
            version="x",
            concurrency=1,
            in_flight=0,
            started_at=now,
            sent_at=now,
        )
    )
    monitor_id = await new_monitor(api, "http://127.0.0.1:9/", ["ap-south"])
    started = time.monotonic()
    out = await run(
        controller, monitor_id, "http://127.0.0.1:9/", ["ap-south"], fleet=fleet, check_timeout=0.5
    )
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4.0
    [region] = out["regions"]
    assert (region["status"], region["error"]) == ("no_answer", "no result before the deadline")
    assert (out["status"], out["is_ok"], out["error"]) == ("unknown", False, "no region answered")


async def test_it_returns_at_once_when_no_region_has_a_live_probe(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    monitor_id = await new_monitor(api, "http://127.0.0.1:9/", ["us-east", "eu-west"])
    started = time.monotonic()
    out = await run(controller, monitor_id, "http://127.0.0.1:9/", ["us-east", "eu-west"], check_timeout=30)
    assert time.monotonic() - started < 5.0
    assert [r["status"] for r in out["regions"]] == ["unavailable", "unavailable"]
    assert out["status"] == "unknown"


@pytest.fixture
async def slow_ok() -> AsyncIterator[str]:
    """An HTTP target that answers 200 after half a second."""

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


async def test_it_takes_only_its_own_results(
    controller: Running, api: aiohttp.ClientSession, probes: list[Agent], slow_ok: str
) -> None:
    """Two runs at once in the same regions: the failing one's results come back first on
    the same subjects, and must not end the slow one's wait or count as its results."""
    refused = "http://127.0.0.1:9/"
    slow_id = await new_monitor(api, slow_ok, ["us-east", "eu-west"])
    fast_id = await new_monitor(api, refused, ["us-east", "eu-west"])
    slow, fast = await asyncio.gather(
        run(controller, slow_id, slow_ok, ["us-east", "eu-west"]),
        run(controller, fast_id, refused, ["us-east", "eu-west"]),
    )
    assert [r["status"] for r in slow["regions"]] == ["ok", "ok"] and slow["status"] == "up"
    assert [r["status"] for r in fast["regions"]] == ["fail", "fail"] and fast["status"] == "down"
