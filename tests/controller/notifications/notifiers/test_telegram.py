from __future__ import annotations

import json
from html.parser import HTMLParser

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import MonitorInfo, NotifierError
from probefleet.controller.notifications.notifiers.telegram import TelegramConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, sample

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijk"
CHATS = {-1001234567890, 42}
MIGRATED = -4242


class _Entities(HTMLParser):
    """Telegram's HTML parse mode: a few tags, which must be balanced."""

    allowed = {"b", "strong", "i", "em", "u", "s", "code", "pre", "a"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.valid = True

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.valid &= tag in self.allowed
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.valid &= bool(self.stack) and self.stack.pop() == tag


def failure(status: int, description: str, **parameters: object) -> web.Response:
    doc: dict[str, object] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        doc["parameters"] = parameters
    return web.json_response(doc, status=status)


def telegram(seen: Seen) -> web.Response:
    token, _, method = seen.path.removeprefix("/bot").partition("/")
    if token != TOKEN:
        return failure(401, "Unauthorized")
    if method != "sendMessage":
        return failure(404, "Not Found")
    doc = seen.json()
    if doc.get("chat_id") == MIGRATED:
        return failure(400, "Bad Request: group chat was upgraded", migrate_to_chat_id=-100999)
    if doc.get("chat_id") not in CHATS:
        return failure(400, "Bad Request: chat not found")
    text = doc.get("text", "")
    parser = _Entities()
    parser.feed(text)
    if not parser.valid or parser.stack:
        return failure(400, "Bad Request: can't parse entities")
    if not 1 <= len(text) <= 4096:
        return failure(400, "Bad Request: message is too long")
    return web.json_response({"ok": True, "result": {"message_id": 1, "text": text}})


def config(api_url: str, **extra: object) -> TelegramConfig:
    data = {"bot_token": TOKEN, "chat_id": 42, "api_url": api_url, **extra}
    cfg = parse_config("telegram", data)
    assert isinstance(cfg, TelegramConfig)
    return cfg


async def test_it_sends_html_to_the_chat(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(telegram)
    note = sample(monitor=MonitorInfo(id=1, name="<api> & co", target="https://example.com"))
    await send(session, config(receiver.url(), chat_id=-1001234567890), note)

    (seen,) = receiver.seen
    assert seen.path == f"/bot{TOKEN}/sendMessage"
    doc = seen.json()
    assert doc["parse_mode"] == "HTML"
    assert doc["chat_id"] == -1001234567890
    assert "<b>[DOWN] &lt;api&gt; &amp; co</b>" in doc["text"]
    assert doc["disable_notification"] is False


async def test_it_keeps_long_messages_parseable(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(telegram)
    note = sample(monitor=MonitorInfo(id=1, name="<b>" * 600, target="x" * 3000))
    await send(session, config(receiver.url()), note)
    assert len(receiver.seen[0].json()["text"]) <= 4096


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"chat_id": 7}, "chat not found"),
        ({"bot_token": "999:WrongTokenWrongToken"}, "Unauthorized"),
        ({"chat_id": MIGRATED}, "set chat_id to -100999"),
    ],
    ids=["unknown-chat", "bad-token", "migrated-group"],
)
async def test_it_disables_on_telegram_refusals(
    start_receiver: StartReceiver,
    session: aiohttp.ClientSession,
    extra: dict[str, object],
    expected: str,
) -> None:
    receiver = await start_receiver(telegram)
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(), **extra), sample())
    assert err.value.permanent
    assert expected in err.value.message
    assert "WrongToken" not in err.value.message


async def test_it_reads_retry_after_from_the_body(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(telegram)
    body = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 12"}
    receiver.fail_next(429, json.dumps(body | {"parameters": {"retry_after": 12}}))
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url()), sample())
    assert not err.value.permanent
    assert err.value.retry_after == 12


def test_it_never_shows_the_bot_token() -> None:
    cfg = config("https://api.telegram.org")
    assert redact("telegram", cfg)["bot_token"] == "<redacted>"
    for text in (str(redact("telegram", cfg)), repr(cfg), str(cfg)):
        assert "AAFakeToken" not in text
