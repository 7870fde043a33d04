"""A response body in a failed result's evidence, as it travels from probe to controller
and is stored.

The probe compresses the body, not PostgreSQL: stored as text, every failed result's
64 KiB went through pglz into TOAST on the results ingest path (44 % fewer results/s
in bench/RESULTS.md, "Evidence on the results ingest path"). A body of up to TEXT_UP_TO
bytes stays text in `body`; a longer one travels as `body_gzip`, the gzip of its kept
bytes (msgpack carries bytes as they are), with `body_bytes`, their number. Gzip, not a
bare zlib stream, so a person holding the raw field can read it with `gunzip` (through
JSON, msgspec writes bytes in base64: `base64 -d | gunzip`). Probes of the version before
sent the base64 in the message, `body_gzip_b64`: the controller decoded 21 KiB of base64
per failed result (55-75 us) and moved a third more bytes.

The controller stores evidence apart from the rest of `details`: `to_stored` makes it
msgpack bytes for check_results.evidence (a bytea column kept out of line without
compression, migration 0023), the body as its gzip bytes (a `body_gzip_b64` of an older
probe decoded); `from_stored` reads it back. As JSON inside details, PostgreSQL parsed the
evidence into jsonb and tried pglz on it inside the ingest transaction, for base64 of
compressed data that pglz stores as it is anyway. Evidence stored before 0023 sits in
details->'evidence' as the probe sent it.

`pack_body` is the probe's side; `unpack_body` every reader's: the API shows `body` as
text whichever form a result was sent or stored in.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec

# The most of a response body evidence keeps, and the most a reader decodes.
EVIDENCE_BODY = 64 << 10
# Up to this many bytes a body stays text: under it the gzip header costs about what it
# saves, and the row is small anyway.
TEXT_UP_TO = 1 << 10
# zlib level 1: 0.35 ms for 64 KiB of HTML-like text here (level 6: 1.9 ms, about a whole
# check's CPU on a probe) for 24 % of its size where level 6 gives 18 %.
LEVEL = 1
_PACKED = ("body_gzip_b64", "body_gzip", "body_bytes")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode


def pack_body(body: bytes) -> dict[str, object]:
    """The evidence fields for a response body: its first EVIDENCE_BODY bytes, as text
    when short, else compressed; `body_truncated` when it was longer."""
    kept = body[:EVIDENCE_BODY]
    out: dict[str, object] = {"body_truncated": len(body) > EVIDENCE_BODY}
    if len(kept) <= TEXT_UP_TO:
        out["body"] = kept.decode("utf-8", "replace")
        return out
    out["body_gzip"] = gzip.compress(kept, LEVEL, mtime=0)
    out["body_bytes"] = len(kept)
    return out


def to_stored(evidence: Mapping[str, Any]) -> bytes:
    """The evidence as check_results.evidence holds it: msgpack, a compressed body as its
    gzip bytes (`body_gzip`, as probes send it; an older probe's `body_gzip_b64` decoded).
    A `body_gzip_b64` that is not base64 stays as it came, for `unpack_body` to report."""
    packed = evidence.get("body_gzip_b64")
    if isinstance(packed, str):
        try:
            raw = binascii.a2b_base64(packed, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
        else:
            evidence = {k: v for k, v in evidence.items() if k != "body_gzip_b64"} | {"body_gzip": raw}
    return _encode(evidence)


def from_stored(data: bytes) -> dict[str, Any]:
    """The evidence `to_stored` wrote, its body still compressed (`unpack_body` shows it)."""
    return _decode(data)


def unpack_body(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence as readers show it: a compressed body decoded into `body` (UTF-8,
    invalid bytes replaced, as the probe keeps a short one), whether it came as bytes
    (`body_gzip`, as probes send it and it is stored; base64 when it went through JSON) or
    as base64 (`body_gzip_b64`, from probes of the version before). Decoding stops at
    EVIDENCE_BODY bytes whatever the stored data claims (`body_truncated` then); data that
    does not decode leaves `body` out and says so in `body_error`."""
    if "body_gzip_b64" not in evidence and "body_gzip" not in evidence:
        return dict(evidence)
    out = {k: v for k, v in evidence.items() if k not in _PACKED}
    packed = evidence.get("body_gzip", evidence.get("body_gzip_b64"))
    try:
        data = packed if isinstance(packed, bytes) else base64.b64decode(packed, validate=True)
        stream = zlib.decompressobj(wbits=31)  # 31: gzip framing
        kept = stream.decompress(data, EVIDENCE_BODY)
    except (binascii.Error, zlib.error, TypeError, ValueError):
        out["body_error"] = "the stored body does not decode"
        return out
    if stream.unconsumed_tail:
        out["body_truncated"] = True
    elif not stream.eof:
        out["body_error"] = "the stored body is cut short"
    out["body"] = kept.decode("utf-8", "replace")
    return out
