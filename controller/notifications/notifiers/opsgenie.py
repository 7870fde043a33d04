"""Opsgenie Alert API: create on trouble, acknowledge and close by alias.

https://docs.opsgenie.com/docs/alert-api
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    HttpUrl,
    Notification,
    SecretStr,
    post_json,
)
from probefleet.controller.notifications.notifiers.pagerduty import dedup_key
from probefleet.controller.notifications.notifiers.render import render

DEFAULT_API_URL = "https://api.opsgenie.com"
EU_API_URL = "https://api.eu.opsgenie.com"
# Opsgenie limits: message 130, alias 512, description 15000, tags 20 of 50 chars.
_MESSAGE_MAX = 130
_DESCRIPTION_MAX = 15000

Priority = Literal["P1", "P2", "P3", "P4", "P5"]
_PRIORITIES: dict[str, Priority] = {
    "monitor.down": "P1",
    "incident.opened": "P1",
    "incident.diagnosed": "P1",
    "region.unavailable": "P2",
    "monitor.degraded": "P3",
    "ssl.expiring": "P3",
    "test": "P5",
}
_CLOSE = {"monitor.up", "incident.resolved"}
_ACK = {"incident.acknowledged"}

Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class OpsgenieConfig(ChannelConfig, tag="opsgenie", tag_field="kind"):
    api_key: SecretStr
    api_url: HttpUrl = DEFAULT_API_URL
    priority: Priority | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=19)] = []
    team: str | None = None


def create_payload(config: OpsgenieConfig, note: Notification) -> dict[str, Any]:
    msg = render(note)
    doc: dict[str, Any] = {
        "message": msg.title[:_MESSAGE_MAX],
        "alias": dedup_key(note),
        "description": msg.text()[:_DESCRIPTION_MAX],
        "source": "probefleet",
        "entity": note.monitor.name,
        "tags": ["probefleet", *config.tags],
        "details": {k: v for k, v in msg.facts} | {"event_id": str(note.event_id)},
        "priority": config.priority or _PRIORITIES.get(note.event, "P3"),
    }
    if config.team:
        doc["responders"] = [{"type": "team", "name": config.team}]
    return doc


def request_for(config: OpsgenieConfig, note: Notification) -> tuple[str, dict[str, Any]]:
    """The path and body for this event: create, acknowledge or close the alias."""
    base = f"{config.api_url.rstrip('/')}/v2/alerts"
    alias = quote(dedup_key(note), safe="")
    if note.event in _CLOSE or note.event in _ACK:
        action = "close" if note.event in _CLOSE else "acknowledge"
        body = {"source": "probefleet", "note": render(note).summary}
        return f"{base}/{alias}/{action}?identifierType=alias", body
    return base, create_payload(config, note)


async def send(session: aiohttp.ClientSession, config: OpsgenieConfig, note: Notification) -> None:
    # Opsgenie answers 202 and processes asynchronously: a close for an alias that
    # was never created is accepted and dropped there, not an error here.
    url, body = request_for(config, note)
    await post_json(session, "opsgenie", url, body, headers={"Authorization": f"GenieKey {config.api_key}"})
