"""POP3 check: the `+OK` greeting, CAPA, and with tls=starttls the STLS upgrade and CAPA
again; the certificate's days left (probe/checkers/mail.py). asyncio streams rather than
poplib in a thread: the dialogue is four lines and shares the code of smtp and imap."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl

from probefleet.probe.checkers import mail
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Pop3Spec, Reason


async def _capa(session: mail.Session) -> list[str]:
    await session.send(b"CAPA\r\n")
    first = await session.line()
    if not first.startswith("+OK"):
        return []  # CAPA is optional (RFC 2449): a server without it lists nothing
    return await session.until(".")


async def dialogue(
    session: mail.Session,
    spec: mail.MailSpec,
    ctx: ssl.SSLContext | None,
    timings: dict[str, float],
    start: float,
) -> tuple[str, list[str]]:
    banner = await session.line()
    mail.mark(timings, "banner", start)
    if not banner.startswith("+OK"):
        raise mail.ProtocolFailure(Reason.STATUS_MISMATCH, f"greeting {banner[:100]!r}")
    capabilities = await _capa(session)
    if spec.tls == "starttls" and ctx is not None:
        if "STLS" not in (c.upper() for c in capabilities):
            raise mail.no_starttls("STLS")
        await session.send(b"STLS\r\n")
        reply = await session.line()
        if not reply.startswith("+OK"):
            raise mail.ProtocolFailure(Reason.STARTTLS_UNAVAILABLE, f"STLS answered {reply[:100]!r}")
        tls_start = mail.base.elapsed_ms(start)
        await session.start_tls(ctx, spec.host)
        timings["tls"] = round(mail.base.elapsed_ms(start) - tls_start, 3)
        capabilities = await _capa(session)
    await session.send(b"QUIT\r\n")
    return banner, capabilities


async def check(spec: Pop3Spec, *, timeout: float, source_address: str | None) -> Outcome:
    return await mail.run(spec, timeout, source_address, dialogue)
