"""TLS certificate check: chain, hostname, issuer, protocol version, days left."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ssl
import time

from probefleet.probe import x509
from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, TlsSpec

_VERSIONS = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]


def _context(spec: TlsSpec) -> ssl.SSLContext:
    ctx = base.tls_context(verify=spec.verify_chain, ca_pem=spec.ca_pem, check_hostname=spec.verify_hostname)
    # Older servers must still be reachable so that the version can be reported.
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    return ctx


async def _handshake(spec: TlsSpec, timeout: float, source_address: str | None) -> tuple[bytes, str | None]:
    async with asyncio.timeout(timeout):
        _, writer = await asyncio.open_connection(
            spec.host,
            spec.port,
            ssl=_context(spec),
            server_hostname=spec.server_name or spec.host,
            local_addr=base.local_addr(source_address),
        )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) or b"", ssl_object.version()
    finally:
        writer.close()


def _version_below(actual: str | None, minimum: str) -> bool:
    if actual not in _VERSIONS or minimum not in _VERSIONS:
        return actual != minimum
    return _VERSIONS.index(actual) < _VERSIONS.index(minimum)


async def check(spec: TlsSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    try:
        der, version = await _handshake(spec, timeout, source_address)
        cert = x509.parse(der)
    except Exception as exc:
        return base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
    total = base.elapsed_ms(start)
    days_left = cert.days_left()
    fields: dict[str, object] = {
        "timings": {"total": total},
        "details": {
            "days_left": round(days_left, 2),
            "not_after": cert.not_after.isoformat(),
            "issuer": cert.issuer_text(),
            "subject": ", ".join(f"{k}={v}" for k, v in cert.subject.items()),
            "tls_version": version,
        },
    }
    if days_left <= 0:
        return base.failed(Reason.CERT_EXPIRED, f"expired on {cert.not_after:%Y-%m-%d}", **fields)
    if spec.expected_issuer and spec.expected_issuer not in cert.issuer_text():
        message = f"issuer {cert.issuer_text()!r} does not contain {spec.expected_issuer!r}"
        return base.failed(Reason.ISSUER_MISMATCH, message, **fields)
    if spec.min_version and _version_below(version, spec.min_version):
        message = f"negotiated {version}, expected at least {spec.min_version}"
        return base.failed(Reason.PROTOCOL_MISMATCH, message, **fields)
    if days_left < spec.warn_days:
        return base.Outcome(
            status=base.Status.DEGRADED,
            reason=Reason.CERT_EXPIRING,
            message=f"expires in {days_left:.1f} days (on {cert.not_after:%Y-%m-%d})",
            **fields,  # type: ignore[arg-type]
        )
    return base.passed(total, None, **fields)
