"""The whole path: API -> scheduler -> NATS -> probes in three regions -> JetStream ->
results consumer -> PostgreSQL -> consensus -> monitor status, all real."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.shared.evidence import from_stored
from tests.controller.conftest import Running, start_controller
from tests.fleet import REGION_ADDRESSES, RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually


@dataclass
class HoldingTarget(RegionalTarget):
    """A RegionalTarget that, once told to hold, keeps its answers until released."""

    held: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)  # the hit is counted before the hold
        if not self._released.is_set():
            self.held += 1
            await self._released.wait()
        return response


@pytest.fixture
async def target() -> AsyncIterator[HoldingTarget]:
    t = HoldingTarget()
    t.release()
    await t.start()
    yield t
    await t.stop()


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

            await eventually(lambda: _is(status, "up"), what="monitor up")
            regions = await ctl.app[keys.POOL].fetch(
                "SELECT DISTINCT region FROM check_results WHERE monitor_id = $1", mid
            )
            assert {r["region"] for r in regions} == set(REGION_ADDRESSES)
            assert set(target.hits) == set(REGION_ADDRESSES.values())

            target.fail_all()
            await eventually(lambda: _is(status, "down"), what="monitor down")
            body = (await (await api.get(f"/api/v1/monitors/{mid}")).json())["data"]
            assert body["is_ok"] is False and body["last_failure"] is not None

            target.recover()
            await eventually(lambda: _is(status, "up"), what="monitor up")
    finally:
        await stop_probes(probes)
        await ctl.stop()


async def _is(get: Callable[[], Awaitable[str]], want: str) -> bool:
    return await get() == want


async def test_it_loses_and_duplicates_no_result_across_a_controller_restart(
    database: str, nats_url: str, target: HoldingTarget
) -> None:
    ctl: Running = await start_controller(database, nats_url)
    probes = await start_probes(nats_url)
    pool = ctl.app[keys.POOL]
    try:
        headers = {"Authorization": f"Bearer {ctl.admin_key}"}
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            ids = []
            for i in range(20):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 2},
                )
                ids.append((await r.json())["data"]["id"])

        async def every_monitor_checked() -> bool:
            n = await pool.fetchval("SELECT count(DISTINCT monitor_id) FROM check_results")
            return bool(n == len(ids))

        await eventually(every_monitor_checked, what="results of every monitor stored")
        # Checks in flight across the stop: their results reach JetStream while no controller runs.
        target.hold()
        await eventually(lambda: target.held, what="a check in flight")
    finally:
        await ctl.stop()
        target.release()
    await stop_probes(probes)
    # The probes sent results in batches (a lone controller of this version allows them),
    # which the rest of this test shows stored, each once.
    messages = sum(p.metrics.result_messages._value.get() for p in probes)
    assert 0 < messages < sum(p.metrics.published._value.get() for p in probes)
    hits_published = sum(target.hits.values())
    conn = await asyncpg.connect(database)
    try:
        stored_at_stop = await conn.fetchval("SELECT count(*) FROM check_results")
    finally:
        await conn.close()
    assert hits_published > stored_at_stop, "no result was left for the restarted controller"
    ctl = await start_controller(database, nats_url)
    pool = ctl.app[keys.POOL]
    try:

        async def stored() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM check_results")
            return bool(n >= hits_published)

        # Rounds the stopped controller opened still get their results after restart.
        await eventually(stored, what=f"{hits_published} results stored")
        total, distinct = await pool.fetchrow(
            "SELECT count(*), count(DISTINCT (monitor_id, due, region, attempt)) FROM check_results"
        )
        assert total == distinct == hits_published
    finally:
        await ctl.stop()


@dataclass
class ErrorPage(RegionalTarget):
    """A RegionalTarget whose 503 carries an error page of several KiB."""

    page: str = "<html><h1>503</h1>" + "<p>upstream connect error, retried</p>" * 150 + "</html>"

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        if response.status != 503:
            return response
        return web.Response(status=503, text=self.page, content_type="text/html")


async def test_a_failed_check_s_body_reaches_the_incident_as_text(database: str, nats_url: str) -> None:
    """Probe -> NATS -> PostgreSQL -> API for the evidence: the body is stored compressed, as
    the probe compressed it, and the incident shows it as the text the target sent."""
    target = ErrorPage()
    await target.start()
    target.fail_all()
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

            async def first_failure() -> dict[str, Any] | None:
                r = await api.get("/api/v1/incidents", params={"monitor_id": str(mid)})
                listed = (await r.json())["data"]
                if not listed:
                    return None
                r = await api.get(f"/api/v1/incidents/{listed[0]['id']}")
                return cast(dict[str, Any] | None, (await r.json())["data"]["first_failure"])

            first = await eventually(first_failure, what="an incident with its first failure")
            evidence = first["evidence"]
            assert (
                isinstance(evidence, dict) and evidence["status_line"] == "HTTP/1.1 503 Service Unavailable"
            )
            assert evidence["body"] == target.page and evidence["body_truncated"] is False
            assert not {"body_gzip", "body_gzip_b64"} & evidence.keys()
            stored = await ctl.app[keys.POOL].fetchrow(
                "SELECT details, evidence FROM check_results WHERE monitor_id = $1 AND status = 'fail'"
                " LIMIT 1",
                mid,
            )
            # In its own column (migration 0023), the body as the gzip bytes the probe sent.
            assert "evidence" not in (stored["details"] or {})
            assert isinstance(from_stored(stored["evidence"])["body_gzip"], bytes)
    finally:
        await stop_probes(probes)
        await ctl.stop()
        await target.stop()


async def test_a_refused_connection_and_an_nxdomain_reach_the_incident_with_their_evidence(
    database: str, nats_url: str
) -> None:
    """Probe -> NATS -> PostgreSQL -> API for more failing phases: a refused connect (the
    reason and the addresses resolved), a name a local DNS server answers NXDOMAIN for
    (the rcode and the resolver asked), and a TLS server presenting a certificate for
    another host (the verification error and the presented chain)."""
    import ssl

    import trustme
    from dnslib import RCODE, DNSRecord
    from dnslib.server import BaseResolver, DNSHandler, DNSServer

    class Nothing(BaseResolver):
        def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
            reply = request.reply()
            reply.header.rcode = RCODE.NXDOMAIN
            return reply

    dns_server = DNSServer(Nothing(), port=0, address="127.0.0.1")
    dns_server.start_thread()
    resolver = f"127.0.0.1:{dns_server.server.server_address[1]}"
    ca = trustme.CA(organization_name="Probefleet Test CA")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.test").configure_cert(context)
    tls_runner = web.AppRunner(web.Application(), access_log=None)
    await tls_runner.setup()
    tls_site = web.TCPSite(tls_runner, "127.0.0.1", 0, ssl_context=context)
    await tls_site.start()
    tls_port = tls_runner.addresses[0][1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: refused
        ctl = await start_controller(database, nats_url)
        probes = await start_probes(nats_url)
        headers = {"Authorization": f"Bearer {ctl.admin_key}"}
        try:
            async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
                bodies = [
                    {
                        "name": "refused",
                        "url": f"http://localhost:{closed}/",
                        "check_interval": 1,
                        "timeout": 2,
                    },
                    {
                        "name": "nxdomain",
                        "type": "dns",
                        "domain": "nothing.test",
                        "resolver": resolver,
                        "check_interval": 1,
                        "timeout": 2,
                    },
                ]
                bodies.append(
                    {
                        "name": "wrong-host",
                        "url": f"https://127.0.0.1:{tls_port}/",
                        "ca_pem": ca.cert_pem.bytes().decode(),
                        "check_interval": 1,
                        "timeout": 2,
                    }
                )
                ids = []
                for body in bodies:
                    r = await api.post("/api/v1/monitors", json=body)
                    assert r.status == 201, await r.text()
                    ids.append((await r.json())["data"]["id"])

                async def first_failure(mid: int) -> dict[str, Any] | None:
                    r = await api.get("/api/v1/incidents", params={"monitor_id": str(mid)})
                    listed = (await r.json())["data"]
                    if not listed:
                        return None
                    r = await api.get(f"/api/v1/incidents/{listed[0]['id']}")
                    return cast(dict[str, Any] | None, (await r.json())["data"]["first_failure"])

                refused = await eventually(
                    lambda: first_failure(ids[0]), what="the refused monitor's incident"
                )
                evidence = refused["evidence"]
                assert evidence["reason"] == "connection_refused" and "127.0.0.1" in evidence["ips"]
                nxdomain = await eventually(
                    lambda: first_failure(ids[1]), what="the nxdomain monitor's incident"
                )
                evidence = nxdomain["evidence"]
                assert (evidence["rcode"], evidence["resolver"], evidence["answer"]) == (
                    "NXDOMAIN",
                    resolver,
                    [],
                )
                assert evidence["reason"] == "rcode_mismatch"
                wrong = await eventually(
                    lambda: first_failure(ids[2]), what="the wrong-host monitor's incident"
                )
                evidence = wrong["evidence"]
                assert "127.0.0.1" in str(evidence["verify_error"]) and evidence["ips"] == ["127.0.0.1"]
                (presented, *_) = evidence["chain"]
                assert "other.test" in presented["sans"]
        finally:
            await stop_probes(probes)
            await ctl.stop()
            dns_server.stop()
            await tls_runner.cleanup()
