from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import NotifierError
from probefleet.controller.notifications.notifiers.pagerduty import PagerDutyConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, sample

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SEVERITIES = {"critical", "error", "warning", "info"}


def invalid(*errors: str) -> web.Response:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return web.json_response(body, status=400)


class PagerDuty:
    """Events API v2 enqueue: validates like the real endpoint and keeps alert states."""

    def __init__(self) -> None:
        self.alerts: dict[str, str] = {}

    def __call__(self, seen: Seen) -> web.Response:
        if seen.path != "/v2/enqueue":
            return web.Response(status=404)
        doc = seen.json()
        action, key = doc.get("event_action"), doc.get("dedup_key")
        if len(doc.get("routing_key", "")) != 32:
            return invalid("'routing_key' must be 32 characters")
        if action not in {"trigger", "acknowledge", "resolve"}:
            return invalid("'event_action' is invalid")
        if not key or len(key) > 255:
            return invalid("'dedup_key' is required")
        if action == "trigger":
            payload = doc.get("payload", {})
            if not payload.get("summary") or len(payload["summary"]) > 1024:
                return invalid("'payload.summary' is missing or too long")
            if not payload.get("source"):
                return invalid("'payload.source' is missing")
            if payload.get("severity") not in SEVERITIES:
                return invalid("'payload.severity' is invalid")
        self.alerts[key] = {"trigger": "triggered"}.get(action, f"{action}d")
        body = {"status": "success", "message": "Event processed", "dedup_key": key}
        return web.json_response(body, status=202)


def config(events_url: str, **extra: object) -> PagerDutyConfig:
    data = {"routing_key": ROUTING_KEY, "events_url": events_url, **extra}
    cfg = parse_config("pagerduty", data)
    assert isinstance(cfg, PagerDutyConfig)
    return cfg


async def test_it_triggers_acknowledges_and_resolves_one_alert(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    pagerduty = PagerDuty()
    receiver = await start_receiver(pagerduty)
    cfg = config(receiver.url("/v2/enqueue"))

    await send(session, cfg, sample("incident.opened"))
    assert pagerduty.alerts == {"probefleet-incident-456": "triggered"}
    await send(session, cfg, sample("incident.acknowledged"))
    assert pagerduty.alerts == {"probefleet-incident-456": "acknowledged"}
    await send(session, cfg, sample("incident.resolved"))
    assert pagerduty.alerts == {"probefleet-incident-456": "resolved"}

    trigger = receiver.seen[0].json()
    assert trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["source"] == "https://example.com"
    assert trigger["payload"]["summary"].startswith("[INCIDENT] Main Website")
    assert "payload" not in receiver.seen[2].json()


@pytest.mark.parametrize(
    ("event", "extra", "severity"),
    [
        ("monitor.degraded", {}, "warning"),
        ("monitor.down", {}, "error"),
        ("monitor.down", {"severity": "critical"}, "critical"),
        ("test", {}, "info"),
    ],
    ids=["degraded", "incident-high", "configured", "test"],
)
async def test_it_maps_severity(
    start_receiver: StartReceiver,
    session: aiohttp.ClientSession,
    event: str,
    extra: dict[str, object],
    severity: str,
) -> None:
    receiver = await start_receiver(PagerDuty())
    await send(session, config(receiver.url("/v2/enqueue"), **extra), sample(event))
    assert receiver.seen[0].json()["payload"]["severity"] == severity


async def test_it_keys_alerts_by_monitor_without_an_incident(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    pagerduty = PagerDuty()
    receiver = await start_receiver(pagerduty)
    cfg = config(receiver.url("/v2/enqueue"))
    await send(session, cfg, sample("monitor.down", incident=None))
    await send(session, cfg, sample("monitor.up", incident=None))
    assert pagerduty.alerts == {"probefleet-monitor-123": "resolved"}


async def test_it_classifies_pagerduty_errors(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(PagerDuty())
    cfg = config(receiver.url("/v2/enqueue"))
    receiver.fail_next(400, '{"status":"invalid event"}')
    receiver.fail_next(429, "", {"Retry-After": "60"})
    receiver.fail_next(503, "")
    errors = []
    for _ in range(3):
        with pytest.raises(NotifierError) as err:
            await send(session, cfg, sample())
        errors.append((err.value.permanent, err.value.retry_after))
    assert errors == [(True, None), (False, 60), (False, None)]


def test_it_never_shows_the_routing_key() -> None:
    cfg = config("https://events.pagerduty.com/v2/enqueue")
    for text in (str(redact("pagerduty", cfg)), repr(cfg), str(cfg)):
        assert ROUTING_KEY not in text
