"""The dispatcher's steps against real PostgreSQL and real local receivers (webhook, SMTP), with a
fixed clock; alert thresholds, escalation policies, and the running loop's wake-up on NOTIFY."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from probefleet.controller import metrics
from probefleet.controller.engine import incidents
from probefleet.controller.engine.consensus import Verdict
from probefleet.controller.notifications import destinations
from probefleet.controller.notifications.dispatcher import (
    Dispatcher,
    Settings,
    backoff,
    flap_percent,
    group_key,
    idle_wait,
    is_flapping,
)
from probefleet.controller.notifications.notifiers.webhook import SIGNATURE_HEADER, verify_signature
from probefleet.controller.storage import diagnostics as diagnostics_store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import notifications as store
from tests.controller.notifications.notifiers.test_email import Mailbox, StartSmtp, start_smtp  # noqa: F401 (fixture)
from tests.helpers import eventually

T0 = dt.datetime(2030, 1, 15, 10, 0, tzinfo=dt.UTC)
SECRET = "whsec-dispatcher-test"
REGIONS = ("us-east", "eu-west")


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1 that answers `status` (a list is consumed in order)."""

    statuses: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.port = self.runner.addresses[0][1]
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.got]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.start()
    yield h
    await h.stop()


def dispatcher(pool: asyncpg.Pool, session: aiohttp.ClientSession, **settings: Any) -> Dispatcher:
    return Dispatcher(pool=pool, session=session, settings=Settings(**settings), rng=lambda: 1.0)


async def channel(pool: asyncpg.Pool, url: str, name: str = "hook", **extra: Any) -> int:
    row = await store.insert_channel(
        pool,
        {
            "kind": "webhook",
            "name": name,
            "is_enabled": True,
            "config": {"kind": "webhook", "url": url, "secret": SECRET},
            "reminder_minutes": extra.get("reminder_minutes"),
        },
    )
    return int(row["id"])


async def rule(pool: asyncpg.Pool, channel_ids: list[int], **fields: Any) -> int:
    row = await store.insert_rule(
        pool,
        {
            "name": "r",
            "events": [],
            "monitor_ids": [],
            "tags": [],
            "min_severity": None,
            "channel_ids": channel_ids,
            "reminder_minutes": None,
            "escalate_after_minutes": None,
            "escalation_channel_ids": [],
            "is_enabled": True,
            **fields,
        },
    )
    return int(row["id"])


async def monitor(
    pool: asyncpg.Pool,
    name: str = "shop",
    tags: list[str] | None = None,
    notifications: list[int] | None = None,
) -> dict[str, Any]:
    row = await pool.fetchrow(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, tags, notifications)"
        " VALUES ($1, 'http', $2, 60, 5, $3, $4, $5) RETURNING *",
        name,
        {"url": "https://shop.example/health"},
        ["us-east", "eu-west"],
        tags or [],
        notifications or [],
    )
    assert row is not None
    return dict(row)


async def open_incident(
    pool: asyncpg.Pool, m: dict[str, Any], at: dt.datetime = T0, severity: str = "high"
) -> tuple[int, int]:
    """Open an incident and write monitor.down + incident.opened as the incidents engine does."""
    async with pool.acquire() as conn, conn.transaction():
        iid = await incident_store.open_incident(
            conn,
            monitor_id=m["id"],
            title=f"{m['name']} is down",
            severity=severity,
            started_at=at,
            root_cause="timeout",
            affected_regions=["us-east"],
            checks_failed=2,
            checks_total=2,
        )
        assert iid is not None
        inc = await incident_store.get(conn, iid)
        await incidents.emit(conn, "monitor.down", at, monitor=m, status="down", previous="up")
        eid = await incidents.emit(conn, "incident.opened", at, monitor=m, status="down", incident=inc)
    return iid, eid


async def resolve(pool: asyncpg.Pool, m: dict[str, Any], iid: int, at: dt.datetime) -> int:
    async with pool.acquire() as conn, conn.transaction():
        inc = await incident_store.resolve(conn, iid, at)
        await incidents.emit(conn, "monitor.up", at, monitor=m, status="up", previous="down")
        return await incidents.emit(conn, "incident.resolved", at, monitor=m, incident=inc)


async def statuses(pool: asyncpg.Pool) -> list[tuple[str, str, int]]:
    rows = await pool.fetch("SELECT kind, status, attempts FROM deliveries ORDER BY id")
    return [(r["kind"], r["status"], r["attempts"]) for r in rows]


async def round_(pool: asyncpg.Pool, mid: int, state: str, at: dt.datetime) -> str:
    """Apply one round's verdict through the incidents engine; the monitor's new status."""
    failing, passing = (REGIONS, ()) if state == "down" else ((), REGIONS)
    verdict = Verdict(state=state, failing=failing, passing=passing, reason="timeout" if failing else None)  # type: ignore[arg-type]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM monitors WHERE id = $1 FOR UPDATE", mid)
        await incidents.apply(conn, dict(row), at, verdict, at)
        return str(await conn.fetchval("SELECT status FROM monitors WHERE id = $1", mid))


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


async def test_it_delivers_one_signed_webhook_per_incident_whoever_runs_the_steps(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    cid = await channel(pool, hook.url)
    await rule(pool, [cid])
    m = await monitor(pool)
    iid, eid = await open_incident(pool, m)
    a, b = dispatcher(pool, session), dispatcher(pool, session)
    assert await a.fan_out(T0) == 1
    assert await b.fan_out(T0) == 0  # same events, same unique keys: nothing new
    await store.advance_watermark(pool, await store.watermark(pool), 0)  # replay from the start
    assert await b.fan_out(T0) == 0
    assert await a.process_batch(T0) == 1
    assert await b.process_batch(T0) == 0
    assert len(hook.got) == 1
    headers, body = hook.got[0]
    assert headers["X-Probefleet-Event"] == "incident.opened" and headers["X-Probefleet-Delivery"] == str(eid)
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    doc = hook.bodies()[0]
    assert doc["incident"]["id"] == iid and doc["monitor"]["name"] == "shop"
    assert doc["monitor"]["target"] == "https://shop.example/health" and doc["incident"]["severity"] == "high"
    assert await statuses(pool) == [("event", "delivered", 1)]


async def test_every_notice_links_to_its_incident_and_says_where_it_fails(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)], events=["incident.opened", "monitor.down"])
    m = await monitor(pool)
    d = Dispatcher(pool=pool, session=session, base_url="https://pf.example/")
    assert await round_(pool, m["id"], "down", minutes(1)) == "down"
    await d.step(minutes(1))
    iid = await pool.fetchval("SELECT id FROM incidents WHERE monitor_id = $1", m["id"])
    docs = hook.bodies()
    assert sorted(b["event"] for b in docs) == ["incident.opened", "monitor.down"]
    assert {b["link"] for b in docs} == {f"https://pf.example/console/incidents/{iid}"}
    assert {b["incident"]["id"] for b in docs} == {iid}  # monitor.down carries its incident too


