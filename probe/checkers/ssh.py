"""SSH check: the server's identification line (banner) and its host key, the key's
SHA256 fingerprint compared with the pinned ones. No login is attempted.

The banner is read over a plain TCP connection (the server sends it first, RFC 4253
4.2); the host key comes from a key exchange by asyncssh's get_server_host_key, which
closes the connection before authentication. asyncssh is imported when a check runs."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
import warnings
from types import ModuleType

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, SshSpec

REQUIRES = ("asyncssh",)
_MAX_BANNER = 255  # RFC 4253 4.2, with CR LF


async def _banner(spec: SshSpec, source_address: str | None) -> str:
    reader, writer = await asyncio.open_connection(
        spec.host, spec.port, local_addr=base.local_addr(source_address)
    )
    try:
        # Lines before the identification may come first (RFC 4253 4.2).
        for _ in range(20):
            line = await reader.readline()
            if not line:
                break
            text = line[:_MAX_BANNER].decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("SSH-"):
                return text
        return ""
    finally:
        writer.close()


def _asyncssh() -> ModuleType:
    """asyncssh, imported without the DSA deprecation warnings cryptography gives at its import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
        import asyncssh
    return asyncssh


async def check(spec: SshSpec, *, timeout: float, source_address: str | None) -> Outcome:
    asyncssh = _asyncssh()

    start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        async with asyncio.timeout(timeout):
            banner = await _banner(spec, source_address)
            timings["banner"] = base.elapsed_ms(start)
            if not banner:
                return base.failed(
                    Reason.PROTOCOL_ERROR, "no SSH identification line", timings=_total(timings, start)
                )
            bind = {"local_addr": (source_address, 0)} if source_address else {}
            key = await asyncssh.get_server_host_key(spec.host, spec.port, **bind)
    except asyncssh.Error as exc:
        return base.failed(Reason.PROTOCOL_ERROR, str(exc)[:300], timings=_total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=_total(timings, start))
    timings["key_exchange"] = round(base.elapsed_ms(start) - timings["banner"], 3)
    fingerprint = key.get_fingerprint("sha256") if key is not None else ""
    details: dict[str, object] = {
        "banner": banner,
        "host_key_type": key.get_algorithm() if key is not None else "",
        "host_key_fingerprint": fingerprint,
    }
    fields: dict[str, object] = {"timings": _total(timings, start), "details": details}
    if spec.expected_banner is not None and spec.expected_banner not in banner:
        return base.failed(
            Reason.RESPONSE_MISMATCH, f"banner {banner!r} lacks {spec.expected_banner!r}", **fields
        )
    if spec.host_key_fingerprints and fingerprint not in spec.host_key_fingerprints:
        message = f"host key {fingerprint} is not one of the pinned {', '.join(spec.host_key_fingerprints)}"
        return base.failed(Reason.HOST_KEY_CHANGED, message[:300], **fields)
    return base.passed(timings["banner"], spec.degraded_ms, **fields)


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}
