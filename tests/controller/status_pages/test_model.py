"""What a visitor sees, as the public model builds it: the scheduled maintenance of the
page's monitors (recurring windows in local time) and uptime bars read from the rollups."""

from __future__ import annotations

import datetime as dt

import aiohttp

from probefleet.controller import keys
from probefleet.controller.monitors.maintenance import Window
from probefleet.controller.status_pages import model
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import stats
from probefleet.controller.storage import status_pages as store
from tests.controller.conftest import Running
from tests.controller.status_pages.helpers import backfill_rollups, create_monitor, create_page
from tests.helpers import eventually

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
    shown, elsewhere = await create_monitor(api, "db"), await create_monitor(api, "other")
    page = await create_page(
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


async def test_bars_from_rollups_equal_the_raw_rounds_with_maintenance_and_pauses_left_out(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    mid = await create_monitor(api, "rolled")
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

    # The controller's rollup loop sets the watermarks at its first step: wait for it (on a
    # busy machine the test can get here first, and nothing would be backfilled).
    async def day_mark() -> dt.datetime | None:
        return (await stats.watermarks(pool)).get("day")

    await eventually(day_mark, timeout=20, what="the day watermark set by the controller")
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
    page = await create_page(api, name="Rolled", slug="rolled", monitors=[mid])
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        data = (await (await anon.get("/api/v1/status-pages/rolled/public")).json())["data"]
    days = {d["date"]: d for d in data["sections"][0]["components"][0]["days"]}
    for day, (up, degraded, down) in want.items():
        assert days[day.isoformat()]["uptime"] == round(100 * (up + degraded) / (up + degraded + down), 3)
    del page