async def test_it_retries_until_the_receiver_is_back_and_delivers_once(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Hook(port=port)
    cid = await channel(pool, down.url)
    await rule(pool, [cid])
    await open_incident(pool, await monitor(pool))
    d = dispatcher(pool, session, retry_base_s=10)
    await d.fan_out(T0)
    assert await d.process_batch(T0) == 1  # connection refused
    row = await pool.fetchrow("SELECT status, last_error, next_attempt_at FROM deliveries")
    assert row["status"] == "failed" and "cannot connect" in row["last_error"]
    assert row["next_attempt_at"] == T0 + dt.timedelta(seconds=10)  # rng 1.0: the full step
    assert await d.process_batch(T0 + dt.timedelta(seconds=5)) == 0  # not due yet
    up = Hook(statuses=[503])
    await up.start(port)
    try:
        assert await d.process_batch(T0 + dt.timedelta(seconds=11)) == 1  # 503: transient
        assert await d.process_batch(T0 + dt.timedelta(seconds=60)) == 1
        assert await d.process_batch(T0 + dt.timedelta(seconds=999)) == 0
        assert (
            len(up.got) == 2
            and up.got[0][0]["X-Probefleet-Delivery"] == up.got[1][0]["X-Probefleet-Delivery"]
        )
        assert await statuses(pool) == [("event", "delivered", 3)]
        # The delivery log keeps every attempt, not only the last one.
        log = await store.list_attempts(pool, channel_id=cid)
        assert [(a["attempt"], a["outcome"], a["status_code"]) for a in reversed(log)] == [
            (1, "failed", None),
            (2, "failed", 503),
            (3, "delivered", 200),
        ]
        assert "cannot connect" in log[-1]["error"] and "HTTP 503" in log[1]["error"]
        assert log[0]["error"] is None and all(a["duration_ms"] >= 0 for a in log)
        assert {a["event_kind"] for a in log} == {"incident.opened"}
        assert [a["attempted_at"] for a in reversed(log)] == [
            T0,
            T0 + dt.timedelta(seconds=11),
            T0 + dt.timedelta(seconds=60),
        ]
        assert await store.list_attempts(pool, channel_id=cid, outcome="delivered") == log[:1]
        assert await store.list_attempts(pool, incident_id=log[0]["incident_id"]) == log
        assert await store.list_attempts(pool, incident_id=log[0]["incident_id"] + 1) == []
    finally:
        await up.stop()


class PagerDutyDedup:
    """Events API v2 as PagerDuty dedupes: a trigger whose dedup_key names an open alert
    joins it; otherwise (a new key, or one resolved already) it opens a new incident."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.incidents: list[str] = []
        self.actions: list[tuple[str, str]] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        doc = await request.json()
        key, action = doc["dedup_key"], doc["event_action"]
        self.actions.append((action, key))
        if action == "trigger" and key not in self.open:
            self.incidents.append(key)
            self.open[key] = len(self.incidents)
        elif action == "resolve":
            self.open.pop(key, None)
        return web.json_response({"status": "success", "dedup_key": key}, status=202)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/v2/enqueue"


async def test_replaying_every_delivery_of_an_incident_opens_no_second_pagerduty_incident(
    pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    pd = PagerDutyDedup()
    url = await pd.start()
    try:
        row = await store.insert_channel(
            pool,
            {
                "kind": "pagerduty",
                "name": "pd",
                "is_enabled": True,
                "config": {
                    "kind": "pagerduty",
                    "routing_key": "R0UT1NGKEY0123456789abcdefABCDEF",
                    "events_url": url,
                },
                "reminder_minutes": None,
            },
        )
        every = ["monitor.down", "incident.opened", "incident.resolved", "monitor.up"]
        await rule(pool, [row["id"]], events=every)
        m = await monitor(pool)
        d = dispatcher(pool, session)

        async def replay(at: dt.datetime) -> None:
            """Every delivery again, as after a crash between sending and recording, and
            the fan-out from the start."""
            await pool.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = $1", at)
            await store.advance_watermark(pool, await store.watermark(pool), 0)
            while await d.step(at):
                pass

        assert await round_(pool, m["id"], "down", minutes(1)) == "down"
        await d.step(minutes(1))
        await replay(minutes(1.5))
        assert len(pd.incidents) == 1 and len(pd.open) == 1  # monitor.down and incident.opened: one key
        assert await round_(pool, m["id"], "up", minutes(2)) == "up"
        await d.step(minutes(2))
        assert pd.open == {}
        await replay(minutes(3))
        await replay(minutes(4))
        assert pd.incidents == [f"probefleet-incident-{await pool.fetchval('SELECT max(id) FROM incidents')}"]
        assert pd.open == {}  # the replayed triggers were not sent after the resolve
        cancelled = await pool.fetch("SELECT last_error FROM deliveries WHERE status = 'cancelled'")
        assert len(cancelled) == 2 and all("already resolved" in r["last_error"] for r in cancelled)
    finally:
        assert pd.runner is not None
        await pd.runner.cleanup()


async def test_it_disables_the_channel_on_a_permanent_error_and_writes_an_event(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook.statuses = [410]
    cid = await channel(pool, hook.url)
    await rule(pool, [cid])
    m = await monitor(pool)
    iid, _ = await open_incident(pool, m)
    d = dispatcher(pool, session)
    await d.fan_out(T0)
    await d.process_batch(T0)
    ch = await store.get_channel(pool, cid)
    assert ch is not None and not ch["is_enabled"] and "410" in ch["disabled_reason"]
    event = await pool.fetchrow("SELECT kind, payload FROM events WHERE kind='channel.disabled'")
    assert event["payload"]["channel"]["id"] == cid and "410" in event["payload"]["reason"]
    assert await statuses(pool) == [("event", "dead", 1)]
    # Later events create no delivery for the disabled channel.
    await resolve(pool, m, iid, T0 + dt.timedelta(minutes=1))
    assert await d.fan_out(T0 + dt.timedelta(minutes=1)) == 0
    assert SECRET not in caplog.text and "/hook" not in caplog.text


async def test_it_refuses_non_public_destinations_unless_they_are_allowed(
    pool: asyncpg.Pool, hook: Hook
) -> None:
    """Channels stored with a private address (before the API checked it, or their name
    resolves elsewhere since): the controller's session refuses them, a permanent error."""
    urls = [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        f"http://localhost:{hook.port}/hook",
    ]
    refused = [await channel(pool, url, name=f"c{i}") for i, url in enumerate(urls)]
    await rule(pool, refused)
    await open_incident(pool, await monitor(pool))
    async with destinations.session(allow_private=False) as strict:
        d = dispatcher(pool, strict)
        await d.fan_out(T0)
        assert await d.process_batch(T0) == 3
    rows = await pool.fetch("SELECT status, last_error FROM deliveries ORDER BY channel_id")
    assert [r["status"] for r in rows] == ["dead"] * 3
    assert all(
        "destination refused" in r["last_error"] and "private, loopback" in r["last_error"] for r in rows
    )
    for cid in refused:
        ch = await store.get_channel(pool, cid)
        assert ch is not None and not ch["is_enabled"] and "destination refused" in ch["disabled_reason"]
    assert hook.got == []
    lab = await channel(pool, f"http://localhost:{hook.port}/hook", name="lab")
    await rule(pool, [lab])
    await open_incident(pool, await monitor(pool, name="lab"))
    async with destinations.session(allow_private=True) as allowed:
        d = dispatcher(pool, allowed)
        await d.fan_out(T0)
        assert await d.process_batch(T0) == 1
    assert [b["monitor"]["name"] for b in hook.bodies()] == ["lab"]


async def test_it_gives_up_after_max_attempts(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    hook.statuses = [500, 500, 500]
    await rule(pool, [await channel(pool, hook.url)])
    await open_incident(pool, await monitor(pool))
    d = dispatcher(pool, session, max_attempts=2, retry_base_s=1)
    await d.fan_out(T0)
    await d.process_batch(T0)
    await d.process_batch(T0 + dt.timedelta(seconds=5))
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM deliveries")
    assert (row["status"], row["attempts"]) == ("dead", 2) and "gave up" in row["last_error"]


async def test_an_expired_claim_is_taken_over_and_the_stale_sender_cannot_overwrite(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)])
    await open_incident(pool, await monitor(pool))
    d = dispatcher(pool, session, lease_s=30)
    await d.fan_out(T0)
    crashed = await store.claim(pool, T0, 30, 10)  # a sender that dies before sending
    assert len(crashed) == 1
    assert await d.process_batch(T0 + dt.timedelta(seconds=10)) == 0  # claim still held
    assert await d.process_batch(T0 + dt.timedelta(seconds=31)) == 1
    late = store.Outcome(crashed[0]["id"], crashed[0]["attempts"], "failed", "late", None)
    assert await store.record(pool, [late], T0 + dt.timedelta(seconds=40)) == []
    assert len(hook.got) == 1 and await statuses(pool) == [("event", "delivered", 2)]


