"""Microsoft Teams incoming webhook (Workflows or legacy connector): one Adaptive Card.

https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
"""

from __future__ import annotations

from typing import Any

import aiohttp

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    Notification,
    SecretUrl,
    post_json,
)
from probefleet.controller.notifications.notifiers.render import Message, State, render

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_CARD_COLORS: dict[State, str] = {
    "down": "Attention",
    "up": "Good",
    "degraded": "Warning",
    "acknowledged": "Accent",
    "warning": "Warning",
    "info": "Default",
}


class TeamsConfig(ChannelConfig, tag="teams", tag_field="kind"):
    url: SecretUrl


def card(msg: Message, event_id: int) -> dict[str, Any]:
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": msg.title,
                "weight": "Bolder",
                "size": "Large",
                "color": _CARD_COLORS[msg.state],
                "wrap": True,
            },
            {"type": "TextBlock", "text": msg.summary, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in msg.facts]},
            {
                "type": "TextBlock",
                "text": f"probefleet · event {event_id} · {msg.timestamp}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }


def payload(note: Notification) -> dict[str, Any]:
    msg = render(note)
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": CARD_CONTENT_TYPE,
                "contentUrl": None,
                "content": card(msg, note.event_id),
            }
        ],
    }


async def send(session: aiohttp.ClientSession, config: TeamsConfig, note: Notification) -> None:
    await post_json(session, "teams", config.url, payload(note))
