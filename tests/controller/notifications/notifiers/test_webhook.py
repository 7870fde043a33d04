from __future__ import annotations

import time
from datetime import datetime

import aiohttp
import msgspec
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import NotifierError
from probefleet.controller.notifications.notifiers.webhook import WebhookConfig, send, sign, verify_signature
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, bad_request, sample

SECRET = "whsec_0123456789abcdef0123456789abcdef"


def reference_shape(seen: Seen) -> web.Response:
    """A receiver written against references 000 and 003."""
    if seen.headers.get("Content-Type") != "application/json":
        return bad_request("json expected")
    doc = seen.json()
    if doc.get("event") not in {"monitor.down", "monitor.up", "incident.resolved", "test"}:
        return bad_request("unknown event")
    datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
    monitor = doc["monitor"]
    if not {"id", "name", "type", "status", "url", "target"} <= monitor.keys():
        return bad_request("monitor fields missing")
    return web.Response(text="OK")


def config(url: str, **extra: object) -> WebhookConfig:
    cfg = parse_config("webhook", {"url": url, **extra})
    assert isinstance(cfg, WebhookConfig)
    return cfg


async def test_it_posts_the_reference_payload_shape(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(reference_shape)
    await send(session, config(receiver.url("/hooks/monitoring")), sample())

    (seen,) = receiver.seen
    doc = seen.json()
    assert doc["event"] == "monitor.down"
    assert doc["timestamp"] == "2024-01-15T10:30:00Z"
    assert doc["monitor"]["url"] == doc["monitor"]["target"] == "https://example.com"
    assert doc["incident"]["id"] == 456
    assert doc["incident"]["started_at"] == "2024-01-15T10:29:45Z"
    assert doc["check"]["region"] == "us-east"
    assert seen.headers["X-Probefleet-Event"] == "monitor.down"
    assert seen.headers["X-Probefleet-Delivery"] == "42"
    assert "X-Probefleet-Signature" not in seen.headers


async def test_it_signs_so_the_receiver_can_verify(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    def verifying(seen: Seen) -> web.Response:
        header = seen.headers.get("X-Probefleet-Signature", "")
        if not verify_signature(SECRET, header, seen.body):
            return bad_request("bad signature", 401)
        return reference_shape(seen)

    receiver = await start_receiver(verifying)
    await send(session, config(receiver.url(), secret=SECRET), sample("monitor.up"))

    (seen,) = receiver.seen
    header = seen.headers["X-Probefleet-Signature"]
    assert verify_signature(SECRET, header, seen.body)
    assert not verify_signature(SECRET, header, seen.body.replace(b"up", b"UP"))
    assert not verify_signature("another-secret", header, seen.body)
    assert not verify_signature(SECRET, header, seen.body, now=time.time() + 301)


def test_it_rejects_malformed_and_replayed_signatures() -> None:
    body = b'{"event":"test"}'
    header = sign(SECRET, body, 1_700_000_000)
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body, now=1_700_000_400)
    assert not verify_signature(SECRET, header, body, now=1_699_999_000)
    assert not verify_signature(SECRET, "v1=abc", body)
    assert not verify_signature(SECRET, "t=1700000000", body, now=1_700_000_000)
    assert not verify_signature(SECRET, "garbage", body)
    rotated = f"{header},v1={'0' * 64}"
    assert verify_signature(SECRET, rotated, body, now=1_700_000_000)


async def test_it_sends_custom_headers_and_method(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(reference_shape)
    cfg = config(receiver.url(), method="PUT", headers={"Authorization": "Bearer abc"})
    await send(session, cfg, sample("test"))

    (seen,) = receiver.seen
    assert seen.method == "PUT"
    assert seen.headers["Authorization"] == "Bearer abc"


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(404, True), (410, True), (401, True), (400, True), (500, False), (503, False), (408, False)],
    ids=["404", "410", "401", "400", "500", "503", "408"],
)
async def test_it_classifies_http_errors(
    start_receiver: StartReceiver, session: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    receiver = await start_receiver(reference_shape)
    receiver.fail_next(status, "nope")
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert err.value.permanent is permanent
    assert str(status) in err.value.message


async def test_it_honours_retry_after_on_429(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(reference_shape)
    receiver.fail_next(429, "slow down", {"Retry-After": "7"})
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert not err.value.permanent
    assert err.value.retry_after == 7


async def test_it_does_not_follow_redirects(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(reference_shape)
    receiver.fail_next(301, headers={"Location": receiver.url("/elsewhere")})
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert err.value.permanent
    assert [s.path for s in receiver.seen] == ["/"]


async def test_it_treats_connection_refused_as_transient(
    session: aiohttp.ClientSession, closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}/hook-token-abcdefgh"
    with pytest.raises(NotifierError) as err:
        await send(session, config(url), sample())
    assert not err.value.permanent
    assert "hook-token-abcdefgh" not in str(err.value)


async def test_it_treats_a_slow_receiver_as_transient(start_receiver: StartReceiver) -> None:
    receiver = await start_receiver(reference_shape)
    receiver.delay_s = 1.0
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(NotifierError) as err:
            await send(session, config(receiver.url()), sample())
    assert not err.value.permanent
    assert "timed out" in err.value.message


def test_it_never_shows_the_url_secret_or_header_values() -> None:
    cfg = config(
        "https://hooks.example.com/t/SECRETPATHTOKEN123456",
        secret=SECRET,
        headers={"Authorization": "Bearer HEADERTOKEN"},
    )
    for shown in (str(redact("webhook", cfg)), repr(cfg), str(cfg)):
        for secret in (SECRET, "SECRETPATHTOKEN123456", "HEADERTOKEN"):
            assert secret not in shown
    assert redact("webhook", cfg)["secret"] == "<redacted>"
    assert redact("webhook", cfg)["url"].startswith("https://hooks.example.com/")


def test_it_refuses_headers_it_sets_itself() -> None:
    with pytest.raises(msgspec.ValidationError, match="x-probefleet-signature"):
        config("http://127.0.0.1/", headers={"x-probefleet-signature": "forged"})


def test_it_refuses_header_values_with_line_breaks() -> None:
    with pytest.raises(msgspec.ValidationError, match="line breaks"):
        config("http://127.0.0.1/", headers={"X-Team": "ops\r\nX-Injected: 1"})
