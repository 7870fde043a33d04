"""Connection pool, migrations, partition upkeep, and what the controller knows of the
database's availability.

Every statement and pool acquire of the controller's pool is bounded: by the caller's
`bounded(seconds)` where one is set, else by `command_timeout` (60 s); the background loops
run under `database_background_timeout` (app.py sets it around them). A request's database
work shares one `budget(seconds)`: its acquires, statements and releases together wait at
most that long (the API sets `database_timeout`), so a stalled PostgreSQL makes a request
fail within the setting instead of once per statement (api/health.py maps it to 503).

`DatabaseProbe` keeps the database's last known state for /api/v1/health, which must answer
without waiting for it, and the recent outages it saw (the heartbeat deadline checker excuses
them). `unavailable(e)` tells an outage (retry later) from a refused statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

import asyncpg
import msgspec

from probefleet.controller.storage import DB, Tx

log = logging.getLogger("probefleet.storage")

# Any constant works; it only has to be the same for every controller.
_MIGRATION_LOCK = 0x70726F62  # "prob"
PARTITIONED = ("check_results", "rounds", "heartbeat_pings")


async def _init_connection(conn: Tx) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: msgspec.json.encode(v).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


# Seconds each statement and pool acquire may take in this context; None: the pool's own
# bounds (COMMAND_TIMEOUT for statements). A context variable, so that one pool serves the
# API's short bound and the background loops' long one.
_BOUND: contextvars.ContextVar[float | None] = contextvars.ContextVar("probefleet_db_bound", default=None)
COMMAND_TIMEOUT = 60.0


Bounded = contextlib.AbstractContextManager[None]


@contextlib.contextmanager
def bounded(seconds: float | None) -> Iterator[None]:
    """Within the block, every statement and pool acquire waits at most `seconds`, then
    raises TimeoutError (a statement is cancelled on the server too); None: the pool's own
    bounds."""
    token = _BOUND.set(seconds)
    try:
        yield
    finally:
        _BOUND.reset(token)


def current_bound() -> float | None:
    """The bound `bounded` set for this context, if any."""
    return _BOUND.get()


class _Budget:
    """Seconds of database waiting left to a `budget` block (shared by its tasks)."""

    __slots__ = ("left",)

    def __init__(self, left: float) -> None:
        self.left = left


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("probefleet_db_budget", default=None)
# A release (which waits for a timed-out statement's cancellation, then resets the
# connection) gets at least this long once the budget is spent: it must still run, or the
# connection would leak; past it the pool terminates the connection.
RELEASE_FLOOR = 0.05


@contextlib.contextmanager
def budget(seconds: float | None) -> Iterator[None]:
    """Within the block, the time spent waiting on the database (pool acquires, statements,
    releases) adds up to at most `seconds`: each wait gets what is left (and at most its
    `bounded` bound), and once nothing is left the next statement or acquire raises
    TimeoutError without waiting. Time the block spends on anything else (an outbound HTTP
    call, a WebSocket waiting for its client) is not counted. None: no budget."""
    token = _BUDGET.set(None if seconds is None else _Budget(seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _timeout(timeout: float | None) -> float | None:
    bound = _BOUND.get() if timeout is None else timeout
    spend = _BUDGET.get()
    if spend is None:
        return bound
    if spend.left <= 0:
        raise TimeoutError("the database work of this request ran out of time")
    return spend.left if bound is None else min(bound, spend.left)


@contextlib.contextmanager
def _charged() -> Iterator[None]:
    """Charge the time the block takes to the context's budget, if any."""
    spend = _BUDGET.get()
    if spend is None:
        yield
        return
    start = time.monotonic()
    try:
        yield
    finally:
        spend.left -= time.monotonic() - start


