"""Slack incoming webhook: a fallback `text` plus Block Kit blocks.

https://api.slack.com/messaging/webhooks
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
from probefleet.controller.notifications.notifiers.render import Message, render

# Block Kit limits: header text 150 chars, section text 3000, at most 10 fields of 2000.
_HEADER_MAX = 150
_TEXT_MAX = 3000
_FIELDS_MAX = 10
_FIELD_MAX = 2000


class SlackConfig(ChannelConfig, tag="slack", tag_field="kind"):
    url: SecretUrl


def escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(msg: Message, event_id: int) -> list[dict[str, Any]]:
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{escape(k)}*\n{escape(v)}", _FIELD_MAX)}
        for k, v in msg.facts[:_FIELDS_MAX]
    ]
    section: dict[str, Any] = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": _clip(escape(msg.summary), _TEXT_MAX)},
    }
    if fields:
        section["fields"] = fields
    return [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{msg.emoji} {msg.title}", _HEADER_MAX)},
        },
        section,
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"probefleet · event {event_id} · {msg.timestamp}"}],
        },
    ]


def payload(note: Notification) -> dict[str, Any]:
    msg = render(note)
    return {"text": escape(f"{msg.title}: {msg.summary}"), "blocks": blocks(msg, note.event_id)}


async def send(session: aiohttp.ClientSession, config: SlackConfig, note: Notification) -> None:
    # Slack answers 404 no_service / 410 channel_is_archived for a deleted webhook:
    # the shared status mapping makes those permanent.
    await post_json(session, "slack", config.url, payload(note))
