"""The audit log: every state-changing request that succeeded, with who made it (an API key's
prefix or a user's name), written after the handler answered.

Written by one middleware rather than by each handler, so no resource can be forgotten;
a write that fails (the database went away after the change) is logged and the client
still gets its answer: the change itself was made.
"""

from __future__ import annotations

import logging

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import now_utc
from probefleet.controller.api.errors import Handler
from probefleet.controller.console.accounts import ACTOR, client_of
from probefleet.controller.status_pages.access import source_key
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import users as store

log = logging.getLogger("probefleet.audit")

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Events this request writes name its caller (storage/events.ACTOR, set on
    # authentication); reset around each request, since a kept-alive connection serves
    # its requests in one task.
    token = event_store.ACTOR.set(None)
    try:
        response = await handler(request)
    finally:
        event_store.ACTOR.reset(token)
    if request.method in CHANGES and response.status < 400 and (actor := request.get(ACTOR)):
        try:
            await store.audit(
                request.app[keys.POOL],
                actor,
                request.method,
                request.path[:500],
                response.status,
                source_key(client_of(request)),
                now_utc(),
            )
        except Exception as e:  # the change was made; the client gets its answer
            log.warning("audit row not written actor=%s path=%s error=%s", actor, request.path, e)
    return response
