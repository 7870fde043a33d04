from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from probefleet.controller.notifications.notifiers import parse_config, redact
from probefleet.controller.notifications.notifiers.base import NotifierError
from probefleet.controller.notifications.notifiers.email import EmailConfig, send
from tests.controller.notifications.notifiers.receivers import sample

PASSWORD = "correct-horse-battery-staple"


class Mailbox:
    """aiosmtpd handler: keeps delivered mail, refuses unknown users and chosen replies."""

    def __init__(self) -> None:
        self.mail: list[tuple[Envelope, EmailMessage]] = []
        self.logins: list[str] = []
        self.data_reply = "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
            message = message_from_bytes(raw, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self.mail.append((envelope, message))
        return self.data_reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
        if ok:
            self.logins.append(data.login.decode())
        # handled=False: aiosmtpd then sends the 535 reply itself.
        return AuthResult(success=ok, handled=False)


StartSmtp = Callable[..., Awaitable[int]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def start_smtp() -> AsyncIterator[StartSmtp]:
    servers: list[asyncio.Server] = []

    async def start(mailbox: Mailbox, ssl: ssl.SSLContext | None = None, **options: Any) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(mailbox, authenticator=mailbox.authenticate, **options),
            "127.0.0.1",
            0,
            ssl=ssl,
        )
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def config(port: int, **extra: Any) -> EmailConfig:
    data = {
        "host": "127.0.0.1",
        "port": port,
        "from": "alerts@probefleet.test",
        "to": ["ops@example.test", "oncall@example.test"],
        "security": "none",
        **extra,
    }
    cfg = parse_config("email", data)
    assert isinstance(cfg, EmailConfig)
    return cfg


async def test_it_sends_text_and_html_over_plain_smtp(
    start_smtp: StartSmtp, session: aiohttp.ClientSession
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox)
    await send(session, config(port), sample())

    ((envelope, message),) = mailbox.mail
    assert envelope.mail_from == "alerts@probefleet.test"
    assert envelope.rcpt_tos == ["ops@example.test", "oncall@example.test"]
    assert message["Subject"] == "[DOWN] Main Website"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and "Main Website is down." in text.get_content()
    assert html is not None and "<h2" in html.get_content()


async def test_it_uses_starttls_and_auth_with_a_private_ca(
    start_smtp: StartSmtp,
    session: aiohttp.ClientSession,
    server_tls: ssl.SSLContext,
    ca_file: str,
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox, tls_context=server_tls, require_starttls=True, auth_required=True)
    cfg = config(port, security="starttls", ca_file=ca_file, username="probefleet", password=PASSWORD)
    await send(session, cfg, sample("monitor.up"))

    assert mailbox.logins == ["probefleet"]
    assert mailbox.mail[0][1]["Subject"] == "[UP] Main Website"


async def test_it_uses_implicit_tls(
    start_smtp: StartSmtp,
    session: aiohttp.ClientSession,
    server_tls: ssl.SSLContext,
    ca_file: str,
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox, ssl=server_tls, auth_require_tls=False)
    cfg = config(port, security="tls", ca_file=ca_file, username="u", password=PASSWORD)
    await send(session, cfg, sample("incident.resolved"))
    assert mailbox.mail[0][1]["Subject"] == "[RESOLVED] Main Website"


async def test_it_refuses_an_untrusted_certificate_unless_told_not_to_verify(
    start_smtp: StartSmtp, session: aiohttp.ClientSession, server_tls: ssl.SSLContext
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox, tls_context=server_tls, require_starttls=True)
    with pytest.raises(NotifierError) as err:
        await send(session, config(port, security="starttls"), sample())
    assert not err.value.permanent

    await send(session, config(port, security="starttls", verify=False), sample())
    assert len(mailbox.mail) == 1


async def test_it_disables_on_a_wrong_password(start_smtp: StartSmtp, session: aiohttp.ClientSession) -> None:
    port = await start_smtp(Mailbox(), auth_require_tls=False)
    cfg = config(port, username="probefleet", password="wrong-password")
    with pytest.raises(NotifierError) as err:
        await send(session, cfg, sample())
    assert err.value.permanent
    assert "authentication failed" in err.value.message
    assert "wrong-password" not in err.value.message


async def test_it_disables_when_every_recipient_is_refused(
    start_smtp: StartSmtp, session: aiohttp.ClientSession
) -> None:
    port = await start_smtp(Mailbox())
    with pytest.raises(NotifierError) as err:
        await send(session, config(port, to=["nobody@example.test"]), sample())
    assert err.value.permanent
    assert "nobody@example.test" in err.value.message


async def test_it_delivers_to_the_recipients_that_exist(
    start_smtp: StartSmtp, session: aiohttp.ClientSession
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox)
    await send(session, config(port, to=["nobody@example.test", "ops@example.test"]), sample())
    assert mailbox.mail[0][0].rcpt_tos == ["ops@example.test"]


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("451 4.3.0 Try again later", False), ("554 5.7.1 Rejected as spam", True)],
    ids=["4xx-transient", "5xx-permanent"],
)
async def test_it_classifies_smtp_replies(
    start_smtp: StartSmtp, session: aiohttp.ClientSession, reply: str, permanent: bool
) -> None:
    mailbox = Mailbox()
    mailbox.data_reply = reply
    port = await start_smtp(mailbox)
    with pytest.raises(NotifierError) as err:
        await send(session, config(port), sample())
    assert err.value.permanent is permanent


async def test_it_treats_connection_refused_as_transient(
    session: aiohttp.ClientSession, closed_port: int
) -> None:
    with pytest.raises(NotifierError) as err:
        await send(session, config(closed_port), sample())
    assert not err.value.permanent


def test_it_validates_addresses_with_field_paths() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.to\[1\]"):
        config(25, to=["ok@example.test", "not-an-address"])
    with pytest.raises(msgspec.ValidationError, match="together"):
        config(25, username="only-user")


def test_it_never_shows_the_password() -> None:
    cfg = config(587, username="probefleet", password=PASSWORD)
    assert redact("email", cfg)["password"] == "<redacted>"
    assert redact("email", cfg)["from"] == "alerts@probefleet.test"
    for text in (str(redact("email", cfg)), repr(cfg), str(cfg)):
        assert PASSWORD not in text


async def test_the_incident_update_mails_each_regions_diagnosis_and_the_link(
    start_smtp: StartSmtp, session: aiohttp.ClientSession
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox)
    lines = [
        "eu-west: tcp traceroute reached 93.184.216.34 in 7 hops, DNS 93.184.216.34 via 127.0.0.53,"
        " TLS chain ok",
        "us-east: tcp traceroute did not reach 93.184.216.34 in 4 hops, DNS 93.184.216.34 via 127.0.0.53",
    ]
    link = "https://probefleet.example.com/console/incidents/456"
    await send(session, config(port), sample("incident.diagnosed", diagnostics=lines, link=link))

    ((_, message),) = mailbox.mail
    assert message["Subject"] == "[DIAGNOSIS] Main Website"
    text = message.get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert f"Diagnosis of the incident for Main Website: {lines[0]}; {lines[1]}." in body
    assert link in body