# Statements whose effect outlives their transaction on a pooled connection: a session
# setting (SET without LOCAL, set_config), a session advisory lock, LISTEN, a cursor or
# prepared statement declared in SQL. (SET LOCAL and the xact locks end with the transaction.)
_SESSION_STATE = re.compile(
    r"^\s*(?:SET\s+(?!LOCAL\b|TRANSACTION\b)|LISTEN\b|DECLARE\b|PREPARE\b)"
    r"|\bset_config\s*\(|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=2048)
def leaves_session_state(query: str) -> bool:
    """Whether `query` may leave state on its connection past its transaction."""
    return _SESSION_STATE.search(query) is not None


class BoundedConnection(asyncpg.Connection):
    """A connection whose statements take their timeout from `bounded` when none is given.
    BEGIN and COMMIT of `transaction()` go through `execute`, so they are bounded too.
    (`timeout` parameters, ASYNC109: these keep asyncpg's signatures.)

    It notes when a statement (or `add_listener`) may have left session state behind
    (`leaves_session_state`), so that the pool resets only such connections (`_reset`)."""

    session_state = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self.session_state = True
        await super().add_listener(channel, callback)

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:  # noqa: ASYNC109
        if leaves_session_state(query):
            self.session_state = True
        with _charged():
            return await super().execute(query, *args, timeout=_timeout(timeout))

    async def executemany(
        self,
        command: str,
        args: Iterable[Sequence[object]],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        if leaves_session_state(command):
            self.session_state = True
        with _charged():
            await super().executemany(command, args, timeout=_timeout(timeout))

    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
        record_class: Any = None,
    ) -> list[Any]:
        if leaves_session_state(query):
            self.session_state = True
        with _charged():
            return await super().fetch(query, *args, timeout=_timeout(timeout), record_class=record_class)

    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
        record_class: Any = None,
    ) -> Any:
        if leaves_session_state(query):
            self.session_state = True
        with _charged():
            return await super().fetchrow(query, *args, timeout=_timeout(timeout), record_class=record_class)

    async def fetchval(
        self,
        query: str,
        *args: object,
        column: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        if leaves_session_state(query):
            self.session_state = True
        with _charged():
            return await super().fetchval(query, *args, column=column, timeout=_timeout(timeout))


class BoundedPool(asyncpg.Pool):
    """A pool whose acquire (also inside pool.fetch and friends) takes its timeout from
    `bounded` when none is given, and whose acquires and releases count against `budget`."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquire(self, timeout)

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        spend = _BUDGET.get()
        if spend is not None:
            # None would mean the acquire's timeout, which the budget may have outlived.
            left = max(spend.left, RELEASE_FLOOR)
            timeout = left if timeout is None else min(timeout, left)
        with _charged():
            await super().release(connection, timeout=timeout)


class _Acquire:
    """What `BoundedPool.acquire` returns: awaited or used with `async with`, like asyncpg's
    own, with the timeout computed (and the wait charged) when it is awaited."""

    __slots__ = ("connection", "pool", "timeout")

    def __init__(self, pool: BoundedPool, timeout: float | None) -> None:
        self.pool, self.timeout = pool, timeout
        self.connection: Any = None

    async def _get(self) -> Any:
        with _charged():
            self.connection = await asyncpg.Pool.acquire(self.pool, timeout=_timeout(self.timeout))
        return self.connection

    def __await__(self) -> Any:
        return self._get().__await__()

    async def __aenter__(self) -> Any:
        return await self._get()

    async def __aexit__(self, *exc: object) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await self.pool.release(connection)


async def _reset(conn: Any) -> None:
    """The pool's reset of a released connection (asyncpg has already rolled back an open
    transaction and dropped its listeners): the full reset (unlock all, close cursors,
    UNLISTEN, RESET ALL) only when a statement may have left session state. asyncpg's
    default runs it at every release: at 1,000 monitors every 20 s, four statements of
    the 6.5 per check PostgreSQL executed, for connections that hold no such state."""
    if conn.session_state:
        await conn.execute(conn.get_reset_query())
        conn.session_state = False


async def create_pool(dsn: str, *, max_size: int = 20) -> asyncpg.Pool:
    pool: asyncpg.Pool = BoundedPool(
        dsn,
        min_size=1,
        max_size=max_size,
        max_queries=50_000,
        # A connection unused this long is closed: the pool hands out the most recently
        # released one first, so only connections past the loops' usual concurrency idle, and
        # each is a PostgreSQL backend of 10-40 MiB RSS. At 1,000 monitors 300 s kept 8 open
        # (three idle since the start); reopening one costs a few ms of both processes' CPU.
        max_inactive_connection_lifetime=30.0,
        init=_init_connection,
        loop=None,
        connection_class=BoundedConnection,
        reset=_reset,
        record_class=asyncpg.Record,
        command_timeout=COMMAND_TIMEOUT,
    )
    await pool
    return pool


async def ping(conn: DB) -> None:
    """One round trip; raises when the database does not answer."""
    await conn.fetchval("SELECT 1")


def unavailable(e: BaseException) -> bool:
    """Whether `e` says the database could not be reached or did not answer in time (an
    outage: try again later), rather than that it refused the statement (a bug, bad data)."""
    return isinstance(
        e,
        (
            TimeoutError,  # a bound ran out (asyncio.TimeoutError is TimeoutError)
            OSError,  # refused, reset, unreachable
            asyncpg.InterfaceError,  # "connection is closed", a connection lost mid-operation
            asyncpg.PostgresConnectionError,  # class 08
            asyncpg.OperatorInterventionError,  # shutting down, starting up, statement cancelled
            asyncpg.TooManyConnectionsError,
        ),
    )


# How long the probe remembers an outage: a heartbeat's grace window can be long, and the
# deadline checker excuses outages that overlap it (engine/heartbeats.excused).
OUTAGE_MEMORY = 24 * 3600.0


class DatabaseProbe:
    """The database's last known state: ok until a `SELECT 1` fails or takes longer than
    `timeout`, and no longer ok when no probe succeeded for `stale` seconds (a probe that hangs
    past its timeout, a stopped loop).

    It also remembers the outages it saw over the last day, as wall-clock (start, end): an
    outage starts at the last probe that succeeded before a failing one (the database may
    have stopped answering right after it) and ends at the first probe that succeeds again."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float = 1.0, timeout: float = 1.0) -> None:
        self.pool = pool
        self.interval = interval
        self.timeout = timeout
        self.stale = interval + 2 * timeout
        self.last_ok = time.monotonic()  # the pool was just made, so the database answered
        self.last_ok_at = time.time()
        self.failing = False
        self.past: deque[tuple[float, float]] = deque(maxlen=1000)

    def ok(self, now: float) -> bool:
        return not self.failing and now - self.last_ok < self.stale

    def outages(self, now: float | None = None) -> list[tuple[float, float]]:
        """(start, end) wall-clock times of the outages of the last day, oldest first; one
        still going on (or a probe overdue: a stalled loop) ends at `now`."""
        now = time.time() if now is None else now
        while self.past and self.past[0][1] < now - OUTAGE_MEMORY:
            self.past.popleft()
        found = list(self.past)
        if self.failing or now - self.last_ok_at >= self.stale:
            found.append((self.last_ok_at, now))
        return found

    async def step(self) -> bool:
        """One probe; whether the database answered in time."""
        try:
            async with asyncio.timeout(self.timeout):
                with bounded(self.timeout):
                    await ping(self.pool)
        except Exception as e:
            if not self.failing:
                log.warning("database not answering error=%s", type(e).__name__)
            self.failing = True
            return False
        now = time.time()
        if self.failing:
            log.info("database answering again down_s=%.1f", now - self.last_ok_at)
            self.past.append((self.last_ok_at, now))
        self.failing = False
        self.last_ok = time.monotonic()
        self.last_ok_at = now
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


