"""mqtt against a real amqtt broker on loopback, with a password file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import pytest
from amqtt.broker import Broker

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import MqttSpec, Reason, Status

from .by_hand import probe_check
from .conftest import RecordPeers
from .test_redis import free_port

PASSWORD = "mqtt-test-pass"


@pytest.fixture(scope="module")
async def broker_port(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    folder = tmp_path_factory.mktemp("mqtt")
    passwords = folder / "passwd"
    passwords.write_text(f"probe:{argon2.PasswordHasher().hash(PASSWORD)}\n")
    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
                "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(passwords)},
            },
        }
    )
    await broker.start()
    yield port
    await broker.shutdown()


async def run(spec: MqttSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["mqtt"](spec, timeout=budget, source_address=None)


async def test_connect_and_a_round_trip_pass(broker_port: int) -> None:
    out = await run(
        MqttSpec(
            host="127.0.0.1", port=broker_port, username="probe", password=PASSWORD, topic="probefleet/check"
        )
    )
    assert out.status == Status.OK, out
    assert {"connect", "round_trip", "total"} <= out.timings.keys()


async def test_connect_alone_passes(broker_port: int) -> None:
    out = await run(MqttSpec(host="127.0.0.1", port=broker_port, username="probe", password=PASSWORD, qos=1))
    assert out.status == Status.OK, out


async def test_a_wrong_password_is_auth_failed(broker_port: int) -> None:
    out = await run(MqttSpec(host="127.0.0.1", port=broker_port, username="probe", password="wrong"))
    assert out.reason == Reason.AUTH_FAILED, out


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(MqttSpec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED, out


async def test_it_connects_from_the_probe_source_address(broker_port: int, record_peers: RecordPeers) -> None:
    port, peers = await record_peers(broker_port)
    spec = MqttSpec(host="127.0.0.1", port=port, username="probe", password=PASSWORD)
    out = await CHECKERS["mqtt"](spec, timeout=3.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
    assert peers == ["127.0.0.12"]


async def test_probefleet_probe_check_runs_it_from_a_spec_file(broker_port: int, tmp_path: Path) -> None:
    fields = {"host": "127.0.0.1", "port": broker_port, "username": "probe", "password": PASSWORD}
    code, result = await probe_check("mqtt", fields | {"topic": "probefleet/by-hand"}, tmp_path)
    assert code == 0 and "round_trip" in result["timings"], result
    code, result = await probe_check("mqtt", fields | {"password": "wrong"}, tmp_path)
    assert code == 1 and result["reason"] == "auth_failed", result
