"""What the mail checkers (smtp, imap, pop3) share: a line-based dialogue over asyncio
streams, STARTTLS (or TLS from the start) and the certificate's verdict. Not a kind.

Each protocol is a small table of its own (greeting, capability command, STARTTLS
command, how a reply ends); the dialogue is: greeting, capabilities, and with
tls=starttls the upgrade and the capabilities again, then a polite goodbye. Timings:
`connect`, `banner`, `tls` (the handshake, implicit or after STARTTLS), `total`.
"""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from probefleet.probe import x509
from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, Status

_MAX_LINE = 4096
_MAX_LINES = 200


class MailSpec(Protocol):
    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    verify_tls: bool
    ca_pem: str | None
    expected_banner: str | None
    warn_days: int
    degraded_ms: float | None


class ProtocolFailure(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> str:
        raw = await self.reader.readline()
        if not raw:
            raise ProtocolFailure(Reason.CONNECTION_RESET, "the server closed the connection")
        return raw[:_MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def smtp_reply(self) -> tuple[int, list[str]]:
        """A possibly multi-line SMTP reply: its code and its lines' texts."""
        lines: list[str] = []
        for _ in range(_MAX_LINES):
            text = await self.line()
            if len(text) < 3 or not text[:3].isdigit():
                raise ProtocolFailure(Reason.PROTOCOL_ERROR, f"not an SMTP reply: {text[:100]!r}")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines
        raise ProtocolFailure(Reason.PROTOCOL_ERROR, "an SMTP reply of too many lines")

    async def until(self, done: str, fail: tuple[str, ...] = ()) -> list[str]:
        """Lines up to (and without) the one that starts with `done`."""
        lines: list[str] = []
        for _ in range(_MAX_LINES):
            text = await self.line()
            if text.startswith(done):
                return lines
            if text.startswith(fail):
                raise ProtocolFailure(Reason.PROTOCOL_ERROR, f"the server answered {text[:100]!r}")
            lines.append(text)
        raise ProtocolFailure(Reason.PROTOCOL_ERROR, "a reply of too many lines")

    async def start_tls(self, ctx: ssl.SSLContext, host: str) -> None:
        await self.writer.start_tls(ctx, server_hostname=host)

    def certificate(self) -> tuple[bytes, str | None] | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        return ssl_object.getpeercert(binary_form=True) or b"", ssl_object.version()


# Talks to the server once connected: returns the banner and the capabilities.
Dialogue = Callable[
    ["Session", MailSpec, "ssl.SSLContext | None", dict[str, float], float], Awaitable[tuple[str, list[str]]]
]


async def run(
    spec: MailSpec,
    timeout: float,
    source_address: str | None,
    dialogue: Dialogue,
) -> Outcome:
    """Connect (TLS from the start with tls=implicit), let `dialogue` talk, judge."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    ctx = base.tls_context(verify=spec.verify_tls, ca_pem=spec.ca_pem) if spec.tls != "none" else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                spec.host,
                spec.port,
                ssl=ctx if spec.tls == "implicit" else None,
                server_hostname=spec.host if spec.tls == "implicit" else None,
                local_addr=base.local_addr(source_address),
                limit=_MAX_LINE * 4,
            )
            timings["connect"] = base.elapsed_ms(start)
            if spec.tls == "implicit":
                timings["tls"] = timings["connect"]
            session = Session(reader, writer)
            try:
                banner, capabilities = await dialogue(session, spec, ctx, timings, start)
                cert = session.certificate()
            finally:
                writer.close()
    except ProtocolFailure as exc:
        return base.failed(exc.reason, str(exc)[:300], timings=_total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=_total(timings, start))
    details: dict[str, object] = {"banner": banner[:200], "capabilities": capabilities[:50]}
    fields: dict[str, object] = {"timings": _total(timings, start), "details": details}
    if spec.expected_banner is not None and spec.expected_banner not in banner:
        message = f"banner {banner[:100]!r} lacks {spec.expected_banner!r}"
        return base.failed(Reason.RESPONSE_MISMATCH, message, **fields)
    if cert is not None:
        der, version = cert
        details["tls_version"] = version
        try:
            info = x509.parse(der)
        except ValueError:
            info = None
        if info is not None:
            days_left = info.days_left()
            details["cert_days_left"] = round(days_left, 2)
            details["cert_not_after"] = info.not_after.isoformat()
            if days_left <= 0:
                return base.failed(Reason.CERT_EXPIRED, f"expired on {info.not_after:%Y-%m-%d}", **fields)
            if days_left < spec.warn_days:
                message = f"the certificate expires in {days_left:.1f} days"
                return Outcome(status=Status.DEGRADED, reason=Reason.CERT_EXPIRING, message=message, **fields)  # type: ignore[arg-type]
    return base.passed(timings.get("banner", timings["connect"]), spec.degraded_ms, **fields)


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}


def mark(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = base.elapsed_ms(start)


def no_starttls(name: str) -> ProtocolFailure:
    return ProtocolFailure(Reason.STARTTLS_UNAVAILABLE, f"the server does not offer {name}")
