"""The one list of routes, and each /api/v1/ route again under every alias prefix."""

from __future__ import annotations

import functools

from aiohttp import web

from probefleet.controller.api import apply as config
from probefleet.controller.api import (
    events,
    fleet,
    health,
    incidents,
    keys_api,
    maintenance,
    monitors,
    openapi,
    regions,
    stats,
    status,
    subscription,
    users,
)
from probefleet.controller.api import heartbeats as hb
from probefleet.controller.api import notifications as notify
from probefleet.controller.api import public_pages as public
from probefleet.controller.api import realtime as rt
from probefleet.controller.api import status_pages as sp
from probefleet.controller.api.paths import ALIAS_PREFIXES, CANONICAL
from probefleet.controller.console import editors as console_forms
from probefleet.controller.console import pages as console


def routes() -> list[web.RouteDef]:
    canonical = [_deprecate(d) for d in _routes()]
    return canonical + aliases(canonical)


def _deprecate(d: web.RouteDef) -> web.RouteDef:
    """The route with the Deprecation header on its answers when openapi.DEPRECATED lists it."""
    since = openapi.DEPRECATED.get((d.method.lower(), d.path))
    if since is None:
        return d
    return web.RouteDef(d.method, d.path, openapi.deprecated(d.handler, since), d.kwargs)


def aliases(defs: list[web.RouteDef]) -> list[web.RouteDef]:
    """Each /api/v1/ route again under every alias prefix."""
    return [
        web.RouteDef(d.method, prefix + d.path.removeprefix(CANONICAL), d.handler, d.kwargs)
        for prefix in ALIAS_PREFIXES
        for d in defs
        if d.path.startswith(CANONICAL)
    ]


@functools.cache
def alias_paths() -> frozenset[str]:
    return frozenset(d.path for d in aliases(_routes()))


def canonical_path(path: str) -> str:
    """The /api/v1/ route a route path serves (itself unless it is an alias), so metrics
    count a request once under one name whichever prefix it came by."""
    if path in alias_paths():
        for prefix in ALIAS_PREFIXES:
            if path.startswith(prefix):
                return CANONICAL + path.removeprefix(prefix)
    return path


