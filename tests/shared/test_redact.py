"""shared/redact.py: which names are secret, URLs and headers redacted, and restored."""

from __future__ import annotations

import pytest

from probefleet.shared.redact import is_secret_name, redact_headers, redact_text, redact_url, restore_url

SECRET = [
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Api-Key",
    "X-API-Version",
    "api_key",
    "apikey",
    "apiKey",
    "access_token",
    "accessToken",
    "X-Auth-Token",
    "Private-Token",
    "token",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "signature",
    "sig",
    "X-Hub-Signature",
    "auth",
    "session",
    "sessionId",
    "SESSION_ID",
]
PLAIN = ["Accept", "User-Agent", "X-Request-Id", "keyword", "page", "q", "format", "monkey"]


@pytest.mark.parametrize("name", SECRET)
def test_credential_names_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN)
def test_other_names_are_not_unless_marked(name: str) -> None:
    assert not is_secret_name(name)
    assert is_secret_name(name, [name.upper()])


@pytest.mark.parametrize(
    ("url", "marked", "shown"),
    [
        ("https://h.test/p?q=1", [], "https://h.test/p?q=1"),
        ("https://u:pw@h.test/", [], "https://u:<redacted>@h.test/"),
        ("https://u:p@ss:w@h.test:8443/", [], "https://u:<redacted>@h.test:8443/"),
        ("nats://tok@h:4222", [], "nats://<redacted>@h:4222"),
        (
            "https://h.test/f?page=2&token=t&api_key=k&Signature=s&sid=x#top",
            ["sid"],
            "https://h.test/f?page=2&token=<redacted>&api_key=<redacted>&Signature=<redacted>&sid=<redacted>#top",
        ),
        ("https://h.test/f?access%5Ftoken=t&flag", [], "https://h.test/f?access%5Ftoken=<redacted>&flag"),
    ],
    ids=["plain", "password", "password-with-at-and-colon", "nats-token", "query", "encoded-name"],
)
def test_urls_are_redacted(url: str, marked: list[str], shown: str) -> None:
    assert redact_url(url, marked) == shown


def test_headers_are_redacted() -> None:
    got = redact_headers({"Cookie": "c", "X-Mine": "m", "Accept": "a"}, ["x-mine"])
    assert got == {"Cookie": "<redacted>", "X-Mine": "<redacted>", "Accept": "a"}


def test_a_redacted_url_sent_back_keeps_the_stored_secrets() -> None:
    stored = "https://u:p@ss@h.test/f?token=t1&page=2&token=t2&sig=s"
    shown = redact_url(stored)
    assert "t1" not in shown and "p@ss" not in shown
    assert restore_url(shown, stored) == stored
    changed = shown.replace("page=2", "page=3").replace("sig=<redacted>", "sig=new")
    assert restore_url(changed, stored) == "https://u:p@ss@h.test/f?token=t1&page=3&token=t2&sig=new"
    assert restore_url("https://u:<redacted>@other.test/?token=%3Credacted%3E", stored) == (
        "https://u:p@ss@other.test/?token=t1"
    )


def test_urls_inside_a_message_are_redacted() -> None:
    text = "0, message='', url='https://h.test/x?token=t1&q=1' then http://u:pw@h.test/"
    assert redact_text(text) == (
        "0, message='', url='https://h.test/x?token=<redacted>&q=1' then http://u:<redacted>@h.test/"
    )
