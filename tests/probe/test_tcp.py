from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import pytest
import trustme

from probefleet.probe.checkers import tcp
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, Status, TcpSpec

from .conftest import leaf

Peers = list[str]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 banner ready\r\n")
    data = await reader.read(1024)
    if data.startswith(b"PING"):
        writer.write(b"+PONG\r\n")
    elif data.startswith(b"HANG"):
        await asyncio.sleep(5)
    elif data.startswith(b"RESET"):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
async def echo_server() -> AsyncIterator[tuple[int, Peers]]:
    peers: Peers = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        await _echo(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), peers
    server.close()


async def run(spec: TcpSpec, budget: float = 1.0, source: str | None = None) -> Outcome:
    return await tcp.check(spec, timeout=budget, source_address=source)


async def test_it_connects_and_reports_connect_time(echo_server: tuple[int, Peers]) -> None:
    out = await run(TcpSpec(host="127.0.0.1", port=echo_server[0]))
    assert out.status == Status.OK
    assert 0 <= out.timings["connect"] <= out.timings["total"]


@pytest.mark.parametrize(
    ("send", "expect", "regex", "reason"),
    [
        (None, "220 banner", False, None),
        ("PING\r\n", "+PONG", False, None),
        ("PING\r\n", r"\+P.NG", True, None),
        ("PING\r\n", "+PANG", False, Reason.RESPONSE_MISMATCH),
        ("HANG\r\n", "never", False, Reason.RESPONSE_MISMATCH),
        ("RESET\r\n", "+PONG", False, Reason.CONNECTION_RESET),
    ],
    ids=["banner", "text", "regex", "mismatch", "partial-then-timeout", "reset"],
)
async def test_it_sends_and_expects(
    echo_server: tuple[int, Peers], send: str | None, expect: str, regex: bool, reason: Reason
) -> None:
    spec = TcpSpec(host="127.0.0.1", port=echo_server[0], send=send, expect=expect)
    spec.expect_regex = regex
    out = await run(spec, budget=0.5)
    assert out.reason == reason, out.message


async def test_it_fails_silence_as_no_response() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    out = await run(TcpSpec(host="127.0.0.1", port=port, expect="hi"), budget=0.3)
    server.close()
    assert out.reason == Reason.NO_RESPONSE


async def test_it_binds_the_source_address(echo_server: tuple[int, Peers]) -> None:
    out = await run(TcpSpec(host="127.0.0.1", port=echo_server[0]), source="127.0.0.12")
    assert out.status == Status.OK
    assert echo_server[1][-1] == "127.0.0.12"


async def test_it_fails_refused_connections() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = await run(TcpSpec(host="127.0.0.1", port=port))
    assert out.reason == Reason.CONNECTION_REFUSED


async def test_it_speaks_tls(ca: trustme.CA, ca_pem: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf(ca).configure_cert(ctx)
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=ctx)
    port = int(server.sockets[0].getsockname()[1])
    spec = TcpSpec(host="127.0.0.1", port=port, tls=True, ca_pem=ca_pem, expect="banner")
    assert (await run(spec)).status == Status.OK
    untrusted = await run(TcpSpec(host="127.0.0.1", port=port, tls=True))
    assert untrusted.reason == Reason.CERT_INVALID
    unverified = await run(TcpSpec(host="127.0.0.1", port=port, tls=True, verify_tls=False))
    assert unverified.status == Status.OK
    server.close()
