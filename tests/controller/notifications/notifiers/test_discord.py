from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import IncidentInfo, NotifierError
from probefleet.controller.notifications.notifiers.discord import DiscordConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, sample

TOKEN_PATH = "/api/webhooks/1234567890/SECRETWEBHOOKTOKENabcd"


def error(status: int, message: str, code: int) -> web.Response:
    return web.json_response({"message": message, "code": code}, status=status)


def discord(seen: Seen) -> web.Response:
    """Discord's execute-webhook limits; answers 204 without ?wait=true."""
    doc = seen.json()
    content, embeds = doc.get("content", ""), doc.get("embeds", [])
    if not content and not embeds:
        return error(400, "Cannot send an empty message", 50006)
    if len(content) > 2000 or len(embeds) > 10:
        return error(400, "Invalid Form Body", 50035)
    for embed in embeds:
        fields = embed.get("fields", [])
        total = len(embed.get("title", "")) + len(embed.get("description", ""))
        total += sum(len(f["name"]) + len(f["value"]) for f in fields)
        if (
            len(embed.get("title", "")) > 256
            or len(embed.get("description", "")) > 4096
            or len(fields) > 25
            or any(len(f["name"]) > 256 or len(f["value"]) > 1024 for f in fields)
            or not 0 <= embed.get("color", 0) <= 0xFFFFFF
            or total > 6000
        ):
            return error(400, "Invalid Form Body", 50035)
    return web.Response(status=204)


def config(url: str, **extra: object) -> DiscordConfig:
    cfg = parse_config("discord", {"url": url, **extra})
    assert isinstance(cfg, DiscordConfig)
    return cfg


@pytest.mark.parametrize(
    ("event", "color"),
    [("monitor.down", 0xD92D20), ("monitor.up", 0x12B76A), ("monitor.degraded", 0xF79009)],
    ids=["down-red", "up-green", "degraded-amber"],
)
async def test_it_posts_an_embed_coloured_by_state(
    start_receiver: StartReceiver, session: aiohttp.ClientSession, event: str, color: int
) -> None:
    receiver = await start_receiver(discord)
    await send(session, config(receiver.url(TOKEN_PATH), username="probefleet"), sample(event))

    doc = receiver.seen[0].json()
    (embed,) = doc["embeds"]
    assert embed["color"] == color
    assert "Main Website" in doc["content"]
    assert doc["username"] == "probefleet"
    assert doc["allowed_mentions"] == {"parse": []}


async def test_it_clips_long_fields(start_receiver: StartReceiver, session: aiohttp.ClientSession) -> None:
    receiver = await start_receiver(discord)
    note = sample(incident=IncidentInfo(id=1, root_cause="boom " * 500))
    await send(session, config(receiver.url(TOKEN_PATH)), note)
    assert len(receiver.seen) == 1


async def test_it_honours_discord_rate_limits(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(discord)
    body = json.dumps({"message": "You are being rate limited.", "retry_after": 2.5})
    receiver.fail_next(429, body, {"Retry-After": "3", "Content-Type": "application/json"})
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(TOKEN_PATH)), sample())
    assert not err.value.permanent
    assert err.value.retry_after == 3


async def test_it_disables_a_deleted_webhook(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(discord)
    receiver.fail_next(404, json.dumps({"message": "Unknown Webhook", "code": 10015}))
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(TOKEN_PATH)), sample())
    assert err.value.permanent
    assert "Unknown Webhook" in err.value.message


def test_it_masks_the_webhook_token() -> None:
    cfg = config("https://discord.com" + TOKEN_PATH)
    for text in (str(redact("discord", cfg)), repr(cfg), str(cfg)):
        assert "SECRETWEBHOOKTOKEN" not in text