async def test_rules_filter_by_event_tag_and_severity_and_monitors_add_their_channels(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    prod, crit, own, other = [await channel(pool, hook.url, n) for n in ("prod", "crit", "own", "other")]
    await rule(pool, [prod], tags=["prod"])
    await rule(pool, [crit], min_severity="critical")
    await rule(pool, [other], monitor_ids=[999_999])
    m = await monitor(pool, tags=["prod"], notifications=[own])
    await pool.execute(
        "INSERT INTO monitor_alert_settings (monitor_id, alert_on_recovery) VALUES ($1, false)", m["id"]
    )
    iid, _ = await open_incident(pool, m, severity="high")
    await resolve(pool, m, iid, T0 + dt.timedelta(minutes=2))
    d = dispatcher(pool, session)
    await d.fan_out(T0 + dt.timedelta(minutes=2))
    rows = await pool.fetch("SELECT d.channel_id, e.kind FROM deliveries d JOIN events e ON e.id=d.event_id")
    # monitor.down is not in the default set; the resolution is muted by alert_on_recovery.
    assert sorted((r["channel_id"], r["kind"]) for r in rows) == [
        (prod, "incident.opened"),
        (own, "incident.opened"),
    ]


async def test_it_reminds_while_the_incident_is_unacknowledged(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)], reminder_minutes=10)
    iid, eid = await open_incident(pool, await monitor(pool))
    d = dispatcher(pool, session)
    await d.fan_out(T0)
    await d.process_batch(T0)
    assert await d.process_batch(T0 + dt.timedelta(minutes=9)) == 0
    assert await d.process_batch(T0 + dt.timedelta(minutes=10, seconds=1)) == 1
    assert await d.process_batch(T0 + dt.timedelta(minutes=20, seconds=1)) == 1
    docs = hook.bodies()
    assert [x["reminder"] for x in docs] == [False, True, True]
    keys_seen = [h["X-Probefleet-Delivery"] for h, _ in hook.got]
    assert keys_seen == [str(eid), f"{eid}-reminder-1", f"{eid}-reminder-2"]
    async with pool.acquire() as conn:
        await incident_store.acknowledge(conn, iid, T0 + dt.timedelta(minutes=25), "maya", None)
    assert await d.process_batch(T0 + dt.timedelta(minutes=30, seconds=1)) == 1
    assert len(hook.got) == 3
    assert (await statuses(pool))[-1] == ("reminder", "cancelled", 1)


async def test_it_escalates_an_unacknowledged_incident_only(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    first, boss = await channel(pool, hook.url, "first"), await channel(pool, hook.url, "boss")
    await rule(pool, [first], escalate_after_minutes=5, escalation_channel_ids=[boss])
    m1, m2 = await monitor(pool, "a"), await monitor(pool, "b")
    await open_incident(pool, m1)
    acked, _ = await open_incident(pool, m2)
    d = dispatcher(pool, session)
    await d.fan_out(T0)
    assert await d.process_batch(T0) == 2
    async with pool.acquire() as conn:
        await incident_store.acknowledge(conn, acked, T0 + dt.timedelta(minutes=1), None, None)
    assert await d.process_batch(T0 + dt.timedelta(minutes=5, seconds=1)) == 2
    escalated = [x for x in hook.bodies() if x["escalation_level"] == 1]
    assert [x["monitor"]["name"] for x in escalated] == ["a"]
    rows = await pool.fetch("SELECT channel_id, status FROM deliveries WHERE kind='escalation' ORDER BY id")
    assert [(r["channel_id"], r["status"]) for r in rows] == [(boss, "delivered"), (boss, "cancelled")]


async def test_a_flapping_monitor_is_collapsed_into_one_notice_once_stable(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)], events=["monitor.down", "monitor.up"])
    m = await monitor(pool)
    d = dispatcher(pool, session, flap_changes=3, flap_window_s=300)
    for i in range(6):
        kind, status = ("monitor.down", "down") if i % 2 == 0 else ("monitor.up", "up")
        async with pool.acquire() as conn:
            await incidents.emit(conn, kind, T0 + dt.timedelta(seconds=10 * i), monitor=m, status=status)
    await d.fan_out(T0 + dt.timedelta(seconds=60))
    assert await d.process_batch(T0 + dt.timedelta(seconds=60)) == 0
    assert (
        await store.release_suppressed(pool, T0 + dt.timedelta(seconds=120), dt.timedelta(seconds=300)) == 0
    )
    assert (
        await store.release_suppressed(pool, T0 + dt.timedelta(seconds=400), dt.timedelta(seconds=300)) == 6
    )
    assert await d.process_batch(T0 + dt.timedelta(seconds=400)) == 1
    assert [x["event"] for x in hook.bodies()] == ["monitor.up"]
    assert sorted(s for _, s, _ in await statuses(pool)) == ["collapsed"] * 5 + ["delivered"]


