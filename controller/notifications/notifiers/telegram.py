"""Telegram Bot API sendMessage, HTML formatted.

https://core.telegram.org/bots/api#sendmessage
"""

from __future__ import annotations

import html
from typing import Annotated, Any

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    HttpUrl,
    Notification,
    NotifierError,
    Reply,
    error_for_status,
    post_json,
    retry_after,
)
from probefleet.controller.notifications.notifiers.render import render

DEFAULT_API_URL = "https://api.telegram.org"
_TEXT_MAX = 4096
_QUIET_EVENTS = {"monitor.up", "incident.resolved", "incident.acknowledged", "incident.diagnosed", "test"}

BotToken = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9]+:[A-Za-z0-9_-]+$", max_length=256, extra={"secret": "full"})
]


class TelegramConfig(ChannelConfig, tag="telegram", tag_field="kind"):
    bot_token: BotToken
    chat_id: int | Annotated[str, msgspec.Meta(pattern=r"^@[A-Za-z0-9_]{5,}$|^-?[0-9]+$")]
    message_thread_id: int | None = None
    api_url: HttpUrl = DEFAULT_API_URL


class _Failure(msgspec.Struct):
    description: str = ""
    parameters: dict[str, Any] = {}


def text(note: Notification) -> str:
    """HTML text; facts are dropped whole when too long, since a cut tag is a 400."""
    msg = render(note)
    lines = [
        f"{msg.emoji} <b>{html.escape(msg.title[:256])}</b>",
        html.escape(msg.summary[:1024]),
        "",
        *(f"<b>{html.escape(k)}:</b> {html.escape(v[:512])}" for k, v in msg.facts),
    ]
    while len("\n".join(lines)) > _TEXT_MAX:
        lines.pop()
    return "\n".join(lines)


def payload(config: TelegramConfig, note: Notification) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "chat_id": config.chat_id,
        "text": text(note),
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
        "disable_notification": note.event in _QUIET_EVENTS,
    }
    if config.message_thread_id is not None:
        doc["message_thread_id"] = config.message_thread_id
    return doc


def _error(reply: Reply) -> NotifierError | None:
    """Telegram puts retry_after and a migrated chat id in the body, not only in headers."""
    error = error_for_status("telegram", reply.status, reply.body)
    if error is None:
        return None
    try:
        failure = msgspec.json.decode(reply.body, type=_Failure)
    except msgspec.DecodeError:
        failure = _Failure(description=reply.body[:200])
    params = failure.parameters
    if "migrate_to_chat_id" in params:
        return NotifierError(
            f"telegram: group moved to a supergroup, set chat_id to {params['migrate_to_chat_id']}",
            permanent=True,
        )
    wait = params.get("retry_after", reply.headers.get("Retry-After"))
    message = f"telegram: HTTP {reply.status}: {failure.description}"
    return NotifierError(message, error.permanent, retry_after(str(wait)) if wait else None)


async def send(session: aiohttp.ClientSession, config: TelegramConfig, note: Notification) -> None:
    # The token is in the path; the shared helper never puts URLs in error messages.
    url = f"{config.api_url.rstrip('/')}/bot{config.bot_token}/sendMessage"
    reply = await post_json(session, "telegram", url, payload(config, note), raise_for_status=False)
    if (error := _error(reply)) is not None:
        raise error
