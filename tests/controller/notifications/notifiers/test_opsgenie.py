from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import MonitorInfo, NotifierError
from probefleet.controller.notifications.notifiers.opsgenie import OpsgenieConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, sample

API_KEY = "eb243592-faa2-4ba2-a551-1afdf565c889"


def reply(status: int, **body: object) -> web.Response:
    return web.json_response({"took": 0.01, "requestId": "req-1", **body}, status=status)


class Opsgenie:
    """Alert API v2: create, then acknowledge and close by alias; answers 202."""

    def __init__(self) -> None:
        self.alerts: dict[str, str] = {}

    def __call__(self, seen: Seen) -> web.Response:
        if seen.headers.get("Authorization") != f"GenieKey {API_KEY}":
            return reply(401, message="Could not authenticate")
        parts = seen.path.strip("/").split("/")
        doc = seen.json()
        if parts == ["v2", "alerts"]:
            if not doc.get("message") or len(doc["message"]) > 130:
                return reply(422, message="Request body is not processable")
            if len(doc.get("alias", "")) > 512:
                return reply(422, message="Alias is too long")
            self.alerts[doc.get("alias", "generated")] = "open"
        elif len(parts) == 4 and parts[3] in {"close", "acknowledge"}:
            if seen.query.get("identifierType") != "alias":
                return reply(422, message="identifierType must be alias")
            self.alerts[parts[2]] = {"close": "closed", "acknowledge": "acked"}[parts[3]]
        else:
            return reply(404, message="Not found")
        return reply(202, result="Request will be processed")


def config(api_url: str, **extra: object) -> OpsgenieConfig:
    cfg = parse_config("opsgenie", {"api_key": API_KEY, "api_url": api_url, **extra})
    assert isinstance(cfg, OpsgenieConfig)
    return cfg


async def test_it_creates_acknowledges_and_closes_by_alias(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    opsgenie = Opsgenie()
    receiver = await start_receiver(opsgenie)
    cfg = config(receiver.url(), tags=["web"], team="sre")

    await send(session, cfg, sample("incident.opened"))
    assert opsgenie.alerts == {"probefleet-incident-456": "open"}
    await send(session, cfg, sample("incident.acknowledged"))
    assert opsgenie.alerts == {"probefleet-incident-456": "acked"}
    await send(session, cfg, sample("incident.resolved"))
    assert opsgenie.alerts == {"probefleet-incident-456": "closed"}

    created = receiver.seen[0].json()
    assert created["priority"] == "P1"
    assert created["tags"] == ["probefleet", "web"]
    assert created["responders"] == [{"type": "team", "name": "sre"}]


async def test_it_clips_the_message_to_130_characters(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(Opsgenie())
    note = sample(monitor=MonitorInfo(id=1, name="n" * 300))
    await send(session, config(receiver.url()), note)
    assert len(receiver.seen[0].json()["message"]) == 130


async def test_it_disables_on_a_bad_key(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(Opsgenie())
    cfg = parse_config("opsgenie", {"api_key": "wrong-key-123", "api_url": receiver.url()})
    assert isinstance(cfg, OpsgenieConfig)
    with pytest.raises(NotifierError) as err:
        await send(session, cfg, sample())
    assert err.value.permanent
    assert "Could not authenticate" in err.value.message
    assert "wrong-key-123" not in err.value.message


async def test_it_retries_when_rate_limited(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(Opsgenie())
    receiver.fail_next(429, '{"message":"Rate limit exceeded"}')
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert not err.value.permanent


def test_it_never_shows_the_api_key() -> None:
    cfg = config("https://api.eu.opsgenie.com")
    for text in (str(redact("opsgenie", cfg)), repr(cfg), str(cfg)):
        assert API_KEY not in text
