"""The tls kind's STARTTLS (smtp, imap, pop3) and OCSP: a CA of our own whose leaf names a
local OCSP responder, an aiohttp app built on cryptography's OCSP response builder."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import Reason, Status, TlsSpec

from .by_hand import check_by_hand
from .conftest import start_app, target_app
from .test_imap import Serve, serve_imap
from .test_pop3 import serve_pop3
from .test_smtp import serve_smtp

__all__ = ["serve_imap", "serve_pop3", "serve_smtp"]  # fixtures used here

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A CA, and leaves that name `ocsp_url` as their responder."""

    def __init__(self, ocsp_url: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Probefleet OCSP Test CA"))
            .issuer_name(_name("Probefleet OCSP Test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ocsp_url = ocsp_url
        self.revoked: set[int] = set()

    @property
    def ca_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def leaf_context(self) -> tuple[ssl.SSLContext, int]:
        key = ec.generate_private_key(ec.SECP256R1())
        aia = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp_url)
                )
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("127.0.0.1"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=90))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(aia, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            ctx.load_cert_chain(cert_file, key_file)
        return ctx, cert.serial_number

    async def answer(self, request: web.Request) -> web.Response:
        req = ocsp.load_der_ocsp_request(await request.read())
        revoked = req.serial_number in self.revoked
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=req.issuer_name_hash,
                issuer_key_hash=req.issuer_key_hash,
                algorithm=req.hash_algorithm,
                serial_number=req.serial_number,
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=NOW - dt.timedelta(minutes=5),
                next_update=NOW + dt.timedelta(hours=1),
                revocation_time=NOW - dt.timedelta(days=1) if revoked else None,
                revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.cert)
        )
        response = builder.sign(self.key, hashes.SHA256())
        return web.Response(
            body=response.public_bytes(serialization.Encoding.DER), content_type="application/ocsp-response"
        )


@pytest.fixture
async def pki() -> AsyncIterator[Pki]:
    holder: list[Pki] = []

    async def answer(request: web.Request) -> web.Response:
        return await holder[0].answer(request)

    app = web.Application()
    app.router.add_post("/ocsp", answer)
    runner, port = await start_app(app)
    holder.append(Pki(f"http://127.0.0.1:{port}/ocsp"))
    yield holder[0]
    await runner.cleanup()


@pytest.fixture
async def serve_leaf(pki: Pki) -> AsyncIterator[tuple[int, int]]:
    """An HTTPS server presenting a fresh leaf of `pki`: (port, the leaf's serial)."""
    ctx, serial = pki.leaf_context()
    runner, port = await start_app(target_app(), ctx)
    yield port, serial
    await runner.cleanup()


async def run(spec: TlsSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["tls"](spec, timeout=budget, source_address=None)


async def test_a_good_answer_passes_with_the_responder_in_the_details(
    pki: Pki, serve_leaf: tuple[int, int]
) -> None:
    port, _ = serve_leaf
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=pki.ca_pem))
    assert out.status == Status.OK, out
    assert out.details["ocsp_status"] == "good" and out.details["ocsp_responder"] == pki.ocsp_url
    assert {"handshake", "ocsp", "total"} <= out.timings.keys()


async def test_a_revoked_certificate_fails(pki: Pki, serve_leaf: tuple[int, int]) -> None:
    port, serial = serve_leaf
    pki.revoked.add(serial)
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=pki.ca_pem))
    assert out.reason == Reason.CERT_REVOKED, out
    assert out.details["revocation_reason"] == "key_compromise"


async def test_an_unreachable_responder_is_reported_not_failed(pki: Pki) -> None:
    pki.ocsp_url = "http://127.0.0.1:9/ocsp"
    ctx, _ = pki.leaf_context()
    runner, port = await start_app(target_app(), ctx)
    try:
        out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=pki.ca_pem))
    finally:
        await runner.cleanup()
    assert out.status == Status.OK, out
    assert "127.0.0.1:9" in str(out.details["ocsp_error"])


async def test_ocsp_can_be_turned_off(pki: Pki, serve_leaf: tuple[int, int]) -> None:
    port, serial = serve_leaf
    pki.revoked.add(serial)
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=pki.ca_pem, check_ocsp=False))
    assert out.status == Status.OK and "ocsp_status" not in out.details


async def test_starttls_for_smtp_imap_and_pop3(
    serve_smtp: Serve, serve_imap: Serve, serve_pop3: Serve, ca_pem: str
) -> None:
    for protocol, serve in (("smtp", serve_smtp), ("imap", serve_imap), ("pop3", serve_pop3)):
        port = await serve(days=30)
        out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, starttls=protocol))  # type: ignore[arg-type]
        assert out.status == Status.OK, (protocol, out)
        assert 29 < out.details["days_left"] < 31  # type: ignore[operator]


async def test_starttls_refused_has_its_reason(serve_imap: Serve, ca_pem: str) -> None:
    port = await serve_imap(days=None)  # no certificate: the server answers STARTTLS with BAD
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, starttls="imap"))
    assert out.reason == Reason.STARTTLS_UNAVAILABLE, out


async def test_probefleet_probe_check_takes_starttls_and_check_ocsp(
    pki: Pki, serve_leaf: tuple[int, int], serve_pop3: Serve, ca_pem: str, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca_pem)
    target = ("--kind", "tls", "--host", "127.0.0.1", "--ca-file", str(ca_file))
    code, out = await check_by_hand(*target, "--port", str(await serve_pop3()), "--starttls", "pop3")
    assert code == 0 and out["details"]["tls_version"], out
    port, serial = serve_leaf
    pki.revoked.add(serial)
    ca_file.write_text(pki.ca_pem)
    code, out = await check_by_hand(*target, "--port", str(port), "--check-ocsp")
    assert code == 1 and out["reason"] == "cert_revoked", out
    code, out = await check_by_hand(*target, "--port", str(port), "--no-check-ocsp")
    assert code == 0 and "ocsp_status" not in out["details"], out
