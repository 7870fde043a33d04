"""The one registry of notifiers: channel kind -> config struct and send function.

The kind string is the module name, the registry key and the config's msgspec tag.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from probefleet.controller.notifications.notifiers import (
    discord,
    email,
    ntfy,
    opsgenie,
    pagerduty,
    slack,
    teams,
    telegram,
    webhook,
)
from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    Notification,
    Notifier,
    NotifierError,
)
from probefleet.controller.notifications.notifiers.base import redact as redact_config

__all__ = [
    "NOTIFIERS",
    "ChannelConfig",
    "Notification",
    "Notifier",
    "NotifierError",
    "NotifierKind",
    "parse_config",
    "redact",
]


class NotifierKind(NamedTuple):
    config_type: type[ChannelConfig]
    send: Notifier[Any]


NOTIFIERS: dict[str, NotifierKind] = {
    "webhook": NotifierKind(webhook.WebhookConfig, webhook.send),
    "slack": NotifierKind(slack.SlackConfig, slack.send),
    "discord": NotifierKind(discord.DiscordConfig, discord.send),
    "teams": NotifierKind(teams.TeamsConfig, teams.send),
    "telegram": NotifierKind(telegram.TelegramConfig, telegram.send),
    "ntfy": NotifierKind(ntfy.NtfyConfig, ntfy.send),
    "pagerduty": NotifierKind(pagerduty.PagerDutyConfig, pagerduty.send),
    "opsgenie": NotifierKind(opsgenie.OpsgenieConfig, opsgenie.send),
    "email": NotifierKind(email.EmailConfig, email.send),
}


def parse_config(kind: str, data: Any) -> ChannelConfig:
    """Validate a channel config from JSON-like data (a dict, or JSON bytes/str).

    Raises msgspec.ValidationError whose message names the field, e.g.
    "Expected `str` matching regex ... - at `$.url`", also for an unknown kind.
    """
    entry = NOTIFIERS.get(kind)
    if entry is None:
        known = ", ".join(sorted(NOTIFIERS))
        raise msgspec.ValidationError(f"unknown channel kind {kind!r}, expected one of: {known}")
    if isinstance(data, bytes | str):
        return msgspec.json.decode(data, type=entry.config_type)
    return msgspec.convert(data, entry.config_type)


def redact(kind: str, config: ChannelConfig) -> dict[str, Any]:
    """The config with every secret masked, for API responses and logs."""
    expected = NOTIFIERS[kind].config_type
    if not isinstance(config, expected):
        raise TypeError(f"{type(config).__name__} is not a {kind} config")
    return redact_config(config)
