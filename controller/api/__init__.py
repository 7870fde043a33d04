"""The one list of routes."""

from __future__ import annotations

from aiohttp import web


def routes() -> list[web.RouteDef]:
    # Imported here: domain modules import controller.api.errors, which runs this file.
    from controller.api import events, health, incidents, maintenance, monitors, status
    from controller.api import heartbeats as hb
    from controller.api import notifications as notify
    from controller.api import stats

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
        web.get("/api/v1/monitors/{id}/stats", stats.monitor_stats),
        web.get("/api/v1/analytics/{monitor_id}", stats.monitor_analytics),
        web.get("/api/v1/reports/sla", stats.sla_report),
        web.get("/api/v1/incidents", incidents.list_incidents),
        web.post("/api/v1/incidents", incidents.trigger_incident),
        web.get("/api/v1/incidents/{id}", incidents.get_incident),
        web.patch("/api/v1/incidents/{id}", incidents.patch_incident),
        web.get("/api/v1/incidents/{id}/timeline", incidents.incident_timeline),
        web.get("/api/v1/events", events.list_events),
        web.get("/api/v1/events/{id}", events.get_event),
        web.patch("/api/v1/events/{id}", events.patch_event),
        web.get("/api/v1/status/{monitor_id}", status.monitor_status),
        web.post("/api/v1/maintenance-windows", maintenance.create_window),
        web.get("/api/v1/maintenance-windows", maintenance.list_windows),
        web.get("/api/v1/maintenance-windows/{id}", maintenance.get_window),
        web.patch("/api/v1/maintenance-windows/{id}", maintenance.patch_window),
        web.put("/api/v1/maintenance-windows/{id}", maintenance.put_window),
        web.delete("/api/v1/maintenance-windows/{id}", maintenance.delete_window),
        web.post("/api/v1/notification-channels", notify.create_channel),
        web.get("/api/v1/notification-channels", notify.list_channels),
        web.get("/api/v1/notification-channels/{id}", notify.get_channel),
        web.patch("/api/v1/notification-channels/{id}", notify.patch_channel),
        web.put("/api/v1/notification-channels/{id}", notify.put_channel),
        web.delete("/api/v1/notification-channels/{id}", notify.delete_channel),
        web.post("/api/v1/notification-channels/{id}/test", notify.test_channel),
        web.get("/api/v1/notification-channels/{id}/deliveries", notify.channel_deliveries),
        web.post("/api/v1/notification-rules", notify.create_rule),
        web.get("/api/v1/notification-rules", notify.list_rules),
        web.get("/api/v1/notification-rules/{id}", notify.get_rule),
        web.patch("/api/v1/notification-rules/{id}", notify.patch_rule),
        web.put("/api/v1/notification-rules/{id}", notify.put_rule),
        web.delete("/api/v1/notification-rules/{id}", notify.delete_rule),
        web.post("/api/v1/heartbeats", hb.create_heartbeat),
        web.get("/api/v1/heartbeats", hb.list_heartbeats),
        web.get("/api/v1/heartbeats/{id}", hb.get_heartbeat),
        web.patch("/api/v1/heartbeats/{id}", hb.patch_heartbeat),
        web.delete("/api/v1/heartbeats/{id}", hb.delete_heartbeat),
        web.post("/api/v1/heartbeats/{id}/token", hb.rotate_token),
        web.get("/api/v1/heartbeats/{id}/ping", hb.ping_heartbeat),
        web.get("/api/v1/heartbeats/{id}/pings", hb.list_pings),
        web.post("/api/v1/monitors/{id}/heartbeat", hb.ping_heartbeat),
        web.get("/api/v1/heartbeat/{token}", hb.ping_token),
        web.post("/api/v1/heartbeat/{token}", hb.ping_token),
        web.get("/api/v1/heartbeat/{token}/{signal}", hb.ping_token),
        web.post("/api/v1/heartbeat/{token}/{signal}", hb.ping_token),
    ]
