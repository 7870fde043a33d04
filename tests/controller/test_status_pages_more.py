"""Status pages, continued: webhook destinations refused by address, the anonymous subscribe
limit and confirmation throttle, live posts over SSE, recurring maintenance on the page,
uptime bars from the verdict rollups, and a cookie secret shared by two controllers.

No test sends traffic anywhere but loopback: refused destinations are refused before any
connection is made (IP literals are checked as such; `localhost` resolves from /etc/hosts)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.config import ControllerConfig
from probefleet.controller.monitors.maintenance import Window
from probefleet.controller.notifications import destinations
from probefleet.controller.status_pages import access, model, subscribers
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import stats
from probefleet.controller.storage import status_pages as store
from tests.controller.conftest import Running, start_controller
from tests.controller.test_status_pages import SECRET_URL, _monitor, _page, _set_status, backfill_rollups

BOUND = 10.0  # generous bound for "arrives": a failure, never a speed measure


@pytest.fixture
async def controller(database: str, nats_url: str, smtp: list[Any]) -> AsyncIterator[Running]:
    """This file's controller sends mail (to the smtp fixture): email subscribers need SMTP."""
    running = await start_controller(
        database, nats_url, smtp_host="127.0.0.1", smtp_port=smtp[0], smtp_security="none"
    )
    yield running
    await running.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1: (port, bodies received)."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1], got
    await runner.cleanup()


# --- webhook destinations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("::ffff:127.0.0.1", True),
        ("ff02::1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
    ids=lambda v: str(v),
)
def test_only_public_unicast_addresses_are_destinations(address: str, refused: bool) -> None:
    assert destinations.forbidden(address) is refused


async def test_it_refuses_webhooks_to_non_public_addresses_with_a_422(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    controller.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=100)
    page = await _page(api, name="Hooks", slug="hooks")
    refused = [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://localhost:9/hook",
        "https://0.0.0.0/",
    ]
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for url in refused:
            r = await anon.post("/api/v1/status-pages/hooks/subscribe", json={"webhook_url": url})
            body = await r.json()
            assert r.status == 422, (url, body)
            assert "private, loopback, link-local" in body["error"]["details"]["webhook_url"], url
        r = await anon.post("/api/v1/status-pages/hooks/subscribe", json={"url": "ftp://example.test/x"})
        assert r.status == 422
    subs = (await (await api.get(f"/api/v1/status-pages/{page['id']}/subscribers")).json())["data"]
    assert subs == []
    # A public literal passes the check without any lookup or connection.
    await destinations.check("http://93.184.216.34/hook", allow_private=False)


async def test_the_sender_checks_the_address_again_right_before_sending(
    receiver: tuple[int, list[dict[str, Any]]],
) -> None:
    """A subscriber stored while its name was public (then DNS changed): nothing is sent."""
    port, got = receiver
    notice = {
        "channel": "webhook",
        "kind": "post",
        "page_name": "P",
        "slug": "p",
        "token": "t",
        "payload": {"title": "T", "status": "investigating", "message": "m"},
    }
    strict = ControllerConfig()
    async with subscribers.webhook_session(strict) as session:
        send = subscribers.make_sender(strict, session)
        for url in (f"http://localhost:{port}/hook", f"http://127.0.0.1:{port}/hook"):
            with pytest.raises((OSError, aiohttp.ClientError, destinations.DestinationError)) as caught:
                await send({**notice, "address": url})
            assert "private, loopback" in str(caught.value)
    assert got == []
    lab = ControllerConfig(subscriber_webhooks_allow_private=True)
    async with subscribers.webhook_session(lab) as session:
        await subscribers.make_sender(lab, session)({**notice, "address": f"http://localhost:{port}/hook"})
    assert [g["type"] for g in got] == ["status_page.post"]


# --- abuse: per-address limit and confirmation throttle ---------------------------------


