"""Per-key request limits that hold across controllers, with no database or NATS round
trip per request.

Each controller keeps one token bucket per API key in memory, holding the key's whole
budget (`limit` tokens, refilled at limit/window per second), and a request it serves
costs N tokens, N being the number of live controllers (their leases, see
controller/sharding.py; `RateLimiter.controllers`). Behind a balancer that spreads
requests evenly (round-robin per request) every controller sees 1/N of a key's requests,
so the key gets its configured limit in total, not N times it. When one client sticks
to one controller (a kept-alive connection through a per-connection balancer) it gets
limit/N: stricter, never looser. A key whose limit is below N pays at most its limit per
request, so it still gets one request per window on each controller.

Every authenticated request spends a token whatever its answer, a 403 for a missing
scope included: the limit bounds how fast a key can make the controllers work, and a
client looping on a 403 must be slowed down like any other. A request without a valid
key (401) has no bucket to spend from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.errors import ApiError, Handler


@dataclass
class Bucket:
    tokens: float
    updated: float
    cap: float  # the key's limit when the bucket was last used


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when the bucket is full again
    retry_after: int  # seconds until one request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


STATE = web.RequestKey("ratelimit", Decision)


def _alone() -> int:
    return 1


@dataclass
class RateLimiter:
    """`limit` requests per `window` seconds per key across all controllers, refilled
    continuously; `controllers()` is how many live controllers share the traffic."""

    limit: int = 600
    window: float = 60.0
    max_keys: int = 100_000
    controllers: Callable[[], int] = _alone
    buckets: dict[int, Bucket] = field(default_factory=dict)

    def take(self, key_id: int, now: float | None = None, limit: int | None = None) -> Decision:
        """Spend this controller's share of one request from `key_id`'s bucket if it has it.

        `remaining` counts requests the key can still make across the controllers."""
        now = time.time() if now is None else now
        cap = limit or self.limit
        rate = cap / self.window
        cost = float(min(max(self.controllers(), 1), cap))
        bucket = self.buckets.get(key_id)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self.buckets[key_id] = Bucket(tokens=float(cap), updated=now, cap=float(cap))
        bucket.cap = float(cap)
        bucket.tokens = min(float(cap), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
        reset = math.ceil(now + (cap - bucket.tokens) / rate)
        retry = 0 if allowed else max(1, math.ceil((cost - bucket.tokens) / rate))
        return Decision(
            allowed=allowed,
            limit=cap,
            remaining=int(bucket.tokens // cost * cost),
            reset=reset,
            retry_after=retry,
        )

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled to their own key's limit: a new bucket
        would start the same."""
        for key_id in [
            k for k, b in self.buckets.items() if b.tokens + (now - b.updated) * b.cap / self.window >= b.cap
        ]:
            del self.buckets[key_id]


LIMITER = web.AppKey("ratelimiter", RateLimiter)


def setup(app: web.Application) -> None:
    """Give the app its limiter (call in build_app, before the app starts)."""
    cfg = app[keys.CONFIG]
    app[LIMITER] = RateLimiter(limit=cfg.rate_limit_requests, window=cfg.rate_limit_window)


def check(request: web.Request, key: dict[str, object]) -> None:
    """Spend one request of `key`'s budget (once per request); 429 with Retry-After when it
    is empty."""
    decision = request.get(STATE)
    if decision is None:
        limit = key.get("rate_limit")
        own = int(limit) if isinstance(limit, int) else None
        decision = request.app[LIMITER].take(int(key["id"]), limit=own)  # type: ignore[call-overload]
        request[STATE] = decision
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {decision.limit} requests exceeded; retry after {decision.retry_after} s",
            {"retry_after": decision.retry_after},
            headers=decision.headers(),
        )


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the X-RateLimit-* headers to every response of an authenticated request.

    The token is taken in `require` (after the key is known); this only reports."""
    response = await handler(request)
    decision = request.get(STATE)
    if decision is not None and not response.prepared:
        response.headers.update(decision.headers())
    return response
