"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per incident.

https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    HttpUrl,
    Notification,
    iso8601,
    post_json,
)
from probefleet.controller.notifications.notifiers.render import render

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_SUMMARY_MAX = 1024

Severity = Literal["critical", "error", "warning", "info"]
Action = Literal["trigger", "acknowledge", "resolve"]

ACTIONS: dict[str, Action] = {
    "monitor.down": "trigger",
    "incident.opened": "trigger",
    # Joins the open alert (same dedup_key), cancelled once the incident is resolved.
    "incident.diagnosed": "trigger",
    "monitor.degraded": "trigger",
    "ssl.expiring": "trigger",
    "region.unavailable": "trigger",
    "test": "trigger",
    "incident.acknowledged": "acknowledge",
    "monitor.up": "resolve",
    "incident.resolved": "resolve",
}
_EVENT_SEVERITY: dict[str, Severity] = {
    "monitor.degraded": "warning",
    "ssl.expiring": "warning",
    "region.unavailable": "error",
    "test": "info",
}
_INCIDENT_SEVERITY: dict[str, Severity] = {
    "critical": "critical",
    "high": "error",
    "major": "error",
    "error": "error",
    "medium": "warning",
    "minor": "warning",
    "warning": "warning",
    "low": "info",
    "info": "info",
}

RoutingKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{32}$", extra={"secret": "full"})]


class PagerDutyConfig(ChannelConfig, tag="pagerduty", tag_field="kind"):
    routing_key: RoutingKey
    severity: Severity | None = None
    events_url: HttpUrl = DEFAULT_EVENTS_URL


def dedup_key(note: Notification) -> str:
    """Stable per incident so trigger, acknowledge and resolve act on one alert."""
    if note.incident is not None:
        return f"probefleet-incident-{note.incident.id}"
    if note.event == "test":
        return f"probefleet-test-{note.event_id}"
    if note.event in ("ssl.expiring", "region.unavailable"):
        return f"probefleet-{note.event.replace('.', '-')}-{note.monitor.id}"
    return f"probefleet-monitor-{note.monitor.id}"


def severity(config: PagerDutyConfig, note: Notification) -> Severity:
    if config.severity is not None:
        return config.severity
    if note.event in _EVENT_SEVERITY:
        return _EVENT_SEVERITY[note.event]
    given = (note.incident.severity or "") if note.incident else ""
    return _INCIDENT_SEVERITY.get(given.lower(), "critical")


def payload(config: PagerDutyConfig, note: Notification) -> dict[str, Any]:
    action = ACTIONS[note.event]
    doc: dict[str, Any] = {
        "routing_key": config.routing_key,
        "event_action": action,
        "dedup_key": dedup_key(note),
    }
    if action != "trigger":
        return doc
    msg = render(note)
    summary = f"{msg.title}: {msg.summary}"
    doc["client"] = "probefleet"
    doc["payload"] = {
        "summary": summary[:_SUMMARY_MAX],
        "source": note.monitor.target or note.monitor.name,
        "severity": severity(config, note),
        "timestamp": msg.timestamp,
        "component": note.monitor.name,
        "group": note.monitor.type or None,
        "class": note.event,
        "custom_details": dict(msg.facts) | {"event_id": note.event_id, "monitor_id": note.monitor.id},
    }
    if note.incident is not None and note.incident.started_at is not None:
        doc["payload"]["custom_details"]["incident_started_at"] = iso8601(note.incident.started_at)
    links = [{"href": note.link, "text": "probefleet"}] if note.link else []
    if note.monitor.target.startswith(("http://", "https://")):
        links.append({"href": note.monitor.target, "text": note.monitor.name})
    if links:
        doc["links"] = links
    doc["payload"] = {k: v for k, v in doc["payload"].items() if v is not None}
    return doc


async def send(session: aiohttp.ClientSession, config: PagerDutyConfig, note: Notification) -> None:
    # 400 "invalid event" and a wrong routing key cannot succeed on retry; the shared
    # mapping makes them permanent, and 429 transient with its Retry-After.
    await post_json(session, "pagerduty", config.events_url, payload(config, note))
