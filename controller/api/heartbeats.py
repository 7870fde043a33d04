"""/api/v1/heartbeats (authenticated CRUD, ping history) and /api/v1/heartbeat/{token}
(anonymous pings: success, /start, /fail, /log, /{exit_code}, optional ?rid=).

A ping is answered only after the transaction that stored it committed (see
controller.engine.heartbeats.PingWriter). Tokens are stored as sha256 digests: the token
is in the response that creates or rotates it and nowhere else.

`insert_monitor` and `update_monitor` write a monitor of any kind for both resources
(api/monitors.py imports this module, so they live here, below it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import time
from typing import Any

import asyncpg
from aiohttp import web

from probefleet.controller import keys, metrics
from probefleet.controller.api.common import now_utc, ok, parse_int, path_id, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.api.notifications import private_allowed, resolve_references
from probefleet.controller.engine import heartbeats
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.storage import heartbeats as store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.validation import ValidationError
from probefleet.shared import subjects

MAX_PING_BODY = 100 * 1024
EXCERPT_CHARS = 10_000
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
TOKEN_CACHE_S = 5.0
MAX_PAGE = 1000

# token digest -> (monitor id, monotonic expiry); bounded by clearing when it grows too big
_tokens: dict[str, tuple[int, float]] = {}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def public(row: dict[str, Any], request: web.Request, token: str | None = None) -> dict[str, Any]:
    spec = heartbeat.decode_spec(row["spec"])
    assert spec is not None
    out: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "type": "heartbeat",
        "run_interval": spec.run_interval,
        "grace_period": spec.grace_period,
        "cron": spec.cron,
        "tz": spec.tz,
        "is_enabled": row["enabled"],
        "tags": list(row["tags"]),
        "status": row["status"],
        "is_ok": row["status"] == "up",
        "last_ping_at": row.get("last_ping_at"),
        "last_ping_kind": row.get("last_ping_kind"),
        "last_success": row["last_success"],
        "last_failure": row["last_failure"],
        "next_deadline": row.get("deadline"),
        "deadline_reason": row.get("deadline_reason"),
        "open_runs": len(row.get("runs") or {}),
        "token_hint": row.get("token_hint"),
        "status_changed_at": row["status_changed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    if token is not None:
        out.update(token_fields(request, token))
    return out


async def attach(conn: Any, row: dict[str, Any]) -> str:
    """Give a heartbeat monitor its state row and a fresh token; return the token."""
    token = new_token()
    state = heartbeats.state_of({**row, "anchor_at": row["created_at"], "runs": {}})
    await store.create(
        conn, row["id"], digest(token), token[:4], row["created_at"], heartbeats.deadline(state)
    )
    return token


def token_fields(request: web.Request, token: str) -> dict[str, Any]:
    """The token and the ping URL made of it, shown once: when created or rotated."""
    return {"token": token, "ping_url": f"{request.url.origin()}/api/v1/heartbeat/{token}"}


async def insert_monitor(
    pool: asyncpg.Pool, cfg: monitors.MonitorConfig, *, allow_private: bool
) -> tuple[dict[str, Any], str | None]:
    """Create a monitor of any kind (POST /monitors, POST /heartbeats): the channels its
    notification URLs name, the monitor and, for a heartbeat, its state row and token, in
    one transaction, so a failed write leaves none of the earlier ones behind (a channel
    made for a monitor that was then refused would outlive it). The row, and the token
    of a heartbeat (None for other kinds)."""
    async with pool.acquire() as conn, conn.transaction():
        cfg = await resolve_references(conn, cfg, allow_private=allow_private)
        try:
            row = await monitor_store.insert(conn, cfg)
        except asyncpg.ForeignKeyViolationError:
            raise ValidationError({"parent_id": "no such monitor"}) from None
        token = await attach(conn, row) if row["kind"] == "heartbeat" else None
    return row, token


async def update_monitor(
    pool: asyncpg.Pool, monitor_id: int, cfg: monitors.MonitorConfig, *, allow_private: bool
) -> dict[str, Any] | None:
    """Change a monitor (PATCH and PUT of either resource): the channels its notification
    URLs name and the monitor in one transaction, as `insert_monitor`. None when there is
    no such monitor."""
    async with pool.acquire() as conn, conn.transaction():
        cfg = await resolve_references(conn, cfg, allow_private=allow_private)
        try:
            return await monitor_store.update(conn, monitor_id, cfg)
        except asyncpg.ForeignKeyViolationError:
            raise ValidationError({"parent_id": "no such monitor"}) from None


def _body_dict(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return body


async def create_heartbeat(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    body = _body_dict(await read_json(request))
    if monitors.normalize({"type": body.get("type", "heartbeat")})["type"] != "heartbeat":
        raise ValidationError({"type": "must be heartbeat (or cron); use /api/v1/monitors for others"})
    cfg = monitors.parse({**body, "type": "heartbeat"}, request.app[keys.REGIONS].ids())
    pool = request.app[keys.POOL]
    row, token = await insert_monitor(pool, cfg, allow_private=private_allowed(request))
    full = await store.get(pool, row["id"])
    assert full is not None
    return ok(public(full, request, token), status=201)


async def _get(request: web.Request) -> dict[str, Any]:
    row = await store.get(request.app[keys.POOL], path_id(request, what="heartbeat"))
    if row is None:
        raise not_found("heartbeat")
    return row


async def get_heartbeat(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    return ok(public(await _get(request), request))


async def list_heartbeats(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    limit = _int_query(request, "limit", 50, 1, 100)
    cursor = _int_query(request, "cursor", 0, 0, 1 << 62)
    rows = await store.list_page(request.app[keys.POOL], after_id=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None}
    return ok([public(r, request) for r in rows], meta=meta)


async def patch_heartbeat(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    current = await _get(request)
    body = monitors.normalize(_body_dict(await read_json(request)))
    if "type" in body and body["type"] != "heartbeat":
        raise ValidationError({"type": "cannot change a monitor's type; create a new monitor"})
    fields = heartbeat.merge_fields(monitors.config_fields(current), body)
    cfg = monitors.parse(fields, request.app[keys.REGIONS].ids())
    pool = request.app[keys.POOL]
    updated = await update_monitor(pool, current["id"], cfg, allow_private=private_allowed(request))
    if updated is None:
        raise not_found("heartbeat")
    await heartbeats.refresh(pool, current["id"])
    await _announce(request, current["id"])
    row = await store.get(pool, current["id"])
    assert row is not None
    return ok(public(row, request))


async def delete_heartbeat(request: web.Request) -> web.Response:
    await require(request, "monitors:write")
    row = await _get(request)
    await monitor_store.delete(request.app[keys.POOL], row["id"])
    _tokens.clear()
    await _announce(request, row["id"])
    return web.Response(status=204)


async def rotate_token(request: web.Request) -> web.Response:
    """A new token; the old one stops working (at once here, within seconds elsewhere)."""
    await require(request, "monitors:write")
    row = await _get(request)
    token = await attach(request.app[keys.POOL], row)
    _tokens.clear()
    fresh = await store.get(request.app[keys.POOL], row["id"])
    assert fresh is not None
    return ok(public(fresh, request, token))


async def list_pings(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    row = await _get(request)
    limit = _int_query(request, "limit", 100, 1, MAX_PAGE)
    before = ping_cursor(request.query.get("cursor"))
    rows = await store.pings(request.app[keys.POOL], row["id"], before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"has_more": more, "next_cursor": make_ping_cursor(rows[-1]) if more else None}
    return ok(rows, meta=meta)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


def make_ping_cursor(row: dict[str, Any]) -> str:
    """`<at in whole µs since the epoch>_<id>`: the history's sort key, so the next page
    starts in the partition of `at` (and the same form as the incidents cursor)."""
    return f"{(row['at'] - _EPOCH) // _US}_{row['id']}"


def ping_cursor(raw: str | None) -> tuple[dt.datetime, int] | None:
    if raw is None:
        return None
    us, sep, ident = raw.partition("_")
    at_us, last_id = parse_int(us, 0, 10**17 - 1), parse_int(ident)
    if not sep or at_us is None or last_id is None:
        raise ValidationError({"cursor": "invalid cursor; pass meta.next_cursor unchanged"})
    return _EPOCH + at_us * _US, last_id


async def _announce(request: web.Request, monitor_id: int) -> None:
    nc = request.app[keys.NC]
    if nc.is_connected:
        await nc.publish(subjects.monitor_changes(), str(monitor_id).encode())


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if (value := parse_int(raw, lo, hi)) is None:
        raise ValidationError({name: f"must be an integer from {lo} to {hi}"})
    return value


# ------------------------------------------------------------------ pings


def parse_signal(tail: str | None) -> tuple[str, int | None]:
    """(kind, exit code) from the path segment after the token; 400 when malformed."""
    if tail is None or tail == "":
        return "success", None
    if tail in ("start", "fail", "log"):
        return tail, None
    if tail.isascii() and tail.isdigit() and len(tail) <= 3 and int(tail) <= 255:
        code = int(tail)
        return ("success" if code == 0 else "fail"), code
    metrics.HEARTBEAT_PINGS_REJECTED.labels("bad_signal").inc()
    raise ApiError(
        400,
        "bad_request",
        "signal must be start, fail, log or an exit code 0-255",
        {"signal": "malformed exit code or unknown signal"},
    )


def parse_rid(request: web.Request) -> str | None:
    rid = request.query.get("rid")
    if rid is None:
        return None
    if not heartbeat.RUN_ID_RE.match(rid):
        metrics.HEARTBEAT_PINGS_REJECTED.labels("bad_rid").inc()
        raise ApiError(
            400,
            "bad_request",
            "malformed run id",
            {"rid": "use 1-64 letters, digits, '.', '_', ':' or '-' (a UUID fits)"},
        )
    return rid


async def read_body(request: web.Request) -> str:
    """The body as text (at most MAX_PING_BODY bytes, else 413), excerpted for storage; NUL and
    bytes that are not UTF-8 become U+FFFD."""
    if request.content_length is not None and request.content_length > MAX_PING_BODY:
        metrics.HEARTBEAT_PINGS_REJECTED.labels("too_large").inc()
        raise ApiError(413, "payload_too_large", f"body larger than {MAX_PING_BODY} bytes")
    if not request.body_exists:
        return ""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_PING_BODY:
            metrics.HEARTBEAT_PINGS_REJECTED.labels("too_large").inc()
            raise ApiError(413, "payload_too_large", f"body larger than {MAX_PING_BODY} bytes")
        chunks.append(chunk)
    # PostgreSQL text cannot hold NUL: like a byte that is not UTF-8, it is stored as U+FFFD
    # (docs/api.md), so the rest of the body is kept and the ping is never refused for it.
    return _text(b"".join(chunks).decode("utf-8", "replace"))[:EXCERPT_CHARS]


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


async def _monitor_for(request: web.Request, token: str) -> int:
    if not TOKEN_RE.match(token):
        metrics.HEARTBEAT_PINGS_REJECTED.labels("unknown_token").inc()
        raise not_found("heartbeat")
    key = digest(token)
    now = time.monotonic()
    hit = _tokens.get(key)
    if hit is not None and hit[1] > now:
        return hit[0]
    monitor_id = await store.by_token(request.app[keys.POOL], key)
    if monitor_id is None:
        metrics.HEARTBEAT_PINGS_REJECTED.labels("unknown_token").inc()
        raise not_found("heartbeat")
    if len(_tokens) > 100_000:
        _tokens.clear()
    _tokens[key] = (monitor_id, now + TOKEN_CACHE_S)
    return monitor_id


async def _ping(request: web.Request, monitor_id: int, kind: str, exit_code: int | None) -> web.Response:
    rid = parse_rid(request)
    body = await read_body(request)
    ua = request.headers.get("User-Agent")
    ping = heartbeat.Ping(
        monitor_id=monitor_id,
        at=now_utc(),
        kind=kind,
        exit_code=exit_code,
        rid=rid,
        source=request.remote,
        user_agent=_text(ua[:300]) if ua else None,
        method=request.method,
        body=body,
    )
    try:
        stored = await request.app[keys.PINGS].submit(ping)
    except Exception:
        metrics.HEARTBEAT_PINGS_REJECTED.labels("unavailable").inc()
        raise ApiError(
            503, "unavailable", "could not store the ping; retry", headers={"Retry-After": "1"}
        ) from None
    if not stored:
        metrics.HEARTBEAT_PINGS_REJECTED.labels("unknown_token").inc()
        raise not_found("heartbeat")
    return ok({"success": True, "kind": kind, "exit_code": exit_code, "rid": rid})


async def ping_token(request: web.Request) -> web.Response:
    """Anonymous: GET/POST/HEAD /api/v1/heartbeat/{token}[/{signal}]."""
    kind, code = parse_signal(request.match_info.get("signal"))
    monitor_id = await _monitor_for(request, request.match_info["token"])
    return await _ping(request, monitor_id, kind, code)


async def ping_heartbeat(request: web.Request) -> web.Response:
    """Authenticated success ping: GET /api/v1/heartbeats/{id}/ping and
    POST /api/v1/monitors/{id}/heartbeat (two spellings clients use)."""
    await require(request, "monitors:write")
    row = await store.get(request.app[keys.POOL], path_id(request, what="heartbeat"))
    if row is None:
        raise not_found("heartbeat")
    return await _ping(request, row["id"], "success", None)
