"""GET /api/v1/ws: events from the outbox pushed over a WebSocket.

Protocol (JSON text frames):
  client -> {"auth": "<api key>"}                       unless sent as header or ?api_key=
  client -> {"subscribe": ["monitor.status", "incident.updates"],
             "monitor_ids": [1, 2], "last_event_id": 41}  monitor_ids/last_event_id optional;
             "*" subscribes to every topic the key's scopes allow
  client -> {"type": "ping"}                             server -> {"type": "pong"}
  server -> {"type": "subscribed", "topics", "monitor_ids", "last_event_id"}
  server -> {"type": "event", "id", "kind", "topic", "monitor_id", "incident_id",
             "occurred_at", "payload"}
  server -> {"type": "error", "code", "message"}
Protocol-level ping/pong every 20 s as well. A client whose queue fills is closed with
code 4008; a bad or missing key closes with 4401 after an error frame. A connection spends
one request of the key's rate limit; with none left it closes with 4429.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from probefleet.controller import keys
from probefleet.controller.api import ratelimit
from probefleet.controller.api.common import bearer, now_utc
from probefleet.controller.api.errors import ApiError
from probefleet.controller.console import accounts
from probefleet.controller.notifications.realtime import TOPICS, Client, Hub, parse_ids
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import db as db_store

AUTH_TIMEOUT = 10.0
# The scope each topic needs (admin holds them all).
TOPIC_SCOPES = {
    "monitor.status": "monitors:read",
    "incident.updates": "incidents:read",
    "system": "monitors:read",
    "status_page.posts": "status_pages:read",
}


def _allowed(topic: str, scopes: set[str]) -> bool:
    return "admin" in scopes or TOPIC_SCOPES[topic] in scopes


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def _send(ws: web.WebSocketResponse, body: dict[str, Any]) -> None:
    await ws.send_str(msgspec.json.encode(body).decode())


async def _receive(ws: web.WebSocketResponse, wait: float | None = None) -> dict[str, Any] | None:
    """The next JSON object from the client; None when it closed."""
    msg = await ws.receive(wait)
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    if msg.type != WSMsgType.TEXT:
        raise ProtocolError("bad_request", "send JSON text frames")
    try:
        body = msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        raise ProtocolError("bad_request", "frame is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "frame must be a JSON object")
    return body


def _client(body: dict[str, Any], scopes: set[str], size: int) -> tuple[Client, int | None]:
    topics = body.get("subscribe", body.get("topics", list(TOPICS[:2])))
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not topics or any(t not in (*TOPICS, "*") for t in topics):
        raise ProtocolError("validation_error", f"subscribe: a list of {', '.join(TOPICS)} or *")
    wanted = {t for t in TOPICS if _allowed(t, scopes)} if "*" in topics else set(topics)
    if not wanted:
        raise ProtocolError("forbidden", "this key may read no topic")
    for topic in sorted(wanted):
        if not _allowed(topic, scopes):
            raise ProtocolError("forbidden", f"{topic} needs the scope {TOPIC_SCOPES[topic]}")
    try:
        ids = parse_ids(body.get("monitor_ids", body.get("monitors")))
    except (ValueError, TypeError):
        raise ProtocolError("validation_error", "monitor_ids: a list of monitor ids") from None
    last = body.get("last_event_id")
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
        raise ProtocolError("validation_error", "last_event_id: a non-negative integer")
    return Client(kind="ws", topics=frozenset(wanted), monitor_ids=ids, size=size), last


async def _pump(ws: web.WebSocketResponse, client: Client) -> None:
    while True:
        ev = await client.next()
        if ev is None:
            if client.dropped:
                await ws.close(code=4008, message=b"too slow: queue full")
            return
        await ws.send_str(ev.text)


class Session:
    """One socket: its key's scopes and at most one subscription at a time."""

    def __init__(self, ws: web.WebSocketResponse, hub: Hub, scopes: set[str]) -> None:
        self.ws, self.hub, self.scopes = ws, hub, scopes
        self.client: Client | None = None
        self.pump: asyncio.Task[None] | None = None

    async def subscribe(self, body: dict[str, Any]) -> None:
        client, last = _client(body, self.scopes, self.hub.queue_size)
        await self.stop()
        self.client = client
        self.hub.attach(client)
        replay = await self.hub.replay(client, last) if last is not None else []
        await _send(
            self.ws,
            {
                "type": "subscribed",
                "topics": sorted(client.topics),
                "monitor_ids": sorted(client.monitor_ids) if client.monitor_ids else None,
                "last_event_id": self.hub.last_id,
                "replayed": len(replay),
            },
        )
        for ev in replay:
            await self.ws.send_str(ev.text)
        self.pump = asyncio.create_task(_pump(self.ws, client))

    async def handle(self, body: dict[str, Any]) -> None:
        if body.get("type") == "ping" or body.get("action") == "ping":
            await _send(self.ws, {"type": "pong"})
        elif "subscribe" in body or "topics" in body or body.get("type") == "subscribe":
            await self.subscribe(body)
        elif body.get("type") == "unsubscribe" or "unsubscribe" in body:
            await self.stop()
            await _send(self.ws, {"type": "unsubscribed"})
        elif not {"auth", "api_key"} & set(body):
            raise ProtocolError("bad_request", "unknown message: send subscribe or ping")

    async def stop(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
            self.pump = None
        if self.client is not None:
            self.hub.detach(self.client)
            self.client = None


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[set[str], dict[str, Any] | None]:
    """Scopes of the key from the header, ?api_key= or the first frame (returned if it said more)."""
    key = bearer(request) or request.query.get("api_key")
    first = None
    if not key and (session := await _session(request)) is not None:
        return set(accounts.scopes_of(session["role"])), None
    if not key:
        try:
            first = await _receive(ws, AUTH_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("unauthorized", 'send {"auth": "<api key>"} first') from None
        key = (first or {}).get("auth", (first or {}).get("api_key"))
    row = None
    if isinstance(key, str):
        row = await api_keys.authenticate(request.app[keys.POOL], key, now_utc())
    if row is None:
        raise ProtocolError("unauthorized", "missing, invalid, revoked or expired API key")
    try:
        ratelimit.check(request, row)
    except ApiError as e:
        raise ProtocolError(e.code, e.message) from None
    return set(row["scopes"]), first


async def _session(request: web.Request) -> dict[str, Any] | None:
    """A console session's, when the socket was opened by a page of this site: browsers send
    the cookie with any site's WebSocket, so the Origin must be ours (no CSRF token here)."""
    origin = request.headers.get("Origin", "")
    if accounts.COOKIE not in request.cookies or origin.split("://", 1)[-1] != request.host:
        return None
    session = await accounts.session_of(request, now_utc())
    if session is not None:
        try:
            ratelimit.check(request, {"id": -int(session["user_id"]), "rate_limit": None})
        except ApiError as e:
            raise ProtocolError(e.code, e.message) from None
    return session


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1 << 16)
    await ws.prepare(request)
    session: Session | None = None
    sockets = request.app[keys.HUB].sockets
    sockets.add(ws)
    try:
        scopes, first = await _authenticate(request, ws)
        session = Session(ws, request.app[keys.HUB], scopes)
        await _send(ws, {"type": "welcome", "last_event_id": session.hub.last_id, "topics": list(TOPICS)})
        body = first
        while True:
            try:
                if body is not None:
                    # Each message's database work (a replay) has a budget of its own: the
                    # request's would be spent by the replays of a socket open for days.
                    with db_store.budget(request.app[keys.CONFIG].database_timeout):
                        await session.handle(body)
                body = await _receive(ws)
                if body is None:
                    break
            except ProtocolError as e:
                await _send(ws, {"type": "error", "code": e.code, "message": str(e)})
                body = None
    except ProtocolError as e:
        with contextlib.suppress(ConnectionError):
            await _send(ws, {"type": "error", "code": e.code, "message": str(e)})
            code = {"unauthorized": 4401, "rate_limited": 4429}.get(e.code, 4400)
            await ws.close(code=code, message=e.code.encode())
    except ConnectionError:
        pass
    finally:
        sockets.discard(ws)
        if session is not None:
            await session.stop()
    return ws
