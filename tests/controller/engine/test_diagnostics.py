"""controller/engine/diagnostics.py: a monitor that goes down gets a diagnosis (traceroute,
DNS, TLS chain) from each region that saw it fail, attached to its incident, within a rate
limit per region. Real controller, NATS, PostgreSQL, probes and HTTP target on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys, metrics
from probefleet.controller.engine import diagnostics
from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT, RateLimit, spec_for
from probefleet.controller.storage import diagnostics as diagnostics_store
from probefleet.shared import subjects, wire
from tests.controller.conftest import Running, start_controller
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


async def _session(ctl: Running) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=ctl.base, headers={"Authorization": f"Bearer {ctl.admin_key}"})


async def new_monitor(api: aiohttp.ClientSession, url: str, **fields: Any) -> int:
    body = {"name": "m", "url": url, "check_interval": 1, "timeout": 1, **fields}
    r = await api.post("/api/v1/monitors", json=body)
    assert r.status == 201, await r.text()
    return int((await r.json())["data"]["id"])


async def open_incident(ctl: Running, monitor_id: int) -> int:
    async def opened() -> int | None:
        row = await ctl.app[keys.POOL].fetchrow(
            "SELECT id FROM incidents WHERE monitor_id = $1 AND resolved_at IS NULL", monitor_id
        )
        return int(row["id"]) if row else None

    return await eventually(opened, what=f"an incident of monitor {monitor_id}")


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def counted(outcome: str) -> float:
    return metrics.DIAGNOSTICS.labels(outcome)._value.get()


async def test_the_regions_that_saw_the_monitor_fail_diagnose_it_within_10_s(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    ctl = await start_controller(database, nats_url)
    probes = await start_probes(nats_url)
    try:
        async with await _session(ctl) as api:
            await eventually(lambda: len(ctl.app[keys.FLEET].live_regions()) == 3, what="three probes live")
            target.fail_regions("us-east", "eu-west")
            mid = await new_monitor(api, target.url, consensus="any")
            incident_id = await open_incident(ctl, mid)

            async def diagnosed() -> list[dict[str, Any]] | None:
                r = await api.get(f"/api/v1/incidents/{incident_id}/evidence")
                assert r.status == 200, await r.text()
                got: list[dict[str, Any]] = (await r.json())["meta"]["diagnostics"]
                return got if {d["region"] for d in got} == {"us-east", "eu-west"} else None

            found = await eventually(diagnosed, timeout=10.0, what="diagnostics from the two failing regions")
            assert len(found) == 2  # exactly one from each failing region, none from ap-south
            for d in found:
                assert d["status"] == "ok" and d["probe_id"] == f"test-{d['region']}"
                assert d["target"] == target.url
                assert d["port"] == port_of(target.url)
                hops = d["traceroute"]["hops"]
                assert d["traceroute"]["reached"] is True
                assert (d["traceroute"]["method"], d["traceroute"]["port_state"]) == ("tcp", "open")
                assert hops[0]["address"] == "127.0.0.1" and hops[0]["kind"] == "reached"
                assert d["dns"]["skipped"] == "the target is an address"
                assert d["tls"] is None  # http://
                assert d["ran_at"] and "reached 127.0.0.1" in d["summary"]
            r = await api.get(f"/api/v1/incidents/{incident_id}")
            detail = (await r.json())["data"]
            assert sorted(d["region"] for d in detail["diagnostics"]) == ["eu-west", "us-east"]
            assert detail["affected_regions"] == ["eu-west", "us-east"]
            r = await api.get(f"/api/v1/monitors/{mid}/logs")
            logs = (await r.json())["data"]
            assert sorted(e["region"] for e in logs if e["diagnostic"]) == ["eu-west", "us-east"]
            assert all(e["attempt"] == DIAGNOSTIC_ATTEMPT for e in logs if e["diagnostic"])
            # Stored like any result, in no round, and the monitor is still down.
            pool = ctl.app[keys.POOL]
            stored = await pool.fetch(
                "SELECT region, status FROM check_results WHERE monitor_id = $1 AND attempt = $2",
                mid,
                DIAGNOSTIC_ATTEMPT,
            )
            assert sorted((s["region"], s["status"]) for s in stored) == [
                ("eu-west", "ok"),
                ("us-east", "ok"),
            ]
            rounds = await pool.fetchval(
                "SELECT count(*) FROM rounds WHERE monitor_id = $1 AND attempt = $2", mid, DIAGNOSTIC_ATTEMPT
            )
            assert rounds == 0
            assert await pool.fetchval("SELECT status FROM monitors WHERE id = $1", mid) == "down"
            assert await pool.fetchval("SELECT count(*) FROM incidents WHERE monitor_id = $1", mid) == 1
    finally:
        await stop_probes(probes)
        await ctl.stop()


async def test_a_mass_outage_gets_at_most_the_limit_of_diagnostics_per_region(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    limit = 3
    ctl = await start_controller(database, nats_url, diagnostics_per_region_minute=limit)
    probes = await start_probes(nats_url, ["us-east"])
    sent, limited = counted("sent"), counted("rate_limited")
    try:
        async with await _session(ctl) as api:
            await eventually(lambda: ctl.app[keys.FLEET].live_regions() == {"us-east": 1}, what="probe live")
            target.fail_all()
            mids = [
                await new_monitor(api, target.url, name=f"m{i}", locations=["us-east"])
                for i in range(limit + 5)
            ]
            for mid in mids:
                await open_incident(ctl, mid)
            await eventually(
                lambda: counted("sent") - sent + counted("rate_limited") - limited == limit + 5,
                what="every incident's diagnostics sent or limited",
            )
            assert counted("sent") - sent == limit
            assert counted("rate_limited") - limited == 5

            async def stored() -> int:
                n: int = await ctl.app[keys.POOL].fetchval(
                    "SELECT count(*) FROM check_results WHERE monitor_id = ANY($1) AND attempt = $2",
                    mids,
                    DIAGNOSTIC_ATTEMPT,
                )
                return n

            await eventually(lambda: _is(stored, limit), what=f"{limit} diagnoses stored")
    finally:
        await stop_probes(probes)
        await ctl.stop()


async def _is(count: Any, n: int) -> bool:
    return bool(await count() == n)


async def test_a_region_without_a_live_probe_able_to_diagnose_is_skipped(
    controller: Running, api: aiohttp.ClientSession, nats_url: str, target: RegionalTarget
) -> None:
    probes = await start_probes(nats_url, ["us-east"])
    try:
        fleet = controller.app[keys.FLEET]
        await eventually(lambda: fleet.live_regions() == {"us-east": 1}, what="probe live")
        mid = await new_monitor(api, target.url, is_enabled=False)
        published: list[tuple[str, wire.CheckJob]] = []

        async def publish(subject: str, data: bytes) -> None:
            published.append((subject, wire.decode_job(data)))

        diagnoser = diagnostics.Diagnostics(
            pool=controller.app[keys.POOL],
            hub=controller.app[keys.HUB],
            fleet=fleet,
            publish=publish,
            owns=lambda _id: True,
            per_minute=10,
            grace=1.0,
        )
        assert await diagnoser.diagnose(mid, ["us-east", "eu-west"]) == ["us-east"]
        ((subject, job),) = published
        assert subject == subjects.jobs("us-east")
        assert (job.attempt, job.timeout, job.spec) == (
            DIAGNOSTIC_ATTEMPT,
            diagnostics.BUDGET,
            wire.DiagnoseSpec(
                host="127.0.0.1", port=int(target.url.split(":")[2].split("/")[0]), url=target.url, tcp=True
            ),
        )
    finally:
        await stop_probes(probes)


async def test_0_turns_diagnostics_off(database: str, nats_url: str) -> None:
    on = await start_controller(database, nats_url)
    try:
        assert "diagnostics" in {t.get_name() for t in asyncio.all_tasks()}
    finally:
        await on.stop()
    off = await start_controller(database, nats_url, diagnostics_per_region_minute=0)
    try:
        assert "diagnostics" not in {t.get_name() for t in asyncio.all_tasks()}
    finally:
        await off.stop()


async def test_the_api_refuses_diagnose_as_a_monitor_type(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    r = await api.post("/api/v1/monitors", json={"name": "d", "type": "diagnose", "url": "127.0.0.1"})
    assert r.status == 422, await r.text()
    assert "not a monitor type" in (await r.json())["error"]["details"]["type"]


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        (
            "http",
            {"url": "https://user:pw@example.test/health?token=x", "ca_pem": "PEM"},
            wire.DiagnoseSpec(
                host="example.test",
                port=443,
                tls=True,
                url="https://example.test/health",
                ca_pem="PEM",
                tcp=True,
            ),
        ),
        (
            "http",
            {"url": "http://127.0.0.1:8080/"},
            wire.DiagnoseSpec(host="127.0.0.1", port=8080, url="http://127.0.0.1:8080/", tcp=True),
        ),
        ("tcp", {"host": "db.test", "port": 5432}, wire.DiagnoseSpec(host="db.test", port=5432, tcp=True)),
        ("udp", {"host": "ntp.test", "port": 123}, wire.DiagnoseSpec(host="ntp.test", port=123)),
        (
            "tls",
            {"host": "a.test", "port": 8443, "server_name": "b.test"},
            wire.DiagnoseSpec(host="a.test", port=8443, tls=True, server_name="b.test", tcp=True),
        ),
        (
            "tls",
            {"host": "mx.test", "port": 25, "starttls": "smtp"},
            wire.DiagnoseSpec(host="mx.test", port=25, tcp=True),
        ),
        ("icmp", {"host": "10.0.0.1"}, wire.DiagnoseSpec(host="10.0.0.1")),
        (
            "dns",
            {"name": "x.test", "resolver": "127.0.0.1:53"},
            wire.DiagnoseSpec(host="x.test", resolver="127.0.0.1:53"),
        ),
        (
            "api_flow",
            {"steps": [{"url": "https://api.test/login"}]},
            wire.DiagnoseSpec(host="api.test", port=443, tls=True, url="https://api.test/login", tcp=True),
        ),
        (
            "browser",
            {"steps": [{"action": "goto", "url": "http://web.test/"}]},
            wire.DiagnoseSpec(host="web.test", port=80, url="http://web.test/", tcp=True),
        ),
        ("http", {"url": "not a url"}, None),
    ],
)
def test_the_diagnosis_targets_the_monitors_host_and_port(
    kind: str, spec: dict[str, Any], expected: wire.DiagnoseSpec | None
) -> None:
    assert spec_for(kind, spec) == expected


def test_the_rate_limit_is_per_region_over_a_sliding_minute() -> None:
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert [limit.take("a"), limit.take("a"), limit.take("a"), limit.take("b")] == [True, True, False, True]
    now[0] = 59.9
    assert not limit.take("a")
    now[0] = 60.1
    assert limit.take("a") and limit.take("a") and not limit.take("a")


def test_the_attempt_is_apart_from_the_on_demand_one() -> None:
    from probefleet.controller.engine import ondemand

    assert diagnostics.DIAGNOSTIC_ATTEMPT > ondemand.ON_DEMAND_ATTEMPT


async def test_the_diagnosis_reaches_every_channel_once_as_the_incident_update(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    """Two controllers, two webhook channels on loopback: each channel gets the opening,
    then one incident.diagnosed with a line per failing region and the incident's link."""
    got: list[tuple[str, dict[str, Any]]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((request.path, json.loads(await request.read())))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{name}", handle)
    receiver = web.AppRunner(app, access_log=None)
    await receiver.setup()
    await web.TCPSite(receiver, "127.0.0.1", 0).start()
    hook = f"http://127.0.0.1:{receiver.addresses[0][1]}"
    a = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    b = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    probes = await start_probes(nats_url)
    pool = a.app[keys.POOL]

    def of(kind: str, name: str) -> list[dict[str, Any]]:
        return [body for path, body in got if path == f"/{name}" and body["event"] == kind]

    try:
        async with await _session(a) as api:
            ids = []
            for name in ("ops", "oncall"):
                r = await api.post(
                    "/api/v1/notification-channels",
                    json={"name": name, "kind": "webhook", "config": {"url": f"{hook}/{name}"}},
                )
                assert r.status == 201, await r.text()
                ids.append((await r.json())["data"]["id"])
            r = await api.post("/api/v1/notification-rules", json={"channel_ids": ids})
            assert r.status == 201, await r.text()
            await eventually(lambda: len(a.app[keys.FLEET].live_regions()) == 3, what="three probes live")
            target.fail_regions("us-east", "eu-west")
            mid = await new_monitor(api, target.url, consensus="any")
            incident_id = await open_incident(a, mid)
            await eventually(
                lambda: all(of("incident.diagnosed", n) for n in ("ops", "oncall")),
                timeout=20,
                what="incident.diagnosed at both channels",
            )

            async def outbox_settled() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT (SELECT last_event_id FROM dispatcher_cursor WHERE name = 'fanout')"
                        " >= (SELECT max(id) FROM events) AND NOT EXISTS (SELECT FROM deliveries"
                        " WHERE status IN ('pending', 'sending', 'failed', 'held'))"
                    )
                )

            await eventually(outbox_settled, what="nothing left for either dispatcher")
            for name in ("ops", "oncall"):
                assert len(of("incident.opened", name)) == 1
                (update,) = of("incident.diagnosed", name)
                assert update["incident"]["id"] == incident_id
                assert update["link"].endswith(f"/console/incidents/{incident_id}")
                lines = update["diagnostics"]
                assert [line.split(":")[0] for line in lines] == ["eu-west", "us-east"]
                for line in lines:
                    assert "tcp traceroute reached 127.0.0.1 in 1 hop" in line, line
                    assert "DNS" not in line  # the target is an address: nothing resolved
            # The event is written once however often it is asked for.
            again = await diagnostics_store.emit_diagnosed(
                pool, incident_id, mid, dt.datetime.now(dt.UTC), {"diagnostics": []}
            )
            assert again is None
            assert (
                await pool.fetchval(
                    "SELECT count(*) FROM events WHERE incident_id = $1 AND kind = 'incident.diagnosed'",
                    incident_id,
                )
                == 1
            )
    finally:
        await stop_probes(probes)
        await a.stop()
        await b.stop()
        await receiver.cleanup()


