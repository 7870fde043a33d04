"""A PostgreSQL server of the test's own, for tests that freeze it (SIGSTOP of every
server process: connections stay open and nothing answers) without stalling others."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from probefleet.controller.storage import db
from probefleet.shared.devstack import PostgresServer, create_database


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    yield server
    server.stop()  # thaws first


@pytest.fixture
async def own_database(own_postgres: PostgresServer) -> str:
    """DSN of a migrated database on `own_postgres`."""
    await create_database(own_postgres.dsn(), "t", drop=True)
    await db.migrate(own_postgres.dsn("t"))
    return own_postgres.dsn("t")


@pytest.fixture
async def own_pool(own_database: str, own_postgres: PostgresServer) -> AsyncIterator[asyncpg.Pool]:
    """The controller's kind of pool on `own_database`."""
    pool = await db.create_pool(own_database, max_size=5)
    yield pool
    own_postgres.thaw()
    await pool.close()
