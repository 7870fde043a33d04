from __future__ import annotations

import importlib
from typing import Any

import msgspec
import pytest

from probefleet.controller.notifications.notifiers import NOTIFIERS, parse_config, redact

SECRET = "S3cretValueThatMustNeverShow0123"

CONFIGS: dict[str, dict[str, Any]] = {
    "webhook": {
        "url": f"https://example.com/hook/{SECRET}",
        "secret": SECRET,
        "headers": {"Authorization": SECRET},
    },
    "slack": {"url": f"https://hooks.slack.com/services/T0/B0/{SECRET}"},
    "discord": {"url": f"https://discord.com/api/webhooks/1/{SECRET}"},
    "teams": {"url": f"https://prod.logic.azure.com/workflows/x?sig={SECRET}"},
    "telegram": {"bot_token": f"1234:{SECRET}", "chat_id": "@probefleet_alerts"},
    "ntfy": {"topic": "alerts", "token": SECRET},
    "pagerduty": {"routing_key": SECRET},
    "opsgenie": {"api_key": SECRET},
    "email": {
        "host": "smtp.example.com",
        "from": "a@example.com",
        "to": ["b@example.com"],
        "username": "u",
        "password": SECRET,
    },
}


def test_every_kind_is_registered_once_under_its_module_and_tag() -> None:
    assert set(NOTIFIERS) == set(CONFIGS)
    for kind, entry in NOTIFIERS.items():
        module = importlib.import_module(f"probefleet.controller.notifications.notifiers.{kind}")
        assert entry.send is module.send
        assert entry.config_type.__struct_config__.tag == kind


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_it_never_leaks_a_secret(kind: str) -> None:
    cfg = parse_config(kind, CONFIGS[kind])
    shown = redact(kind, cfg)
    for text in (str(shown), repr(cfg), str(cfg), f"{cfg}"):
        assert SECRET not in text
        assert SECRET[:12] not in text
    assert msgspec.json.decode(msgspec.json.encode(cfg))["kind"] == kind


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_it_rejects_unknown_fields(kind: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `colour`"):
        parse_config(kind, {**CONFIGS[kind], "colour": "red"})


@pytest.mark.parametrize(
    ("kind", "data", "path"),
    [
        ("slack", {"url": "not a url"}, r"\$\.url"),
        ("webhook", {"url": "https://x.test", "method": "GET"}, r"\$\.method"),
        ("telegram", {"bot_token": "nocolon", "chat_id": 1}, r"\$\.bot_token"),
        ("ntfy", {"topic": "bad topic!"}, r"\$\.topic"),
        ("pagerduty", {"routing_key": "short"}, r"\$\.routing_key"),
        ("opsgenie", {"api_key": "k", "priority": "P9"}, r"\$\.priority"),
        ("email", {"host": "h", "from": "a@b", "to": ["c@d"], "port": 0}, r"\$\.port"),
    ],
    ids=["slack-url", "webhook-method", "telegram-token", "ntfy-topic", "pd-key", "og-prio", "port"],
)
def test_it_names_the_bad_field(kind: str, data: dict[str, Any], path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=path):
        parse_config(kind, data)


def test_it_parses_json_bytes_and_rejects_unknown_kinds() -> None:
    cfg = parse_config("slack", b'{"url": "https://hooks.slack.com/services/x"}')
    assert redact("slack", cfg)["kind"] == "slack"
    with pytest.raises(msgspec.ValidationError, match="unknown channel kind 'sms'"):
        parse_config("sms", {})
    with pytest.raises(TypeError):
        redact("discord", cfg)
