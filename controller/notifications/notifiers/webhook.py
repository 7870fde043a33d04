"""Generic webhook: a signed JSON document per event (event name, monitor, incident, check)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Literal

import aiohttp
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    Notification,
    SecretHeaders,
    SecretStr,
    SecretUrl,
    iso8601,
    request,
)

SIGNATURE_HEADER = "X-Probefleet-Signature"
EVENT_HEADER = "X-Probefleet-Event"
DELIVERY_HEADER = "X-Probefleet-Delivery"
_RESERVED = {"content-type", "user-agent", "host", "content-length"} | {
    h.lower() for h in (SIGNATURE_HEADER, EVENT_HEADER, DELIVERY_HEADER)
}


class WebhookConfig(ChannelConfig, tag="webhook", tag_field="kind"):
    url: SecretUrl
    secret: SecretStr | None = None
    headers: SecretHeaders = {}
    method: Literal["POST", "PUT", "PATCH"] = "POST"

    def __post_init__(self) -> None:
        clash = sorted(h for h in self.headers if h.lower() in _RESERVED)
        if clash:
            raise ValueError(f"headers may not set {', '.join(clash)}")
        if any("\r" in v or "\n" in v for v in self.headers.values()):
            raise ValueError("header values may not contain line breaks")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def payload(note: Notification) -> dict[str, Any]:
    """The JSON document a webhook receives; `monitor.url` and `monitor.target` are aliases."""
    m, inc, chk = note.monitor, note.incident, note.check
    doc: dict[str, Any] = {
        "event": note.event,
        "event_id": note.event_id,
        "timestamp": iso8601(note.timestamp),
        "reminder": note.reminder,
        "escalation_level": note.escalation_level,
        "monitor": {
            "id": m.id,
            "name": m.name,
            "type": m.type,
            "url": m.target,
            "target": m.target,
            "status": m.status,
            "locations": m.locations,
        },
    }
    if note.link:
        doc["link"] = note.link
    if note.diagnostics:
        doc["diagnostics"] = note.diagnostics
    if note.group:
        doc["group"] = {
            "count": len(note.group) + 1,
            "monitors": [
                {"id": g.id, "name": g.name, "target": g.target, "status": g.status} for g in note.group
            ],
        }
    if inc is not None:
        doc["incident"] = _drop_none(
            {
                "id": inc.id,
                "status": inc.status,
                "severity": inc.severity,
                "started_at": iso8601(inc.started_at) if inc.started_at is not None else None,
                "resolved_at": iso8601(inc.resolved_at) if inc.resolved_at is not None else None,
                "duration": inc.duration_s,
                "root_cause": inc.root_cause,
                "affected_regions": inc.affected_regions,
                "checks_failed": inc.checks_failed,
                "checks_total": inc.checks_total,
            }
        )
    if chk is not None:
        doc["check"] = _drop_none(
            {
                "region": chk.region,
                "status": chk.status,
                "reason": chk.reason,
                "error": chk.message,
                "status_code": chk.status_code,
                "response_time": chk.response_time_ms,
            }
        )
    return doc


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Header value `t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` and is no older than `tolerance_s`.

    Several `v1=` entries are accepted so a secret can be rotated without a gap.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, c) for c in candidates)


async def send(session: aiohttp.ClientSession, config: WebhookConfig, note: Notification) -> None:
    body = msgspec.json.encode(payload(note))
    headers = {
        **config.headers,
        "Content-Type": "application/json",
        EVENT_HEADER: note.event,
        DELIVERY_HEADER: note.delivery_key or str(note.event_id),
    }
    if config.secret:
        headers[SIGNATURE_HEADER] = sign(config.secret, body, int(time.time()))
    await request(session, "webhook", config.url, method=config.method, data=body, headers=headers)
