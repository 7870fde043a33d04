"""The evidence of a failed HTTP response, from plain values: the http checker builds it
from its aiohttp response, and the ingest benchmark (bench/ingest.py) through the same
function, so the benchmark stores what probes send."""

from __future__ import annotations

from collections.abc import Iterable

from probefleet.shared.evidence import pack_body
from probefleet.shared.redact import redact_url
from probefleet.shared.wire import HttpSpec, Reason

# Response headers whose values are credentials a server hands out: kept by name only.
SECRET_RESPONSE_HEADERS = frozenset(
    {"set-cookie", "authorization", "proxy-authorization", "www-authenticate"}
)


def http_response(
    spec: HttpSpec,
    failure: tuple[Reason, str],
    *,
    ips: list[str],
    status_line: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    final_url: str | None = None,
) -> dict[str, object]:
    """What the server answered: status line, headers (credential values left out), the
    addresses that answered, the URL after redirects (secret parameters redacted) and,
    unless the monitor is sensitive or turned it off, the body (shared/evidence.py)."""
    out: dict[str, object] = {
        "reason": str(failure[0]),
        "message": failure[1],
        "ips": ips,
        "status_line": status_line,
        "headers": [
            # str(): aiohttp's header names are multidict istr, which msgspec cannot encode.
            [str(name), "<redacted>" if name.lower() in SECRET_RESPONSE_HEADERS else value]
            for name, value in headers
        ],
    }
    if final_url is not None:
        out["final_url"] = redact_url(final_url, spec.secret_params)
    if spec.evidence_body and not spec.sensitive:
        out |= pack_body(body)
    return out
