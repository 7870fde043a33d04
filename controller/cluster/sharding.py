"""Schedule ownership between live controllers.

Each controller keeps a lease row in `controllers` (storage/cluster.py: heartbeat_at,
lease_until, on the database clock so controller clocks may disagree). A monitor belongs
to shard hash(monitor_id) % SHARDS, and each shard to the live controller that wins
rendezvous hashing for it: when a controller joins or its lease expires, only its share
of shards moves. `beat()` is the step; the caller reloads its schedule when membership
changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from probefleet.controller.storage import DB
from probefleet.controller.storage import cluster as store

SHARDS = 256


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_of(monitor_id: int) -> int:
    return _hash(f"monitor:{monitor_id}") % SHARDS


def owner(shard: int, members: tuple[str, ...]) -> str:
    """Rendezvous (highest random weight) choice of a shard's controller."""
    return max(members, key=lambda c: _hash(f"{c}/{shard}"))


@dataclass
class Membership:
    pool: DB
    controller_id: str
    lease: float = 6.0
    members: tuple[str, ...] = ()
    _shards: frozenset[int] = field(default_factory=frozenset)

    def owns(self, monitor_id: int) -> bool:
        if not self.members:
            return True
        return shard_of(monitor_id) in self._shards

    async def beat(self) -> bool:
        """Renew our lease and read the live members; True when membership changed."""
        members = await store.renew_lease(self.pool, self.controller_id, self.lease)
        if members == self.members:
            return False
        self.members = members
        self._shards = frozenset(s for s in range(SHARDS) if owner(s, members) == self.controller_id)
        return True

    async def leave(self) -> None:
        """Give up our lease so the others take over at their next beat."""
        await store.drop_lease(self.pool, self.controller_id)
