"""Fixtures shared by every test: real NATS and real PostgreSQL from shared.devstack.

PostgreSQL runs once per session and each test gets its own database; NATS is cheap
to start (tens of ms), so each test that needs it gets its own server and nothing
leaks between tests through streams or subjects.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from probefleet.shared.devstack import NatsServer, PostgresServer, create_database
from tests.fleet import SecureNats, start_secure_nats

_db_counter = itertools.count(1)

# The test servers are plain NATS (nats_server): the `controller serve` and `probe run`
# processes that tests start inherit the explicit insecure mode. Tests of the secure path
# use secure_nats with credentials; tests of the refusal remove the variable.
os.environ.setdefault("PROBEFLEET_NATS_INSECURE", "true")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("pg"), ephemeral=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def database(postgres: PostgresServer) -> AsyncIterator[str]:
    """DSN of a fresh, empty database for one test."""
    name = f"t{next(_db_counter)}"
    await create_database(postgres.dsn(), name, drop=True)
    yield postgres.dsn(name)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def secure_nats(tmp_path: Path) -> Iterator[SecureNats]:
    """A nats-server in operator mode with TLS from a fresh trust directory: .url (tls://),
    .trust (FleetTrust), .ca_file, .controller_creds, .probe_creds(...) to mint a probe's."""
    nats = start_secure_nats(tmp_path / "secure")
    yield nats
    nats.server.stop()