async def test_anonymous_subscribe_requests_are_limited_per_source_address(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    controller.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=3, every=60)
    await _page(api, name="Limits", slug="limits")
    path = "/api/v1/status-pages/limits/subscribe"
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for i in range(3):
            r = await anon.post(path, json={"email": f"a{i}@example.test"})
            assert r.status == 202, await r.text()
        r = await anon.post(path, json={"email": "a9@example.test"})
        body = await r.json()
        assert r.status == 429 and body["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and body["error"]["details"]["retry_after"] >= 1
        r = await anon.post("/status/limits/subscribe", data={"email": "a9@example.test"})
        assert r.status == 429 and "Retry-After" in r.headers and "Too many" in await r.text()
    # Another source address has its own bucket.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(base_url=controller.base, connector=other) as anon:
        r = await anon.post(path, json={"email": "b@example.test"})
        assert r.status == 202, await r.text()


def test_the_address_limiter_refills_over_time() -> None:
    limiter = access.AddressLimiter(burst=2, every=10)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0, 0, 10]
    assert limiter.take("b", now=0.0) == 0
    assert limiter.take("a", now=5.0) == 5 and limiter.take("a", now=10.0) == 0
    assert access.source_key("2001:db8::1") == access.source_key("2001:db8::2") == "2001:db8::/64"
    assert access.source_key("::ffff:10.0.0.1") == "10.0.0.1"


