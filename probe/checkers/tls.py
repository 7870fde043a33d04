"""TLS certificate check: chain, hostname, issuer, protocol version, days left; STARTTLS
for SMTP, IMAP and POP3; revocation by OCSP when the certificate names a responder
(probe/checkers/ocsp.py, soft-fail: an unreachable responder is reported, not failed)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ssl
import time

import msgspec
from cryptography import x509 as cx509

from probefleet.probe import x509
from probefleet.probe.checkers import base, http, mail, ocsp
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, TlsSpec

_VERSIONS = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


def _context(spec: TlsSpec) -> ssl.SSLContext:
    ctx = base.tls_context(verify=spec.verify_chain, ca_pem=spec.ca_pem, check_hostname=spec.verify_hostname)
    # Older servers must still be reachable so that the version can be reported.
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    return ctx


async def _starttls(session: mail.Session, protocol: str) -> None:
    """The plain-text opening of `protocol` up to the point where TLS starts."""
    if protocol == "smtp":
        code, _ = await session.smtp_reply()
        if code != 220:
            raise mail.ProtocolFailure(Reason.PROTOCOL_ERROR, f"SMTP greeting {code}")
        await session.send(b"EHLO probefleet\r\n")
        await session.smtp_reply()
        await session.send(b"STARTTLS\r\n")
        code, lines = await session.smtp_reply()
        if code != 220:
            raise mail.ProtocolFailure(
                Reason.STARTTLS_UNAVAILABLE, f"STARTTLS answered {code} {' '.join(lines)[:100]}"
            )
    elif protocol == "imap":
        await session.line()
        await session.send(b"a1 STARTTLS\r\n")
        try:
            await session.until("a1 OK", fail=("a1 NO", "a1 BAD"))
        except mail.ProtocolFailure as exc:
            raise mail.ProtocolFailure(Reason.STARTTLS_UNAVAILABLE, str(exc)) from None
    else:
        await session.line()
        await session.send(b"STLS\r\n")
        reply = await session.line()
        if not reply.startswith("+OK"):
            raise mail.ProtocolFailure(Reason.STARTTLS_UNAVAILABLE, f"STLS answered {reply[:100]!r}")


async def _handshake(
    spec: TlsSpec, timeout: float, source_address: str | None, presented: x509.Presented | None = None
) -> tuple[bytes, str | None]:
    """The leaf and the negotiated version; `presented` gets every certificate the server
    sent, even when verification fails (x509.record_chain)."""
    name = spec.server_name or spec.host
    ctx = _context(spec)
    x509.record_chain(ctx, presented)
    async with asyncio.timeout(timeout):
        if spec.starttls == "none":
            _, writer = await asyncio.open_connection(
                spec.host,
                spec.port,
                ssl=ctx,
                server_hostname=name,
                local_addr=base.local_addr(source_address),
            )
        else:
            reader, writer = await asyncio.open_connection(
                spec.host, spec.port, local_addr=base.local_addr(source_address)
            )
            session = mail.Session(reader, writer)
            try:
                await _starttls(session, spec.starttls)
                await session.start_tls(ctx, name)
            except BaseException:
                writer.close()
                raise
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) or b"", ssl_object.version()
    finally:
        writer.close()


async def _revocation(
    spec: TlsSpec, der: bytes, budget: float, source_address: str | None
) -> dict[str, object] | None:
    """The OCSP answer's details, {"ocsp_error": ...} when it could not be had, or None
    when the check is off or the certificate names no responder."""
    if not spec.check_ocsp:
        return None
    try:
        async with asyncio.timeout(max(budget, 0.001)):
            answer = await ocsp.status(http.session_for(source_address, True, None), der, spec.ca_pem)
    except (ocsp.OcspError, TimeoutError, ValueError) as exc:
        return {"ocsp_error": (str(exc) or "timed out")[:300]}
    return None if answer is None else answer[1]


def describe(der: bytes) -> dict[str, object]:
    """One presented certificate for evidence: subject, issuer, validity, SANs, serial
    (bounded as x509.summary)."""
    try:
        cert = cx509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": f"unreadable certificate: {exc}"[:200]}
    try:
        san = cert.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(cx509.DNSName), *map(str, san.get_values_for_type(cx509.IPAddress))]
    except cx509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string()[: x509.MAX_NAME],
        "issuer": cert.issuer.rfc4514_string()[: x509.MAX_NAME],
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sans": names[: x509.MAX_SANS],
        **({"sans_truncated": True} if len(names) > x509.MAX_SANS else {}),
        "serial": format(cert.serial_number, "x")[:64],
    }


def _chain(presented: x509.Presented, leaf: bytes) -> list[dict[str, object]]:
    """The presented chain for evidence: what the handshake recorded, else the leaf."""
    return [describe(der) for der in (presented.certs or [leaf])[: x509.MAX_CHAIN]]


async def _presented(spec: TlsSpec, budget: float, source_address: str | None) -> dict[str, object]:
    """What the server presents, read by a second handshake that verifies nothing: for a
    failed verification whose handshake did not record the chain (x509.record_chain)."""
    if budget <= 0:
        return {"chain_error": "no time left to read the certificate"}
    lenient = msgspec.structs.replace(spec, verify_chain=False, verify_hostname=False, check_ocsp=False)
    presented = x509.Presented()
    try:
        der, version = await _handshake(lenient, min(budget, 2.0), source_address, presented)
    except Exception as exc:
        return {"chain_error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"chain": _chain(presented, der), "tls_version": version}


def _evidence(out: Outcome, **more: object) -> dict[str, object]:
    return {"reason": str(out.reason), "message": out.message, **more}


def _version_below(actual: str | None, minimum: str) -> bool:
    if actual not in _VERSIONS or minimum not in _VERSIONS:
        return actual != minimum
    return _VERSIONS.index(actual) < _VERSIONS.index(minimum)


async def check(spec: TlsSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    presented = x509.Presented()
    try:
        der, version = await _handshake(spec, timeout, source_address, presented)
        cert = x509.parse(der)
    except mail.ProtocolFailure as exc:
        out = base.failed(exc.reason, str(exc)[:300], timings={"total": base.elapsed_ms(start)})
        out.details = {"evidence": _evidence(out)}
        return out
    except Exception as exc:
        out = base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
        more: dict[str, object] = {}
        if isinstance(exc, ssl.SSLError):  # the verification error, and what was presented
            more = {"verify_error": out.message}
            if presented.certs:
                more |= {"chain": _chain(presented, b""), "tls_version": presented.version}
            else:
                more |= await _presented(spec, start + timeout - time.perf_counter(), source_address)
        out.details = {"evidence": _evidence(out, **more)}
        return out
    handshake_ms = base.elapsed_ms(start)
    revocation = await _revocation(spec, der, start + timeout - time.perf_counter(), source_address)
    total = base.elapsed_ms(start)
    days_left = cert.days_left()
    timings = {"handshake": handshake_ms, "total": total} if revocation else {"total": total}
    if revocation:
        timings["ocsp"] = round(total - handshake_ms, 3)
    fields: dict[str, object] = {
        "timings": timings,
        "details": {
            **(revocation or {}),
            "days_left": round(days_left, 2),
            "not_after": cert.not_after.isoformat(),
            "issuer": cert.issuer_text(),
            "subject": ", ".join(f"{k}={v}" for k, v in cert.subject.items()),
            "tls_version": version,
        },
    }
    failure: tuple[Reason, str] | None = None
    if days_left <= 0:
        failure = Reason.CERT_EXPIRED, f"expired on {cert.not_after:%Y-%m-%d}"
    elif revocation and revocation.get("ocsp_status") == "revoked":
        when = str(revocation.get("revoked_at", ""))[:10]
        failure = Reason.CERT_REVOKED, f"revoked{' on ' + when if when else ''} (OCSP)"
    elif spec.expected_issuer and spec.expected_issuer not in cert.issuer_text():
        failure = (
            Reason.ISSUER_MISMATCH,
            f"issuer {cert.issuer_text()!r} does not contain {spec.expected_issuer!r}",
        )
    elif spec.min_version and _version_below(version, spec.min_version):
        failure = Reason.PROTOCOL_MISMATCH, f"negotiated {version}, expected at least {spec.min_version}"
    if failure is not None:
        out = base.failed(*failure, **fields)  # type: ignore[arg-type]
        out.details["evidence"] = _evidence(out, chain=_chain(presented, der), tls_version=version)
        return out
    if days_left < spec.warn_days:
        return base.Outcome(
            status=base.Status.DEGRADED,
            reason=Reason.CERT_EXPIRING,
            message=f"expires in {days_left:.1f} days (on {cert.not_after:%Y-%m-%d})",
            **fields,  # type: ignore[arg-type]
        )
    return base.passed(total, None, **fields)
