"""postgres against the suite's real PostgreSQL (shared.devstack, trust authentication)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from probefleet.probe.checkers import CHECKERS
from probefleet.shared.devstack import PostgresServer, reachable_dir
from probefleet.shared.wire import PostgresSpec, Reason, Status

from .by_hand import probe_check


def _spec(postgres: PostgresServer, **fields: object) -> PostgresSpec:
    port = urlsplit(postgres.dsn()).port
    assert port is not None
    settings: dict[str, object] = {"host": "127.0.0.1", "port": port, "user": postgres.user, "tls": "disable"}
    return msgspec.convert({**settings, **fields}, PostgresSpec)


async def run(spec: PostgresSpec, budget: float = 5.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["postgres"](spec, timeout=budget, source_address=None)


async def test_select_1_passes_with_the_value_and_timings(postgres: PostgresServer) -> None:
    out = await run(_spec(postgres, expected_value="1"))
    assert out.status == Status.OK, out
    assert out.details["value"] == "1" and out.details["server_version"]
    assert {"connect", "query", "total"} <= out.timings.keys()


async def test_a_different_value_is_a_value_mismatch(postgres: PostgresServer) -> None:
    out = await run(_spec(postgres, query="SELECT 'replica'", expected_value="primary"))
    assert out.reason == Reason.VALUE_MISMATCH and "'replica'" in out.message


async def test_the_query_runs_read_only(postgres: PostgresServer) -> None:
    out = await run(_spec(postgres, query="CREATE TABLE probefleet_written (x int)"))
    assert out.reason == Reason.QUERY_FAILED and "read-only" in out.message


async def test_an_unknown_role_is_auth_failed(postgres: PostgresServer) -> None:
    out = await run(_spec(postgres, user="nobody_here", database="postgres", password="wrong"))
    assert out.reason == Reason.AUTH_FAILED, out


async def test_a_broken_query_is_query_failed(postgres: PostgresServer) -> None:
    out = await run(_spec(postgres, query="SELECT FROM WHERE"))
    assert out.reason == Reason.QUERY_FAILED


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(PostgresSpec(host="127.0.0.1", port=9, tls="disable"))
    assert out.reason == Reason.CONNECTION_REFUSED


@pytest.mark.parametrize("tls", ["require", "verify-full"])
async def test_tls_required_of_a_server_without_it_fails(postgres: PostgresServer, tls: str) -> None:
    out = await run(_spec(postgres, tls=tls))
    assert out.status == Status.FAIL and out.reason is not None


@pytest.fixture(scope="module")
def loopback_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL that trusts all of 127.0.0.0/8 (the shared one trusts 127.0.0.1 only),
    so a check from a region's source address gets in and can ask who it is."""
    folder = reachable_dir(tmp_path_factory.mktemp("pg_hba"))
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder.parent, folder):
        path.chmod(0o755)
    hba = folder / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.0/8 trust\n")
    hba.chmod(0o644)
    server = PostgresServer(
        tmp_path_factory.mktemp("pg_loopback"), ephemeral=True, settings={"hba_file": str(hba)}
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("tls", ["disable", "prefer"])
async def test_it_connects_from_the_probe_source_address(loopback_postgres: PostgresServer, tls: str) -> None:
    """prefer: the STARTTLS request goes first on its own connection, bound too."""
    query = "SELECT host(inet_client_addr())"
    spec = _spec(loopback_postgres, query=query, expected_value="127.0.0.12", tls=tls)
    out = await CHECKERS["postgres"](spec, timeout=5.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
    assert out.details["value"] == "127.0.0.12"


async def test_a_source_address_the_host_does_not_have_is_network_unreachable(
    postgres: PostgresServer,
) -> None:
    out = await CHECKERS["postgres"](_spec(postgres), timeout=5.0, source_address="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


async def test_probefleet_probe_check_runs_it_from_a_spec_file(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    fields = msgspec.to_builtins(_spec(postgres, query="SELECT 41 + 1", expected_value="42"))
    code, result = await probe_check("postgres", fields, tmp_path)
    assert code == 0 and result["details"]["value"] == "42", result
    code, result = await probe_check("postgres", fields | {"expected_value": "7"}, tmp_path)
    assert code == 1 and result["reason"] == "value_mismatch", result
