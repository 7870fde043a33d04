"""Creating or changing a monitor is one transaction: the channels its notification URLs
name, the monitor and a heartbeat's token are all written, or none is. Both resources
that create monitors (/monitors and /heartbeats) are exercised on a real controller and
database; a later write is made to fail by a real constraint or a trigger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from tests.controller.conftest import Running

SLACK_URL = "slack://T0A1B2C3D/B0X9Y8Z7W/abc123"
HTTP = {"name": "site", "url": "http://127.0.0.1:9/x", "locations": ["us-east"]}
HEARTBEAT = {"name": "backup", "type": "heartbeat", "run_interval": 3600, "grace_period": 60}
# Both ways to create a heartbeat monitor.
HEARTBEAT_PATHS = pytest.mark.parametrize("path", ["/api/v1/monitors", "/api/v1/heartbeats"])


async def counts(controller: Running) -> dict[str, int]:
    pool = controller.app[keys.POOL]
    return {
        table: await pool.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("notification_channels", "monitors", "heartbeats")
    }


@pytest.fixture
async def failing_token_write(controller: Running) -> AsyncIterator[None]:
    """Every INSERT into heartbeats (the token, the last write of a creation) raises."""
    pool = controller.app[keys.POOL]
    await pool.execute(
        "CREATE FUNCTION refuse_heartbeat() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'token write refused'; END $$;"
        " CREATE TRIGGER refuse_heartbeat BEFORE INSERT ON heartbeats"
        " FOR EACH ROW EXECUTE FUNCTION refuse_heartbeat()"
    )
    yield
    await pool.execute("DROP TRIGGER refuse_heartbeat ON heartbeats; DROP FUNCTION refuse_heartbeat()")


async def test_it_leaves_no_channel_when_the_monitor_insert_fails(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    # The channel is written first; the monitor's parent then breaks the foreign key.
    r = await api.post("/api/v1/monitors", json={**HTTP, "notifications": [SLACK_URL], "parent_id": 999999})
    assert r.status == 422
    assert (await r.json())["error"]["details"] == {"parent_id": "no such monitor"}
    assert await counts(controller) == {"notification_channels": 0, "monitors": 0, "heartbeats": 0}


@HEARTBEAT_PATHS
async def test_it_leaves_no_channel_when_a_heartbeat_insert_fails(
    api: aiohttp.ClientSession, controller: Running, path: str
) -> None:
    r = await api.post(path, json={**HEARTBEAT, "notifications": [SLACK_URL], "parent_id": 999999})
    assert r.status == 422
    assert await counts(controller) == {"notification_channels": 0, "monitors": 0, "heartbeats": 0}


@HEARTBEAT_PATHS
@pytest.mark.usefixtures("failing_token_write")
async def test_it_leaves_no_channel_or_monitor_when_the_token_write_fails(
    api: aiohttp.ClientSession, controller: Running, path: str
) -> None:
    r = await api.post(path, json={**HEARTBEAT, "notifications": [SLACK_URL]})
    assert r.status == 500
    assert "token write refused" not in await r.text()
    assert await counts(controller) == {"notification_channels": 0, "monitors": 0, "heartbeats": 0}


@HEARTBEAT_PATHS
async def test_it_writes_channel_monitor_and_token_together(
    api: aiohttp.ClientSession, controller: Running, path: str
) -> None:
    r = await api.post(path, json={**HEARTBEAT, "notifications": [SLACK_URL]})
    assert r.status == 201, await r.text()
    created: dict[str, Any] = (await r.json())["data"]
    assert await counts(controller) == {"notification_channels": 1, "monitors": 1, "heartbeats": 1}
    r = await api.get(f"/api/v1/monitors/{created['id']}")
    [channel_id] = (await r.json())["data"]["notifications"]
    r = await api.get(f"/api/v1/notification-channels/{channel_id}")
    assert (await r.json())["data"]["name"] == "slack for backup"
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.post(f"/api/v1/heartbeat/{created['token']}")).status == 200
    assert created["ping_url"] == f"{controller.base}/api/v1/heartbeat/{created['token']}"


async def test_it_writes_channel_and_monitor_of_other_kinds_together(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    r = await api.post("/api/v1/monitors", json={**HTTP, "notifications": [SLACK_URL]})
    assert r.status == 201
    created = (await r.json())["data"]
    assert "token" not in created and len(created["notifications"]) == 1
    assert await counts(controller) == {"notification_channels": 1, "monitors": 1, "heartbeats": 0}


@pytest.mark.parametrize(
    ("create", "body", "change"),
    [
        ("/api/v1/monitors", HTTP, "/api/v1/monitors/{id}"),
        ("/api/v1/heartbeats", HEARTBEAT, "/api/v1/heartbeats/{id}"),
    ],
    ids=["monitor", "heartbeat"],
)
async def test_it_leaves_no_channel_when_an_update_fails(
    api: aiohttp.ClientSession, controller: Running, create: str, body: dict[str, Any], change: str
) -> None:
    r = await api.post(create, json=body)
    monitor_id = (await r.json())["data"]["id"]
    url = change.format(id=monitor_id)
    r = await api.patch(url, json={"notifications": [SLACK_URL], "parent_id": 999999})
    assert r.status == 422
    assert (await r.json())["error"]["details"] == {"parent_id": "no such monitor"}
    assert (await counts(controller))["notification_channels"] == 0
    r = await api.patch(url, json={"notifications": [SLACK_URL]})
    assert r.status == 200 and (await counts(controller))["notification_channels"] == 1
