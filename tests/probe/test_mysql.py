"""mysql against a real MariaDB server on loopback (Debian's mariadb-server, installed when
missing; skipped with the reason when it cannot be installed or started)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pymysql
import pytest

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import MysqlSpec, Reason, Status
from tests.helpers import eventually

from .by_hand import probe_check
from .test_redis import ensure_package, free_port, listening

PASSWORD = "maria-test-pass"


@pytest.fixture(scope="module")
async def mysql_port(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    server = ensure_package("mariadbd", "mariadb-server")
    install = ensure_package("mariadb-install-db", "mariadb-server")
    folder = tmp_path_factory.mktemp("mariadb")
    data, sock = folder / "data", folder / "mysqld.sock"
    done = subprocess.run(
        [install, f"--datadir={data}", "--user=root", "--auth-root-authentication-method=socket",
         "--skip-test-db"],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"mariadb-install-db failed: {done.stderr.decode()[-300:]}")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", f"--pid-file={folder / 'pid'}"],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "err.log").open("wb"),
    )  # fmt: skip
    try:
        await eventually(lambda: listening(port), timeout=60, what="mariadbd listening")
        await asyncio.to_thread(_create_users, sock)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def _create_users(sock: Path) -> None:
    """The probe's accounts, made as root over the socket (PyMySQL: the library the mysql
    checker runs in a worker thread)."""
    conn = pymysql.connect(unix_socket=str(sock), user="root")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER 'probe'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cur.execute("GRANT SELECT ON *.* TO 'probe'@'127.0.0.1'")
            # A region's source address is another host to the server: its own account.
            cur.execute(f"CREATE USER 'probe'@'127.0.0.12' IDENTIFIED BY '{PASSWORD}'")
            cur.execute("GRANT SELECT ON *.* TO 'probe'@'127.0.0.12'")
    finally:
        conn.close()


def _spec(port: int, **fields: object) -> MysqlSpec:
    settings: dict[str, object] = {"host": "127.0.0.1", "port": port, "user": "probe", "password": PASSWORD}
    return MysqlSpec(**{**settings, **fields})  # type: ignore[arg-type]


async def run(spec: MysqlSpec, budget: float = 5.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["mysql"](spec, timeout=budget, source_address=None)


async def test_select_1_passes(mysql_port: int) -> None:
    out = await run(_spec(mysql_port, expected_value="1"))
    assert out.status == Status.OK, out
    assert out.details["value"] == "1" and "MariaDB" in str(out.details["server_version"])
    assert {"connect", "query", "total"} <= out.timings.keys()


async def test_a_different_value_is_a_value_mismatch(mysql_port: int) -> None:
    out = await run(_spec(mysql_port, query="SELECT @@read_only", expected_value="1"))
    assert out.reason == Reason.VALUE_MISMATCH


async def test_a_wrong_password_is_auth_failed(mysql_port: int) -> None:
    out = await run(_spec(mysql_port, password="wrong"))
    assert out.reason == Reason.AUTH_FAILED, out
    assert "wrong" not in out.message.replace("wrong password", "")


async def test_the_query_runs_in_a_read_only_transaction(mysql_port: int) -> None:
    out = await run(_spec(mysql_port, query="CREATE DATABASE probefleet_written"))
    assert out.reason == Reason.QUERY_FAILED, out


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(_spec(9))
    assert out.reason == Reason.CONNECTION_REFUSED, out


async def test_it_connects_from_the_probe_source_address(mysql_port: int) -> None:
    """USER() is the account as the server matched it: user@the address it saw."""
    spec = _spec(mysql_port, query="SELECT USER()", expected_value="probe@127.0.0.12")
    out = await CHECKERS["mysql"](spec, timeout=5.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out


async def test_a_source_address_the_host_does_not_have_is_network_unreachable(mysql_port: int) -> None:
    out = await CHECKERS["mysql"](_spec(mysql_port), timeout=5.0, source_address="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(mysql_port: int, tmp_path: Path) -> None:
    fields = msgspec.to_builtins(_spec(mysql_port, expected_value="1"))
    code, result = await probe_check("mysql", fields, tmp_path)
    assert code == 0 and result["details"]["value"] == "1", result
    code, result = await probe_check("mysql", fields | {"password": "wrong"}, tmp_path)
    assert code == 1 and result["reason"] == "auth_failed", result
