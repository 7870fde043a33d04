"""Capabilities end to end: a region whose live probes cannot run a monitor's kind gets no
job; the controller records the region's result as skipped with no_capable_probe, the
round's verdict leaves it out (unknown when no region could run it), and the API warns
when such a monitor is created or changed.

A real controller, real probes (`Agent`) whose checkers lack a kind, a real TCP target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.msg import Msg

from probefleet.controller import keys
from probefleet.probe.agent import Agent
from probefleet.probe.checkers import CHECKERS
from probefleet.probe.config import ProbeConfig
from probefleet.shared import subjects, wire
from tests.controller.conftest import Running, start_controller
from tests.helpers import eventually


@pytest.fixture
async def tcp_target() -> AsyncIterator[int]:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def fleet(database: str, nats_url: str) -> AsyncIterator[tuple[Running, aiohttp.ClientSession]]:
    """A controller; in eu-west a probe that runs http only, in us-east one that runs all."""
    running = await start_controller(database, nats_url)
    agents = [
        Agent(_config(nats_url, "eu-west", "p-http-only"), checkers={"http": CHECKERS["http"]}),
        Agent(_config(nats_url, "us-east", "p-all")),
    ]
    for a in agents:
        await a.start()
    headers = {"Authorization": f"Bearer {running.admin_key}"}
    async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
        fleet = running.app[keys.FLEET]
        await eventually(
            lambda: {"eu-west", "us-east"} <= set(fleet.runnable()), timeout=10, what="both probes heard"
        )
        # The scheduler judges capabilities once it has heard a full heartbeat window.
        started = running.app[keys.SCHEDULER].started
        await eventually(
            lambda: time.time() - started >= fleet.window, timeout=10, what="the start window over"
        )
        try:
            yield running, api
        finally:
            for a in agents:
                await a.stop()
            await running.stop()


def _config(nats_url: str, region: str, probe_id: str) -> ProbeConfig:
    return ProbeConfig(region=region, nats_url=nats_url, probe_id=probe_id, heartbeat_interval=0.1)


async def _verdict(running: Running, monitor_id: int) -> str:
    async def decided() -> str:
        verdict = await running.app[keys.POOL].fetchval(
            "SELECT verdict FROM rounds WHERE monitor_id = $1 AND verdict IS NOT NULL ORDER BY due LIMIT 1",
            monitor_id,
        )
        return str(verdict or "")

    return await eventually(decided, timeout=15, what=f"a verdict for monitor {monitor_id}")


async def _results(running: Running, monitor_id: int) -> dict[str, dict[str, Any]]:
    rows = await running.app[keys.POOL].fetch(
        "SELECT DISTINCT ON (region) region, probe_id, status, reason, message FROM check_results"
        " WHERE monitor_id = $1 ORDER BY region, due",
        monitor_id,
    )
    return {r["region"]: dict(r) for r in rows}


async def test_a_region_whose_probes_cannot_run_the_kind_is_skipped_not_sent_the_job(
    fleet: tuple[Running, aiohttp.ClientSession], tcp_target: int
) -> None:
    running, api = fleet
    body = {"type": "tcp", "host": "127.0.0.1", "port": tcp_target, "check_interval": 1, "consensus": "all"}
    r = await api.post("/api/v1/monitors", json={**body, "name": "both", "locations": ["eu-west", "us-east"]})
    assert r.status == 201
    created = await r.json()
    assert created["meta"]["warnings"] == [
        "no live probe in region eu-west can run tcp checks: skipped there (no_capable_probe)"
    ]
    both = created["data"]["id"]
    r = await api.post("/api/v1/monitors", json={**body, "name": "eu only", "locations": ["eu-west"]})
    eu_only = (await r.json())["data"]["id"]
    # An HTTP monitor in the same region warns of nothing.
    r = await api.post(
        "/api/v1/monitors",
        json={"name": "web", "url": f"http://127.0.0.1:{tcp_target}/", "locations": ["eu-west"]},
    )
    assert r.status == 201 and "warnings" not in (await r.json())["meta"]

    # us-east's probe ran it; eu-west answered by the controller; the verdict is us-east's.
    assert await _verdict(running, both) == "up"
    results = await eventually(
        lambda: _results_of(running, both, 2), timeout=10, what="both regions' results stored"
    )
    assert results["us-east"]["probe_id"] == "p-all" and results["us-east"]["status"] == "ok"
    assert {k: results["eu-west"][k] for k in ("probe_id", "status", "reason")} == {
        "probe_id": "controller",
        "status": "skipped",
        "reason": "no_capable_probe",
    }
    # No region could run it: unknown, never down.
    assert await _verdict(running, eu_only) == "unknown"
    monitor = (await (await api.get(f"/api/v1/monitors/{eu_only}")).json())["data"]
    assert monitor["status"] in ("pending", "unknown")

    # Checked now: no job sent to eu-west, its answer says why at once.
    r = await api.post(f"/api/v1/monitors/{eu_only}/check")
    checked = (await r.json())["data"]
    assert (checked["status"], checked["reason"]) == ("unknown", "no_capable_probe")
    assert [(x["region"], x["status"], x["reason"]) for x in checked["regions"]] == [
        ("eu-west", "skipped", "no_capable_probe")
    ]

    # Changing the monitor says so again; moving it to us-east only does not.
    r = await api.patch(f"/api/v1/monitors/{eu_only}", json={"check_interval": 2})
    assert (await r.json())["meta"]["warnings"][0].startswith("no live probe in region eu-west")
    r = await api.patch(f"/api/v1/monitors/{eu_only}", json={"locations": ["us-east"]})
    assert r.status == 200 and "warnings" not in (await r.json())["meta"]


async def _results_of(running: Running, monitor_id: int, regions: int) -> dict[str, dict[str, Any]] | None:
    results = await _results(running, monitor_id)
    return results if len(results) >= regions else None


async def test_a_probe_handed_a_kind_it_cannot_run_skips_it(
    fleet: tuple[Running, aiohttp.ClientSession], tcp_target: int
) -> None:
    """In a region whose probes differ, the queue group can hand a job to the one that
    lacks the kind: its answer is skipped, not a failure of the target."""
    running, _ = fleet
    nc = running.app[keys.NC]
    got: list[wire.CheckResult] = []

    async def on_result(msg: Msg) -> None:
        got.append(wire.decode_result(msg.data))

    sub = await nc.subscribe(subjects.results("eu-west"), cb=on_result)
    now = time.time()
    job = wire.CheckJob(
        monitor_id=999_999,
        due=now,
        deadline=now + 5,
        region="eu-west",
        timeout=2,
        spec=wire.TcpSpec(host="127.0.0.1", port=tcp_target),
    )
    try:
        await nc.publish(subjects.jobs("eu-west"), wire.encode(job))
        await eventually(lambda: got, timeout=10, what="the probe's answer")
    finally:
        await sub.unsubscribe()
    (result,) = got
    assert (result.probe_id, result.status, result.reason) == (
        "p-http-only",
        wire.Status.SKIPPED,
        wire.Reason.NO_CAPABLE_PROBE,
    )
