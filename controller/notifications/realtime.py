"""The real-time hub: one reader per controller tails the events outbox and fans each event
out to WebSocket and SSE clients through bounded per-client queues.

A client that cannot keep up is disconnected (counted in metrics) rather than buffered
without bound, so a slow reader never holds memory or the reader loop. Clients resume by
event id: they attach first, then replay from the table, so nothing falls between the
replay and the live stream.

Status-page post events (`status_page.post.*`) are outbox events like the others: they go
to WebSocket clients of the `status_page.posts` topic and to the SSE clients of their page
(`Client.page_id`), which render only what the public page shows.

An SSE client was checked against its page (public, or unlocked) once, when it connected:
`close_page` ends the streams of a page whose settings changed, so each browser reconnects
and is checked again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from probefleet.controller import metrics
from probefleet.controller.outage import Outage
from probefleet.controller.storage import DB, db
from probefleet.controller.storage import events as event_store

log = logging.getLogger("probefleet.realtime")

TOPICS = ("monitor.status", "incident.updates", "system", "status_page.posts")
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
    if kind.startswith("status_page."):
        return "status_page.posts"
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
    # The status page of a status_page.* event (payload.status_page.id).
    page_id: int | None = None
    # Other renderings (a status page's SSE frame), made once for every client it goes to.
    rendered: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


def to_event(row: Any) -> Event:
    kind = row["kind"]
    body = {
        "type": "event",
        "id": row["id"],
        "kind": kind,
        "topic": topic_of(kind),
        "monitor_id": row["monitor_id"],
        "incident_id": row["incident_id"],
        "occurred_at": row["occurred_at"].isoformat().replace("+00:00", "Z"),
        "payload": row["payload"],
    }
    page = row["payload"].get("status_page") if kind.startswith("status_page.") else None
    return Event(
        id=row["id"],
        kind=kind,
        topic=body["topic"],
        monitor_id=row["monitor_id"],
        incident_id=row["incident_id"],
        row=dict(row),
        text=_encoder.encode(body).decode(),
        page_id=page.get("id") if isinstance(page, dict) else None,
    )


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
    # An SSE client of one status page: that page's status_page.* events, no other page's.
    page_id: int | None = None

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.size + 1)

    def wants(self, ev: Event) -> bool:
        if ev.page_id is not None and self.page_id is not None:
            return ev.page_id == self.page_id
        if "*" not in self.topics and ev.topic not in self.topics:
            return False
        # Page events concern no monitor: a monitor filter does not hide them.
        return self.monitor_ids is None or ev.page_id is not None or ev.monitor_id in self.monitor_ids

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
            if ev.id > self.floor and ev.id not in self.replayed:
                return ev


# Client kinds that are the controller's own followers, not a browser or API client: with
# only these attached the hub polls every `idle_interval` instead of every `interval`.
BACKGROUND_KINDS = frozenset({"diagnostics"})


class Hub:
    def __init__(
        self,
        pool: DB,
        *,
        interval: float = 0.25,
        idle_interval: float = 1.0,
        batch: int = 1000,
        queue_size: int = 256,
    ) -> None:
        self.pool = pool
        self.queue_size = queue_size
        self.interval = interval
        # The period while no WebSocket or SSE client is attached (only BACKGROUND_KINDS):
        # the outbox is still read, so `last_id` stays current and nothing is skipped, but
        # 1 statement a second instead of 4. A client attaching wakes the loop at once.
        self.idle_interval = max(interval, idle_interval)
        self._wake = asyncio.Event()
        self.batch = batch
        self.last_id = 0
        self.clients: set[Client] = set()
        # Open WebSockets (subscribed or not), closed at shutdown: a handler waits on its
        # client's next message, which may never come.
        self.sockets: set[Any] = set()
        self.gaps: dict[int, float] = {}
        # Counts close_page() calls; per page (None: every page) the count at its last one.
        self.page_changes = 0
        self.changed_pages: dict[int | None, int] = {}

    async def start(self) -> None:
        self.last_id = await event_store.last_id(self.pool)

    def attach(self, client: Client, *, checked_at: int | None = None) -> bool:
        """Offer events to the client from now on. A page's client checked against its page
        when `page_changes` was `checked_at` is refused (False) if the page changed since:
        it was checked against settings that no longer hold."""
        if checked_at is not None and client.page_id is not None:
            changed = max(self.changed_pages.get(client.page_id, 0), self.changed_pages.get(None, 0))
            if changed > checked_at:
                return False
        self.clients.add(client)
        metrics.REALTIME_CLIENTS.labels(client.kind).inc()
        if client.kind not in BACKGROUND_KINDS:
            self._wake.set()
        return True

    def watched(self) -> bool:
        """Whether a client other than the controller's own followers is attached."""
        return any(c.kind not in BACKGROUND_KINDS for c in self.clients)

    def detach(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            metrics.REALTIME_CLIENTS.labels(client.kind).dec()

    async def replay(self, client: Client, after_id: int) -> list[Event]:
        """Events after `after_id` the client wants; call after attach()."""
        rows = await event_store.after(self.pool, after_id, REPLAY_LIMIT)
        events = [e for e in map(to_event, rows) if client.wants(e)]
        client.floor = after_id
        client.replayed.update(e.id for e in events)
        return events

    async def poll_once(self, now: float | None = None) -> int:
        """Read new events (and late commits into known holes) and fan them out."""
        now = time.monotonic() if now is None else now
        self.gaps = {i: t for i, t in self.gaps.items() if t > now}
        rows = await event_store.after_or_in(self.pool, self.last_id, list(self.gaps), self.batch)
        for row in rows:
            if row["id"] in self.gaps:
                del self.gaps[row["id"]]
            elif row["id"] > self.last_id:
                for missing in range(self.last_id + 1, min(row["id"], self.last_id + 100)):
                    self.gaps[missing] = now + GAP_WAIT
                self.last_id = row["id"]
        self.publish([to_event(r) for r in rows])
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
        outage = Outage("realtime")
        while not stop.is_set():
            try:
                got = await self.poll_once()
            except Exception as e:
                if db.unavailable(e):  # logged once per outage
                    outage.failed(e)
                else:
                    log.warning("realtime poll failed error=%s", e)
                got = 0
            else:
                outage.succeeded()
            if got < self.batch:
                self._wake.clear()
                wait = self.interval if self.watched() else self.idle_interval
                await _wait_any(stop, self._wake, wait)
        self.close_all()

    def close_page(self, page_id: int | None) -> int:
        """End the SSE streams of a page (None: of every page) whose settings changed, and
        refuse the clients checked before this call; the number of streams ended."""
        self.page_changes += 1
        self.changed_pages[page_id] = self.page_changes
        ended = [c for c in self.clients if c.page_id is not None and page_id in (None, c.page_id)]
        for client in ended:
            client.close()
            self.detach(client)
        return len(ended)

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


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until `stop` or `wake` is set, or `seconds` passed."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
