"""API key rows held in memory for a few seconds, so authenticating a request costs no
database round trip. Entries go at once when a key is revoked (controller/api/auth.py
tells every controller over NATS); `ttl` bounds how long a revoke that did not reach a
controller (NATS down) goes unseen, and how long a row read before it is kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    prefix: str
    row: dict[str, Any]
    until: float  # time.monotonic()


@dataclass
class KeyCache:
    """SHA-256 digest of a key -> its api_keys row (without the hash)."""

    ttl: float = 5.0
    max_entries: int = 10_000
    entries: dict[str, Entry] = field(default_factory=dict)
    # Bumped by every forget(): a row read from the database while a revoke arrived is
    # not cached (it may predate the revoke).
    generation: int = 0

    def get(self, digest: str, now: float | None = None) -> dict[str, Any] | None:
        entry = self.entries.get(digest)
        if entry is None:
            return None
        if entry.until <= (time.monotonic() if now is None else now):
            del self.entries[digest]
            return None
        return entry.row

    def put(
        self, digest: str, prefix: str, row: dict[str, Any], generation: int, now: float | None = None
    ) -> None:
        """Cache `row` unless a revoke arrived since `generation` was read."""
        if self.ttl <= 0 or generation != self.generation:
            return
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        now = time.monotonic() if now is None else now
        self.entries[digest] = Entry(prefix=prefix, row=row, until=now + self.ttl)

    def forget(self, prefix: str) -> None:
        """Drop the key with this prefix (revoked)."""
        self.generation += 1
        for digest in [d for d, e in self.entries.items() if e.prefix == prefix]:
            del self.entries[digest]
