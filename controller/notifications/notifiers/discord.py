"""Discord webhook: short `content` plus one embed coloured by state.

https://discord.com/developers/docs/resources/webhook#execute-webhook
"""

from __future__ import annotations

from typing import Annotated, Any

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    Notification,
    SecretUrl,
    post_json,
)
from probefleet.controller.notifications.notifiers.render import render

# Discord limits: content 2000, title 256, description 4096, 25 fields (name 256, value 1024).
_CONTENT_MAX = 2000
_TITLE_MAX = 256
_DESCRIPTION_MAX = 4096
_FIELDS_MAX = 25
_FIELD_NAME_MAX = 256
_FIELD_VALUE_MAX = 1024


class DiscordConfig(ChannelConfig, tag="discord", tag_field="kind"):
    url: SecretUrl
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | None = None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(note: Notification, username: str | None = None) -> dict[str, Any]:
    msg = render(note)
    embed = {
        "title": _clip(msg.title, _TITLE_MAX),
        "description": _clip(msg.summary, _DESCRIPTION_MAX),
        "color": msg.color,
        "timestamp": msg.timestamp,
        "fields": [
            {
                "name": _clip(k, _FIELD_NAME_MAX),
                "value": _clip(v, _FIELD_VALUE_MAX),
                "inline": len(v) <= 40,
            }
            for k, v in msg.facts[:_FIELDS_MAX]
        ],
        "footer": {"text": f"probefleet · event {note.event_id}"},
    }
    doc: dict[str, Any] = {
        "content": _clip(f"{msg.emoji} {msg.title}", _CONTENT_MAX),
        "embeds": [embed],
        # Monitor names are user input: never let them ping @everyone or a role.
        "allowed_mentions": {"parse": []},
    }
    if username:
        doc["username"] = username
    return doc


async def send(session: aiohttp.ClientSession, config: DiscordConfig, note: Notification) -> None:
    await post_json(session, "discord", config.url, payload(note, config.username))
