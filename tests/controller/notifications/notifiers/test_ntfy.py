from __future__ import annotations

import json
from email.header import decode_header, make_header

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import MonitorInfo, NotifierError
from probefleet.controller.notifications.notifiers.ntfy import NtfyConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, sample

TOKEN = "tk_secrettokenforprobefleettests"
PROTECTED = "ops-alerts"


def failure(status: int, code: int, error: str) -> web.Response:
    return web.json_response({"code": code, "http": status, "error": error}, status=status)


def ntfy(seen: Seen) -> web.Response:
    """ntfy's publish endpoint: body is the message, metadata in headers."""
    topic = seen.path.strip("/")
    auth = seen.headers.get("Authorization")
    if auth is not None and auth != f"Bearer {TOKEN}":
        return failure(401, 40101, "unauthorized")
    if topic == PROTECTED and auth is None:
        return failure(403, 40301, "forbidden")
    if not seen.body or len(seen.body) > 4096:
        return failure(413, 41301, "message too large")
    if seen.headers.get("Priority", "3") not in {"1", "2", "3", "4", "5"}:
        return failure(400, 40007, "invalid priority")
    return web.json_response({"id": "abc", "time": 1, "event": "message", "topic": topic})


def config(server_url: str, **extra: object) -> NtfyConfig:
    cfg = parse_config("ntfy", {"server_url": server_url, "topic": "probefleet", **extra})
    assert isinstance(cfg, NtfyConfig)
    return cfg


@pytest.mark.parametrize(
    ("event", "priority", "tag"),
    [
        ("monitor.down", "5", "rotating_light"),
        ("monitor.degraded", "4", "warning"),
        ("monitor.up", "3", "white_check_mark"),
        ("incident.acknowledged", "2", "eyes"),
    ],
    ids=["down", "degraded", "up", "acknowledged"],
)
async def test_it_sets_priority_and_tags_by_event(
    start_receiver: StartReceiver,
    session: aiohttp.ClientSession,
    event: str,
    priority: str,
    tag: str,
) -> None:
    receiver = await start_receiver(ntfy)
    await send(session, config(receiver.url()), sample(event))

    (seen,) = receiver.seen
    assert seen.path == "/probefleet"
    assert seen.headers["Priority"] == priority
    assert seen.headers["Tags"].split(",")[0] == tag
    assert seen.headers["Click"] == "https://example.com"
    assert "Main Website" in seen.body.decode()


async def test_it_encodes_non_ascii_titles(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(ntfy)
    note = sample(monitor=MonitorInfo(id=1, name="Café API ✓", target="tcp://db:5432"))
    await send(session, config(receiver.url()), note)

    seen = receiver.seen[0]
    title = str(make_header(decode_header(seen.headers["Title"])))
    assert title == "[DOWN] Café API ✓"
    assert "Click" not in seen.headers


async def test_a_tap_opens_the_incident_and_the_body_says_where_it_fails(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(ntfy)
    link = "https://status.example/console/incidents/456"
    await send(session, config(receiver.url()), sample("incident.opened", link=link))

    (seen,) = receiver.seen
    assert seen.headers["Click"] == link
    assert link in seen.body.decode()


async def test_it_authenticates_with_a_token(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(ntfy)
    await send(session, config(receiver.url(), topic=PROTECTED, token=TOKEN), sample())
    assert receiver.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("extra", "status"),
    [({"topic": PROTECTED}, 403), ({"token": "tk_wrong"}, 401)],
    ids=["no-token", "wrong-token"],
)
async def test_it_disables_on_auth_failures(
    start_receiver: StartReceiver,
    session: aiohttp.ClientSession,
    extra: dict[str, object],
    status: int,
) -> None:
    receiver = await start_receiver(ntfy)
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(), **extra), sample())
    assert err.value.permanent
    assert f"HTTP {status}" in err.value.message


async def test_it_retries_when_rate_limited(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(ntfy)
    body = json.dumps({"code": 42901, "http": 429, "error": "limit reached"})
    receiver.fail_next(429, body, {"Retry-After": "30"})
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert not err.value.permanent
    assert err.value.retry_after == 30


def test_it_never_shows_the_token() -> None:
    cfg = config("https://ntfy.sh", token=TOKEN)
    for text in (str(redact("ntfy", cfg)), repr(cfg), str(cfg)):
        assert TOKEN not in text
