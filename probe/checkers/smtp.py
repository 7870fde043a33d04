"""SMTP check: the 220 greeting, EHLO, and with tls=starttls the STARTTLS upgrade and
EHLO again; the certificate's days left (probe/checkers/mail.py)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl

from probefleet.probe.checkers import mail
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, SmtpSpec


async def _ehlo(session: mail.Session) -> list[str]:
    await session.send(b"EHLO probefleet\r\n")
    code, lines = await session.smtp_reply()
    if code != 250:
        raise mail.ProtocolFailure(Reason.PROTOCOL_ERROR, f"EHLO answered {code} {' '.join(lines)[:100]}")
    return lines[1:]


async def dialogue(
    session: mail.Session,
    spec: mail.MailSpec,
    ctx: ssl.SSLContext | None,
    timings: dict[str, float],
    start: float,
) -> tuple[str, list[str]]:
    code, lines = await session.smtp_reply()
    mail.mark(timings, "banner", start)
    banner = " ".join(lines)
    if code != 220:
        raise mail.ProtocolFailure(Reason.STATUS_MISMATCH, f"greeting {code} {banner[:100]}")
    capabilities = await _ehlo(session)
    if spec.tls == "starttls" and ctx is not None:
        if not any(c.upper().startswith("STARTTLS") for c in capabilities):
            raise mail.no_starttls("STARTTLS")
        await session.send(b"STARTTLS\r\n")
        code, lines = await session.smtp_reply()
        if code != 220:
            raise mail.ProtocolFailure(
                Reason.STARTTLS_UNAVAILABLE, f"STARTTLS answered {code} {' '.join(lines)[:100]}"
            )
        tls_start = timings["banner"]
        await session.start_tls(ctx, spec.host)
        timings["tls"] = round(mail.base.elapsed_ms(start) - tls_start, 3)
        capabilities = await _ehlo(session)
    await session.send(b"QUIT\r\n")
    return banner, capabilities


async def check(spec: SmtpSpec, *, timeout: float, source_address: str | None) -> Outcome:
    return await mail.run(spec, timeout, source_address, dialogue)
