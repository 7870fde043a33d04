"""Just enough DER to read a peer certificate's issuer, subject, validity and SANs, and
the chain a server presents.

`SSLSocket.getpeercert()` returns an empty dict when verification is off, and the
probe must report expiry for unverified targets too, without depending on
`cryptography`. Python 3.11 gives the peer's leaf only (`get_unverified_chain` is 3.13):
`record_chain` reads the whole presented chain from the handshake's Certificate message.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_EXPLICIT_0 = 0xA0
_NAME_OIDS = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU"}
_EXPLICIT_3 = 0xA3
_SAN_OID = b"\x55\x1d\x11"
_DNS_NAME, _IP_ADDRESS = 0x82, 0x87
# Evidence bounds: a hostile server cannot make a failed result large.
MAX_CHAIN = 10
MAX_SANS = 20
MAX_NAME = 256


@dataclass(frozen=True)
class CertInfo:
    issuer: dict[str, str]
    subject: dict[str, str]
    not_before: datetime
    not_after: datetime
    sans: tuple[str, ...] = ()

    def days_left(self, now: datetime | None = None) -> float:
        now = now or datetime.now(UTC)
        return (self.not_after - now).total_seconds() / 86400

    def issuer_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.issuer.items())


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, position after the element) of the element at `pos`."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, data[pos : pos + length], pos + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        out.append((tag, value))
    return out


def _name(data: bytes) -> dict[str, str]:
    name: dict[str, str] = {}
    for _, rdn in _children(data):
        for _, attribute in _children(rdn):
            (oid_tag, oid), (_, value) = _children(attribute)[:2]
            key = _NAME_OIDS.get(oid) if oid_tag == _OID else None
            if key:
                name[key] = value.decode("utf-8", "replace")
    return name


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == _UTC_TIME else "%Y%m%d%H%M%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def parse(der: bytes) -> CertInfo:
    """Parse a DER certificate; raises ValueError when it is not one."""
    try:
        _, cert, _ = _tlv(der, 0)
        _, tbs = _children(cert)[0]
        fields = _children(tbs)
        if fields[0][0] == _EXPLICIT_0:
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        issuer, validity, subject = fields[2][1], fields[3][1], fields[4][1]
        (nb_tag, nb), (na_tag, na) = _children(validity)
        extensions = next((v for t, v in fields[6:] if t == _EXPLICIT_3), b"")
        return CertInfo(
            _name(issuer), _name(subject), _time(nb_tag, nb), _time(na_tag, na), _sans(extensions)
        )
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a DER certificate: {exc}") from exc


def _sans(extensions: bytes) -> tuple[str, ...]:
    """The DNS names and IP addresses of the subjectAltName extension, if any."""
    if not extensions:
        return ()
    for _, extension in _children(_children(extensions)[0][1]):
        parts = _children(extension)
        if parts[0] != (_OID, _SAN_OID):
            continue
        names = []
        for tag, value in _children(_children(parts[-1][1])[0][1]):
            if tag == _DNS_NAME:
                names.append(value.decode("ascii", "replace"))
            elif tag == _IP_ADDRESS and len(value) in (4, 16):
                names.append(str(ipaddress.ip_address(value)))
        return tuple(names)
    return ()


def _text(name: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in name.items())[:MAX_NAME]


def summary(der: bytes) -> dict[str, object]:
    """One presented certificate for evidence, bounded: subject, issuer, validity, SANs."""
    try:
        cert = parse(der)
    except ValueError as exc:
        return {"error": f"unreadable certificate: {exc}"[:200]}
    return {
        "subject": _text(cert.subject),
        "issuer": _text(cert.issuer),
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "sans": list(cert.sans[:MAX_SANS]),
        **({"sans_truncated": True} if len(cert.sans) > MAX_SANS else {}),
    }


@dataclass
class Presented:
    """What a server presented in a handshake: its certificates, leaf first, and the
    protocol version it chose (as SSLObject.version() spells it)."""

    certs: list[bytes] = field(default_factory=list)
    version: str | None = None


def record_chain(ctx: ssl.SSLContext, into: Presented | None = None) -> Presented:
    """`into` (or a new Presented), which the handshake of `ctx` fills with the
    certificates the server sends (its Certificate message, at most MAX_CHAIN), verified
    or not.

    OpenSSL's message callback (exposed as the private SSLContext._msg_callback since 3.8)
    sees handshake messages after decryption, so TLS 1.3 works too. Without it (another
    Python) nothing is recorded and callers keep the leaf from getpeercert()."""
    seen = Presented() if into is None else into

    def on_message(_conn: Any, direction: str, version: Any, content: Any, kind: Any, data: bytes) -> None:
        if direction == "read" and content == _HANDSHAKE and kind == _CERTIFICATE and not seen.certs:
            seen.certs.extend(certificate_list(bytes(data), tls13=version == ssl.TLSVersion.TLSv1_3))
            name = getattr(version, "name", None)
            seen.version = name.replace("_", ".") if isinstance(name, str) else None

    if hasattr(ctx, "_msg_callback"):
        ctx._msg_callback = on_message
    return seen


_HANDSHAKE = getattr(getattr(ssl, "_TLSContentType", None), "HANDSHAKE", 22)
_CERTIFICATE = getattr(getattr(ssl, "_TLSMessageType", None), "CERTIFICATE", 11)


def certificate_list(message: bytes, *, tls13: bool) -> list[bytes]:
    """The DER certificates of a Certificate handshake message (with its 4-byte header):
    TLS 1.3 adds a request context before the list and extensions after each entry
    (RFC 8446 4.4.2; RFC 5246 7.4.2). Malformed: what was read before the fault."""
    certs: list[bytes] = []
    pos = 4
    if tls13:
        pos += 1 + message[pos] if len(message) > pos else 0
    end = min(len(message), pos + 3 + int.from_bytes(message[pos : pos + 3], "big"))
    pos += 3
    while pos + 3 <= end and len(certs) < MAX_CHAIN:
        size = int.from_bytes(message[pos : pos + 3], "big")
        pos += 3
        if pos + size > end:
            break
        certs.append(message[pos : pos + size])
        pos += size
        if tls13:
            pos += 2 + int.from_bytes(message[pos : pos + 2], "big")
    return certs
