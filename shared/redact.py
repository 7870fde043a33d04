"""Credentials out of anything that gets logged or printed."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Schemes whose user part alone is a credential (nats://<token>@host).
TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def redact_url(url: str) -> str:
    """The URL with its password (nats://user:pass@host, postgresql://..., http://...)
    replaced, and a NATS token (nats://token@host) too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":<redacted>@", 1)
    elif parts.username and parts.scheme.lower() in TOKEN_SCHEMES:
        netloc = "<redacted>@" + parts.netloc.rsplit("@", 1)[1]
    else:
        return url
    return urlunsplit(parts._replace(netloc=netloc))
