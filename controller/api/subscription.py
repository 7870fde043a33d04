"""/api/v1/subscription: the billing endpoints a hosted service has, answered by a
self-hosted one.

A self-hosted probefleet has no plan to buy and no limits: GET describes that plan with
the current usage; cancelling, checkout and the billing portal answer 409 with the reason,
so a client written for the hosted service learns why instead of meeting a 404."""

from __future__ import annotations

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import ok, require
from probefleet.controller.api.errors import ApiError
from probefleet.controller.storage import usage

PLAN = "self-hosted"


async def get_subscription(request: web.Request) -> web.Response:
    """The self-hosted plan: active, never billed, no limits; current usage."""
    await require(request, "monitors:read")
    counts = await usage.counts(request.app[keys.POOL])
    return ok(
        {
            "plan": PLAN,
            "status": "active",
            "billing": None,
            "cancel_at_period_end": False,
            "current_period_end": None,
            "limits": dict.fromkeys(counts),
            "usage": counts,
        }
    )


def _no_billing(action: str) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"self-hosted probefleet has no billing: there is nothing to {action}",
        {"plan": PLAN},
    )


async def cancel_subscription(request: web.Request) -> web.Response:
    """Cancel at period end: 409, a self-hosted installation has no subscription."""
    await require(request, "monitors:read")
    raise _no_billing("cancel")


async def create_checkout(request: web.Request) -> web.Response:
    """Checkout session: 409, a self-hosted installation has no plan to buy."""
    await require(request, "monitors:read")
    raise _no_billing("check out")


async def create_portal_session(request: web.Request) -> web.Response:
    """Billing portal session: 409, a self-hosted installation has no billing account."""
    await require(request, "monitors:read")
    raise _no_billing("manage in a billing portal")
