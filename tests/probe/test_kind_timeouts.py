"""Every connection-oriented kind against a server on loopback that accepts and then says
nothing: the check ends within its budget with `timeout` (issue 23's failure paths), not
with a protocol error or a hang. One silent server, the kinds checked side by side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from probefleet.probe.checkers import CHECKERS
from probefleet.shared import wire
from probefleet.shared.wire import Reason, Status

BUDGET = 1.0


@pytest.fixture(scope="module")
async def silent_port() -> AsyncIterator[int]:
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read whatever comes, answer nothing
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    for writer in held:
        writer.close()


def _specs(port: int) -> dict[str, Any]:
    target = {"host": "127.0.0.1", "port": port}
    return {
        "grpc": wire.GrpcSpec(**target),
        "ssh": wire.SshSpec(**target),
        "postgres": wire.PostgresSpec(**target, tls="disable"),
        "mysql": wire.MysqlSpec(**target),
        "redis": wire.RedisSpec(**target),
        "smtp": wire.SmtpSpec(**target),
        "imap": wire.ImapSpec(**target),
        "pop3": wire.Pop3Spec(**target),
        "mqtt": wire.MqttSpec(**target),
        "websocket": wire.WebsocketSpec(url=f"ws://127.0.0.1:{port}/"),
        "api_flow": wire.ApiFlowSpec(steps=[wire.FlowStep(url=f"http://127.0.0.1:{port}/")]),
    }


async def test_a_server_that_never_answers_is_a_timeout_within_the_budget(silent_port: int) -> None:
    specs = _specs(silent_port)

    async def one(kind: str) -> tuple[wire.Status, wire.Reason | None, str]:
        out = await CHECKERS[kind](specs[kind], timeout=BUDGET, source_address=None)
        return out.status, out.reason, out.message

    results = dict(zip(specs, await asyncio.gather(*(one(kind) for kind in specs)), strict=True))
    wrong = {kind: r for kind, r in results.items() if r[:2] != (Status.FAIL, Reason.TIMEOUT)}
    assert not wrong, wrong
