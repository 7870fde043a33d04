"""smtp against a real aiosmtpd server on loopback: greeting, EHLO, STARTTLS, certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import SMTP

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import Reason, SmtpSpec, Status

from .by_hand import probe_check
from .conftest import RecordPeers, leaf

ServeSmtp = Callable[..., Awaitable[int]]


class Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


@pytest.fixture
async def serve_smtp(ca: trustme.CA) -> AsyncIterator[ServeSmtp]:
    servers: list[asyncio.Server] = []

    async def serve(*, days: float | None = 365, implicit: bool = False, hostname: str = "mx.test") -> int:
        ctx = None
        if days is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            leaf(ca, days=days).configure_cert(ctx)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Sink(), hostname=hostname, ident="ProbeSMTP", tls_context=None if implicit else ctx),
            "127.0.0.1",
            0,
            ssl=ctx if implicit else None,
        )
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield serve
    for server in servers:
        server.close()


async def run(spec: SmtpSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["smtp"](spec, timeout=budget, source_address=None)


async def test_greeting_and_ehlo_pass(serve_smtp: ServeSmtp) -> None:
    port = await serve_smtp(days=None)
    out = await run(SmtpSpec(host="127.0.0.1", port=port, expected_banner="mx.test"))
    assert out.status == Status.OK, out
    assert "mx.test" in str(out.details["banner"]) and "SIZE 33554432" in out.details["capabilities"]  # type: ignore[operator]
    assert {"connect", "banner", "total"} <= out.timings.keys()


async def test_starttls_upgrades_and_reads_the_certificate(serve_smtp: ServeSmtp, ca_pem: str) -> None:
    port = await serve_smtp()
    out = await run(SmtpSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.status == Status.OK, out
    assert out.details["cert_days_left"] > 360 and "tls" in out.timings  # type: ignore[operator]


async def test_implicit_tls(serve_smtp: ServeSmtp, ca_pem: str) -> None:
    port = await serve_smtp(implicit=True)
    out = await run(SmtpSpec(host="127.0.0.1", port=port, tls="implicit", ca_pem=ca_pem))
    assert out.status == Status.OK, out


async def test_a_certificate_near_its_end_is_degraded(serve_smtp: ServeSmtp, ca_pem: str) -> None:
    port = await serve_smtp(days=3)
    out = await run(SmtpSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.status == Status.DEGRADED and out.reason == Reason.CERT_EXPIRING


async def test_an_untrusted_certificate_fails(serve_smtp: ServeSmtp) -> None:
    port = await serve_smtp()
    out = await run(SmtpSpec(host="127.0.0.1", port=port, tls="starttls"))
    assert out.reason == Reason.CERT_INVALID, out


async def test_a_server_without_starttls_fails_with_its_reason(serve_smtp: ServeSmtp, ca_pem: str) -> None:
    port = await serve_smtp(days=None)
    out = await run(SmtpSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.reason == Reason.STARTTLS_UNAVAILABLE


async def test_a_banner_without_the_expected_text_is_a_mismatch(serve_smtp: ServeSmtp) -> None:
    port = await serve_smtp(days=None)
    out = await run(SmtpSpec(host="127.0.0.1", port=port, expected_banner="Postfix"))
    assert out.reason == Reason.RESPONSE_MISMATCH


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(SmtpSpec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED


async def test_probefleet_probe_check_runs_it_from_a_spec_file(serve_smtp: ServeSmtp, tmp_path: Path) -> None:
    fields = {"host": "127.0.0.1", "port": await serve_smtp(days=None), "expected_banner": "mx.test"}
    code, result = await probe_check("smtp", fields, tmp_path)
    assert code == 0 and result["details"]["banner"].startswith("mx.test"), result
    code, result = await probe_check("smtp", fields | {"tls": "starttls"}, tmp_path)
    assert code == 1 and result["reason"] == "starttls_unavailable", result


async def test_it_connects_from_the_probe_source_address(
    serve_smtp: ServeSmtp, record_peers: RecordPeers
) -> None:
    port, peers = await record_peers(await serve_smtp(days=None))
    out = await CHECKERS["smtp"](
        SmtpSpec(host="127.0.0.1", port=port), timeout=3.0, source_address="127.0.0.12"
    )
    assert out.status == Status.OK, out
    assert peers == ["127.0.0.12"]
