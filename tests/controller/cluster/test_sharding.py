"""Schedule leases when the database cannot be reached: a controller keeps its shards
past its lease until another controller announces that it read the members without it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from probefleet.controller import metrics
from probefleet.controller.cluster.sharding import SHARDS, Membership, owner, shard_of
from probefleet.controller.storage import db
from probefleet.shared.devstack import PostgresServer, create_database


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A server of this test's own, so freezing it stalls no other test."""
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_pool(own_postgres: PostgresServer) -> AsyncIterator[asyncpg.Pool]:
    await create_database(own_postgres.dsn(), "t", drop=True)
    await db.migrate(own_postgres.dsn("t"))
    pool = await db.create_pool(own_postgres.dsn("t"), max_size=3)
    yield pool
    own_postgres.thaw()
    await pool.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lease_expired() -> float | None:
    return metrics.REGISTRY.get_sample_value("probefleet_schedule_lease_expired")


def test_each_shard_has_one_owner_and_a_leaving_member_moves_only_its_own() -> None:
    three, two = ("a", "b", "c"), ("a", "b")
    moved = [s for s in range(SHARDS) if owner(s, three) != owner(s, two)]
    assert moved and all(owner(s, three) == "c" for s in moved)
    assert 0 <= shard_of(12345) < SHARDS


async def test_a_controller_that_cannot_renew_keeps_its_shards_until_another_claims_them(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    clock = Clock(1000.0)
    a = Membership(pool=own_pool, controller_id="a", lease=6.0, clock=clock)
    assert await a.beat() is True
    assert a.scheduling() and a.members == ("a",)
    own_postgres.freeze()
    try:
        clock.now = 1010.0  # past the lease by our own clock: nobody else could renew either
        with db.bounded(0.5), pytest.raises(TimeoutError):
            await a.beat()
        assert a.scheduling() is True
        assert lease_expired() == 1
        # announcements that leave us in change nothing; one that leaves us out stops us
        assert a.hear(a.announcement()) is False
        assert a.hear(b'{"by": "b", "members": ["a", "b"]}') is False
        assert a.hear(b"not json") is False
        assert a.hear(b'{"by": "b", "members": ["b"]}') is True
        assert a.scheduling() is False
    finally:
        own_postgres.thaw()
    assert await a.beat() is False  # the members did not change; the lease is ours again
    assert a.scheduling() is True
    assert lease_expired() == 0


async def test_a_controller_whose_lease_expired_is_announced_gone_by_the_others(pool: asyncpg.Pool) -> None:
    a = Membership(pool=pool, controller_id="a", lease=6.0)
    b = Membership(pool=pool, controller_id="b", lease=6.0)
    await a.beat()
    await b.beat()
    await a.beat()
    assert a.members == b.members == ("a", "b")
    assert a.hear(b.announcement()) is False
    await pool.execute("UPDATE controllers SET lease_until = now() - interval '1 second' WHERE id = 'a'")
    assert await b.beat() is True and b.members == ("b",)
    assert a.hear(b.announcement()) is True
    assert a.scheduling() is False
    assert await a.beat() is False and a.members == ("a", "b")  # its own view never changed
    assert a.scheduling() is True


async def test_after_a_missed_renewal_members_are_kept_for_a_lease_before_their_shards_move(
    own_pool: asyncpg.Pool, own_postgres: PostgresServer
) -> None:
    clock = Clock(1000.0)
    a = Membership(pool=own_pool, controller_id="a", lease=6.0, clock=clock)
    b = Membership(pool=own_pool, controller_id="b", lease=6.0)
    await a.beat()
    await b.beat()
    await a.beat()
    assert a.members == ("a", "b")
    own_postgres.freeze()
    try:
        with db.bounded(0.5), pytest.raises(TimeoutError):
            await a.beat()
    finally:
        own_postgres.thaw()
    # b's lease ran out during the outage and b has not renewed yet
    await own_pool.execute("UPDATE controllers SET lease_until = now() - interval '1 second' WHERE id = 'b'")
    clock.now = 1020.0
    assert await a.beat() is False and a.members == ("a", "b")
    clock.now = 1025.9
    assert await a.beat() is False
    clock.now = 1026.0  # a lease after the renewal came back: b is gone for good
    assert await a.beat() is True and a.members == ("a",)
