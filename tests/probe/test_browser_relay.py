"""The browser check's SOCKS5 relay (the run's source address for Chromium) without a
browser: it serves the probe's own user, and closes another local user's connection before
the SOCKS greeting. Real sockets on loopback; the other user is nobody in a forked child
(the test process must be root to become it)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from probefleet.probe.checkers import browser


@pytest.fixture
async def echo() -> AsyncIterator[tuple[int, list[str]]]:
    """An echo server on 127.0.0.1: its port, and the address of each caller."""
    callers: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        callers.append(writer.get_extra_info("peername")[0])
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], callers
    server.close()
    await server.wait_closed()


def _port(proxy: str) -> int:
    return int(proxy.rsplit(":", 1)[1])


async def test_the_relay_serves_the_probes_own_user_from_the_source_address(
    echo: tuple[int, list[str]],
) -> None:
    port, callers = echo
    async with browser._socks_relay("127.0.0.12") as (proxy, errors):
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(proxy))
        writer.write(b"\x05\x01\x00")  # SOCKS5, one method: no authentication
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
        reply = await reader.readexactly(10)
        assert reply[:2] == b"\x05\x00" and socket.inet_ntoa(reply[4:8]) == "127.0.0.12"
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
    assert callers == ["127.0.0.12"] and errors == []


def _greet_as_nobody(port: int) -> dict[str, object]:
    """From a child become nobody: connect to the relay, send the SOCKS5 greeting and read
    what comes back (empty: the relay closed the connection)."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"\x05\x01\x00")
                try:
                    got = s.recv(2)
                except ConnectionResetError:
                    got = b""
            os.write(write, json.dumps({"uid": os.geteuid(), "reply": got.hex()}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = json.loads(f.read() or "{}")
    os.waitpid(pid, 0)
    return dict(answer)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody in a child")
async def test_another_local_user_cannot_use_the_relay(echo: tuple[int, list[str]]) -> None:
    _, callers = echo
    async with browser._socks_relay("127.0.0.12") as (proxy, errors):
        # In a thread: the relay answers on this event loop while the child waits.
        answer = await asyncio.to_thread(_greet_as_nobody, _port(proxy))
    assert answer == {"uid": pwd.getpwnam("nobody").pw_uid, "reply": ""}
    assert callers == [] and errors == []


def test_the_owner_of_a_loopback_socket_is_read_from_proc() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as c,
    ):
        accepted, _ = server.accept()
        with accepted:
            assert browser._socket_owner(c.getsockname(), server.getsockname()) == os.geteuid()
            # No such connection: nobody's to be seen.
            assert browser._socket_owner(c.getsockname(), ("127.0.0.1", 1)) is None
