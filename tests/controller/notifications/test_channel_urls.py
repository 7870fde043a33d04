"""Channel URLs in a monitor's `notifications` (reference 004): parsing, and the channel
each names, found or made through the monitors API on a real controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller.notifications import channel_urls
from tests.controller.conftest import Running, start_controller

SLACK = "https://hooks.slack.com/services/T0A1B2C3D/B0X9Y8Z7W/abc123"


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        ("slack://hooks/T0A1B2C3D/B0X9Y8Z7W/abc123", "slack", SLACK),
        ("slack://T0A1B2C3D/B0X9Y8Z7W/abc123", "slack", SLACK),
        ("slack://bot@T0A1B2C3D/B0X9Y8Z7W/abc123", "slack", SLACK),
        (SLACK, "slack", SLACK),
        ("discord://1234/AbCd", "discord", "https://discord.com/api/webhooks/1234/AbCd"),
        ("https://discordapp.com/api/webhooks/1/x", "discord", "https://discordapp.com/api/webhooks/1/x"),
        ("https://ops.example.com/hook?x=1", "webhook", "https://ops.example.com/hook?x=1"),
    ],
    ids=["004-hooks", "apprise", "apprise-botname", "slack-https", "discord", "discordapp", "webhook"],
)
def test_it_reads_channel_urls(url: str, kind: str, target: str) -> None:
    assert channel_urls.parse(url) == (kind, {"url": target})


@pytest.mark.parametrize(
    "url",
    ["slack://hooks/T0A1B2C3D/abc123", "discord://1234", "mailto:ops@example.com", "ftp://example.com/x"],
)
def test_it_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"slack|discord"):
        channel_urls.parse(url)


async def _create(api: aiohttp.ClientSession, **fields: Any) -> aiohttp.ClientResponse:
    body = {"name": "gateway", "url": "https://api.example.com/health", **fields}
    return await api.post("/api/v1/monitors", json=body)


async def test_a_url_names_one_channel_made_once(api: aiohttp.ClientSession) -> None:
    r = await _create(api, notifications=["slack://hooks/T0A1B2C3D/B0X9Y8Z7W/abc123", SLACK])
    first = (await r.json())["data"]
    assert r.status == 201 and len(first["notifications"]) == 1
    [channel_id] = first["notifications"]
    channel = (await (await api.get(f"/api/v1/notification-channels/{channel_id}")).json())["data"]
    assert (channel["kind"], channel["name"]) == ("slack", "slack for gateway")
    assert "abc123" not in str(channel["config"])  # the token stays a secret
    second = (await (await _create(api, notifications=[SLACK])).json())["data"]
    assert second["notifications"] == [channel_id]
    bulk = {"monitor_ids": [first["id"], second["id"]], "updates": {"notifications": ["discord://1/t"]}}
    r = await api.put("/api/v1/monitors/bulk", json=bulk)
    assert r.status == 200
    discord = {m["notifications"][0] for m in (await r.json())["data"]["monitors"]}
    assert len(discord) == 1 and discord != {channel_id}
    r = await _create(api, notifications=[channel_id, "slack://nope"])
    assert r.status == 422
    problem = (await r.json())["error"]["details"]["notifications[1]"]
    assert problem == "a slack:// URL has three tokens: slack://T…/B…/X…"
    assert len((await (await api.get("/api/v1/notification-channels")).json())["data"]) == 2


@pytest.fixture
async def strict(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url, notification_channels_allow_private=False)
    yield running
    await running.stop()


async def test_a_url_to_a_private_address_is_refused(strict: Running) -> None:
    headers = {"Authorization": f"Bearer {strict.admin_key}"}
    async with aiohttp.ClientSession(base_url=strict.base, headers=headers) as api:
        r = await _create(api, notifications=["http://127.0.0.1:8080/hook"])
        assert r.status == 422
        assert "private" in (await r.json())["error"]["details"]["notifications[0]"]
        assert (await (await api.get("/api/v1/notification-channels")).json())["data"] == []
