"""/api/v1/regions (regions as resources, their figures and probes), /api/v1/worker-regions and
/api/v1/health/details."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from probefleet.controller import keys
from probefleet.controller.storage import api_keys
from probefleet.shared import subjects, wire
from tests.controller.conftest import Running, start_controller
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


async def test_it_seeds_regions_from_the_config_and_keeps_edits(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    data = (await (await api.get("/api/v1/regions")).json())["data"]
    assert [r["name"] for r in data] == ["us-east", "eu-west", "ap-south"]
    r = await api.patch("/api/v1/regions/eu-west", json={"display_name": "Dublin", "provider": "aws"})
    assert r.status == 200, await r.text()
    # A seed at the next start inserts what is missing and never overwrites an edit.
    regions = controller.app[keys.REGIONS]
    await regions.seed(controller.app[keys.POOL], controller.app[keys.CONFIG])
    got = (await (await api.get("/api/v1/regions/eu-west")).json())["data"]
    assert (got["display_name"], got["provider"]) == ("Dublin", "aws")


async def test_it_creates_changes_and_deletes_a_region(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    body = {
        "name": "eu-central",
        "display_name": "Frankfurt",
        "city": "Frankfurt",
        "country": "Germany",
        "country_code": "DE",
        "latitude": 50.11,
        "longitude": 8.68,
        "provider": "hetzner",
    }
    r = await api.post("/api/v1/regions", json=body)
    assert r.status == 201, await r.text()
    made = (await r.json())["data"]
    assert {k: made[k] for k in body} == body
    assert made["live_probes"] == 0 and made["capacity"] == 0 and made["versions"] == {}
    assert (await api.post("/api/v1/regions", json={"name": "eu-central"})).status == 409
    live = 'probefleet_probes_live{region="eu-central"} 0.0'
    assert live in await (await api.get("/metrics")).text()
    # Known at once: to monitors' locations, the region lists, /worker-regions.
    r = await api.post(
        "/api/v1/monitors", json={"name": "m", "url": "http://127.0.0.1:9/", "locations": ["eu-central"]}
    )
    assert r.status == 201, await r.text()
    monitor = (await r.json())["data"]["id"]
    names = [r["id"] for r in (await (await api.get("/api/v1/worker-regions")).json())["data"]]
    assert names == ["us-east", "eu-west", "ap-south", "eu-central"]
    r = await api.patch("/api/v1/regions/eu-central", json={"latitude": None, "city": "Berlin"})
    got = (await r.json())["data"]
    assert (
        r.status == 200 and got["latitude"] is None and got["city"] == "Berlin" and got["longitude"] == 8.68
    )
    # Refused while a monitor checks from it.
    r = await api.delete("/api/v1/regions/eu-central")
    assert r.status == 409 and (await r.json())["error"]["details"] == {"monitors": 1}
    assert (await api.delete(f"/api/v1/monitors/{monitor}")).status == 204
    assert (await api.delete("/api/v1/regions/eu-central")).status == 204
    assert (await api.get("/api/v1/regions/eu-central")).status == 404
    # Its series go with it: a deleted region is not a region down.
    assert 'region="eu-central"' not in await (await api.get("/metrics")).text()
    assert (await api.delete("/api/v1/regions/eu-central")).status == 404
    r = await api.post(
        "/api/v1/monitors", json={"name": "m", "url": "http://127.0.0.1:9/", "locations": ["eu-central"]}
    )
    assert r.status == 422 and "locations[0]" in (await r.json())["error"]["details"]


async def test_it_refuses_bad_region_bodies_with_field_details(api: aiohttp.ClientSession) -> None:
    for body, field in (
        ({"name": "Upper"}, "name"),
        ({"name": "a.b"}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({}, "name"),
        ({"name": "ok", "latitude": 91}, "latitude"),
        ({"name": "ok", "longitude": -181}, "longitude"),
        ({"name": "ok", "country_code": "deu"}, "country_code"),
        ({"name": "ok", "city": "x" * 101}, "city"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ):
        r = await api.post("/api/v1/regions", json=body)
        assert r.status == 422, (body, await r.text())
        assert field in (await r.json())["error"]["details"], (body, await r.text())
    r = await api.patch("/api/v1/regions/eu-west", json={"name": "eu-east"})
    assert r.status == 422 and "name" in (await r.json())["error"]["details"]
    assert (await api.patch("/api/v1/regions/eu-west", json=[1])).status == 422
    assert (await api.patch("/api/v1/regions/nowhere", json={"city": "x"})).status == 404


async def test_it_shows_live_figures_and_probes_per_region(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    nc = controller.app[keys.NC]
    for probe_id, version, concurrency, in_flight in (("p1", "0.4.0", 10, 3), ("p2", "0.3.0", 5, 1)):
        hb = wire.ProbeHeartbeat(
            probe_id=probe_id,
            region="ap-south",
            version=version,
            concurrency=concurrency,
            in_flight=in_flight,
            started_at=time.time() - 60,
            sent_at=time.time(),
            source_address="127.0.0.13",
        )
        await nc.publish(subjects.heartbeat("ap-south"), wire.encode(hb))
    await nc.flush()
    await wait_active(api, "ap-south", 2)
    region = (await (await api.get("/api/v1/regions/ap-south")).json())["data"]
    assert (region["live_probes"], region["capacity"], region["in_flight"]) == (2, 15, 4)
    assert region["versions"] == {"0.3.0": 1, "0.4.0": 1} and region["enrolled_probes"] == 0
    assert isinstance(region["jobs_published"], int)
    probes = (await (await api.get("/api/v1/regions/ap-south/probes")).json())["data"]
    assert [(p["probe_id"], p["live"], p["credential"]) for p in probes] == [
        ("p1", True, "none"),
        ("p2", True, "none"),
    ]
    p1 = probes[0]
    assert p1["concurrency"] == 10 and p1["in_flight"] == 3 and p1["source_address"] == "127.0.0.13"
    assert p1["connected_since"] < p1["last_heartbeat"]
    assert (await api.get("/api/v1/regions/nowhere/probes")).status == 404
    scrape = await (await api.get("/metrics")).text()
    assert 'probefleet_probes_capacity{region="ap-south"} 15.0' in scrape
    assert 'probefleet_probes_in_flight{region="ap-south"} 4.0' in scrape


async def test_it_flags_probes_older_than_the_previous_minor_version(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    # As if this controller were 1.4: it takes 1.4.x and 1.3.x, flags 1.2.x and older.
    controller.app[keys.FLEET].version = "1.4.0"
    nc = controller.app[keys.NC]
    for probe_id, version in (("new", "1.4.1"), ("previous", "1.3.0"), ("old", "1.2.9"), ("older", "0.9.0")):
        hb = wire.ProbeHeartbeat(
            probe_id=probe_id,
            region="eu-west",
            version=version,
            concurrency=1,
            in_flight=0,
            started_at=time.time(),
            sent_at=time.time(),
        )
        await nc.publish(subjects.heartbeat("eu-west"), wire.encode(hb))
    await nc.flush()
    await wait_active(api, "eu-west", 4)
    regions = {r["name"]: r for r in (await (await api.get("/api/v1/regions")).json())["data"]}
    assert regions["eu-west"]["outdated_probes"] == 2 and regions["us-east"]["outdated_probes"] == 0
    probes = (await (await api.get("/api/v1/regions/eu-west/probes")).json())["data"]
    assert {p["probe_id"]: p["outdated"] for p in probes} == {
        "new": False,
        "previous": False,
        "old": True,
        "older": True,
    }
    scrape = await (await api.get("/metrics")).text()
    assert 'probefleet_probes_outdated{region="eu-west"} 2.0' in scrape
    assert 'probefleet_probes_outdated{region="us-east"} 0.0' in scrape


async def test_it_counts_results_received_and_their_delay_per_region(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    REGION = "flow-counted"

    async def region() -> dict[str, Any]:
        return (await (await api.get(f"/api/v1/regions/{REGION}")).json())["data"]  # type: ignore[no-any-return]

    # A region of its own: the flow is the process's, and other tests' results stay out.
    assert (await api.post("/api/v1/regions", json={"name": REGION})).status == 201
    assert (await region())["results_received"] == 0
    r = await api.post(
        "/api/v1/monitors",
        json={"name": "m", "url": "http://127.0.0.1:9/", "locations": [REGION], "enabled": False},
    )
    monitor_id = (await r.json())["data"]["id"]
    js = controller.app[keys.NC].jetstream()
    now = time.time()
    for seconds_late in (0.2, 0.3, 7.0):
        result = wire.CheckResult(
            monitor_id=monitor_id,
            due=now - seconds_late,
            region=REGION,
            probe_id="p1",
            status=wire.Status.OK,
            started_at=now - seconds_late,
        )
        await js.publish(subjects.results(REGION), wire.encode(result))

    async def counted() -> dict[str, Any] | None:
        got = await region()
        return got if got["results_received"] == 3 else None

    got = await eventually(counted, timeout=10, what="three results counted")
    # The p99 of the last minutes lies in the bucket of the 7 s result (5-10 s).
    assert 5.0 < got["result_delay_p99_seconds"] <= 10.0
    scrape = await (await api.get("/metrics")).text()
    assert f'probefleet_results_received_total{{region="{REGION}"}} 3.0' in scrape
    assert f'probefleet_result_delay_seconds_bucket{{le="10.0",region="{REGION}"}} 3.0' in scrape


async def test_every_controller_learns_a_new_region_at_once(
    controller: Running, api: aiohttp.ClientSession, database: str, nats_url: str
) -> None:
    other = await start_controller(database, nats_url)
    try:
        assert (await api.post("/api/v1/regions", json={"name": "sa-east"})).status == 201
        await eventually(lambda: "sa-east" in other.app[keys.REGIONS].ids(), timeout=5, what="sa-east known")
        headers = {"Authorization": f"Bearer {other.admin_key}"}
        async with aiohttp.ClientSession(base_url=other.base, headers=headers) as there:
            body = {"name": "m", "url": "http://127.0.0.1:9/", "locations": ["sa-east"]}
            assert (await there.post("/api/v1/monitors", json=body)).status == 201
            assert (await there.delete("/api/v1/monitors/1")).status == 204
        assert (await api.delete("/api/v1/regions/sa-east")).status == 204
        await eventually(
            lambda: "sa-east" not in other.app[keys.REGIONS].ids(), timeout=5, what="sa-east gone"
        )
    finally:
        await other.stop()
