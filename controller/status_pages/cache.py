"""PageCache: what one controller keeps of the public pages between requests: the cookie
secret, short-lived renderings with single-flight rebuilds, the subscribe and password
limiters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from probefleet.controller.status_pages.access import AddressLimiter, UnlockLimiter


@dataclass
class PageCache:
    """Per-controller state of the public pages: the cookie secret and short-lived caches.

    Rendered pages live for `ttl` seconds (live changes reach browsers through SSE anyway),
    uptime bars, which change once a day at most, for `bars_ttl`. An expired entry is still
    served while one task rebuilds it, so a burst of visitors never waits on the database
    together (and never rebuilds the same page many times at once).
    """

    secret: str
    ttl: float = 1.0
    bars_ttl: float = 60.0
    # Anonymous subscribe requests per source address.
    subscribe_limiter: AddressLimiter = field(default_factory=AddressLimiter)
    # Password attempts on private pages, per address and page and per page.
    unlock_limiter: UnlockLimiter = field(default_factory=UnlockLimiter)
    entries: dict[tuple[str, int], tuple[float, Any]] = field(default_factory=dict)
    building: dict[tuple[str, int], asyncio.Task[Any]] = field(default_factory=dict)

    async def get(self, kind: str, page_id: int, ttl: float, build: Callable[[], Awaitable[Any]]) -> Any:
        key, now = (kind, page_id), time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self.building.get(key)
        if task is None:
            task = self.building[key] = asyncio.create_task(self._build(key, ttl, build))
        if hit is not None:
            return hit[1]
        return await asyncio.shield(task)

    async def _build(self, key: tuple[str, int], ttl: float, build: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await build()
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[key] = (time.monotonic() + ttl, value)
            return value
        finally:
            self.building.pop(key, None)

    def forget(self, page_id: int) -> None:
        for key in [k for k in self.entries if k[1] == page_id]:
            del self.entries[key]