async def test_an_address_gets_one_confirmation_until_the_resend_delay(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    controller.app[keys.STATUS_PAGES].subscribe_limiter = access.AddressLimiter(burst=100)
    await _page(api, name="Mail", slug="mail")
    pool = controller.app[keys.POOL]

    async def subscribe(times: int) -> list[str]:
        async with aiohttp.ClientSession(base_url=controller.base) as anon:
            answers = await asyncio.gather(
                *[
                    anon.post("/api/v1/status-pages/mail/subscribe", json={"email": "victim@example.test"})
                    for _ in range(times)
                ]
            )
        assert {r.status for r in answers} == {202}
        rows = await pool.fetch(
            "SELECT n.state FROM status_page_notices n JOIN status_page_subscribers s"
            " ON s.id = n.subscriber_id WHERE s.address = 'victim@example.test' AND n.kind = 'confirm'"
        )
        return [r["state"] for r in rows]

    assert len(await subscribe(8)) == 1, "one queued confirmation, however many requests"
    await pool.execute("UPDATE status_page_notices SET state = 'sent' WHERE kind = 'confirm'")
    assert len(await subscribe(3)) == 1, "sent a moment ago: no resend yet"
    await pool.execute(
        "UPDATE status_page_notices SET created_at = now() - $1::interval WHERE kind = 'confirm'",
        subscribers.RESEND_AFTER + dt.timedelta(seconds=1),
    )
    assert len(await subscribe(3)) == 2, "after the resend delay: exactly one more"


# --- live posts over SSE ----------------------------------------------------------------


class Frame(NamedTuple):
    event: str
    id: str | None
    data: dict[str, Any]


async def _frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
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


async def _next_post(frames: AsyncIterator[Frame]) -> Frame:
    async with asyncio.timeout(BOUND):
        async for frame in frames:
            if frame.event == "post":
                return frame
    raise AssertionError("stream ended")


async def test_new_posts_and_updates_arrive_over_sse(controller: Running, api: aiohttp.ClientSession) -> None:
    page = await _page(api, name="Live", slug="live")
    other = await _page(api, name="Other", slug="other")
    async with (
        aiohttp.ClientSession(base_url=controller.base) as anon,
        anon.get("/status/live/events") as stream,
    ):
        frames = _frames(stream)
        await api.post(
            f"/api/v1/status-pages/{other['id']}/posts", json={"title": "Not yours", "message": "x"}
        )
        r = await api.post(
            f"/api/v1/status-pages/{page['id']}/posts",
            json={"title": "Checkout <errors>", "status": "investigating", "message": "Looking"},
        )
        post = (await r.json())["data"]
        got = (await _next_post(frames)).data
        assert got["post"] == post["id"] and got["status"] == "investigating"
        assert "Checkout &lt;errors&gt;" in got["html"] and f'id="p-{post["id"]}"' in got["html"]
        assert got["banner"] == ""
        await api.post(
            f"/api/v1/status-pages/{page['id']}/posts/{post['id']}/updates",
            json={"status": "identified", "message": "Bad deploy"},
        )
        got = (await _next_post(frames)).data
        assert got["post"] == post["id"] and got["status"] == "identified"
        assert got["html"].index("Bad deploy") < got["html"].index("Looking")
        await api.put(
            f"/api/v1/status-pages/{page['id']}",
            json={"incident_status": "monitoring", "incident_message": "Fix rolled out"},
        )
        got = (await _next_post(frames)).data
        assert got["post"] == post["id"] and 'data-status="monitoring"' in got["banner"]
        assert "Fix rolled out" in got["banner"]


async def test_a_reconnecting_visitor_gets_the_posts_it_missed(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """Post frames carry their outbox id, so Last-Event-ID resumes them like state changes;
    a frame holds the post and banner as the page shows them and nothing of the page's config."""
    mid = await _monitor(api, "Private monitor name")
    core = {"name": "Core", "monitors": [{"monitor_id": mid, "display_name": "API"}]}
    page = await _page(api, name="Resume", slug="resume-sse", sections=[core])
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        async with anon.get("/status/resume-sse/events") as stream:
            frames = _frames(stream)
            body = {"title": "T", "message": "one"}
            r = await api.post(f"/api/v1/status-pages/{page['id']}/posts", json=body)
            post = (await r.json())["data"]
            seen = await _next_post(frames)
            assert seen.id is not None and seen.id.isdigit()
        # While the visitor is away: an update, another page's post, a state change.
        await api.post(
            f"/api/v1/status-page-posts/{post['id']}/updates", json={"status": "resolved", "message": "Fixed"}
        )
        other = await _page(api, name="Other", slug="other-sse")
        await api.post(f"/api/v1/status-pages/{other['id']}/posts", json={"title": "No", "message": "x"})
        await _set_status(controller.app, mid, "down")
        async with anon.get("/status/resume-sse/events", headers={"Last-Event-ID": seen.id}) as stream:
            frames = _frames(stream)
            missed = [await anext(frames), await anext(frames)]
    assert [f.event for f in missed] == ["post", "component"]
    assert missed[0].data["post"] == post["id"] and missed[0].data["status"] == "resolved"
    assert int(seen.id) < int(missed[0].id or 0) < int(missed[1].id or 0)
    assert set(missed[0].data) == {"post", "status", "html", "banner"}
    assert missed[1].data == {
        "component": page["sections"][0]["monitors"][0]["component_id"],
        "state": "outage",
    }
    text = json.dumps([f.data for f in missed])
    for secret in ("Private monitor name", "resume-sse", SECRET_URL):
        assert secret not in text


# --- recurring maintenance --------------------------------------------------------------

UTC = dt.UTC


def test_upcoming_lists_recurring_occurrences_in_local_time() -> None:
    # Mondays and Thursdays 02:00-03:30 in Berlin; "now" is Sunday 2024-10-20 12:00 UTC. Berlin
    # leaves summer time on 2024-10-27, so the Monday after that starts an hour later in UTC.
    weekly = Window(id=1, days=(0, 3), start_time=dt.time(2, 0), duration_s=5400, time_zone="Europe/Berlin")
    now = dt.datetime(2024, 10, 20, 12, tzinfo=UTC)
    got = [(o.starts_at, o.ends_at) for o in model.upcoming(weekly, now, dt.timedelta(days=8))]
    assert got == [
        (dt.datetime(2024, 10, 21, 0, tzinfo=UTC), dt.datetime(2024, 10, 21, 1, 30, tzinfo=UTC)),
        (dt.datetime(2024, 10, 24, 0, tzinfo=UTC), dt.datetime(2024, 10, 24, 1, 30, tzinfo=UTC)),
        (dt.datetime(2024, 10, 28, 1, tzinfo=UTC), dt.datetime(2024, 10, 28, 2, 30, tzinfo=UTC)),
    ]
    # The occurrence in progress is listed; the window's own end clips the last one.
    daily = Window(
        id=2,
        days=tuple(range(7)),
        start_time=dt.time(11, 0),
        duration_s=7200,
        ends_at=dt.datetime(2024, 10, 22, 12, tzinfo=UTC),
    )
    got = [(o.starts_at.day, o.starts_at.hour, o.ends_at.hour) for o in model.upcoming(daily, now)]
    assert got == [(20, 11, 13), (21, 11, 13), (22, 11, 12)]
    one_off = Window(id=3, starts_at=now + dt.timedelta(days=9), ends_at=now + dt.timedelta(days=9, hours=1))
    assert model.upcoming(one_off, now) == []
    disabled = Window(id=4, days=(0,), start_time=dt.time(1), duration_s=60, enabled=False)
    assert model.upcoming(disabled, now) == []


async def test_the_public_page_shows_the_next_recurring_maintenance(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    shown, elsewhere = await _monitor(api, "db"), await _monitor(api, "other")
    page = await _page(
        api, name="Maint", slug="maint", monitors=[{"monitor_id": shown, "display_name": "DB"}]
    )
    component = page["sections"][0]["monitors"][0]["component_id"]
    window = {
        "monitor_ids": [shown],
        "tags": [],
        "starts_at": None,
        "ends_at": None,
        "days": list(range(7)),
        "start_time": dt.time(3, 0),
        "duration_s": 1800,
        "time_zone": "UTC",
        "enabled": True,
    }
    pool = controller.app[keys.POOL]
    await incident_store.insert_window(pool, {**window, "name": "Nightly backup"})
    await incident_store.insert_window(
        pool, {**window, "name": "Not on this page", "monitor_ids": [elsewhere]}
    )
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        data = (await (await anon.get("/api/v1/status-pages/maint/public")).json())["data"]
        html = await (await anon.get("/status/maint")).text()
    now = dt.datetime.now(UTC)
    starts = [dt.datetime.fromisoformat(w["starts_at"]) for w in data["maintenance"]]
    assert {w["name"] for w in data["maintenance"]} == {"Nightly backup"}
    assert len(starts) in (7, 8) and starts == sorted(starts)
    assert all(s.time() == dt.time(3, 0) and s < now + dt.timedelta(days=7) for s in starts)
    assert all(w["components"] == [component] for w in data["maintenance"])
    assert "Nightly backup" in html and "Scheduled maintenance" in html


# --- uptime bars from the rollups -------------------------------------------------------


async def test_bars_from_rollups_equal_the_raw_rounds_with_maintenance_and_pauses_left_out(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    mid = await _monitor(api, "rolled")
    pool = controller.app[keys.POOL]
    today = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    verdicts = ["up", "up", "degraded", "down", "unknown", "up"]
    rounds = [
        (today - dt.timedelta(days=d) + dt.timedelta(hours=h), verdicts[(d + h) % len(verdicts)], attempt)
        for d in (1, 2, 3, 5)
        for h in range(8, 16)
        for attempt in ((0, 1) if h == 9 else (0,))
    ]
    await pool.executemany(
        "INSERT INTO rounds (monitor_id, due, regions, deadline, closed_at, verdict, attempt)"
        " VALUES ($1, $2, '{us-east}', $2, $2, $3, $4)",
        [(mid, due, verdict, attempt) for due, verdict, attempt in rounds],
    )
    # Maintenance on day -2 from 10:00 to 12:00; paused on day -3 from 13:00 to 15:00.
    maint = (today - dt.timedelta(days=2, hours=-10), today - dt.timedelta(days=2, hours=-12))
    paused = (today - dt.timedelta(days=3, hours=-13), today - dt.timedelta(days=3, hours=-15))
    window = await incident_store.insert_window(
        pool,
        {
            "name": "past",
            "monitor_ids": [mid],
            "tags": [],
            "starts_at": maint[0],
            "ends_at": maint[1],
            "days": [],
            "start_time": None,
            "duration_s": None,
            "time_zone": "UTC",
            "enabled": True,
        },
    )
    await pool.execute(
        "INSERT INTO maintenance_periods (monitor_id, window_id, starts_at, ends_at) VALUES ($1, $2, $3, $4)",
        mid,
        window["id"],
        *maint,
    )
    await pool.executemany(
        "INSERT INTO events (kind, monitor_id, occurred_at, payload) VALUES ($1, $2, $3, '{}')",
        [("monitor.paused", mid, paused[0]), ("monitor.resumed", mid, paused[1])],
    )
    want: dict[dt.date, tuple[int, int, int]] = {}
    for due, verdict, attempt in rounds:
        if attempt or verdict == "unknown" or any(a <= due < b for a, b in (maint, paused)):
            continue
        up, degraded, down = want.get(due.date(), (0, 0, 0))
        want[due.date()] = (
            up + (verdict == "up"),
            degraded + (verdict == "degraded"),
            down + (verdict == "down"),
        )
    assert len(want) == 4 and sum(sum(c) for c in want.values()) < len(rounds) - 8

    await backfill_rollups(pool, today - dt.timedelta(days=6))
    since, until = today - dt.timedelta(days=89), today + dt.timedelta(days=1)
    parts = stats.pieces(since, until, await stats.watermarks(pool))
    assert parts[0] == ("day", since, today), "the past days are read from verdicts_day"
    for day in want:
        start = dt.datetime.combine(day, dt.time(), UTC)
        v = (await stats.summary(pool, mid, start, start + dt.timedelta(days=1)))["verdicts"]
        assert (v.up, v.degraded, v.down) == want[day], "the stats engine counts the same"
    # With the raw rounds gone the numbers must still come out: they are read from the rollups.
    await pool.execute("DELETE FROM rounds WHERE monitor_id = $1", mid)
    assert (await store.day_counts(pool, [mid], since, until))[mid] == want
    page = await _page(api, name="Rolled", slug="rolled", monitors=[mid])
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        data = (await (await anon.get("/api/v1/status-pages/rolled/public")).json())["data"]
    days = {d["date"]: d for d in data["sections"][0]["components"][0]["days"]}
    for day, (up, degraded, down) in want.items():
        assert days[day.isoformat()]["uptime"] == round(100 * (up + degraded) / (up + degraded + down), 3)
    del page


# --- the cookie secret across controllers -----------------------------------------------


async def test_a_cookie_from_one_controller_opens_the_page_on_another(database: str, nats_url: str) -> None:
    first = await start_controller(database, nats_url)
    second = await start_controller(database, nats_url)
    try:
        assert first.app[keys.STATUS_PAGES].secret == second.app[keys.STATUS_PAGES].secret
        headers = {"Authorization": f"Bearer {first.admin_key}"}
        async with aiohttp.ClientSession(base_url=first.base, headers=headers) as api:
            await _page(api, name="Shared Corp", slug="shared", is_public=False, password="open sesame")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=first.base, cookie_jar=jar) as one:
            r = await one.post("/status/shared", data={"password": "open sesame"}, allow_redirects=False)
            assert r.status == 303
        cookie = {c.key: c.value for c in jar}
        assert set(cookie) == {"pf_status_shared"}
        async with aiohttp.ClientSession(base_url=second.base, cookies=cookie) as two:
            r = await two.get("/status/shared")
            assert r.status == 200 and "Shared Corp" in await r.text()
        async with aiohttp.ClientSession(base_url=second.base) as nobody:
            assert (await nobody.get("/status/shared")).status == 401
    finally:
        await second.stop()
        await first.stop()
    assert await access.cookie_secret(None, "configured") == "configured"
