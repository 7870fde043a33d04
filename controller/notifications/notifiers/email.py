"""Email over SMTP with aiosmtplib: plain text and HTML alternatives, TLS or STARTTLS.

`deliver` is the controller's one SMTP sender: alerts of email channels (`send`) and the
mails to status-page subscribers (`plain_message`) both go through it."""

from __future__ import annotations

import html
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Annotated, Literal

import aiohttp
import aiosmtplib
import msgspec

from probefleet.controller.notifications.notifiers.base import (
    ChannelConfig,
    Notification,
    NotifierError,
    SecretStr,
)
from probefleet.controller.notifications.notifiers.render import Message, render

Address = Annotated[str, msgspec.Meta(pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$", max_length=254)]


class EmailConfig(ChannelConfig, tag="email", tag_field="kind"):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    from_: Address = msgspec.field(name="from")
    to: Annotated[list[Address], msgspec.Meta(min_length=1, max_length=100)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    verify: bool = True
    ca_file: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")


def html_body(msg: Message) -> str:
    rows = "".join(
        f"<tr><th align='left' style='padding-right:12px'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in msg.facts
    )
    color = f"#{msg.color:06x}"
    return (
        "<!doctype html><html><body style='font-family:sans-serif'>"
        f"<h2 style='color:{color}'>{html.escape(msg.title)}</h2>"
        f"<p>{html.escape(msg.summary)}</p><table>{rows}</table>"
        f"<p style='color:#667085;font-size:small'>probefleet · {msg.timestamp}</p>"
        "</body></html>"
    )


def build_message(config: EmailConfig, note: Notification) -> EmailMessage:
    msg = render(note)
    mail = EmailMessage()
    mail["Subject"] = msg.title
    mail["From"] = config.from_
    mail["To"] = ", ".join(config.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid("probefleet")
    mail["X-Probefleet-Event"] = note.event
    mail.set_content(msg.text())
    mail.add_alternative(html_body(msg), subtype="html")
    return mail


def plain_message(config: EmailConfig, subject: str, text: str) -> EmailMessage:
    """A plain-text mail from `config.from_` to `config.to`."""
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = config.from_
    mail["To"] = ", ".join(config.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid("probefleet")
    mail.set_content(text)
    return mail


def tls_context(config: EmailConfig) -> ssl.SSLContext:
    if not config.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=config.ca_file)


def error_for_smtp(exc: Exception) -> NotifierError:
    """Most specific first: lost connections retry, refusals and auth failures do not."""
    match exc:
        case aiosmtplib.SMTPConnectError() | aiosmtplib.SMTPTimeoutError():
            return NotifierError(f"email: {exc}")
        case aiosmtplib.SMTPServerDisconnected():
            return NotifierError(f"email: server disconnected: {exc}")
        case aiosmtplib.SMTPAuthenticationError():
            return NotifierError(f"email: authentication failed: {exc.code}", permanent=True)
        case aiosmtplib.SMTPRecipientsRefused():
            refused = ", ".join(r.recipient for r in exc.recipients)
            return NotifierError(f"email: all recipients refused: {refused}", permanent=True)
        case aiosmtplib.SMTPResponseException():
            # 4xx replies are "try again later" by definition (RFC 5321 4.2.1).
            return NotifierError(f"email: {exc.code} {exc.message}", permanent=exc.code >= 500)
        case aiosmtplib.SMTPException():
            return NotifierError(f"email: {exc}", permanent=True)
        case ssl.SSLError() | OSError() | TimeoutError():
            return NotifierError(f"email: {type(exc).__name__}: {exc}")
    return NotifierError(f"email: {type(exc).__name__}: {exc}")


async def deliver(config: EmailConfig, mail: EmailMessage) -> None:
    """Send one mail through the config's server; NotifierError (error_for_smtp) on failure."""
    try:
        await aiosmtplib.send(
            mail,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=tls_context(config),
            timeout=config.timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise error_for_smtp(exc) from None


async def send(session: aiohttp.ClientSession, config: EmailConfig, note: Notification) -> None:
    """Send one alert; `session` is unused and taken only to share the notifier signature."""
    del session
    await deliver(config, build_message(config, note))
