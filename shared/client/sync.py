"""The synchronous client: `Client`, on the standard library's HTTP client (no extra
dependency). See docs/sdk.md."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TypeVar

from probefleet.client import _core, models
from probefleet.client import _resources as _r

T = TypeVar("T")


class Client:
    """The probefleet API. `api_key` defaults to PROBEFLEET_API_KEY, `base_url` to
    PROBEFLEET_URL (else http://127.0.0.1:8080). A 429 is retried after its Retry-After,
    `max_retries` times; any other refusal raises a typed `ApiError`.

    >>> with Client() as api:
    ...     for m in api.monitors(status="down"):
    ...         print(m.id, m.name)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = _core.MAX_RETRIES,
    ) -> None:
        self.settings = _core.Settings.resolve(base_url, api_key, timeout, max_retries)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        type: Any = Any,
    ) -> Any:
        """Any operation of the API: the answer's `data` decoded as `type`."""
        return self._call(_r.Call(method, path, type, params, json))

    def _call(self, call: _r.Call) -> Any:
        return self._send(call)[0]

    def _send(self, call: _r.Call) -> tuple[Any, models.Meta | None]:
        req = _core.build(self.settings, call.method, call.path, call.params, call.json)
        attempt = 0
        while True:
            status, headers, body = self._exchange(req)
            wait = _core.retry_wait(status, headers, attempt, self.settings)
            if wait is None:
                return _core.decode(status, headers, body, call.type)
            time.sleep(wait)
            attempt += 1

    def _exchange(self, req: _core.Request) -> tuple[int, dict[str, str], bytes]:
        raw = urllib.request.Request(req.url, data=req.body, headers=req.headers, method=req.method)
        try:
            with urllib.request.urlopen(raw, timeout=self.settings.timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers.items()), e.read()
        except (urllib.error.URLError, OSError) as e:
            raise _core.TransportError(f"cannot reach {self.settings.base_url}: {e}") from None

    def _pages(self, pages: _r.Pages) -> Iterator[Any]:
        params = dict(pages.params)
        while True:
            items, meta = self._send(_r.Call("GET", pages.path, pages.type, params))
            yield from items
            if meta is None or not meta.next_cursor:
                return
            params["cursor"] = meta.next_cursor

    # ---- monitors

    def monitors(self, *, limit: int = 100, **filters: Any) -> Iterator[models.Monitor]:
        """Every monitor matching `filters` (status, type, tag, search, project, ...), fetched
        `limit` at a time by following the cursor."""
        return self._pages(_r.list_monitors(limit, filters))

    def get_monitor(self, monitor_id: int) -> models.Monitor:
        return self._call(_r.get_monitor(monitor_id))

    def create_monitor(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Monitor:
        """A new monitor: `type` and its kind's fields (`url`, `host`, `port`, ...) as
        keywords or a dict, as the API takes them (docs/api.md)."""
        return self._call(_r.create_monitor(fields, extra))

    def update_monitor(
        self, monitor_id: int, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.Monitor:
        """Change the given fields; the others keep their values."""
        return self._call(_r.update_monitor(monitor_id, fields, extra))

    def delete_monitor(self, monitor_id: int) -> None:
        return self._call(_r.delete_monitor(monitor_id))

    def pause_monitor(self, monitor_id: int, reason: str | None = None) -> models.Monitor:
        return self._call(_r.pause_monitor(monitor_id, reason))

    def resume_monitor(self, monitor_id: int) -> models.Monitor:
        return self._call(_r.resume_monitor(monitor_id))

    def monitor_stats(self, monitor_id: int, period: str = "24h") -> models.MonitorStats:
        """Uptime, checks, response times and incidents over 24h, 7d, 30d or 90d."""
        return self._call(_r.monitor_stats(monitor_id, period))

    def monitor_status(self, monitor_id: int) -> models.MonitorStatus:
        return self._call(_r.monitor_status(monitor_id))

    def monitor_logs(self, monitor_id: int, limit: int = 100) -> list[models.LogEntry]:
        """The newest check results of every region."""
        return self._call(_r.monitor_logs(monitor_id, limit))

    # ---- incidents and events

    def incidents(self, *, limit: int = 100, **filters: Any) -> Iterator[models.Incident]:
        """Incidents, newest first; filters: status (active, resolved, all), monitor_id, from, to."""
        return self._pages(_r.list_incidents(limit, filters))

    def get_incident(self, incident_id: int) -> models.Incident:
        return self._call(_r.get_incident(incident_id))

    def create_incident(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Incident:
        return self._call(_r.create_incident(fields, extra))

    def acknowledge_incident(
        self, incident_id: int, *, assignee: str | None = None, notes: str | None = None
    ) -> models.Incident:
        fields = {"status": "acknowledged", "assignee": assignee, "notes": notes}
        return self._call(_r.change_incident(incident_id, fields))

    def resolve_incident(self, incident_id: int, *, notes: str | None = None) -> models.Incident:
        return self._call(_r.change_incident(incident_id, {"status": "resolved", "notes": notes}))

    def events(self, *, limit: int = 100, **filters: Any) -> Iterator[models.Event]:
        """State changes, oldest first; filters: kind, monitor_id, incident_id, from, to."""
        return self._pages(_r.list_events(limit, filters))

    # ---- heartbeats

    def heartbeats(self, *, limit: int = 100) -> Iterator[models.Heartbeat]:
        return self._pages(_r.list_heartbeats(limit))

    def create_heartbeat(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Heartbeat:
        """A heartbeat monitor; its `token` and `ping_url` are in this answer only."""
        return self._call(_r.create_heartbeat(fields, extra))

    def heartbeat_pings(self, heartbeat_id: int, *, limit: int = 100) -> Iterator[models.Ping]:
        """The pings a heartbeat received, newest first."""
        return self._pages(_r.list_pings(heartbeat_id, limit))

    # ---- maintenance windows and notifications

    def maintenance_windows(self) -> list[models.MaintenanceWindow]:
        return self._call(_r.list_maintenance_windows())

    def create_maintenance_window(
        self, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.MaintenanceWindow:
        return self._call(_r.create_maintenance_window(fields, extra))

    def delete_maintenance_window(self, window_id: int) -> None:
        return self._call(_r.delete_maintenance_window(window_id))

    def channels(self) -> list[models.Channel]:
        """Notification channels; their secrets read `<redacted>`."""
        return self._call(_r.list_channels())

    def create_channel(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Channel:
        return self._call(_r.create_channel(fields, extra))

    def test_channel(self, channel_id: int) -> models.ChannelTest:
        """Send a test notification now and say whether it was delivered."""
        return self._call(_r.test_channel(channel_id))

    def delete_channel(self, channel_id: int) -> None:
        return self._call(_r.delete_channel(channel_id))

    def rules(self) -> list[models.Rule]:
        return self._call(_r.list_rules())

    def create_rule(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Rule:
        return self._call(_r.create_rule(fields, extra))

    def delete_rule(self, rule_id: int) -> None:
        return self._call(_r.delete_rule(rule_id))

    # ---- status pages

    def status_pages(self, *, limit: int = 100) -> Iterator[models.StatusPage]:
        return self._pages(_r.list_status_pages(limit))

    def create_status_page(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.StatusPage:
        return self._call(_r.create_status_page(fields, extra))

    def public_page(self, slug: str) -> models.PublicPage:
        """What a visitor of the page sees."""
        return self._call(_r.public_page(slug))

    # ---- API keys (scope keys:admin)

    def api_keys(self) -> list[models.ApiKey]:
        """Every key: name, prefix, scopes, dates; never the secret."""
        return self._call(_r.list_keys())

    def create_api_key(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.ApiKeyCreated:
        """A new key (`name`, `scopes`, `expires_in_days`, `rate_limit`); its full `key` is
        in this answer only."""
        return self._call(_r.create_key(fields, extra))

    def revoke_api_key(self, key_id: int) -> None:
        return self._call(_r.revoke_key(key_id))

    # ---- regions (reading: monitors:read; changing and probes: fleet:admin)

    def regions(self) -> list[models.Region]:
        """Every region with its live probes, capacity, use and versions."""
        return self._call(_r.list_regions())

    def get_region(self, name: str) -> models.Region:
        return self._call(_r.get_region(name))

    def create_region(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Region:
        """A new region: `name` (lower-case letters, digits, dashes) and its labels."""
        return self._call(_r.create_region(fields, extra))

    def update_region(
        self, name: str, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.Region:
        """Change a region's labels (not its name)."""
        return self._call(_r.update_region(name, fields, extra))

    def delete_region(self, name: str) -> None:
        """Refused (409) while monitors use it or probes hold credentials for it."""
        return self._call(_r.delete_region(name))

    def region_probes(self, name: str) -> list[models.RegionProbe]:
        """The region's live probes and its enrolled ones."""
        return self._call(_r.region_probes(name))
