"""Credentials out of anything that gets logged, printed or shown: the one place that
decides what is secret in a URL (its password, secret query values) and in HTTP headers.

A name is secret when the user marked it so, or when it looks like a credential by
`is_secret_name`: one of its words (split at `-`, `_`, `.` and camelCase) is a credential
word (token, key, secret, password, signature, auth, session, cookie, ...), or it starts
with `X-Api-`. Redacted values read `<redacted>`; a client that sends `<redacted>` back
keeps the stored value (`restore_url`, and controller/monitors/config.py for headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "<redacted>"
# Schemes whose user part alone is a credential (nats://<token>@host).
TOKEN_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
SECRET_WORDS = frozenset(
    {
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "signature",
        "sig",
        "auth",
        "authorization",
        "session",
        "sessionid",
        "cookie",
        "credential",
        "credentials",
        "jwt",
        "accesstoken",
        "authtoken",
    }
)
SECRET_PREFIXES = ("x-api-",)
# A URL inside a message (aiohttp quotes the request URL in some errors: url='...').
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def is_secret_name(name: str, marked: Iterable[str] = ()) -> bool:
    """Whether a header or query parameter named `name` carries a credential."""
    lowered = name.strip().lower()
    if lowered in {m.strip().lower() for m in marked} or lowered.startswith(SECRET_PREFIXES):
        return True
    words = _WORD_SPLIT.split(_CAMEL.sub(r"\1 \2", name.strip()).lower())
    return any(w in SECRET_WORDS for w in words)


def redact_headers(headers: Mapping[str, str], marked: Iterable[str] = ()) -> dict[str, str]:
    marked = list(marked)
    return {k: REDACTED if is_secret_name(k, marked) else v for k, v in headers.items()}


def redact_url(url: str, secret_params: Iterable[str] = ()) -> str:
    """The URL with its password (nats://user:pass@host, postgresql://..., http://...)
    replaced, a NATS token (nats://token@host) too, and the values of secret query
    parameters."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{REDACTED}@{host}"
    elif parts.username and parts.scheme.lower() in TOKEN_SCHEMES:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = _redact_query(parts.query, list(secret_params))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str, secret_params: Iterable[str] = ()) -> str:
    """`text` with every URL in it redacted as `redact_url` does."""
    marked = list(secret_params)
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0), marked), text) if "://" in text else text


def _redact_query(query: str, marked: list[str]) -> str:
    out = []
    for item in query.split("&") if query else []:
        name, eq, _ = item.partition("=")
        out.append(f"{name}={REDACTED}" if eq and is_secret_name(unquote_plus(name), marked) else item)
    return "&".join(out)


def restore_url(url: str, stored: str) -> str:
    """`url` as a client sent it back, with every `<redacted>` it was shown (the password,
    secret query values) replaced by the stored value, so a round trip keeps secrets."""
    if REDACTED not in unquote_plus(url):
        return url
    try:
        parts, old = urlsplit(url), urlsplit(stored)
        password, old_password = parts.password, old.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None and unquote_plus(password) == REDACTED and old_password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{old_password}@{host}"
    kept: dict[str, list[str]] = {}
    for item in old.query.split("&") if old.query else []:
        name, _, value = item.partition("=")
        kept.setdefault(name, []).append(value)
    query = []
    seen: dict[str, int] = {}
    for item in parts.query.split("&") if parts.query else []:
        name, eq, value = item.partition("=")
        i = seen[name] = seen.get(name, -1) + 1
        values = kept.get(name, [])
        if eq and unquote_plus(value) == REDACTED and values:
            item = f"{name}={values[min(i, len(values) - 1)]}"
        query.append(item)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(query)))
