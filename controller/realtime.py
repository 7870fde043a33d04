"""The real-time hub: one reader per controller tails the events outbox and fans each event
out to WebSocket and SSE clients through bounded per-client queues.

A client that cannot keep up is disconnected (counted in metrics) rather than buffered
without bound, so a slow reader never holds memory or the reader loop. Clients resume by
event id: they attach first, then replay from the table, so nothing falls between the
replay and the live stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from controller import metrics
from controller.storage import DB

log = logging.getLogger("probefleet.realtime")

TOPICS = ("monitor.status", "incident.updates", "system")
REPLAY_LIMIT = 1000
# A transaction that took its id earlier may commit after a later one: wait this long
# for a hole in the id sequence to fill before giving up on it.
GAP_WAIT = 3.0
_encoder = msgspec.json.Encoder()


def topic_of(kind: str) -> str:
    if kind.startswith("incident."):
        return "incident.updates"
    if kind.startswith("monitor."):
        return "monitor.status"
    return "system"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    topic: str
    monitor_id: int | None
    incident_id: int | None
    row: dict[str, Any]
    # Encoded once, sent to every WebSocket client as is.
    text: str
    # Set on status-page events from a Feed (not the outbox): only that page's SSE clients
    # get them, and `id` is 0 (they have no place in the outbox's id order).
    page_id: int | None = None


def to_event(row: Any) -> Event:
    kind = row["kind"]
    body = {"type": "event", "id": row["id"], "kind": kind, "topic": topic_of(kind),
            "monitor_id": row["monitor_id"], "incident_id": row["incident_id"],
            "occurred_at": row["occurred_at"].isoformat().replace("+00:00", "Z"),
            "payload": row["payload"]}  # fmt: skip
    return Event(id=row["id"], kind=kind, topic=body["topic"], monitor_id=row["monitor_id"],
                 incident_id=row["incident_id"], row=dict(row),
                 text=_encoder.encode(body).decode())  # fmt: skip


@dataclass(eq=False)
class Client:
    """One connection's filter and bounded queue; a None in the queue means "you are done"."""

    kind: str
    topics: frozenset[str]
    monitor_ids: frozenset[int] | None = None
    size: int = 256
    queue: asyncio.Queue[Event | None] = field(init=False)
    replayed: set[int] = field(default_factory=set)
    # Resumed clients said they hold everything up to here.
    floor: int = 0
    dropped: bool = False
    # An SSE client of one status page also gets that page's feed events.
    page_id: int | None = None

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.size + 1)

    def wants(self, ev: Event) -> bool:
        if ev.page_id is not None:
            return ev.page_id == self.page_id
        if "*" not in self.topics and ev.topic not in self.topics:
            return False
        return self.monitor_ids is None or ev.monitor_id in self.monitor_ids

    def offer(self, ev: Event) -> bool:
        if self.queue.qsize() >= self.size:
            return False
        self.queue.put_nowait(ev)
        return True

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def next(self, wait: float | None = None) -> Event | None:
        """The next event not already replayed; None once closed; TimeoutError when idle."""
        while True:
            ev = await asyncio.wait_for(self.queue.get(), wait)
            if ev is None:
                self.queue.put_nowait(None)
                return None
            if ev.page_id is not None or (ev.id > self.floor and ev.id not in self.replayed):
                return ev


SELECT = "SELECT id, kind, monitor_id, incident_id, occurred_at, payload FROM events"


class Feed(Protocol):
    """A source of events besides the outbox (status-page posts), polled with it."""

    async def start(self, pool: DB) -> None: ...

    async def poll(self, pool: DB, now: float) -> list[Event]: ...


class Hub:
    def __init__(self, pool: DB, *, interval: float = 0.25, batch: int = 1000, queue_size: int = 256,
                 feeds: list[Feed] | None = None) -> None:  # fmt: skip
        self.pool = pool
        self.feeds = feeds or []
        self.queue_size = queue_size
        self.interval = interval
        self.batch = batch
        self.last_id = 0
        self.clients: set[Client] = set()
        self.gaps: dict[int, float] = {}

    async def start(self) -> None:
        self.last_id = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM events")
        for feed in self.feeds:
            await feed.start(self.pool)

    def attach(self, client: Client) -> None:
        self.clients.add(client)
        metrics.REALTIME_CLIENTS.labels(client.kind).inc()

    def detach(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            metrics.REALTIME_CLIENTS.labels(client.kind).dec()

    async def replay(self, client: Client, after_id: int) -> list[Event]:
        """Events after `after_id` the client wants; call after attach()."""
        rows = await self.pool.fetch(f"{SELECT} WHERE id > $1 ORDER BY id LIMIT $2", after_id, REPLAY_LIMIT)
        events = [e for e in map(to_event, rows) if client.wants(e)]
        client.floor = after_id
        client.replayed.update(e.id for e in events)
        return events

    async def poll_once(self, now: float | None = None) -> int:
        """Read new events (and late commits into known holes) and fan them out."""
        now = time.monotonic() if now is None else now
        self.gaps = {i: t for i, t in self.gaps.items() if t > now}
        rows = await self.pool.fetch(
            f"{SELECT} WHERE id > $1 OR id = ANY($2::bigint[]) ORDER BY id LIMIT $3",
            self.last_id, list(self.gaps), self.batch,
        )  # fmt: skip
        for row in rows:
            if row["id"] in self.gaps:
                del self.gaps[row["id"]]
            elif row["id"] > self.last_id:
                for missing in range(self.last_id + 1, min(row["id"], self.last_id + 100)):
                    self.gaps[missing] = now + GAP_WAIT
                self.last_id = row["id"]
        self.publish([to_event(r) for r in rows])
        for feed in self.feeds:
            self.publish(await feed.poll(self.pool, now))
        return len(rows)

    def publish(self, events: list[Event]) -> None:
        for ev in events:
            metrics.REALTIME_EVENTS.inc()
            for client in list(self.clients):
                if not client.wants(ev):
                    continue
                if not client.offer(ev):
                    self.drop(client)

    def drop(self, client: Client) -> None:
        client.dropped = True
        client.close()
        self.detach(client)
        metrics.REALTIME_DROPPED.labels(client.kind).inc()
        log.warning("slow realtime client dropped kind=%s queue=%d", client.kind, client.size)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = await self.poll_once()
            except Exception as e:
                log.warning("realtime poll failed error=%s", e)
                got = 0
            if got < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        self.close_all()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.close()
            self.detach(client)


def parse_ids(raw: Any, convert: Callable[[Any], int] = int) -> frozenset[int] | None:
    """Monitor ids from a list or a comma-separated string; None means all; ValueError if bad."""
    if raw is None or raw == "":
        return None
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > 10_000:
        raise ValueError("must be a list of monitor ids")
    ids = set()
    for item in items:
        if isinstance(item, bool):
            raise ValueError("must be a list of monitor ids")
        ids.add(convert(item))
    return frozenset(ids)
