from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from probefleet.probe.checkers import udp
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, Status, UdpSpec


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.peers: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peers.append(addr[0])
        if data != b"quiet":
            self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
async def echo() -> AsyncIterator[tuple[int, _Echo]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[1], protocol
    transport.close()


async def run(spec: UdpSpec, source: str | None = None) -> Outcome:
    return await udp.check(spec, timeout=0.3, source_address=source)


@pytest.mark.parametrize(
    ("send", "expect", "regex", "reason"),
    [
        ("hello", "echo:hello", False, None),
        ("hello", r"^echo:h\w+$", True, None),
        ("hello", None, False, None),
        ("hello", "goodbye", False, Reason.RESPONSE_MISMATCH),
        ("quiet", None, False, Reason.NO_RESPONSE),
    ],
    ids=["text", "regex", "any-reply", "mismatch", "silence"],
)
async def test_it_sends_and_expects(
    echo: tuple[int, _Echo], send: str, expect: str | None, regex: bool, reason: Reason | None
) -> None:
    spec = UdpSpec(host="127.0.0.1", port=echo[0], send=send, expect=expect, expect_regex=regex)
    out = await run(spec)
    assert out.reason == reason, out.message
    assert (out.status == Status.OK) == (reason is None)


async def test_it_binds_the_source_address(echo: tuple[int, _Echo]) -> None:
    out = await run(UdpSpec(host="127.0.0.1", port=echo[0], send="x"), source="127.0.0.12")
    assert out.status == Status.OK
    assert echo[1].peers[-1] == "127.0.0.12"


async def test_it_fails_a_closed_port_as_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = await run(UdpSpec(host="127.0.0.1", port=port, send="x"))
    assert out.reason == Reason.CONNECTION_REFUSED
