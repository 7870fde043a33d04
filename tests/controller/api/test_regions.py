"""/api/v1/worker-regions and /api/v1/health/details."""

from __future__ import annotations

import time

import aiohttp

from probefleet.controller import keys
from probefleet.controller.storage import api_keys
from probefleet.shared import subjects, wire
from tests.controller.conftest import Running
from tests.helpers import eventually


async def heartbeat(controller: Running, region: str, probe_id: str) -> None:
    nc = controller.app[keys.NC]
    hb = wire.ProbeHeartbeat(
        probe_id=probe_id,
        region=region,
        version="t",
        concurrency=1,
        in_flight=0,
        started_at=time.time(),
        sent_at=time.time(),
    )
    await nc.publish(subjects.heartbeat(region), wire.encode(hb))
    await nc.flush()


async def wait_active(api: aiohttp.ClientSession, region: str, count: int) -> list[dict[str, object]]:
    """The region list once `region` counts `count` live probes."""

    async def listed() -> list[dict[str, object]] | None:
        data: list[dict[str, object]] = (await (await api.get("/api/v1/worker-regions")).json())["data"]
        found = next(r for r in data if r["id"] == region)
        return data if found["probe_count"] == count else None

    return await eventually(listed, timeout=5, what=f"{count} live probes in {region}")


async def test_it_lists_regions_with_live_probes(controller: Running, api: aiohttp.ClientSession) -> None:
    data = (await (await api.get("/api/v1/worker-regions")).json())["data"]
    assert [r["id"] for r in data] == ["us-east", "eu-west", "ap-south"]
    assert all(not r["is_active"] and r["probe_count"] == 0 for r in data)
    assert set(data[0]) == {
        "id",
        "city",
        "country",
        "country_code",
        "latitude",
        "longitude",
        "is_active",
        "probe_count",
    }
    await heartbeat(controller, "eu-west", "p1")
    await heartbeat(controller, "eu-west", "p2")
    data = await wait_active(api, "eu-west", 2)
    eu = next(r for r in data if r["id"] == "eu-west")
    assert eu["is_active"] and eu["probe_count"] == 2
    assert not next(r for r in data if r["id"] == "us-east")["is_active"]


async def test_health_details_need_admin(controller: Running, api: aiohttp.ClientSession) -> None:
    await heartbeat(controller, "us-east", "p9")
    await wait_active(api, "us-east", 1)
    await api.post("/api/v1/monitors", json={"name": "s", "url": "http://127.0.0.1:9/"})
    r = await api.get("/api/v1/health/details")
    assert r.status == 200
    d = (await r.json())["data"]
    assert d["status"] == "ok" and d["database"]["status"] == "ok" and d["nats"]["status"] == "ok"
    assert d["scheduler"]["monitors_scheduled"] == 1 and d["version"] and d["server_time"]
    assert {r["id"]: r["probe_count"] for r in d["regions"]}["us-east"] == 1
    key, _ = await api_keys.create(controller.app[keys.POOL], "rw", ["monitors:read", "monitors:write"])
    async with aiohttp.ClientSession(base_url=controller.base, headers={"X-API-Key": key}) as rw:
        assert (await rw.get("/api/v1/health/details")).status == 403
        assert (await rw.get("/api/v1/worker-regions")).status == 200
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.get("/api/v1/health/details")).status == 401
        assert (await anon.get("/api/v1/worker-regions")).status == 401
