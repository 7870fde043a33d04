"""Monitor search (`?search=`): a case-insensitive substring of the name, URL or host, with
LIKE's wildcards taken literally, served by the pg_trgm indexes of migration 0012."""

from __future__ import annotations

import asyncpg

from probefleet.controller.storage import monitors as store

ROWS = [
    ("Shop front", "http", {"type": "http", "url": "https://shop.example/"}),
    ("Payments API", "http", {"type": "http", "url": "https://api.example/pay_now"}),
    ("Database", "tcp", {"type": "tcp", "host": "db-1.internal", "port": 5432}),
    ("100% uptime", "http", {"type": "http", "url": "https://percent.example/"}),
    ("Mail", "tcp", {"type": "tcp", "host": "mail.EXAMPLE.org", "port": 25}),
]


async def found(conn: asyncpg.pool.PoolConnectionProxy, text: str) -> list[str]:
    rows = await store.list_filtered(conn, store.Filters(search=text), limit=100)
    return [r["name"] for r in rows]


async def test_search_matches_name_url_and_host_through_the_trigram_indexes(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for name, kind, spec in ROWS:
            await conn.execute(
                "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
                " VALUES ($1, $2, $3, 60, 5, '{us-east}')",
                name,
                kind,
                spec,
            )
        # Only the indexes may answer: the result must not depend on a table scan.
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM monitors WHERE name ILIKE $1 OR spec->>'url' ILIKE $1"
                " OR spec->>'host' ILIKE $1",
                "%example%",
            )
        )
        for index in ("monitors_search_name", "monitors_search_url", "monitors_search_host"):
            assert index in plan

        assert await found(conn, "shop") == ["Shop front"]
        assert await found(conn, "SHOP") == ["Shop front"]
        assert await found(conn, "example") == ["Shop front", "Payments API", "100% uptime", "Mail"]
        assert await found(conn, "db-1.int") == ["Database"]
        assert await found(conn, "pay_now") == ["Payments API"]
        assert await found(conn, "pay%now") == []  # % is a character, not a wildcard
        assert await found(conn, "y_n") == ["Payments API"]
        assert await found(conn, "ayXn") == []  # _ is a character too
        assert await found(conn, "100%") == ["100% uptime"]
        assert await found(conn, "no such thing") == []
