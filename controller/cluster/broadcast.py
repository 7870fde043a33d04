"""Tell every live controller something over core NATS and wait until each confirmed.

Used where an answer must mean "done everywhere": an API key revocation (the key is
refused on every controller) and a status-page change (its open streams ended on every
controller). Each listener answers the request's reply inbox once it has acted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.errors
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.storage import cluster as store

log = logging.getLogger("probefleet.controller")


async def announce(app: web.Application, subject: str, data: bytes, *, wait: float, what: str) -> bool:
    """Publish `data` on `subject` and wait (at most `wait` s) for one answer per live
    controller (leases in `controllers`, this one included). False, logged with `what`,
    when NATS is down (nats.py sends it once reconnected) or some controller did not
    confirm in time."""
    nc = app[keys.NC]
    if not nc.is_connected:
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(subject, data)
        log.warning("%s not confirmed: NATS disconnected", what)
        return False
    live = await store.live_count(app[keys.POOL])
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, data, reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        for _ in range(max(live, 1)):
            await sub.next_msg(timeout=max(deadline - loop.time(), 0.001))
        return True
    except nats.errors.TimeoutError:
        log.warning("%s not confirmed by every controller live=%d", what, live)
        return False
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
