from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import MonitorInfo, NotifierError
from probefleet.controller.notifications.notifiers.slack import SlackConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, bad_request, sample

TOKEN_PATH = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXabcd"


def slack(seen: Seen) -> web.Response:
    """Slack's incoming webhook: `text` required, Block Kit limits, answers "ok"."""
    doc = seen.json()
    if not isinstance(doc.get("text"), str) or not doc["text"]:
        return bad_request("no_text")
    blocks = doc.get("blocks", [])
    if len(blocks) > 50:
        return bad_request("invalid_blocks")
    for block in blocks:
        if block["type"] == "header" and (
            block["text"]["type"] != "plain_text" or len(block["text"]["text"]) > 150
        ):
            return bad_request("invalid_blocks")
        if block["type"] == "section":
            fields = block.get("fields", [])
            if len(block["text"]["text"]) > 3000 or len(fields) > 10:
                return bad_request("invalid_blocks")
            if any(len(f["text"]) > 2000 for f in fields):
                return bad_request("invalid_blocks")
    return web.Response(text="ok", content_type="text/html")


def config(url: str) -> SlackConfig:
    cfg = parse_config("slack", {"url": url})
    assert isinstance(cfg, SlackConfig)
    return cfg


async def test_it_posts_text_and_blocks(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(slack)
    await send(session, config(receiver.url(TOKEN_PATH)), sample())

    doc = receiver.seen[0].json()
    assert doc["text"].startswith("[DOWN] Main Website")
    header = doc["blocks"][0]["text"]["text"]
    assert "[DOWN] Main Website" in header
    fields = " ".join(f["text"] for f in doc["blocks"][1]["fields"])
    assert "Connection timeout" in fields


async def test_it_escapes_and_clips_user_text(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(slack)
    name = "<!channel> & " + "x" * 400
    note = sample(monitor=MonitorInfo(id=1, name=name, target="https://example.com"))
    await send(session, config(receiver.url(TOKEN_PATH)), note)

    doc = receiver.seen[0].json()
    assert "<!channel>" not in doc["text"]
    assert "&lt;!channel&gt; &amp;" in doc["text"]


@pytest.mark.parametrize(
    ("status", "body", "permanent"),
    [
        (404, "no_service", True),
        (410, "channel_is_archived", True),
        (403, "action_prohibited", True),
        (500, "rollup_error", False),
    ],
    ids=["deleted-webhook", "archived-channel", "prohibited", "server-error"],
)
async def test_it_classifies_slack_errors(
    start_receiver: StartReceiver,
    session: aiohttp.ClientSession,
    status: int,
    body: str,
    permanent: bool,
) -> None:
    receiver = await start_receiver(slack)
    receiver.fail_next(status, body)
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(TOKEN_PATH)), sample())
    assert err.value.permanent is permanent
    assert body in err.value.message
    assert "XXXXabcd" not in err.value.message


def test_it_masks_the_webhook_url() -> None:
    cfg = config("https://hooks.slack.com" + TOKEN_PATH)
    shown = redact("slack", cfg)["url"]
    assert shown == "https://hooks.slack.com/…/****abcd"
    for text in (shown, repr(cfg), str(cfg)):
        assert TOKEN_PATH not in text
        assert "B0000000" not in text
