"""Who is calling: API keys authenticated through this controller's key cache
(controller/api/keycache.py), and revocations spread to every controller over NATS."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from nats.aio.msg import Msg

from probefleet.controller import keys
from probefleet.controller.api.keycache import KeyCache
from probefleet.controller.cluster import broadcast
from probefleet.controller.storage import api_keys
from probefleet.shared import subjects

log = logging.getLogger("probefleet.auth")

# How long a revoke waits for every live controller to confirm it dropped the key.
REVOKE_WAIT = 1.0


def setup(app: web.Application) -> None:
    """Give the app its key cache (call in build_app)."""
    app[keys.KEYCACHE] = KeyCache(ttl=app[keys.CONFIG].api_key_cache_seconds)


async def authenticate(app: web.Application, key: str, now: dt.datetime) -> dict[str, Any] | None:
    """The key's row if it is known, not revoked and not expired.

    The cache is trusted only while NATS is connected: revocations arrive there."""
    if not key.startswith(api_keys.KEY_PREFIX) or len(key) < 20:
        return None
    cache, pool = app[keys.KEYCACHE], app[keys.POOL]
    digest = api_keys.digest(key)
    row = cache.get(digest) if keys.NC in app and app[keys.NC].is_connected else None
    if row is None:
        generation = cache.generation
        row = await api_keys.authenticate(pool, key, now)
        if row is not None:
            cache.put(digest, key[:12], row, generation)
        return row
    if api_keys.expired(row, now):
        return None
    await api_keys.touch(pool, row, now)
    return row


async def announce_revoked(app: web.Application, prefix: str) -> None:
    """Drop the key here, then on every live controller; wait (at most REVOKE_WAIT) until
    each confirmed, so the key is refused everywhere once the DELETE has answered."""
    app[keys.KEYCACHE].forget(prefix)
    await broadcast.announce(
        app, subjects.api_key_revoked(), prefix.encode(), wait=REVOKE_WAIT, what=f"revoke of prefix={prefix}"
    )


async def keycache_ctx(app: web.Application) -> AsyncIterator[None]:
    """Listen for revocations from any controller (ours included)."""
    nc, cache = app[keys.NC], app[keys.KEYCACHE]

    async def on_revoked(msg: Msg) -> None:
        cache.forget(msg.data.decode(errors="replace"))
        if msg.reply:
            await msg.respond(b"ok")

    sub = await nc.subscribe(subjects.api_key_revoked(), cb=on_revoked)
    yield
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
