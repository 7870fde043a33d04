"""Fixtures shared by every test: real NATS and real PostgreSQL from shared.devstack.

PostgreSQL runs once per session and each test gets its own database; NATS is cheap
to start (tens of ms), so each test that needs it gets its own server and nothing
leaks between tests through streams or subjects.

A test whose fixtures migrate its database anyway (`pool`, `controller`) gets it as a copy
of one migrated at the start of the session (CREATE DATABASE ... TEMPLATE, tens of ms
instead of half a second of migrations); the fixture's own migrate then has only the day
partitions to check. Every other test gets an empty database, as before.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
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


# Fixtures that migrate the test's database before the test runs.
_MIGRATING = frozenset({"pool", "controller"})


@pytest.fixture(scope="session")
async def _migrated_template(postgres: PostgresServer) -> str:
    """A database with every migration applied, copied by `database` (nobody connects to it
    afterwards: PostgreSQL copies a template only while no session is on it)."""
    from probefleet.controller.storage import db

    name = "t_migrated"
    await create_database(postgres.dsn(), name, drop=True)
    await db.migrate(postgres.dsn(name))
    return name


@pytest.fixture
async def database(
    postgres: PostgresServer, _migrated_template: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """DSN of a fresh database for one test: empty, or already migrated when the test's
    fixtures would migrate it anyway (see the module's docstring)."""
    name = f"t{next(_db_counter)}"
    if _MIGRATING.intersection(request.fixturenames):
        conn = await asyncpg.connect(postgres.dsn())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_migrated_template}" STRATEGY FILE_COPY')
        finally:
            await conn.close()
    else:
        await create_database(postgres.dsn(), name, drop=True)
    yield postgres.dsn(name)
    await _drop_if_unused(postgres, name)


async def _drop_if_unused(postgres: PostgresServer, name: str) -> None:
    """Drop the test's database at once, so the session does not leave hundreds of them
    (about 11 MB and 600 files each) for the kernel to write back and for the postgres
    fixture's teardown to remove: a minute at the end of a full run. One still in use (a
    leaked connection, a process not yet gone) or a server that does not answer (a test
    left it stopped) stays until that teardown; DROP would wait 5 s for other sessions."""
    try:
        conn = await asyncpg.connect(postgres.dsn(), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return
    try:
        if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    except asyncpg.PostgresError:
        pass
    finally:
        await conn.close()


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
