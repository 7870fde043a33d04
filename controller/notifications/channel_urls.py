"""Channel URLs: a monitor may name its channels by URL (`"notifications":
["slack://hooks/T0A1B2C3D/B0X9Y8Z7W/abc123"]`). `parse` gives the kind and config of the
channel such a URL stands for: Apprise's slack:// and discord:// forms
(https://github.com/caronc/apprise/wiki/Notify_slack), the services' own webhook URLs, and
any other http(s) URL as a webhook."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

SLACK_HOOKS = "https://hooks.slack.com/services/"
DISCORD_HOOKS = ("https://discord.com/api/webhooks/", "https://discordapp.com/api/webhooks/")
ACCEPTED = "a channel id, or a channel URL: slack://T…/B…/X…, discord://id/token, or an http(s) webhook URL"


def parse(url: str) -> tuple[str, dict[str, Any]]:
    """(kind, config) of the channel `url` stands for; ValueError saying what is accepted."""
    parts = urlsplit(url)
    # Tokens are case-sensitive: split the raw netloc (not .hostname, which lower-cases).
    tokens = [t for t in (parts.netloc.rpartition("@")[2] + parts.path).split("/") if t]
    match parts.scheme.lower():
        case "slack":
            if tokens[:1] == ["hooks"]:
                tokens = tokens[1:]
            if len(tokens) != 3:
                raise ValueError("a slack:// URL has three tokens: slack://T…/B…/X…")
            return "slack", {"url": SLACK_HOOKS + "/".join(tokens)}
        case "discord":
            if len(tokens) != 2:
                raise ValueError("a discord:// URL has the webhook id and token: discord://id/token")
            return "discord", {"url": DISCORD_HOOKS[0] + "/".join(tokens)}
        case "http" | "https":
            if url.startswith(SLACK_HOOKS):
                return "slack", {"url": url}
            if url.startswith(DISCORD_HOOKS):
                return "discord", {"url": url}
            return "webhook", {"url": url}
    raise ValueError(f"use {ACCEPTED}")
