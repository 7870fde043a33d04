"""pop3 against a small POP3 server on loopback (greeting, CAPA, STLS, QUIT)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import Pop3Spec, Reason, Status

from .by_hand import probe_check
from .test_imap import Serve, serving


async def pop3_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext | None
) -> None:
    caps = ["USER", "UIDL"] + (["STLS"] if ctx else [])
    peer = writer.get_extra_info("peername")[0]
    writer.write(f"+OK Probe POP3 ready for {peer}\r\n".encode())
    while line := await reader.readline():
        command = line.decode().strip().upper()
        if command == "CAPA":
            writer.write(("+OK\r\n" + "".join(f"{c}\r\n" for c in caps) + ".\r\n").encode())
        elif command == "STLS" and ctx is not None:
            writer.write(b"+OK begin TLS\r\n")
            await writer.drain()
            await writer.start_tls(ctx)
            caps = ["USER", "UIDL", "SASL PLAIN"]
        elif command == "QUIT":
            writer.write(b"+OK bye\r\n")
            break
        else:
            writer.write(b"-ERR unknown\r\n")
        await writer.drain()
    writer.close()


serve_pop3 = pytest.fixture(serving(pop3_session), name="serve_pop3")


async def run(spec: Pop3Spec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["pop3"](spec, timeout=budget, source_address=None)


async def test_greeting_and_capa_pass(serve_pop3: Serve) -> None:
    port = await serve_pop3(days=None)
    out = await run(Pop3Spec(host="127.0.0.1", port=port, expected_banner="POP3"))
    assert out.status == Status.OK, out
    assert out.details["capabilities"] == ["USER", "UIDL"]


async def test_stls_upgrades_and_reads_the_certificate(serve_pop3: Serve, ca_pem: str) -> None:
    port = await serve_pop3()
    out = await run(Pop3Spec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.status == Status.OK, out
    assert out.details["capabilities"] == ["USER", "UIDL", "SASL PLAIN"]
    assert out.details["tls_version"] in ("TLSv1.2", "TLSv1.3")


async def test_no_stls_offered(serve_pop3: Serve, ca_pem: str) -> None:
    port = await serve_pop3(days=None)
    out = await run(Pop3Spec(host="127.0.0.1", port=port, tls="starttls", ca_pem=ca_pem))
    assert out.reason == Reason.STARTTLS_UNAVAILABLE


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(Pop3Spec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED


async def test_it_connects_from_the_probe_source_address(serve_pop3: Serve) -> None:
    """The test server's greeting names the client's address as it saw it."""
    port = await serve_pop3(days=None)
    spec = Pop3Spec(host="127.0.0.1", port=port, expected_banner="ready for 127.0.0.12")
    out = await CHECKERS["pop3"](spec, timeout=3.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(
    serve_pop3: Serve, ca_pem: str, tmp_path: Path
) -> None:
    fields = {"host": "127.0.0.1", "port": await serve_pop3(), "tls": "starttls", "ca_pem": ca_pem}
    code, result = await probe_check("pop3", fields, tmp_path)
    assert code == 0 and result["details"]["tls_version"], result
    plain = {"host": "127.0.0.1", "port": await serve_pop3(days=None), "tls": "starttls"}
    code, result = await probe_check("pop3", plain, tmp_path)
    assert code == 1 and result["reason"] == "starttls_unavailable", result
