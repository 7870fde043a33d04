"""What a visitor of a status page sees, and nothing else: public component states, the
page's overall state, 90 daily uptime bars, each component's mean response time when the
page shows them, the scheduled maintenance of its monitors, its recent posts.
`public_model` builds it; monitor ids, names, targets and regions never enter it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.engine.incidents import iso
from probefleet.controller.monitors import maintenance
from probefleet.controller.status_pages.cache import PageCache
from probefleet.controller.status_pages.posts import page_incident, post_out
from probefleet.controller.storage import DB, stats
from probefleet.controller.storage import status_pages as store

BAR_DAYS = 90
# The page lists posts of the last POST_DAYS (open posts whatever their age); the archive
# (/status/{slug}/history) all of them, HISTORY_PAGE to a page.
POST_DAYS = 14
HISTORY_PAGE = 20
# A component's response time, when the page shows them: the mean over this window.
RESPONSE_WINDOW = dt.timedelta(hours=24)

# --- public states and uptime bars ------------------------------------------------------


def component_state(monitor_status: str, in_maintenance: bool) -> str:
    """What a visitor sees for one monitor state."""
    if in_maintenance:
        return "maintenance"
    return {"up": "operational", "degraded": "degraded", "down": "outage"}.get(monitor_status, "unknown")


def overall_state(states: list[str]) -> str:
    if not states:
        return "operational"
    down = states.count("outage")
    if down and down == len(states):
        return "major_outage"
    if down:
        return "partial_outage"
    if "degraded" in states:
        return "degraded"
    if "maintenance" in states:
        return "maintenance"
    if all(s == "unknown" for s in states):
        return "unknown"
    return "operational"


DayCounts = dict[dt.date, tuple[int, int, int]]


def day_bars(days: DayCounts, today: dt.date, n: int = BAR_DAYS) -> list[dict[str, Any]]:
    """One bar per day, oldest first: uptime % and the worst state; null when nothing ran.

    `days` maps a date to (up rounds, degraded rounds, down rounds).
    """
    bars: list[dict[str, Any]] = []
    for i in range(n - 1, -1, -1):
        day = today - dt.timedelta(days=i)
        up, degraded, down = days.get(day, (0, 0, 0))
        total = up + degraded + down
        if total == 0:
            bars.append({"date": day.isoformat(), "uptime": None, "state": "none"})
            continue
        state = "outage" if down else "degraded" if degraded else "operational"
        bars.append(
            {"date": day.isoformat(), "uptime": round(100 * (up + degraded) / total, 3), "state": state}
        )
    return bars


def uptime_of(days: DayCounts) -> float | None:
    up = sum(u + d for u, d, _ in days.values())
    total = sum(u + d + x for u, d, x in days.values())
    return round(100 * up / total, 3) if total else None


# --- scheduled maintenance --------------------------------------------------------------

MAINTENANCE_DAYS = 7


def upcoming(
    window: maintenance.Window, now: dt.datetime, horizon: dt.timedelta = dt.timedelta(days=MAINTENANCE_DAYS)
) -> list[maintenance.Occurrence]:
    """Occurrences of `window` that have not ended and start before now + horizon, clipped to
    the window's own starts_at/ends_at (as maintenance.occurrence applies them)."""
    end = now + horizon
    if not window.enabled:
        return []
    if not window.recurring:
        if window.starts_at and window.ends_at and window.ends_at > now and window.starts_at < end:
            return [
                maintenance.Occurrence(
                    window_id=window.id, starts_at=window.starts_at, ends_at=window.ends_at
                )
            ]
        return []
    assert window.start_time is not None and window.duration_s is not None
    tz = maintenance.zone(window.time_zone) or dt.UTC
    length = dt.timedelta(seconds=window.duration_s)
    day, last = now.astimezone(tz).date() - dt.timedelta(days=length.days + 1), end.astimezone(tz).date()
    out = []
    while day <= last:
        if day.weekday() in window.days:
            start = dt.datetime.combine(day, window.start_time, tzinfo=tz).astimezone(dt.UTC)
            stop = min(start + length, window.ends_at or start + length)
            start = max(start, window.starts_at or start)
            if start < stop and stop > now and start < end:
                out.append(maintenance.Occurrence(window_id=window.id, starts_at=start, ends_at=stop))
        day += dt.timedelta(days=1)
    return out


