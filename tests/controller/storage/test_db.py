"""storage/db: what counts as the database being unavailable, and the probe's memory of
outages against a real PostgreSQL frozen with SIGSTOP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from probefleet.controller.storage import db
from probefleet.shared.devstack import PostgresServer


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (TimeoutError(), True),
        (ConnectionRefusedError(111, "refused"), True),
        (ConnectionResetError(), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.TooManyConnectionsError("too many clients"), True),
        (asyncpg.UniqueViolationError("duplicate key"), False),
        (asyncpg.UndefinedTableError("no such table"), False),
        (ValueError("a bug"), False),
    ],
    ids=[
        "timeout",
        "refused",
        "reset",
        "interface",
        "connection-lost",
        "starting-up",
        "shutting-down",
        "too-many-connections",
        "unique-violation",
        "undefined-table",
        "bug",
    ],
)
def test_it_tells_an_outage_from_a_refused_statement(error: BaseException, outage: bool) -> None:
    assert db.unavailable(error) is outage


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, so freezing it stalls no other test."""
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_pool(own_postgres: PostgresServer) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(own_postgres.dsn(), max_size=2)
    yield pool
    own_postgres.thaw()
    await pool.close()


async def test_the_probe_remembers_an_outage_from_its_last_answer_to_its_next(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    probe = db.DatabaseProbe(own_pool, timeout=0.5)
    assert await probe.step() is True
    answered = probe.last_ok_at
    assert probe.outages() == []
    own_postgres.freeze()
    try:
        assert await probe.step() is False
        assert not probe.ok(time.monotonic())
        [(start, end)] = probe.outages()
        assert start == answered and end >= start  # still going on: it ends now
    finally:
        own_postgres.thaw()
    assert await probe.step() is True
    [(start, end)] = probe.outages()
    assert start == answered and end == probe.last_ok_at
    assert probe.ok(time.monotonic())


# The budget's bound checked below is what the feature promises, with room for a loaded
# machine: without a shared budget, two statements and their releases take 4 s here.
BUDGET = 1.0
BUDGET_SLACK = 0.6


async def test_a_budget_bounds_all_the_database_work_of_a_block_together(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    """Each acquire, statement and release gets what is left of one budget, so two
    statements against a frozen server fail within the budget, not one bound each."""
    with db.budget(BUDGET):
        assert await own_pool.fetchval("SELECT 1") == 1  # spends a little of it
    own_postgres.freeze()
    try:
        started = time.monotonic()
        with db.bounded(BUDGET), db.budget(BUDGET), pytest.raises(TimeoutError):
            for _ in range(2):
                async with own_pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        took = time.monotonic() - started
        assert took < BUDGET + BUDGET_SLACK, f"two statements took {took:.2f} s"
        with db.budget(0.0), pytest.raises(TimeoutError):  # spent: refused without waiting
            await own_pool.fetchval("SELECT 1")
    finally:
        own_postgres.thaw()
    with db.budget(5.0):  # the pool recovers (a connection cut mid-statement was replaced)
        assert await own_pool.fetchval("SELECT 2") == 2
    assert await own_pool.fetchval("SELECT 3") == 3  # no budget outside a block


# ------------------------------------------------------------ the pool's reset


async def last_statement(dsn: str, pid: int) -> str:
    """What the server last ran on backend `pid` (pg_stat_activity, read live), asked on a
    connection of its own."""
    watcher = await asyncpg.connect(dsn)
    try:
        query: str = await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await watcher.close()
    return query


async def test_a_release_runs_no_statement_unless_one_left_session_state(
    pool: asyncpg.Pool, database: str
) -> None:
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '2s'")  # ends with the transaction
            await conn.execute("SELECT pg_advisory_xact_lock(4242)")
        assert await conn.fetchval("SELECT 41 + 1") == 42
    assert await last_statement(database, pid) == "SELECT 41 + 1"  # no reset query after it


@pytest.mark.parametrize(
    "statement",
    [
        "SET statement_timeout = '7s'",
        "SELECT set_config('statement_timeout', '7s', false)",
        "SELECT pg_advisory_lock(4242)",
        "SELECT pg_try_advisory_lock(4242)",
        "LISTEN h3_channel",
        "listener",
    ],
    ids=["set", "set-config", "session-lock", "try-session-lock", "listen", "add-listener"],
)
@pytest.mark.filterwarnings("ignore:.*active notification listener")
async def test_a_connection_left_with_session_state_is_reset_on_release(
    pool: asyncpg.Pool, database: str, statement: str
) -> None:
    # The pool hands out the connection released last (LIFO): the next acquire gets it back.
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        if statement == "listener":
            await conn.add_listener("h3_channel", lambda *_: None)
        else:
            await conn.execute(statement)
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert await conn.fetchval("SHOW statement_timeout") != "7s"
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        await conn.fetchval("SELECT 1")
    assert await last_statement(database, pid) == "SELECT 1"  # reset once, not from then on


@pytest.mark.parametrize(
    ("query", "leaves"),
    [
        ("SET TimeZone = 'UTC'", True),
        ("  set enable_seqscan = off", True),
        ("SET LOCAL lock_timeout = '2s'", False),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", False),
        ("SELECT pg_try_advisory_xact_lock($1)", False),
        ("SELECT pg_advisory_xact_lock($1)", False),
        ("SELECT pg_advisory_unlock($1)", False),
        ("UPDATE monitors SET status = $2 WHERE id = $1", False),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", True),
    ],
    ids=[
        "set",
        "set-lowercase",
        "set-local",
        "set-transaction",
        "try-xact-lock",
        "xact-lock",
        "unlock",
        "update-set",
        "declare",
    ],
)
def test_it_tells_the_statements_that_leave_session_state(query: str, leaves: bool) -> None:
    assert db.leaves_session_state(query) is leaves
