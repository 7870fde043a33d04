"""The evidence body's travelling and stored forms (shared/evidence.py): what a reader makes
of every kind of stored evidence, including data no probe of ours would send."""

from __future__ import annotations

import base64
import gzip
import random
from typing import Any

import msgspec
import pytest

from probefleet.shared.evidence import (
    EVIDENCE_BODY,
    TEXT_UP_TO,
    from_stored,
    pack_body,
    to_stored,
    unpack_body,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PAGE = b"<h1>502 Bad Gateway</h1>" * 400  # 9.6 KiB
NOISE = random.Random(20).randbytes(8000).hex().encode()  # gzip keeps about half


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (
            {"status_line": "HTTP/1.1 503", "body": "down", "body_truncated": False},
            {"status_line": "HTTP/1.1 503", "body": "down", "body_truncated": False},
        ),
        ({"reason": "connection_refused", "ips": []}, {"reason": "connection_refused", "ips": []}),
        (
            {"body_gzip_b64": _b64(gzip.compress(PAGE)), "body_bytes": len(PAGE), "body_truncated": False},
            {"body": PAGE.decode(), "body_truncated": False},
        ),
        (
            # 10 MiB of zeros in 10 KiB: decoding stops at EVIDENCE_BODY.
            {"body_gzip_b64": _b64(gzip.compress(bytes(10 << 20))), "body_truncated": False},
            {"body": "\0" * EVIDENCE_BODY, "body_truncated": True},
        ),
        (
            {"body_gzip_b64": "not base64!", "body_truncated": False},
            {"body_error": "the stored body does not decode", "body_truncated": False},
        ),
        ({"body_gzip_b64": _b64(PAGE)}, {"body_error": "the stored body does not decode"}),
        ({"body_gzip_b64": 42}, {"body_error": "the stored body does not decode"}),
        # As check_results.evidence holds it: the gzip bytes themselves; base64 once the
        # bytes went through JSON (msgspec writes bytes so).
        ({"body_gzip": gzip.compress(PAGE), "body_bytes": len(PAGE)}, {"body": PAGE.decode()}),
        ({"body_gzip": _b64(gzip.compress(PAGE))}, {"body": PAGE.decode()}),
        ({"body_gzip": b"not gzip"}, {"body_error": "the stored body does not decode"}),
    ],
    ids=[
        "text",
        "no-body",
        "packed",
        "bomb",
        "bad-base64",
        "not-gzip",
        "not-a-string",
        "stored-bytes",
        "stored-via-json",
        "stored-not-gzip",
    ],
)
def test_a_reader_shows_every_stored_form_as_text_or_says_why_not(
    stored: dict[str, Any], shown: dict[str, Any]
) -> None:
    assert unpack_body(stored) == shown


def test_a_stream_cut_short_shows_what_it_holds_and_says_so() -> None:
    whole = gzip.compress(PAGE, 1)
    out = unpack_body({"body_gzip_b64": _b64(whole[: len(whole) // 2]), "body_bytes": len(PAGE)})
    assert out["body_error"] == "the stored body is cut short" and "body_bytes" not in out
    assert 0 < len(out["body"]) < len(PAGE) and PAGE.decode().startswith(out["body"])


@pytest.mark.parametrize(
    "body",
    [b"", b"x" * TEXT_UP_TO, b"x" * (TEXT_UP_TO + 1), PAGE, bytes(range(256)) * 300],
    ids=["empty", "text-limit", "just-over", "page", "binary-over-64KiB"],
)
def test_what_the_probe_packs_reads_back_as_the_text_it_kept(body: bytes) -> None:
    packed = pack_body(body)
    assert ("body" in packed) is (len(body) <= TEXT_UP_TO)
    assert packed["body_truncated"] is (len(body) > EVIDENCE_BODY)
    assert unpack_body(packed)["body"] == body[:EVIDENCE_BODY].decode("utf-8", "replace")


@pytest.mark.parametrize(
    "evidence",
    [
        {"reason": "status_mismatch", "ips": ["127.0.0.1"], **pack_body(PAGE)},
        {"reason": "status_mismatch", **pack_body(NOISE)},
        {"reason": "status_mismatch", **pack_body(b"short")},
        {"reason": "connection_refused", "ips": []},
        {"body_gzip_b64": "not base64!", "body_truncated": False},
    ],
    ids=["packed", "packed-noise", "text", "no-body", "bad-base64"],
)
def test_stored_evidence_reads_as_what_the_probe_sent(evidence: dict[str, Any]) -> None:
    stored = to_stored(evidence)
    assert unpack_body(from_stored(stored)) == unpack_body(evidence)
    if "body_bytes" in evidence:  # the gzip bytes as the probe sent them, nothing added
        assert from_stored(stored)["body_gzip"] == evidence["body_gzip"]
        assert len(stored) == len(msgspec.msgpack.encode(evidence))


def test_an_older_probe_s_base64_body_is_stored_as_its_gzip_bytes() -> None:
    sent = {"reason": "status_mismatch", **pack_body(NOISE)}
    assert isinstance(sent["body_gzip"], bytes) and "body_gzip_b64" not in sent
    older = {k: v for k, v in sent.items() if k != "body_gzip"} | {"body_gzip_b64": _b64(sent["body_gzip"])}
    stored = to_stored(older)
    assert from_stored(stored) == from_stored(to_stored(sent))
    assert unpack_body(from_stored(stored)) == unpack_body(older) == unpack_body(sent)
    assert len(stored) < len(older["body_gzip_b64"])
