"""The one list of routes."""

from __future__ import annotations

from aiohttp import web


def routes() -> list[web.RouteDef]:
    # Imported here: domain modules import controller.api.errors, which runs this file.
    from controller.api import health, monitors

    return [
        web.get("/api/v1/health", health.health),
        web.get("/metrics", health.prometheus),
        web.post("/api/v1/monitors", monitors.create_monitor),
        web.get("/api/v1/monitors", monitors.list_monitors),
        web.get("/api/v1/monitors/{id}", monitors.get_monitor),
        web.patch("/api/v1/monitors/{id}", monitors.patch_monitor),
        web.put("/api/v1/monitors/{id}", monitors.put_monitor),
        web.delete("/api/v1/monitors/{id}", monitors.delete_monitor),
        web.get("/api/v1/monitors/{id}/results", monitors.monitor_results),
    ]
