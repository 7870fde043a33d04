"""imap against a small IMAP4rev1 server on loopback (greeting, CAPABILITY, STARTTLS,
LOGOUT: what the check speaks); the server's TLS is the standard library's."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import ImapSpec, Reason, Status

from .by_hand import probe_check
from .conftest import leaf

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "ssl.SSLContext | None"], Awaitable[None]]
Serve = Callable[..., Awaitable[int]]


async def imap_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext | None
) -> None:
    caps = "IMAP4rev1 LOGINDISABLED" + (" STARTTLS" if ctx else "")
    peer = writer.get_extra_info("peername")[0]
    writer.write(f"* OK [CAPABILITY IMAP4rev1] Probe IMAP ready for {peer}\r\n".encode())
    while line := await reader.readline():
        tag, _, command = line.decode().strip().partition(" ")
        if command.upper() == "CAPABILITY":
            writer.write(f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode())
            if writer.get_extra_info("ssl_object") is not None:
                caps = "IMAP4rev1 AUTH=PLAIN"
        elif command.upper() == "STARTTLS" and ctx is not None:
            writer.write(f"{tag} OK begin TLS\r\n".encode())
            await writer.drain()
            await writer.start_tls(ctx)
            caps = "IMAP4rev1 AUTH=PLAIN"
        elif command.upper() == "LOGOUT":
            writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
            break
        else:
            writer.write(f"{tag} BAD unknown\r\n".encode())
        await writer.drain()
    writer.close()


async def start_line_server(handler: Handler, ctx: ssl.SSLContext | None) -> asyncio.Server:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer, ctx)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


def serving(handler: Handler) -> Callable[[trustme.CA], AsyncIterator[Serve]]:
    """A fixture that starts `handler`'s server, with a certificate of given days or none."""

    async def fixture(ca: trustme.CA) -> AsyncIterator[Serve]:
        servers: list[asyncio.Server] = []

        async def serve(*, days: float | None = 365) -> int:
            ctx = None
            if days is not None:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                leaf(ca, days=days).configure_cert(ctx)
            server = await start_line_server(handler, ctx)
            servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        yield serve
        for server in servers:
            server.close()

    return fixture


serve_imap = pytest.fixture(serving(imap_session), name="serve_imap")


async def run(spec: ImapSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["imap"](spec, timeout=budget, source_address=None)


async def test_greeting_and_capabilities_pass(serve_imap: Serve) -> None:
    port = await serve_imap(days=None)
    out = await run(ImapSpec(host="127.0.0.1", port=port, expected_banner="Probe IMAP"))
    assert out.status == Status.OK, out
    assert out.details["capabilities"] == ["IMAP4rev1", "LOGINDISABLED"]


async def test_starttls_upgrades_and_asks_again(serve_imap: Serve, ca_pem: str) -> None:
    port = await serve_imap()
    out = await run(ImapSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.status == Status.OK, out
    assert out.details["capabilities"] == ["IMAP4rev1", "AUTH=PLAIN"]
    assert out.details["cert_days_left"] > 360 and "tls" in out.timings  # type: ignore[operator]


async def test_an_expired_certificate_fails(serve_imap: Serve, ca_pem: str) -> None:
    port = await serve_imap(days=-1)
    out = await run(ImapSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.reason == Reason.CERT_EXPIRED, out


async def test_no_starttls_offered(serve_imap: Serve, ca_pem: str) -> None:
    port = await serve_imap(days=None)
    out = await run(ImapSpec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.reason == Reason.STARTTLS_UNAVAILABLE


async def test_a_server_that_is_not_imap_is_a_status_mismatch() -> None:
    async def http_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: object) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await start_line_server(http_like, None)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    out = await run(ImapSpec(host="127.0.0.1", port=port))
    server.close()
    assert out.reason == Reason.STATUS_MISMATCH


async def test_silence_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: object) -> None:
        await reader.read()

    server = await start_line_server(silent, None)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    out = await run(ImapSpec(host="127.0.0.1", port=port), budget=0.3)
    server.close()
    assert out.reason == Reason.TIMEOUT


async def test_it_connects_from_the_probe_source_address(serve_imap: Serve) -> None:
    """The test server's greeting names the client's address as it saw it."""
    port = await serve_imap(days=None)
    spec = ImapSpec(host="127.0.0.1", port=port, expected_banner="ready for 127.0.0.12")
    out = await CHECKERS["imap"](spec, timeout=3.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(ImapSpec(host="127.0.0.1", port=9))
    assert out.status == Status.FAIL and out.reason == Reason.CONNECTION_REFUSED, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(
    serve_imap: Serve, ca_pem: str, tmp_path: Path
) -> None:
    fields = {"host": "127.0.0.1", "port": await serve_imap(), "tls": "starttls", "ca_pem": ca_pem}
    code, result = await probe_check("imap", fields, tmp_path)
    assert code == 0 and result["details"]["capabilities"] == ["IMAP4rev1", "AUTH=PLAIN"], result
    code, result = await probe_check("imap", fields | {"expected_banner": "Dovecot"}, tmp_path)
    assert code == 1 and result["reason"] == "response_mismatch", result
