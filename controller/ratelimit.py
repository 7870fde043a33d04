"""Per-key request limits: one token bucket per API key, in this controller's memory.

The limit is per controller: behind a load balancer with N controllers a key can make
up to N times its limit. That is the accepted trade-off for not touching PostgreSQL or
NATS on every request; docs/api.md says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiohttp import web

from controller import keys
from controller.api.errors import ApiError, Handler


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when the bucket is full again
    retry_after: int  # seconds until one request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(self.reset)}  # fmt: skip
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


STATE = web.RequestKey("ratelimit", Decision)


@dataclass
class RateLimiter:
    """`limit` requests per `window` seconds per key, refilled continuously."""

    limit: int = 600
    window: float = 60.0
    max_keys: int = 100_000
    buckets: dict[int, Bucket] = field(default_factory=dict)

    def take(self, key_id: int, now: float | None = None, limit: int | None = None) -> Decision:
        """Spend one token of `key_id`'s bucket if it has one."""
        now = time.time() if now is None else now
        cap = limit or self.limit
        rate = cap / self.window
        bucket = self.buckets.get(key_id)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self.buckets[key_id] = Bucket(tokens=float(cap), updated=now)
        bucket.tokens = min(float(cap), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        reset = math.ceil(now + (cap - bucket.tokens) / rate)
        retry = 0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / rate))
        return Decision(allowed=allowed, limit=cap, remaining=int(bucket.tokens), reset=reset,
                        retry_after=retry)  # fmt: skip

    def _forget_full(self, now: float) -> None:
        rate = self.limit / self.window
        for key_id in [k for k, b in self.buckets.items()
                       if b.tokens + (now - b.updated) * rate >= self.limit]:  # fmt: skip
            del self.buckets[key_id]


LIMITER = web.AppKey("ratelimiter", RateLimiter)


def setup(app: web.Application) -> None:
    """Give the app its limiter (call in build_app, before the app starts)."""
    cfg = app[keys.CONFIG]
    app[LIMITER] = RateLimiter(limit=cfg.rate_limit_requests, window=cfg.rate_limit_window)


def check(request: web.Request, key: dict[str, object]) -> None:
    """Spend one request of `key`'s budget; 429 with Retry-After when it is empty."""
    limit = key.get("rate_limit")
    decision = request.app[LIMITER].take(int(key["id"]),  # type: ignore[call-overload]
                                         limit=int(limit) if isinstance(limit, int) else None)  # fmt: skip
    request[STATE] = decision
    if not decision.allowed:
        raise ApiError(429, "rate_limited",
                       f"rate limit of {decision.limit} requests exceeded; retry after"
                       f" {decision.retry_after} s", {"retry_after": decision.retry_after},
                       headers=decision.headers())  # fmt: skip


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the X-RateLimit-* headers to every response of an authenticated request.

    The token is taken in `require` (after the key is known); this only reports."""
    response = await handler(request)
    decision = request.get(STATE)
    if decision is not None and not response.prepared:
        response.headers.update(decision.headers())
    return response
