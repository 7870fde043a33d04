"""probefleet.client against a real controller: the sync client (in a thread, as a script
runs it) and the async one; settings from the environment; lists followed page by page;
typed errors with the field details; a 429 retried after its Retry-After (a local server
that answers 429 first)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    NotFoundError,
    RateLimitError,
    ValidationError,
    models,
)
from tests.controller.conftest import Running, start_controller


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


async def test_the_sync_client_manages_monitors(controller: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_URL", controller.base)
    monkeypatch.setenv("PROBEFLEET_API_KEY", controller.admin_key)

    def script() -> None:
        with Client() as api:
            made = [
                api.create_monitor(type="http", name=f"m{i}", url=f"https://example.com/{i}")
                for i in range(5)
            ]
            tcp = api.create_monitor({"type": "tcp", "name": "db", "host": "db.example.com", "port": 5432})
            assert isinstance(tcp, models.Monitor) and (tcp.host, tcp.port, tcp.url) == (
                "db.example.com",
                5432,
                None,
            )
            # Two per page: three requests, every monitor once.
            assert [m.id for m in api.monitors(limit=2)] == [m.id for m in made] + [tcp.id]
            assert [m.name for m in api.monitors(type="tcp")] == ["db"]
            changed = api.update_monitor(made[0].id, check_interval=120, tags=["web"])
            assert changed.check_interval == 120 and changed.tags == ["web"]
            paused = api.pause_monitor(made[0].id, reason="deploy")
            assert not paused.is_enabled and paused.paused_reason == "deploy"
            assert api.resume_monitor(made[0].id).is_enabled
            stats = api.monitor_stats(made[0].id, period="7d")
            assert stats.period == "7d" and stats.checks.total == 0
            assert api.monitor_status(made[0].id).metrics.rounds_24h == 0
            api.delete_monitor(tcp.id)
            with pytest.raises(NotFoundError) as e:
                api.get_monitor(tcp.id)
            assert e.value.status == 404 and e.value.code == "not_found"
            with pytest.raises(ValidationError) as v:
                api.create_monitor(type="tcp", name="no port", host="db.example.com")
            assert v.value.status == 422 and "port" in v.value.details

    await asyncio.to_thread(script)


async def test_the_async_client_reads_incidents_heartbeats_and_pages(controller: Running) -> None:
    async with AsyncClient(controller.base, controller.admin_key) as api:
        sites = [
            await api.create_monitor(type="http", name=f"s{i}", url=f"https://example.com/{i}")
            for i in range(3)
        ]
        monitor = sites[0]
        opened = [await api.create_incident(monitor_id=m.id, title=f"i{m.id}") for m in sites]
        listed = [i.id async for i in api.incidents(limit=2)]
        assert sorted(listed) == sorted(i.id for i in opened)
        acked = await api.acknowledge_incident(opened[0].id, assignee="ops")
        assert acked.status == "acknowledged" and acked.assignee == "ops"
        resolved = await api.resolve_incident(opened[0].id, notes="fixed")
        assert resolved.is_resolved and resolved.mttr is not None
        kinds = [e.kind async for e in api.events(limit=2, incident_id=opened[0].id)]
        assert kinds[0] == "incident.opened" and "incident.resolved" in kinds
        hb = await api.create_heartbeat(name="backup", run_interval=3600)
        assert hb.token and hb.ping_url and hb.ping_url.endswith(hb.token)
        assert [h.name async for h in api.heartbeats()] == ["backup"]
        page = await api.create_status_page(
            name="Status",
            slug="status-sdk",
            sections=[{"name": "Web", "monitors": [{"monitor_id": monitor.id}]}],
        )
        assert [p.slug async for p in api.status_pages()] == ["status-sdk"]
        public = await api.public_page(page.slug)
        assert public.name == "Status" and public.sections[0]["name"] == "Web"
        # Any other operation, typed by the caller.
        sub = await api.request("GET", "/api/v1/subscription", type=models.Subscription)
        assert sub.status == "active"
    async with AsyncClient(controller.base, "pf_not_a_key") as anon:
        with pytest.raises(AuthenticationError) as e:
            await anon.get_monitor(monitor.id)
        assert e.value.status == 401


async def test_the_async_client_manages_windows_channels_rules_and_reads_pings(controller: Running) -> None:
    async with AsyncClient(controller.base, controller.admin_key) as api:
        hb = await api.create_heartbeat(name="cron", run_interval=600)
        assert hb.ping_url is not None
        async with aiohttp.ClientSession() as anon:
            for signal in ("/start", ""):
                assert (await anon.post(hb.ping_url + signal, data=b"log line")).status == 200
        pings = [p async for p in api.heartbeat_pings(hb.id, limit=1)]
        assert [p.kind for p in pings] == ["success", "start"] and pings[0].body == "log line"

        window = await api.create_maintenance_window(
            name="sunday", tags=["db"], days=["sun"], start_time="02:00", duration=7200
        )
        assert window.recurring and window.days == ["sun"]
        assert [w.id for w in await api.maintenance_windows()] == [window.id]
        await api.delete_maintenance_window(window.id)
        assert await api.maintenance_windows() == []

        # Port 9 of loopback refuses: the test notification is dead, said so, not raised.
        channel = await api.create_channel(name="hook", kind="webhook", config={"url": "http://127.0.0.1:9/"})
        outcome = await api.test_channel(channel.id)
        assert outcome.delivered is False and outcome.status == "dead" and outcome.error
        rule = await api.create_rule(channel_ids=[channel.id], events=["monitor.down"])
        assert [r.channel_ids for r in await api.rules()] == [[channel.id]]
        await api.delete_rule(rule.id)
        await api.delete_channel(channel.id)
        assert await api.channels() == [] and await api.rules() == []


async def test_the_async_client_manages_keys_and_regions(controller: Running) -> None:
    async with AsyncClient(controller.base, controller.admin_key) as api:
        made = await api.create_api_key(name="ci", scopes=["monitors:read"], expires_in_days=30)
        assert isinstance(made, models.ApiKeyCreated) and made.key.startswith(made.prefix)
        listed = {k.id: k for k in await api.api_keys()}
        assert listed[made.id].scopes == ["monitors:read"] and not hasattr(listed[made.id], "key")
        async with AsyncClient(controller.base, made.key) as reader:
            assert {r.name for r in await reader.regions()} >= {"us-east", "eu-west"}
            with pytest.raises(ApiError) as e:
                await reader.create_region(name="eu-north")
            assert e.value.status == 403
        await api.revoke_api_key(made.id)
        assert made.id not in {k.id for k in await api.api_keys()}

        region = await api.create_region(name="eu-north", city="Stockholm", country_code="SE")
        assert isinstance(region, models.Region) and region.live_probes == 0
        changed = await api.update_region("eu-north", display_name="Nordics", latitude=59.3)
        assert (changed.display_name, changed.city, changed.latitude) == ("Nordics", "Stockholm", 59.3)
        assert (await api.get_region("eu-north")).display_name == "Nordics"
        assert await api.region_probes("eu-north") == []
        with pytest.raises(ValidationError) as v:
            await api.create_region(name="Not A Name")
        assert "name" in v.value.details
        await api.delete_region("eu-north")
        with pytest.raises(NotFoundError):
            await api.get_region("eu-north")


async def test_the_sync_client_manages_keys_and_regions(controller: Running) -> None:
    def script() -> None:
        with Client(controller.base, controller.admin_key) as api:
            made = api.create_api_key(name="sync", scopes=["monitors:read"])
            assert made.id in {k.id for k in api.api_keys()}
            api.revoke_api_key(made.id)
            assert api.create_region(name="sa-east").name == "sa-east"
            assert api.update_region("sa-east", city="Sao Paulo").city == "Sao Paulo"
            assert api.get_region("sa-east").city == "Sao Paulo" and api.region_probes("sa-east") == []
            assert "sa-east" in {r.name for r in api.regions()}
            api.delete_region("sa-east")

    await asyncio.to_thread(script)


def test_the_key_stays_out_of_the_settings_repr() -> None:
    client = Client("http://127.0.0.1:9", "pf_secret_key")
    assert "pf_secret_key" not in repr(client.settings)


@pytest.fixture
async def limited() -> AsyncIterator[tuple[str, list[float]]]:
    """A server that answers 429 with Retry-After: 1 twice, then as /api/v1/health does;
    the times of the requests it got."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) <= 2 or request.query.get("always"):
            body = {"error": {"code": "rate_limited", "message": "slow down", "details": {}}}
            return web.json_response(body, status=429, headers={"Retry-After": "1"})
        return web.json_response({"status": "ok", "timestamp": "2026-01-01T00:00:00Z"})

    app = web.Application()
    app.router.add_get("/api/v1/health", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_a_429_is_retried_after_retry_after(limited: tuple[str, list[float]]) -> None:
    url, seen = limited
    async with AsyncClient(url) as api:
        health: Any = await api.request("GET", "/api/v1/health", type=models.Health)
        assert health.status == "ok" and len(seen) == 3
        assert seen[1] - seen[0] >= 0.9 and seen[2] - seen[1] >= 0.9  # waited as told
        seen.clear()
    async with AsyncClient(url, max_retries=1) as once:
        with pytest.raises(RateLimitError) as e:
            await once.request("GET", "/api/v1/health", params={"always": 1})
    assert len(seen) == 2 and e.value.retry_after == 1.0


async def test_the_sync_client_retries_too(limited: tuple[str, list[float]]) -> None:
    url, seen = limited
    health = await asyncio.to_thread(lambda: Client(url).request("GET", "/api/v1/health", type=models.Health))
    assert health.status == "ok" and len(seen) == 3
