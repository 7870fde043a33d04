"""Request ids: each API request gets one (the client's `X-Request-Id` when it is a sane
token, else a new random one), answered in `X-Request-Id` and put on every log line
written while serving it (shared/logs.REQUEST_ID), so a client's report and the
controller's logs meet."""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from probefleet.shared.logs import REQUEST_ID

HEADER = "X-Request-Id"
KEY = web.RequestKey("request_id", str)
# Anything else (too long, spaces, control characters) could forge or bloat log lines.
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def setup(app: web.Application) -> None:
    """Outermost middleware, so the id is set for every other middleware's log lines too."""
    app.middlewares.insert(0, request_id_middleware)
    app.on_response_prepare.append(_answer)


def request_id(request: web.Request) -> str:
    given = request.headers.get(HEADER, "")
    return given if _SANE.fullmatch(given) else uuid.uuid4().hex[:16]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[KEY] = rid = request_id(request)
    token = REQUEST_ID.set(rid)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


async def _answer(request: web.Request, response: web.StreamResponse) -> None:
    if (rid := request.get(KEY)) is not None:
        response.headers[HEADER] = rid