def scheduled(rows: list[dict[str, Any]], now: dt.datetime, limit: int = 20) -> list[dict[str, Any]]:
    """The next occurrences of every window (rows from store.maintenance_windows), soonest first."""
    found = [
        {"name": row["name"], "starts_at": occ.starts_at, "ends_at": occ.ends_at, "monitor_ids": row["shown"]}
        for row in rows
        for occ in upcoming(maintenance.from_row(row), now)
    ]
    return sorted(found, key=lambda w: (w["starts_at"], w["name"]))[:limit]


# --- the public model -------------------------------------------------------------------


async def _bars(pool: DB, cache: PageCache, page_id: int, monitor_ids: list[int], now: dt.datetime) -> Any:
    async def build() -> Any:
        since = dt.datetime.combine(now.date() - dt.timedelta(days=BAR_DAYS - 1), dt.time(), dt.UTC)
        until = since + dt.timedelta(days=BAR_DAYS)
        return await store.day_counts(pool, monitor_ids, since, until)

    return await cache.get("bars", page_id, cache.bars_ttl, build)


async def _response_times(
    pool: DB, cache: PageCache, page_id: int, monitor_ids: list[int], now: dt.datetime
) -> Any:
    async def build() -> Any:
        return await store.response_times(pool, monitor_ids, now - RESPONSE_WINDOW, now)

    return await cache.get("response_times", page_id, cache.bars_ttl, build)


async def public_model(pool: DB, cache: PageCache, page: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Everything a visitor may see, and nothing else: no monitor ids, targets or settings."""
    comps = await store.components(pool, [page["id"]])
    mids = [c["monitor_id"] for c in comps]
    maint = await store.in_maintenance(pool, mids, now) if mids else set()
    counts = await _bars(pool, cache, page["id"], mids, now) if mids else {}
    timed = page.get("show_response_times") and mids
    times = await _response_times(pool, cache, page["id"], mids, now) if timed else {}
    sections: dict[str, list[dict[str, Any]]] = {}
    for c in comps:
        days = counts.get(c["monitor_id"], {})
        shown: dict[str, Any] = {
            "id": c["id"],
            "name": c["display_name"],
            "description": c["description"],
            "status": component_state(c["status"], c["monitor_id"] in maint),
            "uptime_90d": uptime_of(days),
            "days": day_bars(days, now.date()),
        }
        if page.get("show_response_times"):
            shown["response_time_ms"] = stats.ms(times.get(c["monitor_id"]))
        sections.setdefault(c["section"], []).append(shown)
    states = [c["status"] for s in sections.values() for c in s]
    posts = await store.posts(pool, page["id"], since=now - dt.timedelta(days=POST_DAYS), limit=20)
    windows = scheduled(await store.maintenance_windows(pool, mids, now), now) if mids else []
    return {
        "name": page["name"],
        "slug": page["slug"],
        "description": page["description"],
        "status": overall_state(states),
        "incident": page_incident(page),
        "sections": [{"name": k, "components": v} for k, v in sections.items()],
        "posts": [{**post_out(p), "id": p["id"]} for p in posts],
        "maintenance": [
            {
                "name": w["name"],
                "starts_at": iso(w["starts_at"]),
                "ends_at": iso(w["ends_at"]),
                "components": [c["id"] for c in comps if c["monitor_id"] in w["monitor_ids"]],
            }
            for w in windows
        ],
        "updated_at": iso(now),
    }
