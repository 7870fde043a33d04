"""ntfy: the message in the body, title, tags and priority in headers.

https://docs.ntfy.sh/publish/
"""

from __future__ import annotations

import base64
from typing import Annotated

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    HttpUrl,
    Notification,
    SecretStr,
    request,
)
from probefleet.controller.notifications.notifiers.render import State, render

DEFAULT_SERVER = "https://ntfy.sh"
# ntfy turns a body over 4096 bytes into an attachment, or refuses it when
# attachments are off, so the text is cut to fit.
_BODY_MAX = 4096

PRIORITIES: dict[str, int] = {
    "monitor.down": 5,
    "incident.opened": 5,
    "incident.diagnosed": 3,
    "monitor.degraded": 4,
    "ssl.expiring": 4,
    "region.unavailable": 4,
    "monitor.up": 3,
    "incident.resolved": 3,
    "incident.acknowledged": 2,
    "test": 3,
}
_TAGS: dict[State, str] = {
    "down": "rotating_light",
    "up": "white_check_mark",
    "degraded": "warning",
    "acknowledged": "eyes",
    "warning": "warning",
    "info": "information_source",
}


class NtfyConfig(ChannelConfig, tag="ntfy", tag_field="kind"):
    topic: Annotated[str, msgspec.Meta(pattern=r"^[-_A-Za-z0-9]{1,64}$")]
    server_url: HttpUrl = DEFAULT_SERVER
    token: SecretStr | None = None


def header_value(text: str) -> str:
    """HTTP headers are latin-1; ntfy decodes RFC 2047 words for anything else."""
    if text.isascii():
        return text
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode()}?="


def _clip_bytes(text: str, limit: int) -> bytes:
    data = text.encode()
    return data if len(data) <= limit else data[:limit].decode(errors="ignore").encode()


def headers(config: NtfyConfig, note: Notification) -> dict[str, str]:
    msg = render(note)
    out = {
        "Title": header_value(msg.title),
        "Tags": f"{_TAGS[msg.state]},probefleet",
        "Priority": str(PRIORITIES[note.event]),
        "Content-Type": "text/plain; charset=utf-8",
    }
    # A tap opens the incident (its region x phase matrix, evidence, diagnoses) when the
    # controller has a public address; else the monitored page.
    if note.link:
        out["Click"] = note.link
    elif note.monitor.target.startswith(("http://", "https://")):
        out["Click"] = note.monitor.target
    if config.token:
        out["Authorization"] = f"Bearer {config.token}"
    return out


async def send(session: aiohttp.ClientSession, config: NtfyConfig, note: Notification) -> None:
    url = f"{config.server_url.rstrip('/')}/{config.topic}"
    body = _clip_bytes(render(note).text(), _BODY_MAX)
    await request(session, "ntfy", url, data=body, headers=headers(config, note))
