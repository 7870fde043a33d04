"""storage/fleet.py on a real PostgreSQL: the seed, token spending under concurrency, and a
region deleted while a probe enrolls into it."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from probefleet.controller.storage import fleet as store
from tests.helpers import eventually

NOW = dt.datetime.now(dt.UTC)


async def test_the_seed_adds_what_is_missing_and_overwrites_nothing(pool: asyncpg.Pool) -> None:
    assert await store.seed_regions(pool, [{"name": "eu-west", "city": "Dublin"}]) == 1
    assert await store.update_region(pool, "eu-west", {"city": "Cork", "provider": "aws"}) is not None
    added = await store.seed_regions(pool, [{"name": "eu-west", "city": "Dublin"}, {"name": "us-east"}])
    assert added == 1
    row = await store.get_region(pool, "eu-west")
    assert row is not None and (row["city"], row["provider"]) == ("Cork", "aws")


async def test_a_token_is_spent_at_most_max_uses_times(pool: asyncpg.Pool) -> None:
    await store.seed_regions(pool, [{"name": "eu-west"}])
    made = await store.create_token(pool, "eu-west", NOW + dt.timedelta(hours=1), 2)
    assert made is not None
    token, _ = made

    async def spend() -> object:
        async with pool.acquire() as conn, conn.transaction():
            return await store.spend_token(conn, token, dt.datetime.now(dt.UTC))

    spent = await asyncio.gather(*(spend() for _ in range(5)))
    assert sum(isinstance(s, dict) for s in spent) == 2
    assert [s for s in spent if not isinstance(s, dict)] == [store.TokenRefusal.USED_UP] * 3
    assert await store.create_token(pool, "nowhere", NOW, None) is None


async def test_a_region_deleted_during_an_enrollment_keeps_its_credential(pool: asyncpg.Pool) -> None:
    """delete_region waits for an enrollment in progress, then sees its credential (409)."""
    await store.seed_regions(pool, [{"name": "eu-west"}])
    made = await store.create_token(pool, "eu-west", NOW + dt.timedelta(hours=1), None)
    assert made is not None
    async with pool.acquire() as enrolling, pool.acquire() as deleting:
        tx = enrolling.transaction()
        await tx.start()
        spent = await store.spend_token(enrolling, made[0], dt.datetime.now(dt.UTC))
        assert isinstance(spent, dict)

        async def delete() -> str:
            async with deleting.transaction():
                return await store.delete_region(deleting, "eu-west")

        deleted = asyncio.create_task(delete())
        waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
        await eventually(
            lambda: pool.fetchval(waiting, deleting.get_server_pid()), what="the delete waiting on a lock"
        )
        await store.save_credential(
            enrolling,
            probe_id="p1",
            region="eu-west",
            public_key="U" + "A" * 55,
            host="",
            version="",
            token_id=spent["id"],
        )
        await tx.commit()
        assert await deleted == "probes"
    assert await store.get_region(pool, "eu-west") is not None
