"""/api/v1/worker-regions: the configured regions and whether probes serve them now."""

from __future__ import annotations

import msgspec
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import ok, require


class WorkerRegion(msgspec.Struct, kw_only=True):
    id: str
    city: str
    country: str
    country_code: str
    latitude: float | None
    longitude: float | None
    is_active: bool  # at least one live probe (heartbeats within the fleet's window)
    probe_count: int


def worker_regions(app: web.Application) -> list[WorkerRegion]:
    live = app[keys.FLEET].live_regions()
    return [
        WorkerRegion(
            id=r.id,
            city=r.city,
            country=r.country,
            country_code=r.country_code,
            latitude=r.latitude,
            longitude=r.longitude,
            is_active=live.get(r.id, 0) > 0,
            probe_count=live.get(r.id, 0),
        )
        for r in app[keys.CONFIG].regions
    ]


async def list_regions(request: web.Request) -> web.Response:
    """Any valid key may read the regions (they are needed to configure a monitor)."""
    await require(request, "monitors:read")
    regions = worker_regions(request.app)
    return ok(msgspec.to_builtins(regions), meta={"count": len(regions)})
