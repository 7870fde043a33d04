"""Notifications, second round: alert_threshold, escalation policies on monitors, channel
references checked by the API, email through the dispatcher, the NOTIFY wake-up."""

# Fixtures are imported from the dispatcher and email tests; their parameters shadow them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import asyncpg

from probefleet.controller import metrics
from probefleet.controller.engine import incidents
from probefleet.controller.engine.consensus import Verdict
from probefleet.controller.notifications.dispatcher import Dispatcher, Settings
from probefleet.controller.storage import notifications as store
from tests.controller.test_dispatcher import (  # noqa: F401 (fixtures)
    T0,
    Hook,
    channel,
    dispatcher,
    hook,
    monitor,
    open_incident,
    rule,
    session,
)
from tests.helpers import eventually
from tests.notifiers.test_email import Mailbox, StartSmtp, start_smtp  # noqa: F401 (fixture)

REGIONS = ("us-east", "eu-west")


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
    pool: asyncpg.Pool, session: aiohttp.ClientSession, start_smtp: StartSmtp
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


# ------------------------------------------------------------ API: a monitor's references


async def _post(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await api.post(path, json=body)
    return r.status, await r.json()


async def test_monitor_channel_ids_must_exist(api: aiohttp.ClientSession) -> None:
    status, body = await _post(
        api,
        "/api/v1/notification-channels",
        {"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
    )
    cid = body["data"]["id"]
    http = {"name": "web", "type": "http", "url": "https://example.com/"}
    status, body = await _post(api, "/api/v1/monitors", {**http, "notifications": [cid, 999999]})
    assert status == 422 and body["error"]["details"] == {"notifications[1]": "no such notification channel"}
    status, body = await _post(
        api, "/api/v1/heartbeats", {"name": "hb", "run_interval": 60, "notifications": [999999]}
    )
    assert status == 422 and "notifications[0]" in body["error"]["details"]
    status, body = await _post(api, "/api/v1/monitors", {**http, "notifications": [cid]})
    assert status == 201 and body["data"]["notifications"] == [cid]
    mid = body["data"]["id"]
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"notifications": [cid, cid + 1000]})
    assert r.status == 422 and "notifications[1]" in (await r.json())["error"]["details"]
    bulk = {"action": "update", "monitor_ids": [mid], "updates": {"notifications": [cid + 1000]}}
    r = await api.post("/api/v1/monitors/bulk", json=bulk)
    assert r.status == 422 and "notifications[0]" in (await r.json())["error"]["details"]["monitor_ids[0]"]
    # Deleting the channel drops it from the monitor, which stays editable.
    assert (await api.delete(f"/api/v1/notification-channels/{cid}")).status == 204
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"name": "web 2"})
    assert r.status == 200 and (await r.json())["data"]["notifications"] == []


async def test_monitors_take_an_escalation_policy_by_name_or_id(api: aiohttp.ClientSession) -> None:
    _, body = await _post(
        api,
        "/api/v1/notification-channels",
        {"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
    )
    cid = body["data"]["id"]
    status, body = await _post(
        api,
        "/api/v1/notification-rules",
        {
            "name": "oncall_senior",
            "policy": True,
            "channels": [cid],
            "escalate_after_minutes": 15,
            "escalation_channels": [cid],
        },
    )
    assert status == 201 and body["data"]["is_policy"] is True
    policy = body["data"]["id"]
    # Reference 004's create example, with a channel id in notifications.
    status, body = await _post(
        api,
        "/api/v1/monitors",
        {
            "name": "Checkout Service Gateway",
            "type": "http",
            "url": "https://api.example.com/v2/health",
            "interval_seconds": 30,
            "expected_status": 200,
            "escalation_policy": "oncall_senior",
            "notifications": [cid],
        },
    )
    assert status == 201 and body["data"]["escalation_policy"] == policy
    mid = body["data"]["id"]
    r = await api.put(f"/api/v1/monitors/{mid}/config", json={"timeout": 5})
    assert r.status == 200 and (await r.json())["data"]["escalation_policy"] == policy
    for ref, problem in (
        ("nobody", "no notification rule with this name"),
        (policy + 100, "no notification rule with this id"),
    ):
        r = await api.patch(f"/api/v1/monitors/{mid}", json={"escalation_policy": ref})
        assert r.status == 422 and (await r.json())["error"]["details"] == {"escalation_policy": problem}
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"escalationPolicy": None})
    assert r.status == 200 and (await r.json())["data"]["escalation_policy"] is None
