"""Schedule ownership between live controllers.

Each controller keeps a lease row in `controllers` (storage/cluster.py: heartbeat_at,
lease_until, on the database clock so controller clocks may disagree). A monitor belongs
to shard hash(monitor_id) % SHARDS, and each shard to the live controller that wins
rendezvous hashing for it: when a controller joins or its lease expires, only its share
of shards moves. `beat()` is the step; the caller reloads its schedule when membership
changed.

When the database cannot be reached the lease cannot be renewed. A controller then keeps
scheduling the shards it holds: past the lease by its own clock too, because during an
outage of the database no other controller can see the lease expire either, and stopping
would stop every check of the fleet a few seconds into the outage. What ends it is
another controller claiming the shards: after each beat every controller publishes the
members it read (`announcement`, on `subjects.controller_members()`), and a controller
that is not among the members another one read stops scheduling at once (`hear`) until
its own lease is renewed. Two controllers therefore schedule a shard together only for
the time that message takes, or, should it be lost, until the next one (one beat later).

The lease row also says what each controller decodes (`wire.WIRE`); `result_batches()` is
true while every live controller takes result batches, and only then does the scheduler let
probes batch the results of its jobs (a controller of the previous version sharing the
results consumer would drop a batch as undecodable).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from probefleet.controller import metrics
from probefleet.controller.storage import DB
from probefleet.controller.storage import cluster as store
from probefleet.shared import wire

log = logging.getLogger("probefleet.cluster")

SHARDS = 256


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_of(monitor_id: int) -> int:
    return _hash(f"monitor:{monitor_id}") % SHARDS


def owner(shard: int, members: tuple[str, ...]) -> str:
    """Rendezvous (highest random weight) choice of a shard's controller."""
    return max(members, key=lambda c: _hash(f"{c}/{shard}"))


class Announcement(msgspec.Struct, frozen=True):
    """The live controllers as one controller read them at its last beat."""

    by: str
    members: tuple[str, ...]


@dataclass
class Membership:
    pool: DB
    controller_id: str
    lease: float = 6.0
    members: tuple[str, ...] = ()
    clock: Callable[[], float] = time.monotonic
    # Until when (our clock) the lease certainly holds: the renewal's send time + lease,
    # never later than the database's lease_until.
    valid_until: float = -math.inf
    # Another controller read the members without us: it schedules our shards now.
    fenced: bool = False
    # The lowest wire among the live controllers at the last renewal (1 until one succeeded).
    lowest_wire: int = 1
    _shards: frozenset[int] = field(default_factory=frozenset)
    _overdue: bool = False
    _missed: bool = False
    _settle_until: float = -math.inf

    def owns(self, monitor_id: int) -> bool:
        if not self.members:
            return True
        return shard_of(monitor_id) in self._shards

    def result_batches(self) -> bool:
        """Whether every live controller decodes result batches, so jobs may allow them."""
        return self.lowest_wire >= 2

    def scheduling(self) -> bool:
        """Whether this controller may schedule its shards now: unless another controller
        announced it took them over; a lease past its time (the database unreachable)
        is kept, and said so once in the log and in `probefleet_schedule_lease_expired`."""
        overdue = self.clock() >= self.valid_until and bool(self.members)
        if overdue != self._overdue:
            self._overdue = overdue
            metrics.SCHEDULE_LEASE_EXPIRED.set(int(overdue))
            if overdue and not self.fenced:
                log.warning(
                    "schedule lease not renewed in time, keeping shards until another controller claims them"
                )
        return not self.fenced

    async def beat(self) -> bool:
        """Renew our lease and read the live members; True when membership changed.

        In the first lease period after a renewal failed, members we knew are kept even if
        their lease ran out: after an outage of the database every controller's lease may
        have, and the others renew theirs within that period. Taking their shards at once
        would only move them there and back."""
        sent = self.clock()
        try:
            lease = await store.renew_lease(self.pool, self.controller_id, self.lease, wire.WIRE)
        except BaseException:
            self._missed = True
            raise
        if self._missed:
            self._missed = False
            self._settle_until = sent + self.lease
        members = lease.members
        if sent < self._settle_until:
            members = tuple(sorted(set(members) | set(self.members)))
            # Members kept from before were not read now: their wire is the one known then.
            self.lowest_wire = min(lease.wire, self.lowest_wire)
        else:
            self.lowest_wire = lease.wire
        self.valid_until = sent + self.lease
        if self.fenced:
            log.info("schedule lease renewed, scheduling again")
            self.fenced = False
        if members == self.members:
            return False
        self.members = members
        self._shards = frozenset(s for s in range(SHARDS) if owner(s, members) == self.controller_id)
        return True

    def announcement(self) -> bytes:
        return msgspec.json.encode(Announcement(by=self.controller_id, members=self.members))

    def hear(self, data: bytes) -> bool:
        """Another controller's announcement; True when it fenced us (it read the live
        members without us, so it schedules our shards from its next load)."""
        try:
            heard = msgspec.json.decode(data, type=Announcement)
        except msgspec.DecodeError:
            return False
        if heard.by == self.controller_id or self.controller_id in heard.members or self.fenced:
            return False
        self.fenced = True
        log.warning("another controller took over our shards, scheduling stops by=%s", heard.by)
        return True

    async def leave(self) -> None:
        """Give up our lease so the others take over at their next beat."""
        await store.drop_lease(self.pool, self.controller_id)