async def family(pool: asyncpg.Pool, parent_retries: int = 1) -> tuple[int, int]:
    """A parent that confirms an outage over parent_retries + 1 rounds, and a child that is
    down after one, both every 2 s."""
    parent, child = await monitor(pool, "gateway"), await monitor(pool, "shop")
    await pool.execute(
        "UPDATE monitors SET interval_s = 2, retry_count = $2 WHERE id = $1", parent["id"], parent_retries
    )
    await pool.execute(
        "UPDATE monitors SET interval_s = 2, retry_count = 0, parent_id = $2 WHERE id = $1",
        child["id"],
        parent["id"],
    )
    return parent["id"], child["id"]


def seconds(n: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=n)


@pytest.mark.parametrize(
    "order",
    [
        # (monitor, state, at) rounds in the order their rounds close; the dispatcher steps after each
        [
            ("child", "down", 0),
            ("parent", "down", 0),
            ("parent", "down", 1),
            ("parent", "up", 2),
            ("child", "up", 2),
        ],
        [
            ("parent", "down", 0),
            ("child", "down", 0),
            ("parent", "down", 1),
            ("child", "up", 2),
            ("parent", "up", 2),
        ],
        [
            ("parent", "down", 0),
            ("parent", "down", 1),
            ("child", "down", 0.5),
            ("child", "up", 2),
            ("parent", "up", 2),
        ],
        [
            ("child", "down", 0),
            ("parent", "down", 0),
            ("child", "down", 2),
            ("parent", "down", 1),
            ("child", "up", 4),
        ],
    ],
    ids=["child-closes-first", "parent-first-round-first", "parent-down-first", "child-again-before-parent"],
)
async def test_a_child_failing_with_its_parent_is_suppressed_whichever_round_closes_first(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook, order: list[tuple[str, str, float]]
) -> None:
    """Simultaneous parent and child failures at a 2 s interval, the rounds closing in
    several orders: only the parent's outage is notified, opened and resolved once."""
    await rule(
        pool,
        [await channel(pool, hook.url)],
        events=["incident.opened", "incident.resolved", "monitor.down", "monitor.up"],
    )
    parent, child = await family(pool)
    ids = {"parent": parent, "child": child}
    d = dispatcher(pool, session)
    clock = 0.0
    for who, state, at in order:
        await round_(pool, ids[who], state, seconds(at))
        clock = max(clock, at)
        await d.step(seconds(clock))
    if ("parent", "up", 2) not in order:
        await round_(pool, parent, "up", seconds(5))
        clock = 5
        await d.step(seconds(clock))
    while await d.step(seconds(clock)):
        pass
    got = [(b["event"], b["monitor"]["id"]) for b in hook.bodies()]
    assert sorted(got) == sorted(
        [
            ("incident.opened", parent),
            ("monitor.down", parent),
            ("incident.resolved", parent),
            ("monitor.up", parent),
        ]
    ), got
    suppressed = await pool.fetchval(
        "SELECT bool_and(suppressed AND cause_monitor_id = $2) FROM incidents WHERE monitor_id = $1",
        child,
        parent,
    )
    assert suppressed is True
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status IN ('held', 'pending')") == 0


async def test_a_child_alert_held_for_its_parent_is_sent_once_the_parent_passes(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)])
    parent, child = await family(pool)
    d = dispatcher(pool, session)
    await round_(pool, child, "down", seconds(0.5))
    await round_(pool, parent, "up", seconds(0))  # a round from before the child failed decides nothing
    await d.step(seconds(0.5))
    assert hook.got == []
    assert await pool.fetchval("SELECT hold_reason FROM deliveries WHERE status = 'held'") == "parent"
    await round_(pool, parent, "up", seconds(2))
    await d.step(seconds(2))
    assert [(b["event"], b["monitor"]["id"]) for b in hook.bodies()] == [("incident.opened", child)]


async def test_an_undecided_parent_holds_a_child_alert_for_its_confirmation_time_only(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)])
    parent, child = await family(pool)  # parent: 2 s x (1 retry + 2) + 5 s timeout = 11 s
    d = dispatcher(pool, session)
    await round_(pool, child, "down", seconds(0))
    await round_(pool, parent, "down", seconds(0))  # failing, not yet down; then no answer
    await d.step(seconds(10))
    assert hook.got == []
    await d.step(seconds(11))
    assert [(b["event"], b["monitor"]["id"]) for b in hook.bodies()] == [("incident.opened", child)]


async def closed_round(pool: asyncpg.Pool, mid: int, state: str, at: dt.datetime) -> str:
    """A round closed with `state` as the results path leaves it, then applied by the engine."""
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, regions, answered, deadline, closed_at, verdict)"
        " VALUES ($1, $2, $3, $3, $2, $2, $4)",
        mid,
        at,
        list(REGIONS),
        state,
    )
    return await round_(pool, mid, state, at)


