"""IMAP check: the `* OK` greeting, CAPABILITY, and with tls=starttls the STARTTLS
upgrade and CAPABILITY again; the certificate's days left (probe/checkers/mail.py)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl

from probefleet.probe.checkers import mail
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import ImapSpec, Reason


async def _capability(session: mail.Session, tag: str) -> list[str]:
    await session.send(f"{tag} CAPABILITY\r\n".encode())
    lines = await session.until(f"{tag} OK", fail=(f"{tag} NO", f"{tag} BAD"))
    words: list[str] = []
    for line in lines:
        if line.upper().startswith("* CAPABILITY"):
            words += line.split()[2:]
    return words


async def dialogue(
    session: mail.Session,
    spec: mail.MailSpec,
    ctx: ssl.SSLContext | None,
    timings: dict[str, float],
    start: float,
) -> tuple[str, list[str]]:
    banner = await session.line()
    mail.mark(timings, "banner", start)
    if not banner.upper().startswith(("* OK", "* PREAUTH")):
        raise mail.ProtocolFailure(Reason.STATUS_MISMATCH, f"greeting {banner[:100]!r}")
    capabilities = await _capability(session, "a1")
    if spec.tls == "starttls" and ctx is not None:
        if "STARTTLS" not in (c.upper() for c in capabilities):
            raise mail.no_starttls("STARTTLS")
        await session.send(b"a2 STARTTLS\r\n")
        try:
            await session.until("a2 OK", fail=("a2 NO", "a2 BAD"))
        except mail.ProtocolFailure as exc:
            raise mail.ProtocolFailure(Reason.STARTTLS_UNAVAILABLE, str(exc)) from None
        tls_start = mail.base.elapsed_ms(start)
        await session.start_tls(ctx, spec.host)
        timings["tls"] = round(mail.base.elapsed_ms(start) - tls_start, 3)
        capabilities = await _capability(session, "a3")
    await session.send(b"a4 LOGOUT\r\n")
    return banner, capabilities


async def check(spec: ImapSpec, *, timeout: float, source_address: str | None) -> Outcome:
    return await mail.run(spec, timeout, source_address, dialogue)
