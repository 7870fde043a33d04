"""OCSP (RFC 6960) for the tls check: ask the responder a certificate names whether it
is revoked. The issuer comes from the extra CA (ca_pem) or from the certificate's
caIssuers URL; the response must be signed by the issuer or by a responder certificate
the issuer signed for OCSP signing.

The answer is "good", "revoked", "unknown", or None when the certificate names no
responder; a responder that cannot be reached or answers nonsense raises OcspError (the
check reports it in its details and does not fail on it: soft-fail, as browsers do).
"""

from __future__ import annotations

import datetime as dt

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

_MAX_RESPONSE = 64 << 10


class OcspError(Exception):
    pass


def _access(cert: x509.Certificate, method: x509.ObjectIdentifier) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == method and isinstance(desc.access_location, x509.UniformResourceIdentifier):
            url: str = desc.access_location.value
            if url.startswith(("http://", "https://")):
                return url
    return None


def responder_url(cert: x509.Certificate) -> str | None:
    return _access(cert, AuthorityInformationAccessOID.OCSP)


async def _fetch(session: aiohttp.ClientSession, url: str, body: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    method = "POST" if body is not None else "GET"
    try:
        async with session.request(method, url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise OcspError(f"{url} answered HTTP {resp.status}")
            return await resp.content.read(_MAX_RESPONSE)
    except aiohttp.ClientError as exc:
        raise OcspError(f"{url}: {exc}") from None


async def _issuer(
    session: aiohttp.ClientSession, cert: x509.Certificate, ca_pem: str | None
) -> x509.Certificate:
    if ca_pem:
        for candidate in x509.load_pem_x509_certificates(ca_pem.encode()):
            if candidate.subject == cert.issuer:
                return candidate
    url = _access(cert, AuthorityInformationAccessOID.CA_ISSUERS)
    if url is None:
        raise OcspError("the issuer's certificate is not known (no ca_pem match, no caIssuers URL)")
    data = await _fetch(session, url)
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return x509.load_pem_x509_certificate(data)


def _verify(signer: x509.Certificate, response: ocsp.OCSPResponse) -> None:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            assert algorithm is not None
            key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            assert algorithm is not None
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(response.signature, response.tbs_response_bytes)
        else:
            raise OcspError(f"an OCSP signer key of type {type(key).__name__} is not supported")
    except InvalidSignature:
        raise OcspError("the OCSP response's signature does not verify") from None


def _check_signature(issuer: x509.Certificate, response: ocsp.OCSPResponse) -> None:
    """Signed by the issuer, or by a delegated responder the issuer certified."""
    for delegate in response.certificates:
        if delegate.issuer != issuer.subject:
            continue
        try:
            delegate.verify_directly_issued_by(issuer)
            usage = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            _verify(delegate, response)
            return
    _verify(issuer, response)


async def status(
    session: aiohttp.ClientSession, der: bytes, ca_pem: str | None
) -> tuple[str, dict[str, object]] | None:
    """("good" | "revoked" | "unknown", details), or None without a responder."""
    cert = x509.load_der_x509_certificate(der)
    url = responder_url(cert)
    if url is None:
        return None
    issuer = await _issuer(session, cert, ca_pem)
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    )  # RFC 6960's CertID
    data = await _fetch(session, url, request.public_bytes(serialization.Encoding.DER))
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise OcspError("the responder's answer is not an OCSP response") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"the responder answered {response.response_status.name}")
    if response.serial_number != cert.serial_number:
        raise OcspError("the OCSP response is about another certificate")
    _check_signature(issuer, response)
    now = dt.datetime.now(dt.UTC)
    next_update = response.next_update_utc
    if next_update is not None and next_update < now:
        raise OcspError(f"the OCSP response is stale (next update {next_update:%Y-%m-%d %H:%M} UTC)")
    answer = response.certificate_status.name.lower()
    details: dict[str, object] = {"ocsp_responder": url, "ocsp_status": answer}
    if response.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        revoked_at = response.revocation_time_utc
        if revoked_at is not None:
            details["revoked_at"] = revoked_at.isoformat()
        if response.revocation_reason is not None:
            details["revocation_reason"] = response.revocation_reason.name
    return answer, details
