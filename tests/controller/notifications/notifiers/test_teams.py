from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import NotifierError
from probefleet.controller.notifications.notifiers.teams import TeamsConfig, send
from tests.controller.notifications.notifiers.conftest import StartReceiver
from tests.controller.notifications.notifiers.receivers import Seen, bad_request, sample

WORKFLOW_PATH = (
    "/workflows/abc/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SIGNATURESECRETabcd"
)


def teams(seen: Seen) -> web.Response:
    """A Teams Workflows trigger: a message with one Adaptive Card; answers 202."""
    doc = seen.json()
    if doc.get("type") != "message" or not doc.get("attachments"):
        return bad_request("message with attachments expected")
    attachment = doc["attachments"][0]
    if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return bad_request("adaptive card expected")
    card = attachment["content"]
    if card.get("type") != "AdaptiveCard" or not card.get("version") or not card.get("body"):
        return bad_request("invalid card")
    if "sig" not in seen.query:
        return web.Response(status=401)
    return web.Response(status=202)


def config(url: str) -> TeamsConfig:
    cfg = parse_config("teams", {"url": url})
    assert isinstance(cfg, TeamsConfig)
    return cfg


async def test_it_posts_an_adaptive_card(
    start_receiver: StartReceiver, session: aiohttp.ClientSession
) -> None:
    receiver = await start_receiver(teams)
    await send(session, config(receiver.url(WORKFLOW_PATH)), sample("incident.resolved"))

    card = receiver.seen[0].json()["attachments"][0]["content"]
    title, summary, facts = card["body"][:3]
    assert title["text"] == "[RESOLVED] Main Website"
    assert title["color"] == "Good"
    assert "resolved after 15s" in summary["text"]
    assert {"title": "Root cause", "value": "Connection timeout"} in facts["facts"]


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (404, True), (429, False), (502, False)],
    ids=["400", "404", "429", "502"],
)
async def test_it_classifies_teams_errors(
    start_receiver: StartReceiver, session: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    receiver = await start_receiver(teams)
    receiver.fail_next(status, "error")
    with pytest.raises(NotifierError) as err:
        await send(session, config(receiver.url(WORKFLOW_PATH)), sample())
    assert err.value.permanent is permanent


def test_it_masks_the_signed_url() -> None:
    cfg = config("https://prod-01.westus.logic.azure.com:443" + WORKFLOW_PATH)
    shown = redact("teams", cfg)["url"]
    assert shown.startswith("https://prod-01.westus.logic.azure.com/")
    for text in (shown, repr(cfg), str(cfg)):
        assert "SIGNATURESECRET" not in text
