"""The mail and webhook catchers of `probefleet dev`: stand-ins for a mailbox and a webhook
receiver, so status-page mail and notifications can be tried on one machine.

The mail catcher is an SMTP server (aiosmtpd) that the dev controller sends to: each message
is saved as an .eml file and printed as `mail to=… subject=…` with its text. The webhook
catcher answers 200 to any request and prints `webhook METHOD PATH BODY`. Both listen on
127.0.0.1 and run on one event loop in one background thread, so the dev process itself
stays a plain loop over its children. aiosmtpd comes with the `embedded` extra: import this
module only from the dev command.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP

HOST = "127.0.0.1"
# Characters of a mail text or webhook body printed; the .eml file keeps the whole message.
SHOWN = 4000

Echo = Callable[[str], None]


def mail_summary(raw: bytes, recipients: list[str]) -> str:
    """A caught mail as printed: `mail to=… subject=…`, then its text, indented."""
    mail = message_from_bytes(raw, policy=policy.default)
    part = mail.get_body(preferencelist=("plain",)) if isinstance(mail, EmailMessage) else None
    text = part.get_content() if isinstance(part, EmailMessage) else "(no text part)"
    lines = [f"mail to={','.join(recipients)} subject={mail['Subject']}"]
    lines += [f"  {line}" if line else "" for line in text[:SHOWN].splitlines()]
    return "\n".join(lines)


def webhook_summary(method: str, path: str, body: bytes) -> str:
    """A caught request as printed: `webhook METHOD PATH BODY`, a JSON body on one line."""
    try:
        shown = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        shown = body.decode(errors="replace")
    return f"webhook {method} {path} {shown[:SHOWN]}".rstrip()


class _MailHandler:
    """aiosmtpd's handler: save, print, accept."""

    def __init__(self, mail_dir: Path, echo: Echo) -> None:
        self.mail_dir = mail_dir
        self.echo = echo

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.eml"
        (self.mail_dir / name).write_bytes(raw)
        self.echo(mail_summary(raw, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class Catchers:
    """The two catchers: `start()` binds both (OSError when a port is taken) and serves them
    in a thread until `stop()`. `mail_dir` None: no mail catcher (the controller has its own
    SMTP server). Ports 0 pick free ones; `smtp_port` and `webhook_port` are the real ones."""

    def __init__(self, mail_dir: Path | None, webhook_port: int, echo: Echo) -> None:
        self.mail_dir = mail_dir
        self.smtp_port = 0
        self.webhook_port = webhook_port
        self._echo = echo
        self._thread = threading.Thread(target=self._run, name="dev-catchers", daemon=True)
        self._ready = threading.Event()
        self._error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def webhook_url(self) -> str:
        return f"http://{HOST}:{self.webhook_port}/"

    def start(self, timeout: float = 10) -> None:
        if self.mail_dir is not None:
            self.mail_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError(f"the catchers did not start within {timeout:.0f}s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self._webhook_app(), handle_signals=False, access_log=None)
        await runner.setup()
        smtp: asyncio.Server | None = None
        try:
            if self.mail_dir is not None:
                handler = _MailHandler(self.mail_dir, self._echo)
                # hostname given: aiosmtpd would otherwise call getfqdn(), a DNS lookup per connection.
                smtp = await self._loop.create_server(lambda: SMTP(handler, hostname="localhost"), HOST, 0)
                self.smtp_port = smtp.sockets[0].getsockname()[1]
            await web.TCPSite(runner, HOST, self.webhook_port).start()
            self.webhook_port = runner.addresses[0][1]
        except OSError as e:
            self._error = e
        self._ready.set()
        try:
            if self._error is None:
                await self._stop.wait()
        finally:
            await runner.cleanup()
            if smtp is not None:
                smtp.close()
                await smtp.wait_closed()

    def _webhook_app(self) -> web.Application:
        async def catch(request: web.Request) -> web.Response:
            self._echo(webhook_summary(request.method, request.path_qs, await request.read()))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", catch)
        return app
