"""The asyncio client: `AsyncClient`, on aiohttp. See docs/sdk.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from probefleet.client import _core, models
from probefleet.client import _resources as _r


class AsyncClient:
    """The probefleet API from asyncio; the same operations as `Client`, awaited, and lists
    as async iterators. Use it as an async context manager (it holds one HTTP session).

    >>> async with AsyncClient() as api:
    ...     async for m in api.monitors(status="down"):
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
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        type: Any = Any,
    ) -> Any:
        """Any operation of the API: the answer's `data` decoded as `type`."""
        return await self._call(_r.Call(method, path, type, params, json))

    async def _call(self, call: _r.Call) -> Any:
        return (await self._send(call))[0]

    async def _send(self, call: _r.Call) -> tuple[Any, models.Meta | None]:
        req = _core.build(self.settings, call.method, call.path, call.params, call.json)
        attempt = 0
        while True:
            status, headers, body = await self._exchange(req)
            wait = _core.retry_wait(status, headers, attempt, self.settings)
            if wait is None:
                return _core.decode(status, headers, body, call.type)
            await asyncio.sleep(wait)
            attempt += 1

    async def _exchange(self, req: _core.Request) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        try:
            async with self._session.request(req.method, req.url, data=req.body, headers=req.headers) as resp:
                return resp.status, dict(resp.headers.items()), await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _core.TransportError(f"cannot reach {self.settings.base_url}: {e}") from None

    async def _pages(self, pages: _r.Pages) -> AsyncIterator[Any]:
        params = dict(pages.params)
        while True:
            items, meta = await self._send(_r.Call("GET", pages.path, pages.type, params))
            for item in items:
                yield item
            if meta is None or not meta.next_cursor:
                return
            params["cursor"] = meta.next_cursor

    # ---- monitors

    def monitors(self, *, limit: int = 100, **filters: Any) -> AsyncIterator[models.Monitor]:
        """Every monitor matching `filters` (status, type, tag, search, project, ...), fetched
        `limit` at a time by following the cursor."""
        return self._pages(_r.list_monitors(limit, filters))

    async def get_monitor(self, monitor_id: int) -> models.Monitor:
        return await self._call(_r.get_monitor(monitor_id))

    async def create_monitor(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Monitor:
        """A new monitor: `type` and its kind's fields (`url`, `host`, `port`, ...) as
        keywords or a dict, as the API takes them (docs/api.md)."""
        return await self._call(_r.create_monitor(fields, extra))

    async def update_monitor(
        self, monitor_id: int, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.Monitor:
        """Change the given fields; the others keep their values."""
        return await self._call(_r.update_monitor(monitor_id, fields, extra))

    async def delete_monitor(self, monitor_id: int) -> None:
        return await self._call(_r.delete_monitor(monitor_id))

    async def pause_monitor(self, monitor_id: int, reason: str | None = None) -> models.Monitor:
        return await self._call(_r.pause_monitor(monitor_id, reason))

    async def resume_monitor(self, monitor_id: int) -> models.Monitor:
        return await self._call(_r.resume_monitor(monitor_id))

    async def monitor_stats(self, monitor_id: int, period: str = "24h") -> models.MonitorStats:
        """Uptime, checks, response times and incidents over 24h, 7d, 30d or 90d."""
        return await self._call(_r.monitor_stats(monitor_id, period))

    async def monitor_status(self, monitor_id: int) -> models.MonitorStatus:
        return await self._call(_r.monitor_status(monitor_id))

    async def monitor_logs(self, monitor_id: int, limit: int = 100) -> list[models.LogEntry]:
        """The newest check results of every region."""
        return await self._call(_r.monitor_logs(monitor_id, limit))

    # ---- incidents and events

    def incidents(self, *, limit: int = 100, **filters: Any) -> AsyncIterator[models.Incident]:
        """Incidents, newest first; filters: status (active, resolved, all), monitor_id, from, to."""
        return self._pages(_r.list_incidents(limit, filters))

    async def get_incident(self, incident_id: int) -> models.Incident:
        return await self._call(_r.get_incident(incident_id))

    async def create_incident(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Incident:
        return await self._call(_r.create_incident(fields, extra))

    async def acknowledge_incident(
        self, incident_id: int, *, assignee: str | None = None, notes: str | None = None
    ) -> models.Incident:
        fields = {"status": "acknowledged", "assignee": assignee, "notes": notes}
        return await self._call(_r.change_incident(incident_id, fields))

    async def resolve_incident(self, incident_id: int, *, notes: str | None = None) -> models.Incident:
        return await self._call(_r.change_incident(incident_id, {"status": "resolved", "notes": notes}))

    def events(self, *, limit: int = 100, **filters: Any) -> AsyncIterator[models.Event]:
        """State changes, oldest first; filters: kind, monitor_id, incident_id, from, to."""
        return self._pages(_r.list_events(limit, filters))

    # ---- heartbeats

    def heartbeats(self, *, limit: int = 100) -> AsyncIterator[models.Heartbeat]:
        return self._pages(_r.list_heartbeats(limit))

    async def create_heartbeat(
        self, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.Heartbeat:
        """A heartbeat monitor; its `token` and `ping_url` are in this answer only."""
        return await self._call(_r.create_heartbeat(fields, extra))

    def heartbeat_pings(self, heartbeat_id: int, *, limit: int = 100) -> AsyncIterator[models.Ping]:
        """The pings a heartbeat received, newest first."""
        return self._pages(_r.list_pings(heartbeat_id, limit))

    # ---- maintenance windows and notifications

    async def maintenance_windows(self) -> list[models.MaintenanceWindow]:
        return await self._call(_r.list_maintenance_windows())

    async def create_maintenance_window(
        self, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.MaintenanceWindow:
        return await self._call(_r.create_maintenance_window(fields, extra))

    async def delete_maintenance_window(self, window_id: int) -> None:
        return await self._call(_r.delete_maintenance_window(window_id))

    async def channels(self) -> list[models.Channel]:
        """Notification channels; their secrets read `<redacted>`."""
        return await self._call(_r.list_channels())

    async def create_channel(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Channel:
        return await self._call(_r.create_channel(fields, extra))

    async def test_channel(self, channel_id: int) -> models.ChannelTest:
        """Send a test notification now and say whether it was delivered."""
        return await self._call(_r.test_channel(channel_id))

    async def delete_channel(self, channel_id: int) -> None:
        return await self._call(_r.delete_channel(channel_id))

    async def rules(self) -> list[models.Rule]:
        return await self._call(_r.list_rules())

    async def create_rule(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Rule:
        return await self._call(_r.create_rule(fields, extra))

    async def delete_rule(self, rule_id: int) -> None:
        return await self._call(_r.delete_rule(rule_id))

    # ---- status pages

    def status_pages(self, *, limit: int = 100) -> AsyncIterator[models.StatusPage]:
        return self._pages(_r.list_status_pages(limit))

    async def create_status_page(
        self, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.StatusPage:
        return await self._call(_r.create_status_page(fields, extra))

    async def public_page(self, slug: str) -> models.PublicPage:
        """What a visitor of the page sees."""
        return await self._call(_r.public_page(slug))

    # ---- API keys (scope keys:admin)

    async def api_keys(self) -> list[models.ApiKey]:
        """Every key: name, prefix, scopes, dates; never the secret."""
        return await self._call(_r.list_keys())

    async def create_api_key(
        self, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.ApiKeyCreated:
        """A new key (`name`, `scopes`, `expires_in_days`, `rate_limit`); its full `key` is
        in this answer only."""
        return await self._call(_r.create_key(fields, extra))

    async def revoke_api_key(self, key_id: int) -> None:
        return await self._call(_r.revoke_key(key_id))

    # ---- regions (reading: monitors:read; changing and probes: fleet:admin)

    async def regions(self) -> list[models.Region]:
        """Every region with its live probes, capacity, use and versions."""
        return await self._call(_r.list_regions())

    async def get_region(self, name: str) -> models.Region:
        return await self._call(_r.get_region(name))

    async def create_region(self, fields: dict[str, Any] | None = None, /, **extra: Any) -> models.Region:
        """A new region: `name` (lower-case letters, digits, dashes) and its labels."""
        return await self._call(_r.create_region(fields, extra))

    async def update_region(
        self, name: str, fields: dict[str, Any] | None = None, /, **extra: Any
    ) -> models.Region:
        """Change a region's labels (not its name)."""
        return await self._call(_r.update_region(name, fields, extra))

    async def delete_region(self, name: str) -> None:
        """Refused (409) while monitors use it or probes hold credentials for it."""
        return await self._call(_r.delete_region(name))

    async def region_probes(self, name: str) -> list[models.RegionProbe]:
        """The region's live probes and its enrolled ones."""
        return await self._call(_r.region_probes(name))
