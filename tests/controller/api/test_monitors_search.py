"""Monitor search (`?search=`): a case-insensitive substring of the name, URL or host, with
LIKE's wildcards taken literally, served by the pg_trgm indexes of migrations 0012 and 0014;
the URL without its credentials (password, query values), so search cannot reveal them."""

from __future__ import annotations

import json

import asyncpg

from probefleet.controller.storage import db
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
                "EXPLAIN SELECT id FROM monitors WHERE name ILIKE $1 OR search_url ILIKE $1"
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


SECRET_URLS = [
    ("Basic", "https://urluser:S3cretPw@basic.example/path?page=2"),
    ("Tricky", "https://us@er:p@ss:word@tricky.example/?x=1"),
    (
        "Token",
        "https://token.example/feed?format=json&token=T0kenValue&Signature=Sig9&plain=visible#k=FragVal",
    ),
]


async def insert_urls(conn: asyncpg.pool.PoolConnectionProxy) -> None:
    for name, url in SECRET_URLS:
        await conn.execute(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            " VALUES ($1, 'http', $2, 60, 5, '{us-east}')",
            name,
            {"type": "http", "url": url},
        )


async def assert_search_sees_no_secret(conn: asyncpg.pool.PoolConnectionProxy) -> None:
    for secret in (
        "urluser:S",
        "S3cretPw",
        "p@ss",
        "word@tricky",
        "T0kenValue",
        "token=T",
        "Sig9",
        "FragVal",
    ):
        assert await found(conn, secret) == [], secret
    # Everything a response shows still matches: user, host, path, parameter names.
    assert await found(conn, "urluser:") == ["Basic"]
    assert await found(conn, "basic.example/path") == ["Basic"]
    assert await found(conn, "page=") == ["Basic"]
    assert await found(conn, "us@er") == ["Tricky"]
    assert await found(conn, "tricky.example") == ["Tricky"]
    assert await found(conn, "token.example/feed?format=") == ["Token"]
    assert await found(conn, "&token=&signature=") == ["Token"]


async def test_search_never_matches_a_password_or_query_value(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_urls(conn)
        await assert_search_sees_no_secret(conn)


async def test_migration_0014_fills_the_searchable_url_of_existing_monitors(database: str) -> None:
    await db.migrate(database, upto="0013")
    conn = await asyncpg.connect(database)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=str, schema="pg_catalog")
        await insert_urls(conn)  # type: ignore[arg-type]
    finally:
        await conn.close()
    await db.migrate(database)
    p = await db.create_pool(database, max_size=2)
    try:
        async with p.acquire() as c:
            await assert_search_sees_no_secret(c)
    finally:
        await p.close()
