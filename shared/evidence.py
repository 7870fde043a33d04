"""A response body in a failed result's evidence, as it travels from probe to controller.

The probe compresses the body, not PostgreSQL: stored as text, every failed result's
64 KiB went through pglz into TOAST on the results ingest path (44 % fewer results/s
in bench/RESULTS.md, "Evidence on the results ingest path"). A body of up to TEXT_UP_TO
bytes stays text in `body`; a longer one travels as `body_gzip_b64`, the base64 of the
gzip of its kept bytes, with `body_bytes`, their number. pglz gains too little on base64
of compressed data and stores it as it is: for the 64 KiB body of bench/ingest.py the
details column holds 21 KiB uncompressed (`pg_column_compression` null), where pglz made
15 KiB of the text, at the cost of compressing 64 KiB inside the ingest transaction.
Gzip, not a bare zlib stream, so a person holding the raw field can read it with
`base64 -d | gunzip`.

`pack_body` is the probe's side; `unpack_body` every reader's: the API shows `body` as
text whichever form a result was stored in.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from typing import Any

# The most of a response body evidence keeps, and the most a reader decodes.
EVIDENCE_BODY = 64 << 10
# Up to this many bytes a body stays text: under it the gzip header and base64 cost
# more than they save, and the row is small anyway.
TEXT_UP_TO = 1 << 10
# zlib level 1: 0.35 ms for 64 KiB of HTML-like text here (level 6: 1.9 ms, about a whole
# check's CPU on a probe) for 24 % of its size where level 6 gives 18 %.
LEVEL = 1
_PACKED = ("body_gzip_b64", "body_bytes")


def pack_body(body: bytes) -> dict[str, object]:
    """The evidence fields for a response body: its first EVIDENCE_BODY bytes, as text
    when short, else compressed; `body_truncated` when it was longer."""
    kept = body[:EVIDENCE_BODY]
    out: dict[str, object] = {"body_truncated": len(body) > EVIDENCE_BODY}
    if len(kept) <= TEXT_UP_TO:
        out["body"] = kept.decode("utf-8", "replace")
        return out
    out["body_gzip_b64"] = base64.b64encode(gzip.compress(kept, LEVEL, mtime=0)).decode("ascii")
    out["body_bytes"] = len(kept)
    return out


def unpack_body(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence as readers show it: a compressed body decoded into `body` (UTF-8,
    invalid bytes replaced, as the probe keeps a short one). Decoding stops at
    EVIDENCE_BODY bytes whatever the stored data claims (`body_truncated` then); data
    that does not decode leaves `body` out and says so in `body_error`."""
    if "body_gzip_b64" not in evidence:
        return dict(evidence)
    out = {k: v for k, v in evidence.items() if k not in _PACKED}
    try:
        stream = zlib.decompressobj(wbits=31)  # 31: gzip framing
        kept = stream.decompress(base64.b64decode(evidence["body_gzip_b64"], validate=True), EVIDENCE_BODY)
    except (binascii.Error, zlib.error, TypeError, ValueError):
        out["body_error"] = "the stored body does not decode"
        return out
    if stream.unconsumed_tail:
        out["body_truncated"] = True
    elif not stream.eof:
        out["body_error"] = "the stored body is cut short"
    out["body"] = kept.decode("utf-8", "replace")
    return out