async def test_diagnoses_stored_without_a_report_are_reported_once_by_the_sweep(
    database: str, nats_url: str, target: RegionalTarget
) -> None:
    """The controller that sent the diagnoses stopped while waiting for them (here: they
    are sent with no wait): the sweep of the monitor's owner, on this or another
    controller, writes the incident's one incident.diagnosed from the stored results."""
    ctl = await start_controller(database, nats_url, diagnostics_per_region_minute=0)
    probes = await start_probes(nats_url)
    pool = ctl.app[keys.POOL]

    def diagnoser() -> diagnostics.Diagnostics:
        return diagnostics.Diagnostics(
            pool=pool,
            hub=ctl.app[keys.HUB],
            fleet=ctl.app[keys.FLEET],
            publish=ctl.app[keys.NC].publish,
            owns=lambda _: True,
            per_minute=10,
            grace=ctl.app[keys.CONFIG].round_grace,
        )

    try:
        async with await _session(ctl) as api:
            await eventually(lambda: len(ctl.app[keys.FLEET].live_regions()) == 3, what="three probes live")
            target.fail_regions("us-east", "eu-west")
            mid = await new_monitor(api, target.url, consensus="any")
            incident_id = await open_incident(ctl, mid)
            opened = await pool.fetchrow(
                "SELECT id, occurred_at FROM events WHERE incident_id = $1 AND kind = 'incident.opened'",
                incident_id,
            )
            first, second = diagnoser(), diagnoser()
            sent = await first.diagnose(mid, ["us-east", "eu-west"], opened["occurred_at"].timestamp() + 0.2)
            assert sorted(sent) == ["eu-west", "us-east"]

            async def stored() -> bool:
                n = await pool.fetchval(
                    "SELECT count(*) FROM check_results WHERE monitor_id = $1 AND attempt = $2",
                    mid,
                    DIAGNOSTIC_ATTEMPT,
                )
                return bool(n == 2)

            await eventually(stored, timeout=20, what="both diagnoses stored")
            # Within the wait the in-memory report may still come: the sweep leaves it.
            assert await first.sweep(opened["occurred_at"] + dt.timedelta(seconds=1)) == []
            later = opened["occurred_at"] + first.wait + dt.timedelta(seconds=1)
            (event_id,) = await first.sweep(later)
            assert await second.sweep(later) == []  # written once
            event = await pool.fetchrow(
                "SELECT kind, incident_id, payload FROM events WHERE id = $1", event_id
            )
            assert (event["kind"], event["incident_id"]) == ("incident.diagnosed", incident_id)
            payload = event["payload"]
            assert payload["opened_event_id"] == opened["id"]
            assert payload["incident"]["id"] == incident_id
            assert [d["region"] for d in payload["diagnostics"]] == ["eu-west", "us-east"]
            assert all("reached 127.0.0.1" in d["summary"] for d in payload["diagnostics"])
            # Older than the lookback: the sweep no longer reads it.
            assert await second.sweep(opened["occurred_at"] + diagnostics.LOOKBACK + first.wait) == []
    finally:
        await stop_probes(probes)
        await ctl.stop()
