"""The operations both clients offer, written once: each is (method, path, query, body,
answer type), and a client only sends it. Lists walk `meta.next_cursor` page by page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from probefleet.client import models


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    type: Any
    params: dict[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Pages:
    """A cursor-paginated list: `path` with `params`, `limit` a page."""

    path: str
    type: Any
    params: dict[str, Any]


def _body(fields: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {**(fields or {}), **extra}


# ---- monitors


def list_monitors(limit: int, filters: dict[str, Any]) -> Pages:
    return Pages("/api/v1/monitors", list[models.Monitor], {"limit": limit, **filters})


def get_monitor(monitor_id: int) -> Call:
    return Call("GET", f"/api/v1/monitors/{monitor_id}", models.Monitor)


def create_monitor(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/monitors", models.Monitor, json=_body(fields, extra))


def update_monitor(monitor_id: int, fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("PATCH", f"/api/v1/monitors/{monitor_id}", models.Monitor, json=_body(fields, extra))


def delete_monitor(monitor_id: int) -> Call:
    return Call("DELETE", f"/api/v1/monitors/{monitor_id}", type(None))


def pause_monitor(monitor_id: int, reason: str | None) -> Call:
    body = {"reason": reason} if reason is not None else {}
    return Call("POST", f"/api/v1/monitors/{monitor_id}/pause", models.Monitor, json=body)


def resume_monitor(monitor_id: int) -> Call:
    return Call("POST", f"/api/v1/monitors/{monitor_id}/resume", models.Monitor, json={})


def monitor_stats(monitor_id: int, period: str) -> Call:
    return Call("GET", f"/api/v1/monitors/{monitor_id}/stats", models.MonitorStats, params={"period": period})


def monitor_status(monitor_id: int) -> Call:
    return Call("GET", f"/api/v1/status/{monitor_id}", models.MonitorStatus)


def monitor_logs(monitor_id: int, limit: int) -> Call:
    return Call("GET", f"/api/v1/monitors/{monitor_id}/logs", list[models.LogEntry], params={"limit": limit})


# ---- incidents and events


def list_incidents(limit: int, filters: dict[str, Any]) -> Pages:
    return Pages("/api/v1/incidents", list[models.Incident], {"limit": limit, **filters})


def get_incident(incident_id: int) -> Call:
    return Call("GET", f"/api/v1/incidents/{incident_id}", models.Incident)


def create_incident(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/incidents", models.Incident, json=_body(fields, extra))


def change_incident(incident_id: int, fields: dict[str, Any]) -> Call:
    body = {k: v for k, v in fields.items() if v is not None}
    return Call("PATCH", f"/api/v1/incidents/{incident_id}", models.Incident, json=body)


def list_events(limit: int, filters: dict[str, Any]) -> Pages:
    return Pages("/api/v1/events", list[models.Event], {"limit": limit, **filters})


# ---- heartbeats


def list_heartbeats(limit: int) -> Pages:
    return Pages("/api/v1/heartbeats", list[models.Heartbeat], {"limit": limit})


def create_heartbeat(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/heartbeats", models.Heartbeat, json=_body(fields, extra))


# ---- status pages


def list_status_pages(limit: int) -> Pages:
    return Pages("/api/v1/status-pages", list[models.StatusPage], {"limit": limit})


def create_status_page(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/status-pages", models.StatusPage, json=_body(fields, extra))


def public_page(slug: str) -> Call:
    return Call("GET", f"/api/v1/status-pages/{quote(slug, safe='')}/public", models.PublicPage)


# ---- maintenance windows and notifications


def list_maintenance_windows() -> Call:
    return Call("GET", "/api/v1/maintenance-windows", list[models.MaintenanceWindow])


def create_maintenance_window(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/maintenance-windows", models.MaintenanceWindow, json=_body(fields, extra))


def delete_maintenance_window(window_id: int) -> Call:
    return Call("DELETE", f"/api/v1/maintenance-windows/{window_id}", type(None))


def list_channels() -> Call:
    return Call("GET", "/api/v1/notification-channels", list[models.Channel])


def create_channel(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/notification-channels", models.Channel, json=_body(fields, extra))


def test_channel(channel_id: int) -> Call:
    return Call("POST", f"/api/v1/notification-channels/{channel_id}/test", models.ChannelTest)


def delete_channel(channel_id: int) -> Call:
    return Call("DELETE", f"/api/v1/notification-channels/{channel_id}", type(None))


def list_rules() -> Call:
    return Call("GET", "/api/v1/notification-rules", list[models.Rule])


def create_rule(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/notification-rules", models.Rule, json=_body(fields, extra))


def delete_rule(rule_id: int) -> Call:
    return Call("DELETE", f"/api/v1/notification-rules/{rule_id}", type(None))


def list_pings(heartbeat_id: int, limit: int) -> Pages:
    return Pages(f"/api/v1/heartbeats/{heartbeat_id}/pings", list[models.Ping], {"limit": limit})


# ---- API keys and regions


def list_keys() -> Call:
    return Call("GET", "/api/v1/api-keys", list[models.ApiKey])


def create_key(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/api-keys", models.ApiKeyCreated, json=_body(fields, extra))


def revoke_key(key_id: int) -> Call:
    return Call("DELETE", f"/api/v1/api-keys/{key_id}", type(None))


def _region(name: str) -> str:
    return f"/api/v1/regions/{quote(name, safe='')}"


def list_regions() -> Call:
    return Call("GET", "/api/v1/regions", list[models.Region])


def get_region(name: str) -> Call:
    return Call("GET", _region(name), models.Region)


def create_region(fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("POST", "/api/v1/regions", models.Region, json=_body(fields, extra))


def update_region(name: str, fields: dict[str, Any] | None, extra: dict[str, Any]) -> Call:
    return Call("PATCH", _region(name), models.Region, json=_body(fields, extra))


def delete_region(name: str) -> Call:
    return Call("DELETE", _region(name), type(None))


def region_probes(name: str) -> Call:
    return Call("GET", f"{_region(name)}/probes", list[models.RegionProbe])
