"""Maintenance windows: one-off (starts_at..ends_at) or recurring (days of week, local start
time, duration, IANA time zone), for listed monitors or tags.

`active(windows, now)` is pure. During an occurrence checks keep running, but no incident
and no notification event is raised; the occurrence is stored in `maintenance_periods`
so uptime can leave it out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec


class Window(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    monitor_ids: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    days: tuple[int, ...] = ()  # 0 = Monday .. 6 = Sunday; empty = one-off
    start_time: dt.time | None = None
    duration_s: int | None = None
    time_zone: str = "UTC"
    enabled: bool = True

    @property
    def recurring(self) -> bool:
        return bool(self.days) and self.start_time is not None and bool(self.duration_s)


class Occurrence(msgspec.Struct, frozen=True, kw_only=True):
    window_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def occurrence(window: Window, now: dt.datetime) -> Occurrence | None:
    """The occurrence of `window` that covers `now`, if any."""
    if not window.enabled:
        return None
    if not window.recurring:
        if window.starts_at and window.ends_at and window.starts_at <= now < window.ends_at:
            return Occurrence(window_id=window.id, starts_at=window.starts_at, ends_at=window.ends_at)
        return None
    if (window.starts_at and now < window.starts_at) or (window.ends_at and now >= window.ends_at):
        return None
    tz = zone(window.time_zone) or dt.UTC
    assert window.start_time is not None and window.duration_s is not None
    length = dt.timedelta(seconds=window.duration_s)
    today = now.astimezone(tz).date()
    for back in range(length.days + 2):
        day = today - dt.timedelta(days=back)
        if day.weekday() not in window.days:
            continue
        # Local wall-clock start: DST shifts move the UTC instant, as a person expects.
        start = dt.datetime.combine(day, window.start_time, tzinfo=tz).astimezone(dt.UTC)
        if start <= now < start + length:
            return Occurrence(window_id=window.id, starts_at=start, ends_at=start + length)
    return None


def applies(window: Window, monitor_id: int, tags: list[str] | tuple[str, ...]) -> bool:
    return monitor_id in window.monitor_ids or bool(set(window.tags) & set(tags))


def active(
    windows: list[Window],
    now: dt.datetime,
    monitor_id: int | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> list[Occurrence]:
    """Occurrences covering `now` (of windows that apply to the monitor, when one is given)."""
    out = []
    for w in windows:
        if monitor_id is not None and not applies(w, monitor_id, tags):
            continue
        occ = occurrence(w, now)
        if occ is not None:
            out.append(occ)
    return out


def from_row(row: dict[str, Any]) -> Window:
    return Window(
        id=row["id"],
        monitor_ids=tuple(row["monitor_ids"]),
        tags=tuple(row["tags"]),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        days=tuple(row["days"]),
        start_time=row["start_time"],
        duration_s=row["duration_s"],
        time_zone=row["time_zone"],
        enabled=row["enabled"],
    )
