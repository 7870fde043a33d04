"""What the status-page tests share: pages and monitors made through the API, a state change
as the incidents engine writes it, backfilled rollups, a webhook receiver and an SSE reader.
A plain module, as tests/helpers.py: fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.engine.incidents import emit
from probefleet.controller.stats import rollups
from probefleet.controller.storage import stats

SECRET_URL = "http://127.0.0.1:9/very-internal-path"
BOUND = 10.0  # generous bound for "arrives" or "ends": a failure, never a speed measure


async def create_monitor(api: aiohttp.ClientSession, name: str, url: str = SECRET_URL) -> int:
    r = await api.post("/api/v1/monitors", json={"name": name, "url": url, "locations": ["us-east"]})
    assert r.status == 201, await r.text()
    return int((await r.json())["data"]["id"])


async def create_page(api: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/status-pages", json=body)
    assert r.status == 201, await r.text()
    return dict((await r.json())["data"])


async def set_status(app: web.Application, monitor_id: int, status: str) -> None:
    """What the incidents engine does: the state change and its outbox row, one transaction."""
    async with app[keys.POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE monitors SET status = $2, status_changed_at = now() WHERE id = $1"
            " RETURNING id, name, kind, spec, locations, status",
            monitor_id,
            status,
        )
        await emit(conn, f"monitor.{status}", dt.datetime.now(dt.UTC), monitor=dict(row), previous="up")


async def backfill_rollups(pool: Any, since: dt.datetime) -> None:
    """Roll up rounds a test backdated below the rollup watermarks, as the rollup steps would
    have had they arrived on time: recompute each level's buckets from `since` to its mark."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", rollups.LOCK)
        marks = await stats.watermarks(conn)
        for level, source in (("minute", None), ("5min", "minute"), ("hour", "5min"), ("day", "hour")):
            start = stats.floor_to(since, stats.LEVELS[level])
            if level not in marks or start >= marks[level]:
                continue
            await rollups.ensure_partitions(conn, level, start, marks[level])
            if source is None:
                await stats.rollup_raw(conn, start, marks[level])
            else:
                await stats.rollup_level(conn, source, level, start, marks[level])


def read_mail(envelope: Any) -> dict[str, str]:
    """Subject and text of a mail the smtp fixture received."""
    message = message_from_bytes(envelope.content, policy=policy.default)
    return {"subject": str(message["Subject"]), "body": message.get_content()}  # type: ignore[attr-defined]


class Receiver:
    """A webhook receiver on 127.0.0.1: the JSON bodies it was sent, in order."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        async def hook(request: web.Request) -> web.Response:
            self.got.append(await request.json())
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return self.url()

    @property
    def port(self) -> int:
        assert self.runner is not None
        return int(self.runner.addresses[0][1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Frame(NamedTuple):
    event: str
    id: str | None
    data: dict[str, Any]


async def read_frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
    """The Server-Sent Events of a response, as they arrive."""
    event, frame_id, data = "message", None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield Frame(event, frame_id, json.loads("\n".join(data)))
            event, frame_id, data = "message", None, []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            frame_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])


async def next_post(stream: AsyncIterator[Frame]) -> Frame:
    async with asyncio.timeout(BOUND):
        async for frame in stream:
            if frame.event == "post":
                return frame
    raise AssertionError("stream ended")
