"""redis against a real redis-server on loopback (Debian's, installed when missing)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
import redis.asyncio.client

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import Reason, RedisSpec, Status
from tests.helpers import eventually

from .by_hand import probe_check

PASSWORD = "redis-test-pass"


def ensure_package(binary: str, package: str) -> str:
    """The path of `binary`, installing the Debian package when it is missing."""
    if not shutil.which(binary):
        if not shutil.which("apt-get"):
            pytest.skip(f"{binary} missing and apt-get is not available to install {package}")
        try:
            subprocess.run(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
                f" --no-install-recommends {package}",
                shell=True,
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install {package} with apt-get: {e}")
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )
    if path is None:
        pytest.skip(f"{binary} not found after installing {package}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
async def redis_port(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    binary = ensure_package("redis-server", "redis-server")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: listening(port), timeout=20, what="redis-server listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def run(spec: RedisSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["redis"](spec, timeout=budget, source_address=None)


async def test_ping_with_the_password_passes(redis_port: int) -> None:
    out = await run(RedisSpec(host="127.0.0.1", port=redis_port, password=PASSWORD, expected_value="PONG"))
    assert out.status == Status.OK, out
    assert out.details["value"] == "PONG" and {"connect", "query", "total"} <= out.timings.keys()


async def test_a_read_only_command_and_its_value(redis_port: int) -> None:
    out = await run(
        RedisSpec(host="127.0.0.1", port=redis_port, password=PASSWORD, command="DBSIZE", expected_value="0")
    )
    assert out.status == Status.OK, out
    other = await run(
        RedisSpec(
            host="127.0.0.1", port=redis_port, password=PASSWORD, command="ECHO hi", expected_value="ho"
        )
    )
    assert other.reason == Reason.VALUE_MISMATCH


async def test_a_wrong_or_missing_password_is_auth_failed(redis_port: int) -> None:
    wrong = await run(RedisSpec(host="127.0.0.1", port=redis_port, password="nope"))
    assert wrong.reason == Reason.AUTH_FAILED, wrong
    assert "nope" not in wrong.message
    missing = await run(RedisSpec(host="127.0.0.1", port=redis_port))
    assert missing.reason == Reason.AUTH_FAILED, missing


async def test_a_writing_command_is_refused_before_connecting() -> None:
    out = await run(RedisSpec(host="127.0.0.1", port=9, command="FLUSHALL"))
    assert out.reason == Reason.INVALID_TARGET
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse({"name": "r", "type": "redis", "host": "db", "command": "SET a b"}, ["eu"])
    assert "command" in caught.value.details


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(RedisSpec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED, out


def test_the_api_takes_a_target_and_hides_the_password() -> None:
    cfg = monitor_config.parse(
        {"name": "r", "type": "redis", "url": "redis://cache:6380", "password": "p"}, ["eu"]
    )
    assert isinstance(cfg.spec, RedisSpec) and (cfg.spec.host, cfg.spec.port) == ("cache", 6380)
    assert monitor_config.redact({"password": "p"})["password"] == "<redacted>"
    assert monitor_config.restore_secrets({"password": "<redacted>"}, {"password": "p"})["password"] == "p"


async def test_it_connects_from_the_probe_source_address(redis_port: int) -> None:
    """The server's MONITOR feed names each command's client: the check's PING comes from
    the region address it was given."""
    watcher = redis.asyncio.Redis(host="127.0.0.1", port=redis_port, password=PASSWORD)
    try:
        async with watcher.monitor() as feed:
            spec = RedisSpec(host="127.0.0.1", port=redis_port, password=PASSWORD, command="ECHO region")
            out = await CHECKERS["redis"](spec, timeout=3.0, source_address="127.0.0.12")
            assert out.status == Status.OK, out
            seen = await asyncio.wait_for(_echo_client(feed), timeout=5)
    finally:
        await watcher.aclose()
    assert seen == "127.0.0.12"


async def _echo_client(feed: redis.asyncio.client.Monitor) -> str:
    while True:
        command = await feed.next_command()
        if command["command"] == "ECHO region":
            return str(command["client_address"])


async def test_a_source_address_the_host_does_not_have_is_network_unreachable(redis_port: int) -> None:
    spec = RedisSpec(host="127.0.0.1", port=redis_port, password=PASSWORD)
    out = await CHECKERS["redis"](spec, timeout=3.0, source_address="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(redis_port: int, tmp_path: Path) -> None:
    fields = {"host": "127.0.0.1", "port": redis_port, "password": PASSWORD, "expected_value": "PONG"}
    code, result = await probe_check("redis", fields, tmp_path)
    assert code == 0 and result["details"]["value"] == "PONG", result
    code, result = await probe_check("redis", fields | {"password": "nope"}, tmp_path)
    assert code == 1 and result["reason"] == "auth_failed" and "nope" not in json.dumps(result), result
