"""Real local receivers for notifier tests: aiohttp servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from probefleet.controller.notifications.notifiers.base import (
    CheckInfo,
    IncidentInfo,
    MonitorInfo,
    Notification,
)


@dataclass
class Seen:
    """One request as the receiver got it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Seen], web.Response]


def ok(seen: Seen) -> web.Response:
    return web.Response(text="ok")


@dataclass
class Receiver:
    """Validates each request with `handler`, which answers like the real service."""

    handler: Handler
    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    forced: list[web.Response] = field(default_factory=list)
    delay_s: float = 0.0

    def url(self, path: str = "/") -> str:
        return f"{self.base_url}{path}"

    def fail_next(self, status: int, body: str = "", headers: Mapping[str, str] | None = None) -> None:
        self.forced.append(web.Response(status=status, text=body, headers=headers))

    async def handle(self, request: web.Request) -> web.Response:
        seen = Seen(request.method, request.path, request.query, request.headers, await request.read())
        self.seen.append(seen)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.forced:
            return self.forced.pop(0)
        return self.handler(seen)


def bad_request(reason: str, status: int = 400) -> web.Response:
    return web.Response(status=status, text=reason)


def sample(event: str = "monitor.down", **changes: Any) -> Notification:
    note = Notification(
        event=event,  # type: ignore[arg-type]
        event_id=42,
        timestamp=1705314600.0,
        monitor=MonitorInfo(
            id=123,
            name="Main Website",
            target="https://example.com",
            type="http",
            status="down",
            locations=["us-east", "eu-west"],
        ),
        incident=IncidentInfo(
            id=456,
            status="open",
            severity="high",
            started_at=1705314585.0,
            duration_s=15.0,
            root_cause="Connection timeout",
            affected_regions=["us-east", "eu-west"],
            checks_failed=3,
            checks_total=3,
        ),
        check=CheckInfo(
            region="us-east",
            status="fail",
            reason="timeout",
            message="Connection timeout",
            response_time_ms=10000.0,
        ),
    )
    for key, value in changes.items():
        setattr(note, key, value)
    return note
