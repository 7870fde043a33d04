"""Just enough DER to read a peer certificate's issuer, subject and validity.

`SSLSocket.getpeercert()` returns an empty dict when verification is off, and the
probe must report expiry for unverified targets too, without depending on
`cryptography`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_EXPLICIT_0 = 0xA0
_NAME_OIDS = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU"}


@dataclass(frozen=True)
class CertInfo:
    issuer: dict[str, str]
    subject: dict[str, str]
    not_before: datetime
    not_after: datetime

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
        return CertInfo(_name(issuer), _name(subject), _time(nb_tag, nb), _time(na_tag, na))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a DER certificate: {exc}") from exc
