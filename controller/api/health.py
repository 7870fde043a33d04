"""/api/v1/health (anonymous) and /metrics (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller import keys, metrics
from controller.api.common import json_response, now_utc


async def health(request: web.Request) -> web.Response:
    """ok when the database and NATS answer; degraded otherwise. Reveals nothing else."""
    app = request.app
    db_ok = True
    try:
        await app[keys.POOL].fetchval("SELECT 1")
    except Exception:
        db_ok = False
    state = "ok" if db_ok and app[keys.NC].is_connected else "degraded"
    return json_response({"status": state, "timestamp": now_utc()}, 200 if state == "ok" else 503)


async def prometheus(request: web.Request) -> web.Response:
    request.app[keys.FLEET].update_metrics(request.app[keys.CONFIG].region_ids())
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