async def test_a_flapping_monitor_is_held_by_percent_state_change_until_it_settles(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """Nagios' rule over the last 21 round verdicts: 10 up rounds, then down/up every round:
    the fifth change is notified (29 %), the sixth (34 %) starts the flapping and is held
    with the next ones; once the rounds have stayed up long enough to fall below 25 %, only
    the state it settled in (up) is sent."""
    await rule(pool, [await channel(pool, hook.url)], events=["monitor.down", "monitor.up"])
    mid = (await monitor(pool))["id"]
    d = dispatcher(pool, session)
    states = ["up"] * 10 + ["down", "up", "down", "up", "down", "up", "down"] + ["up"] * 20
    notified = ["monitor.down", "monitor.up", "monitor.down", "monitor.up", "monitor.down"]
    for t, state in enumerate(states, start=1):
        await closed_round(pool, mid, state, seconds(t))
        await d.step(seconds(t))
        if t == 16:  # the sixth change has just been fanned out
            assert [b["event"] for b in hook.bodies()] == notified
            assert await pool.fetchval("SELECT flapping FROM monitor_flaps WHERE monitor_id = $1", mid)
    assert [b["event"] for b in hook.bodies()] == [*notified, "monitor.up"]
    flaps = await pool.fetch(
        "SELECT payload, occurred_at FROM events WHERE kind = 'monitor.flapping' AND monitor_id = $1"
        " ORDER BY id",
        mid,
    )
    assert [f["payload"]["flapping"] for f in flaps] == [True, False]
    assert flaps[0]["occurred_at"] == seconds(16) and flaps[0]["payload"]["percent"] > 30
    assert flaps[1]["occurred_at"] == seconds(33) and flaps[1]["payload"]["percent"] < 25
    # Changes 6 to 8 held while flapping: the newest (up) sent, two collapsed.
    assert sorted(s for _, s, _ in await statuses(pool)) == ["collapsed"] * 2 + ["delivered"] * 6


@pytest.mark.parametrize(
    ("states", "percent"),
    [
        (["up"] * 21, 0.0),
        (["up", "down"] * 10 + ["up"], 100.0),
        (["up"] * 20 + ["down"], 6.0),
        (["down"] + ["up"] * 20, 4.0),
        (["up"], 0.0),
        (["up", "down", "up"], 100 * (0.8 + 0.4 * 18 / 19 + 1.2) / 20),
        (["down"] * 30 + ["up"] * 21, 0.0),
    ],
    ids=["steady", "alternating", "newest-change", "oldest-change", "one-result", "short-history", "last-21"],
)
def test_flap_percent_weighs_newer_changes_more(states: list[str], percent: float) -> None:
    assert flap_percent(states) == pytest.approx(percent)


@pytest.mark.parametrize(
    ("was", "percent", "now"),
    [(False, 30.0, False), (False, 30.1, True), (True, 25.0, True), (True, 24.9, False), (True, 29.0, True)],
    ids=["at-high", "above-high", "at-low", "below-low", "between"],
)
def test_flapping_starts_above_30_and_stops_below_25_percent(was: bool, percent: float, now: bool) -> None:
    assert is_flapping(was, percent, Settings()) is now


async def test_a_mass_outage_sharing_a_parent_makes_one_grouped_notification_per_channel(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """200 children of one parent (itself up: the parent is not the cause) go down within
    a minute; a rule grouping by parent for 60 s sends each channel one notification
    listing all of them; an outage after the window is the next notice (an update)."""
    other = Hook()
    await other.start()
    try:
        channels = [await channel(pool, hook.url), await channel(pool, other.url, name="second")]
        await rule(
            pool,
            channels,
            events=["incident.opened"],
            group_by=["parent"],
            group_window_s=60,
            escalate_after_minutes=15,
            escalation_channel_ids=[channels[1]],
        )
        parent, first = await family(pool, parent_retries=0)
        children = [first]
        for i in range(199):
            row = await pool.fetchrow(
                "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, parent_id)"
                " VALUES ($1, 'http', $2, 60, 5, $3, $4) RETURNING id",
                f"shop-{i}",
                {"url": f"https://shop{i}.example/health"},
                ["us-east", "eu-west"],
                parent,
            )
            children.append(row["id"])
        d = dispatcher(pool, session)
        await round_(pool, parent, "up", seconds(0))
        for i, child in enumerate(children):
            assert await round_(pool, child, "down", seconds(1 + i * 0.2)) == "down"
        await round_(pool, parent, "up", seconds(45))  # the parent passes: the holds end
        while await d.step(seconds(50)):
            pass
        assert hook.got == [] and other.got == []  # the window (60 s from the first) is open
        while await d.step(seconds(62)):
            pass
        escalations = await pool.fetchval("SELECT count(*) FROM deliveries WHERE kind = 'escalation'")
        assert escalations == 1  # the group's, not one per monitor
        for receiver in (hook, other):
            (doc,) = receiver.bodies()
            assert doc["event"] == "incident.opened" and doc["group"]["count"] == 200
            assert sorted(m["id"] for m in doc["group"]["monitors"]) == sorted(children[1:])
        late = await monitor(pool, "late")
        await pool.execute("UPDATE monitors SET parent_id = $2 WHERE id = $1", late["id"], parent)
        await round_(pool, late["id"], "down", seconds(100))
        await round_(pool, parent, "up", seconds(101))
        while await d.step(seconds(200)):
            pass
        assert [len(h.got) for h in (hook, other)] == [2, 2]
        assert hook.bodies()[1]["monitor"]["id"] == late["id"] and "group" not in hook.bodies()[1]
        sent = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        assert sent == 4  # two notices per channel for 201 outages
    finally:
        await other.stop()


async def test_the_recoveries_of_a_grouped_outage_make_one_grouped_recovery_whoever_runs_the_steps(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """30 children of one parent go down together and go out as one grouped notice; 25 of
    them recover within a minute: one grouped recovery per channel listing them, the last
    5 an hour later: the next. Two dispatchers take turns at every step and a replay of
    the whole fan-out adds nothing: each notice is sent once."""
    other = Hook()
    await other.start()
    try:
        channels = [await channel(pool, hook.url), await channel(pool, other.url, name="second")]
        await rule(
            pool,
            channels,
            events=["incident.opened", "incident.resolved"],
            group_by=["parent"],
            group_window_s=60,
        )
        parent, first = await family(pool, parent_retries=0)
        children = [first]
        for i in range(29):
            row = await pool.fetchrow(
                "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, parent_id)"
                " VALUES ($1, 'http', $2, 60, 5, $3, $4) RETURNING id",
                f"shop-{i}",
                {"url": f"https://shop{i}.example/health"},
                ["us-east", "eu-west"],
                parent,
            )
            children.append(row["id"])
        a, b = dispatcher(pool, session), dispatcher(pool, session)

        async def steps(at: dt.datetime) -> None:
            while await a.step(at) + await b.step(at):
                pass

        await round_(pool, parent, "up", seconds(0))
        for i, child in enumerate(children):
            assert await round_(pool, child, "down", seconds(1 + i * 0.2)) == "down"
            await steps(seconds(1 + i * 0.2))
        await round_(pool, parent, "up", seconds(45))
        await steps(seconds(62))
        for i, child in enumerate(children[:25]):
            assert await round_(pool, child, "up", seconds(100 + i * 0.5)) == "up"
            await steps(seconds(100 + i * 0.5))
        await steps(seconds(150))
        assert [len(h.got) for h in (hook, other)] == [1, 1]  # the recovery window is open
        await steps(seconds(161))
        for i, child in enumerate(children[25:]):
            assert await round_(pool, child, "up", seconds(3600 + i)) == "up"
            await steps(seconds(3600 + i))
        await steps(seconds(3700))
        await store.advance_watermark(pool, await store.watermark(pool), 0)  # replay from the start
        assert await a.fan_out(seconds(3700)) == 0 and await b.fan_out(seconds(3700)) == 0
        await steps(seconds(3800))
        for receiver in (hook, other):
            opened, recovered, later = receiver.bodies()
            assert opened["event"] == "incident.opened" and opened["group"]["count"] == 30
            assert recovered["event"] == "incident.resolved" and recovered["group"]["count"] == 25
            assert recovered["monitor"]["id"] == children[0] and recovered["monitor"]["status"] == "up"
            assert sorted(m["id"] for m in recovered["group"]["monitors"]) == sorted(children[1:25])
            assert {m["status"] for m in recovered["group"]["monitors"]} == {"up"}
            assert later["event"] == "incident.resolved" and later["group"]["count"] == 5
            assert sorted([later["monitor"]["id"]] + [m["id"] for m in later["group"]["monitors"]]) == sorted(
                children[25:]
            )
        sent = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        assert sent == 6  # three notices per channel for 30 outages and their 30 recoveries
    finally:
        await other.stop()


async def test_a_keyed_channel_gets_one_alert_for_a_group_and_each_resolve_by_itself(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """PagerDuty beside a webhook, one grouping rule: the group's outage is one PagerDuty
    incident (the leader's key); the recoveries are one grouped notice at the webhook, but
    PagerDuty gets each resolve, so the leader's closes the alert it opened."""
    pd = PagerDutyDedup()
    url = await pd.start()
    try:
        row = await store.insert_channel(
            pool,
            {
                "kind": "pagerduty",
                "name": "pd",
                "is_enabled": True,
                "config": {
                    "kind": "pagerduty",
                    "routing_key": "R0UT1NGKEY0123456789abcdefABCDEF",
                    "events_url": url,
                },
                "reminder_minutes": None,
            },
        )
        await rule(
            pool,
            [row["id"], await channel(pool, hook.url)],
            events=["incident.opened", "incident.resolved"],
            group_by=["parent"],
            group_window_s=60,
        )
        parent, first = await family(pool, parent_retries=0)
        children = [first]
        for i in range(4):
            child = await monitor(pool, f"shop-{i}")
            await pool.execute("UPDATE monitors SET parent_id = $2 WHERE id = $1", child["id"], parent)
            children.append(child["id"])
        d = dispatcher(pool, session)
        await round_(pool, parent, "up", seconds(0))
        for i, child in enumerate(children):
            await round_(pool, child, "down", seconds(1 + i))
        await round_(pool, parent, "up", seconds(10))
        while await d.step(seconds(62)):
            pass
        assert len(pd.incidents) == 1 and len(pd.open) == 1
        for i, child in enumerate(children):
            await round_(pool, child, "up", seconds(100 + i))
            while await d.step(seconds(100 + i)):
                pass
        assert pd.open == {} and len(pd.incidents) == 1
        assert [a for a, _ in pd.actions] == ["trigger"] + ["resolve"] * 5
        while await d.step(seconds(170)):
            pass
        opened, recovered = hook.bodies()
        assert opened["group"]["count"] == 5 and recovered["group"]["count"] == 5
        assert recovered["event"] == "incident.resolved"
    finally:
        assert pd.runner is not None
        await pd.runner.cleanup()


async def test_a_recovery_goes_alone_when_its_outage_went_out_alone(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """A grouping rule, but only one child went down in the window: its notice listed no
    other monitor, so its recovery is not held for a window either."""
    await rule(
        pool,
        [await channel(pool, hook.url)],
        events=["incident.opened", "incident.resolved"],
        group_by=["parent"],
        group_window_s=60,
    )
    parent, child = await family(pool, parent_retries=0)
    d = dispatcher(pool, session)
    await round_(pool, parent, "up", seconds(0))
    await round_(pool, child, "down", seconds(1))
    await round_(pool, parent, "up", seconds(2))
    while await d.step(seconds(62)):
        pass
    await round_(pool, child, "up", seconds(100))
    while await d.step(seconds(100)):
        pass
    assert [(b["event"], "group" in b) for b in hook.bodies()] == [
        ("incident.opened", False),
        ("incident.resolved", False),
    ]


def test_group_keys_follow_the_rule_order_and_the_outage() -> None:
    event = {
        "kind": "incident.opened",
        "payload": {
            "monitor": {"target": "https://api.example.com:8443/x", "locations": ["us-east", "eu-west"]},
            "incident": {"affected_regions": ["eu-west"]},
        },
    }
    monitor_row = {"parent_id": 7, "tags": ["prod", "edge"]}
    assert group_key(event, monitor_row, ["parent", "tag"]) == "incident.opened|parent:7"
    assert group_key(event, monitor_row, ["tag", "parent"]) == "incident.opened|tag:edge"
    assert group_key(event, monitor_row, ["host"]) == "incident.opened|host:api.example.com"
    assert group_key(event, monitor_row, ["region"]) == "incident.opened|region:eu-west"
    everywhere = {
        **event,
        "payload": {**event["payload"], "incident": {"affected_regions": ["eu-west", "us-east"]}},
    }
    assert group_key(everywhere, {"parent_id": None, "tags": []}, ["region", "parent"]) is None
    assert group_key({**event, "kind": "incident.resolved"}, monitor_row, ["parent"]) is None


async def test_alert_threshold_holds_the_alert_until_that_many_rounds_failed(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)])
    m = await monitor(pool)
    await pool.execute(
        "INSERT INTO monitor_alert_settings (monitor_id, alert_threshold) VALUES ($1, 3)", m["id"]
    )
    d = dispatcher(pool, session)
    assert await round_(pool, m["id"], "down", minutes(1)) == "down"  # retry_count 0: down at once
    await d.step(minutes(1))
    assert await round_(pool, m["id"], "down", minutes(2)) == "down"
    await d.step(minutes(2))
    assert hook.got == []  # two consecutive failures, threshold 3
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'held'") == 1
    await round_(pool, m["id"], "down", minutes(3))
    await d.step(minutes(3))
    assert [b["event"] for b in hook.bodies()] == ["incident.opened"]
    await round_(pool, m["id"], "up", minutes(4))
    await d.step(minutes(4))
    assert [b["event"] for b in hook.bodies()] == ["incident.opened", "incident.resolved"]

    # A short outage (1 round, then 2 in one fan-out batch) alerts nobody, nor its recovery.
    for start in (10, 20):
        await round_(pool, m["id"], "down", minutes(start))
        if start == 10:
            await d.step(minutes(start))
        await round_(pool, m["id"], "up", minutes(start + 1))
        await d.step(minutes(start + 1))
    assert len(hook.got) == 2
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'held'") == 0
    cancelled = "SELECT count(*) FROM deliveries WHERE status = 'cancelled' AND last_error = $1"
    assert await pool.fetchval(cancelled, store.BELOW_THRESHOLD) == 1


async def test_an_escalation_policy_routes_its_monitors_and_escalates(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    first = await channel(pool, hook.url, name="first")
    second = await channel(pool, hook.url, name="second")
    policy = await rule(
        pool,
        [first],
        name="oncall_senior",
        is_policy=True,
        escalate_after_minutes=15,
        escalation_channel_ids=[second],
    )
    covered, other = await monitor(pool, "covered"), await monitor(pool, "other")
    await pool.execute("UPDATE monitors SET escalation_policy_id = $2 WHERE id = $1", covered["id"], policy)
    d = dispatcher(pool, session)
    await open_incident(pool, other)
    assert await d.fan_out(T0) == 0  # a policy routes only the monitors that name it
    await open_incident(pool, covered)
    assert await d.fan_out(T0) == 2
    assert await d.process_batch(T0) == 1
    assert await d.process_batch(minutes(14)) == 0
    assert await d.process_batch(minutes(15)) == 1
    first_note, escalation = hook.bodies()
    assert first_note["monitor"]["name"] == "covered" and first_note["escalation_level"] == 0
    assert escalation["escalation_level"] == 1 and escalation["event"] == "incident.opened"
    rows = await pool.fetch("SELECT channel_id, kind FROM deliveries ORDER BY id")
    assert [(r["channel_id"], r["kind"]) for r in rows] == [(first, "event"), (second, "escalation")]


async def test_the_dispatcher_sends_email_over_smtp(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    start_smtp: StartSmtp,  # noqa: F811 (fixture)
) -> None:
    mailbox = Mailbox()
    port = await start_smtp(mailbox)
    row = await store.insert_channel(
        pool,
        {
            "kind": "email",
            "name": "mail",
            "is_enabled": True,
            "reminder_minutes": None,
            "config": {
                "kind": "email",
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "from": "alerts@probefleet.test",
                "to": ["ops@example.test"],
            },
        },
    )
    await rule(pool, [row["id"]])
    shop, api = await monitor(pool, "shop"), await monitor(pool, "api")
    await pool.execute(
        "INSERT INTO monitor_alert_settings (monitor_id, email_enabled, email_recipients)"
        " VALUES ($1, true, '{oncall@example.test}')",
        api["id"],
    )
    await open_incident(pool, shop)
    await open_incident(pool, api)
    d = dispatcher(pool, session)
    await d.step(T0)
    got = {m["Subject"]: env.rcpt_tos for env, m in mailbox.mail}
    assert got == {"[INCIDENT] shop": ["ops@example.test"], "[INCIDENT] api": ["oncall@example.test"]}
    text = mailbox.mail[0][1].get_body(("plain",))
    assert text is not None and "shop" in text.get_content()
    assert [r["status"] for r in await pool.fetch("SELECT status FROM deliveries")] == ["delivered"] * 2


async def test_the_running_dispatcher_wakes_on_a_committed_event(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    await rule(pool, [await channel(pool, hook.url)])
    # A poll far longer than the test may wait: only the NOTIFY can start the step in time.
    d = Dispatcher(pool=pool, session=session, settings=Settings(poll_s=60))
    before = metrics.REGISTRY.get_sample_value("probefleet_dispatcher_wakeups_total") or 0.0
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    try:
        await asyncio.sleep(0.2)  # the first step found nothing: the loop sleeps
        await open_incident(pool, await monitor(pool), at=dt.datetime.now(dt.UTC))
        await eventually(lambda: hook.got, timeout=10, interval=0.01, what="the notice")
    finally:
        stop.set()
        await task
    assert hook.bodies()[0]["event"] == "incident.opened"
    assert (metrics.REGISTRY.get_sample_value("probefleet_dispatcher_wakeups_total") or 0.0) > before


# (empty steps in a row, listening, poll_s) -> seconds to the next step
@pytest.mark.parametrize(
    ("empty", "listening", "poll", "wait"),
    [
        (1, True, 0.5, 0.5),
        (2, True, 0.5, 1.0),
        (3, True, 0.5, 2.0),
        (10, True, 0.5, 2.0),
        (10, False, 0.5, 0.5),
        (5, True, 60.0, 60.0),
    ],
    ids=[
        "first-empty-step",
        "doubles",
        "reaches-the-idle-poll",
        "stays-there",
        "no-listen-polls-fast",
        "a-longer-poll-is-kept",
    ],
)
def test_empty_steps_stretch_the_poll_only_while_listening(
    empty: int, listening: bool, poll: float, wait: float
) -> None:
    assert idle_wait(Settings(poll_s=poll), empty, listening=listening) == wait


async def test_it_tells_when_something_comes_due_by_time(pool: asyncpg.Pool) -> None:
    # What keeps the idle poll short: a delivery due within it, held or suppressed ones.
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(seconds=2)
    assert not await store.waiting(pool, soon)
    cid = await channel(pool, "http://127.0.0.1:9/")
    delivery = await store.insert_test_delivery(pool, cid, now + dt.timedelta(hours=1))
    await pool.execute("UPDATE deliveries SET status = 'pending' WHERE id = $1", delivery)
    assert not await store.waiting(pool, soon)  # a reminder an hour away
    await pool.execute("UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1", delivery, now)
    assert await store.waiting(pool, soon)
    await pool.execute("UPDATE deliveries SET status = 'delivered' WHERE id = $1", delivery)
    assert not await store.waiting(pool, soon)
    for status in ("held", "suppressed"):
        await pool.execute("UPDATE deliveries SET status = $2 WHERE id = $1", delivery, status)
        assert await store.waiting(pool, soon), status


def test_the_watermark_waits_for_a_gap_then_skips_it() -> None:
    d = Dispatcher(pool=None, session=None, settings=Settings(gap_wait_s=10))  # type: ignore[arg-type]
    assert d._safe_watermark(0, [1, 2, 3], T0) == 3
    assert d._safe_watermark(3, [4, 6, 7], T0) == 4
    assert d._safe_watermark(4, [6, 7], T0 + dt.timedelta(seconds=5)) == 4
    assert d._safe_watermark(4, [5, 6, 7], T0 + dt.timedelta(seconds=6)) == 7
    assert d._safe_watermark(7, [9], T0 + dt.timedelta(seconds=20)) == 7
    assert d._safe_watermark(7, [9], T0 + dt.timedelta(seconds=31)) == 9


@pytest.mark.parametrize(
    ("attempts", "retry_after", "rng", "expected"),
    [
        (1, None, 0.0, 2.5),
        (1, None, 1.0, 5.0),
        (3, None, 1.0, 20.0),
        (30, None, 1.0, 3600.0),
        (1, 120.0, 0.0, 120.0),
    ],
    ids=["first-min", "first-max", "third", "capped", "retry-after"],
)
def test_backoff_is_exponential_with_jitter_and_honours_retry_after(
    attempts: int, retry_after: float | None, rng: float, expected: float
) -> None:
    assert backoff(attempts, Settings(), retry_after, lambda: rng) == expected


async def test_the_diagnoses_of_a_grouped_outage_make_one_grouped_update_per_channel(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """Four children of one parent go down together and go out as one grouped opening; the
    diagnoses of three come back (one incident.diagnosed each, written once however often
    asked): each channel gets one grouped update listing every monitor's lines."""
    other = Hook()
    await other.start()
    try:
        channels = [await channel(pool, hook.url), await channel(pool, other.url, name="second")]
        await rule(pool, channels, group_by=["parent"], group_window_s=60)
        parent, first = await family(pool, parent_retries=0)
        children = [first]
        for i in range(3):
            row = await pool.fetchrow(
                "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, parent_id)"
                " VALUES ($1, 'http', $2, 60, 5, $3, $4) RETURNING id",
                f"shop-{i}",
                {"url": f"https://shop{i}.example/health"},
                ["us-east", "eu-west"],
                parent,
            )
            children.append(row["id"])
        d = dispatcher(pool, session)
        await round_(pool, parent, "up", seconds(0))
        for i, child in enumerate(children):
            assert await round_(pool, child, "down", seconds(1 + i)) == "down"
        await round_(pool, parent, "up", seconds(45))
        while await d.step(seconds(62)):
            pass
        for receiver in (hook, other):
            (opened,) = receiver.bodies()
            assert opened["event"] == "incident.opened" and opened["group"]["count"] == 4
        openings = await pool.fetch(
            "SELECT id, monitor_id, incident_id FROM events WHERE kind = 'incident.opened'"
            " AND monitor_id = ANY($1::bigint[]) ORDER BY id",
            children,
        )
        names = {}
        for n, ev in enumerate(openings[:3]):
            names[ev["monitor_id"]] = await pool.fetchval(
                "SELECT name FROM monitors WHERE id = $1", ev["monitor_id"]
            )
            payload = {
                "monitor": {"id": ev["monitor_id"], "name": names[ev["monitor_id"]], "status": "down"},
                "incident": {"id": ev["incident_id"], "affected_regions": ["eu-west", "us-east"]},
                "opened_event_id": ev["id"],
                "diagnostics": [
                    {"region": "us-east", "summary": f"tcp traceroute reached 10.0.0.{n} in 5 hops"}
                ],
            }
            for _ in range(2):  # asked twice (two controllers): written once
                await diagnostics_store.emit_diagnosed(
                    pool, ev["incident_id"], ev["monitor_id"], seconds(70 + n), payload
                )
        assert await pool.fetchval("SELECT count(*) FROM events WHERE kind = 'incident.diagnosed'") == 3
        while await d.step(seconds(100)):
            pass
        assert [len(h.got) for h in (hook, other)] == [1, 1]  # the update's window is open
        while await d.step(seconds(135)):
            pass
        for receiver in (hook, other):
            opened, update = receiver.bodies()
            assert update["event"] == "incident.diagnosed" and update["group"]["count"] == 3
            assert sorted(update["diagnostics"]) == sorted(
                f"{names[ev['monitor_id']]} us-east: tcp traceroute reached 10.0.0.{n} in 5 hops"
                for n, ev in enumerate(openings[:3])
            )
    finally:
        await other.stop()


async def diagnose(pool: asyncpg.Pool, monitor_id: int, at: dt.datetime) -> None:
    """The incident.diagnosed of the monitor's latest opening, as engine/diagnostics.py writes it."""
    ev = await pool.fetchrow(
        "SELECT id, incident_id, payload FROM events WHERE kind = 'incident.opened' AND monitor_id = $1"
        " ORDER BY id DESC LIMIT 1",
        monitor_id,
    )
    payload = {
        "monitor": ev["payload"]["monitor"],
        "incident": ev["payload"]["incident"],
        "opened_event_id": ev["id"],
        "diagnostics": [{"region": "us-east", "summary": "tcp traceroute reached 10.0.0.1 in 5 hops"}],
    }
    assert await diagnostics_store.emit_diagnosed(pool, ev["incident_id"], monitor_id, at, payload)


async def test_the_diagnosis_of_an_opening_held_for_alert_threshold_waits_and_goes_with_it(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook
) -> None:
    """The opening is held until 3 rounds failed; its diagnosis comes back meanwhile: it is
    held too, both go out at the threshold; a short outage's opening and diagnosis are both
    cancelled."""
    await rule(pool, [await channel(pool, hook.url)])
    m = await monitor(pool)
    await pool.execute(
        "INSERT INTO monitor_alert_settings (monitor_id, alert_threshold) VALUES ($1, 3)", m["id"]
    )
    d = dispatcher(pool, session)
    await round_(pool, m["id"], "down", minutes(1))
    await d.step(minutes(1))
    await diagnose(pool, m["id"], minutes(1.2))
    await d.step(minutes(1.3))
    assert hook.got == []
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'held'") == 2
    for n in (2, 3):
        await round_(pool, m["id"], "down", minutes(n))
        await d.step(minutes(n))
    while await d.step(minutes(3)):
        pass
    # Released together, claimed together: the update is sent after its opening.
    assert [b["event"] for b in hook.bodies()] == ["incident.opened", "incident.diagnosed"]
    got = {b["event"]: b for b in hook.bodies()}
    assert got["incident.diagnosed"]["diagnostics"] == ["us-east: tcp traceroute reached 10.0.0.1 in 5 hops"]
    await round_(pool, m["id"], "up", minutes(4))
    await d.step(minutes(4))
    sent = len(hook.got)
    await round_(pool, m["id"], "down", minutes(10))
    await d.step(minutes(10))
    await diagnose(pool, m["id"], minutes(10.2))
    await d.step(minutes(10.3))
    await round_(pool, m["id"], "up", minutes(11))
    await d.step(minutes(11))
    assert len(hook.got) == sent
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'held'") == 0


@pytest.mark.parametrize("parent_state", ["up", "down"])
async def test_the_diagnosis_of_a_child_held_for_its_parent_follows_the_parents_verdict(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook, parent_state: str
) -> None:
    """Parent passes: the child's opening and its diagnosis go out. Parent down: both are
    cancelled, only the parent's outage is notified."""
    await rule(pool, [await channel(pool, hook.url)])
    parent, child = await family(pool, parent_retries=0)
    d = dispatcher(pool, session)
    await round_(pool, child, "down", seconds(0.5))
    await d.step(seconds(0.5))
    await diagnose(pool, child, seconds(1))
    await d.step(seconds(1))
    assert hook.got == []
    held = await pool.fetch("SELECT hold_reason FROM deliveries WHERE status = 'held'")
    assert [h["hold_reason"] for h in held] == ["parent", "parent"]
    await round_(pool, parent, parent_state, seconds(2))
    while await d.step(seconds(2)):
        pass
    got = [(b["event"], b["monitor"]["id"]) for b in hook.bodies()]
    if parent_state == "up":
        assert got == [("incident.opened", child), ("incident.diagnosed", child)]
    else:
        assert got == [("incident.opened", parent)]
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'held'") == 0


@pytest.mark.parametrize("settled", ["down", "up"])
async def test_the_diagnosis_of_a_flapping_monitors_opening_goes_only_if_the_opening_does(
    pool: asyncpg.Pool, session: aiohttp.ClientSession, hook: Hook, settled: str
) -> None:
    """An opening suppressed while flapping, diagnosed meanwhile: settled down, the opening
    is the newest notice and goes out, its diagnosis with it; settled up, the recovery goes
    and the opening and its diagnosis are collapsed."""
    await rule(pool, [await channel(pool, hook.url)])
    mid = (await monitor(pool))["id"]
    d = dispatcher(pool, session)
    states = ["up"] * 10 + ["down", "up", "down", "up", "down", "up", "down"] + [settled] * 20
    for t, state in enumerate(states, start=1):
        await closed_round(pool, mid, state, seconds(t))
        await d.step(seconds(t))
        if t == 17:  # the opening of the 7th change is suppressed: the monitor is flapping
            assert await pool.fetchval("SELECT flapping FROM monitor_flaps WHERE monitor_id = $1", mid)
            await diagnose(pool, mid, seconds(t + 0.5))
            await d.step(seconds(t + 0.5))
            assert not [b for b in hook.bodies() if b["event"] == "incident.diagnosed"]
    while await d.step(seconds(len(states))):
        pass
    events = [b["event"] for b in hook.bodies()]
    if settled == "down":
        assert events[-2:] == ["incident.opened", "incident.diagnosed"]
    else:
        assert events[-1] == "incident.resolved" and "incident.diagnosed" not in events
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'suppressed'") == 0