# ---- advisory locks: one controller at a time for a job --------------------------------


async def try_xact_lock(conn: Tx, key: int) -> bool:
    """Take lock `key` until the transaction ends, unless another session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def xact_lock(conn: Tx, key: int) -> None:
    """Take lock `key` until the transaction ends, waiting for it."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def try_session_lock(conn: Tx, key: int) -> bool:
    """Take lock `key` until `session_unlock` (or the connection closes), unless another
    session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def session_unlock(conn: Tx, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration, in order."""
    folder = resources.files("probefleet.controller.storage") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(dsn: str, *, upto: str | None = None) -> list[str]:
    """Apply pending migrations in one transaction under an advisory lock; return them.

    `upto` (a migration number such as "0010") stops after that one and leaves partitions alone:
    for tests of a migration against data written under the schema before it."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, sql in migration_files():
                if version in done or (upto is not None and version.partition("_")[0] > upto):
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
            if upto is None:
                await ensure_partitions(conn, dt.datetime.now(dt.UTC))
        for version in applied:
            log.info("migration applied version=%s", version)
        return applied
    finally:
        await conn.close()


# The column each partitioned table is split on, by day.
PARTITION_KEYS = {"check_results": "due", "rounds": "due", "heartbeat_pings": "at"}


async def ensure_partitions(
    conn: DB, now: dt.datetime, *, days_ahead: int = 3, tables: tuple[str, ...] = PARTITIONED
) -> None:
    """Daily partitions from yesterday to `days_ahead`, so the default partition stays empty
    (heartbeat_pings has none: a ping needs its day's partition).

    Should rows of a day already sit in the default partition (written while that day
    had no partition, e.g. after the clock jumped), PostgreSQL refuses the new partition;
    the rows are then moved into it as it is created, rather than blocking every later
    day and table."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await ensure_partitions(c, now, days_ahead=days_ahead, tables=tables)
    start = now.date() - dt.timedelta(days=1)
    for table in tables:
        for i in range(days_ahead + 2):
            day = start + dt.timedelta(days=i)
            name = f"{table}_{day:%Y%m%d}"
            # UTC days (retention and the names assume UTC), whatever the server's zone
            lo, hi = (f"'{d.isoformat()} 00:00+00'" for d in (day, day + dt.timedelta(days=1)))
            bounds = f"FROM ({lo}) TO ({hi})"
            try:
                async with conn.transaction():  # a savepoint inside migrate()'s transaction
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES {bounds}"
                    )
            except asyncpg.CheckViolationError:
                moved = await _adopt_default_rows(conn, table, name, lo, hi)
                log.warning(
                    "partition created from default rows table=%s partition=%s rows=%d", table, name, moved
                )


async def _adopt_default_rows(conn: Tx, table: str, name: str, lo: str, hi: str) -> int:
    """Create partition `name` of `table` for [lo, hi) holding the rows its default
    partition has there, in one transaction; the number of rows moved."""
    key = PARTITION_KEYS[table]
    async with conn.transaction():
        # STORAGE: check_results.evidence stays EXTERNAL (migration 0023) in the adopted day too.
        await conn.execute(
            f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)"
        )
        status = await conn.execute(
            f"WITH moved AS (DELETE FROM {table}_default WHERE {key} >= {lo} AND {key} < {hi} RETURNING *)"
            f" INSERT INTO {name} SELECT * FROM moved"
        )
        await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    return int(status.split()[-1])