def _routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/health", health.health),
        web.get("/metrics", health.prometheus),
        web.get("/api/v1/health/details", health.health_details),
        web.get("/api/v1/openapi.json", openapi.openapi_json),
        web.get("/api/docs", openapi.api_docs),
        web.get("/api/docs/{name}", openapi.docs_asset),
        web.get("/api/v1/worker-regions", regions.list_worker_regions),
        web.get("/api/v1/regions", regions.list_regions),
        web.post("/api/v1/regions", regions.create_region),
        web.get("/api/v1/regions/{name}", regions.get_region),
        web.patch("/api/v1/regions/{name}", regions.patch_region),
        web.delete("/api/v1/regions/{name}", regions.delete_region),
        web.get("/api/v1/regions/{name}/probes", regions.list_probes),
        web.post("/api/v1/regions/{name}/enrollment-tokens", fleet.create_token),
        web.get("/api/v1/regions/{name}/enrollment-tokens", fleet.list_tokens),
        web.delete("/api/v1/regions/{name}/enrollment-tokens/{id}", fleet.revoke_token),
        web.post("/api/v1/enroll", fleet.enroll),
        web.delete("/api/v1/probes/{probe_id}", fleet.revoke_probe),
        web.post("/api/v1/api-keys", keys_api.create_key),
        web.get("/api/v1/api-keys", keys_api.list_keys),
        web.delete("/api/v1/api-keys/{id}", keys_api.revoke_key),
        web.get("/api/v1/users", users.list_users),
        web.post("/api/v1/users", users.create_user),
        web.patch("/api/v1/users/{id}", users.patch_user),
        web.delete("/api/v1/users/{id}", users.delete_user),
        web.get("/api/v1/audit", users.list_audit),
        web.post("/api/v1/apply", config.apply_set),
        web.get("/api/v1/export", config.export_set),
        web.get("/api/v1/config-schema.json", config.config_schema),
        web.post("/api/v1/monitors", monitors.create_monitor),
        web.post("/api/v1/monitors/bulk", monitors.bulk_action),
        web.put("/api/v1/monitors/bulk", monitors.bulk_update),
        web.get("/api/v1/monitors", monitors.list_monitors),
        web.get("/api/v1/monitors/{id}", monitors.get_monitor),
        web.patch("/api/v1/monitors/{id}", monitors.patch_monitor),
        web.put("/api/v1/monitors/{id}", monitors.put_monitor),
        web.delete("/api/v1/monitors/{id}", monitors.delete_monitor),
        web.get("/api/v1/monitors/{id}/results", monitors.monitor_results),
        web.get("/api/v1/monitors/{id}/logs", monitors.monitor_logs),
        web.get("/api/v1/monitors/{id}/history", monitors.monitor_history),
        web.put("/api/v1/monitors/{id}/config", monitors.put_config),
        web.post("/api/v1/monitors/{id}/pause", monitors.pause_monitor),
        web.post("/api/v1/monitors/{id}/resume", monitors.resume_monitor),
        web.post("/api/v1/monitors/{id}/check", monitors.check_monitor),
        web.post("/api/v1/monitors/{id}/test", monitors.check_monitor),
        web.get("/api/v1/monitors/{id}/alerts", monitors.get_alerts),
        web.put("/api/v1/monitors/{id}/alerts", monitors.put_alerts),
        web.get("/api/v1/monitors/{id}/stats", stats.monitor_stats),
        web.get("/api/v1/analytics/{monitor_id}", stats.monitor_analytics),
        web.get("/api/v1/reports/sla", stats.sla_report),
        web.get("/api/v1/incidents", incidents.list_incidents),
        web.post("/api/v1/incidents", incidents.trigger_incident),
        web.get("/api/v1/incidents/{id}", incidents.get_incident),
        web.patch("/api/v1/incidents/{id}", incidents.patch_incident),
        web.get("/api/v1/incidents/{id}/timeline", incidents.incident_timeline),
        web.get("/api/v1/incidents/{id}/evidence", incidents.incident_evidence),
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
        web.post("/api/v1/notification-channels", notify.create_channel),
        web.get("/api/v1/notification-channels", notify.list_channels),
        web.get("/api/v1/notification-channels/{id}", notify.get_channel),
        web.patch("/api/v1/notification-channels/{id}", notify.patch_channel),
        web.put("/api/v1/notification-channels/{id}", notify.put_channel),
        web.delete("/api/v1/notification-channels/{id}", notify.delete_channel),
        web.post("/api/v1/notification-channels/{id}/test", notify.test_channel),
        web.get("/api/v1/notification-channels/{id}/deliveries", notify.channel_deliveries),
        web.get("/api/v1/delivery-attempts", notify.list_delivery_attempts),
        web.post("/api/v1/notification-rules", notify.create_rule),
        web.get("/api/v1/notification-rules", notify.list_rules),
        web.get("/api/v1/notification-rules/{id}", notify.get_rule),
        web.patch("/api/v1/notification-rules/{id}", notify.patch_rule),
        web.put("/api/v1/notification-rules/{id}", notify.put_rule),
        web.delete("/api/v1/notification-rules/{id}", notify.delete_rule),
        web.get("/api/v1/ws", rt.websocket),
        web.get("/api/v1/subscription", subscription.get_subscription),
        web.post("/api/v1/subscription", subscription.cancel_subscription),
        web.post("/api/v1/subscription/checkout", subscription.create_checkout),
        web.post("/api/v1/subscription/portal", subscription.create_portal_session),
        web.post("/api/v1/status-pages", sp.create_status_page),
        web.get("/api/v1/status-pages", sp.list_status_pages),
        web.get("/api/v1/status-pages/{id}", sp.get_status_page),
        web.put("/api/v1/status-pages/{id}", sp.put_status_page),
        web.patch("/api/v1/status-pages/{id}", sp.patch_status_page),
        web.delete("/api/v1/status-pages/{id}", sp.delete_status_page),
        web.get("/api/v1/status-pages/{id}/posts", sp.list_posts),
        web.post("/api/v1/status-pages/{id}/posts", sp.create_post),
        web.post("/api/v1/status-pages/{id}/posts/{post_id}/updates", sp.add_post_update),
        web.post("/api/v1/status-page-posts/{post_id}/updates", sp.add_post_update),
        web.get("/api/v1/status-pages/{id}/subscribers", sp.list_subscribers),
        web.delete("/api/v1/status-pages/{id}/subscribers/{subscriber_id}", sp.delete_subscriber),
        web.get("/api/v1/status-pages/{slug}/public", public.public_json),
        web.post("/api/v1/status-pages/{slug}/subscribe", public.subscribe_json),
        web.get("/api/v1/monitors/{id}/badge.svg", public.monitor_badge),
        web.get("/", console.root),
        web.post("/", public.unlock_page),
        web.get("/status-assets/{name}", public.asset),
        web.get("/status/{slug}", public.status_page_html),
        web.post("/status/{slug}", public.unlock_page),
        web.get("/status/{slug}/events", public.page_events),
        web.get("/status/{slug}/badge.svg", public.page_badge),
        web.get("/status/{slug}/theme.css", public.page_stylesheet),
        web.get("/status/{slug}/logo", public.page_logo),
        web.get("/status/{slug}/history", public.page_history),
        web.get("/status/{slug}/feed.atom", public.page_feed),
        web.post("/status/{slug}/subscribe", public.subscribe_form),
        web.get("/status/{slug}/confirm", public.confirm_subscription),
        web.get("/status/{slug}/unsubscribe", public.unsubscribe),
        web.post("/status/{slug}/unsubscribe", public.unsubscribe),
        *console_forms.routes(),
        *console.routes(),
    ]
