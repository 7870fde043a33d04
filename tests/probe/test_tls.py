from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from probefleet.probe import x509
from probefleet.probe.checkers import tls
from probefleet.shared.wire import Reason, Status, TlsSpec

from .conftest import RecordPeers, ServeTls, leaf


async def run(spec: TlsSpec) -> tls.Outcome:
    return await tls.check(spec, timeout=1.0, source_address=None)


@pytest.mark.parametrize(
    ("days", "host", "fields", "status", "reason"),
    [
        (90, "127.0.0.1", {}, Status.OK, None),
        (5, "127.0.0.1", {}, Status.DEGRADED, Reason.CERT_EXPIRING),
        (5, "127.0.0.1", {"warn_days": 3}, Status.OK, None),
        (-2, "127.0.0.1", {}, Status.FAIL, Reason.CERT_EXPIRED),
        (-2, "127.0.0.1", {"verify_chain": False}, Status.FAIL, Reason.CERT_EXPIRED),
        (90, "other.test", {}, Status.FAIL, Reason.HOSTNAME_MISMATCH),
        (90, "other.test", {"verify_hostname": False}, Status.OK, None),
        (90, "127.0.0.1", {"expected_issuer": "Probefleet Test CA"}, Status.OK, None),
        (90, "127.0.0.1", {"expected_issuer": "Other CA"}, Status.FAIL, Reason.ISSUER_MISMATCH),
    ],
    ids=[
        "valid",
        "expiring",
        "under-threshold",
        "expired",
        "expired-unverified",
        "wrong-host",
        "wrong-host-unchecked",
        "issuer",
        "wrong-issuer",
    ],
)
async def test_it_judges_the_certificate(
    ca: trustme.CA,
    ca_pem: str,
    serve_tls: ServeTls,
    days: int,
    host: str,
    fields: dict[str, object],
    status: Status,
    reason: Reason | None,
) -> None:
    port = await serve_tls(leaf(ca, days=days, host=host))
    spec = TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, **fields)  # type: ignore[arg-type]
    out = await run(spec)
    assert (out.status, out.reason) == (status, reason), out.message
    if status != Status.FAIL or not spec.verify_chain or reason == Reason.ISSUER_MISMATCH:
        assert "Probefleet Test CA" in str(out.details["issuer"])


async def test_it_fails_a_self_signed_certificate(serve_tls: ServeTls) -> None:
    own = trustme.CA(organization_name="Nobody Trusts Me")
    port = await serve_tls(leaf(own))
    out = await run(TlsSpec(host="127.0.0.1", port=port))
    assert out.reason == Reason.CERT_INVALID


async def test_it_checks_the_protocol_version(ca: trustme.CA, ca_pem: str, serve_tls: ServeTls) -> None:
    port = await serve_tls(leaf(ca), max_version=ssl.TLSVersion.TLSv1_2)
    ok = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, min_version="TLSv1.2"))
    assert ok.status == Status.OK and ok.details["tls_version"] == "TLSv1.2"
    old = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, min_version="TLSv1.3"))
    assert old.reason == Reason.PROTOCOL_MISMATCH


async def test_it_fails_a_server_that_does_not_speak_tls() -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    out = await run(TlsSpec(host="127.0.0.1", port=int(server.sockets[0].getsockname()[1])))
    server.close()
    assert out.reason == Reason.TLS_ERROR, out.message


@pytest.mark.parametrize(
    ("days", "host", "reason", "error"),
    [
        (-1, "127.0.0.1", Reason.CERT_EXPIRED, "expired"),
        (30, "other.test", Reason.HOSTNAME_MISMATCH, "mismatch"),
    ],
    ids=["expired", "wrong-host"],
)
async def test_a_failed_verification_keeps_the_error_and_the_presented_certificate(
    ca: trustme.CA, ca_pem: str, serve_tls: ServeTls, days: int, host: str, reason: Reason, error: str
) -> None:
    port = await serve_tls(leaf(ca, days=days, host=host))
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem))
    assert out.reason == reason, out.message
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict) and error in str(evidence["verify_error"]).lower()
    (cert,) = evidence["chain"]  # type: ignore[misc]
    assert "Probefleet Test CA" in cert["issuer"] and cert["sans"] == [host]
    assert cert["not_before"] < cert["not_after"] and cert["serial"]
    assert evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")


async def test_a_passing_check_keeps_no_evidence(ca: trustme.CA, ca_pem: str, serve_tls: ServeTls) -> None:
    port = await serve_tls(leaf(ca))
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem))
    assert out.status == Status.OK and "evidence" not in out.details
    wrong = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, expected_issuer="Someone Else"))
    assert wrong.reason == Reason.ISSUER_MISMATCH
    assert wrong.details["evidence"]["chain"][0]["sans"] == ["127.0.0.1"]  # type: ignore[index]


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"]
)
@pytest.mark.parametrize(
    ("days", "fields", "reason"),
    [(-1, {}, Reason.CERT_EXPIRED), (30, {"expected_issuer": "Other CA"}, Reason.ISSUER_MISMATCH)],
    ids=["failed-verification", "judged-after-handshake"],
)
async def test_the_evidence_holds_the_whole_presented_chain(
    ca: trustme.CA,
    ca_pem: str,
    serve_tls: ServeTls,
    version: ssl.TLSVersion,
    days: int,
    fields: dict[str, object],
    reason: Reason,
) -> None:
    """A server sending its leaf and the intermediate that issued it: both are in the
    evidence, leaf first, under either version's Certificate message."""
    intermediate = ca.create_child_ca()
    port = await serve_tls(leaf(intermediate, days=days), max_version=version)
    out = await run(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, **fields))  # type: ignore[arg-type]
    assert out.reason == reason, out.message
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict)
    first, second = evidence["chain"]  # type: ignore[misc]
    assert first["sans"] == ["127.0.0.1"] and second["sans"] == []
    assert first["issuer"] == second["subject"] and "Probefleet Test CA" in second["issuer"]
    assert first["serial"] != second["serial"] and first["not_after"] < second["not_after"]
    assert evidence["tls_version"] == version.name.replace("_", ".")


def _message(certs: list[bytes], *, tls13: bool) -> bytes:
    """A Certificate handshake message as a server sends it."""
    entries = b"".join(len(c).to_bytes(3, "big") + c + (b"\x00\x00" if tls13 else b"") for c in certs)
    body = (b"\x00" if tls13 else b"") + len(entries).to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize("tls13", [True, False], ids=["tls1.3", "tls1.2"])
@pytest.mark.parametrize(
    ("certs", "cut", "expected"),
    [
        ([b"leaf", b"intermediate"], 0, [b"leaf", b"intermediate"]),
        ([b"c%d" % i for i in range(30)], 0, [b"c%d" % i for i in range(x509.MAX_CHAIN)]),
        ([b"leaf", b"intermediate"], 5, [b"leaf"]),
        ([], 0, []),
    ],
    ids=["two", "bounded", "truncated", "empty"],
)
def test_a_certificate_message_is_read_within_its_bounds(
    tls13: bool, certs: list[bytes], cut: int, expected: list[bytes]
) -> None:
    message = _message(certs, tls13=tls13)
    assert x509.certificate_list(message[: len(message) - cut], tls13=tls13) == expected


async def test_it_connects_from_the_probe_source_address(
    ca: trustme.CA, ca_pem: str, serve_tls: ServeTls, record_peers: RecordPeers
) -> None:
    port, peers = await record_peers(await serve_tls(leaf(ca)))
    spec = TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem)
    out = await tls.check(spec, timeout=2.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
    assert peers and set(peers) == {"127.0.0.12"}
