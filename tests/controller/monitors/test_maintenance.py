"""maintenance.active: one-off and recurring windows, time zones, per monitor or tag."""

from __future__ import annotations

import datetime as dt

import pytest

from probefleet.controller.monitors.maintenance import Window, active

UTC = dt.UTC


def at(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


ONE_OFF = Window(id=1, monitor_ids=(7,), starts_at=at("2025-03-01T10:00"), ends_at=at("2025-03-01T11:00"))
# Sundays 02:00-04:00 in New York (EST = UTC-5 until 9 March 2025, EDT = UTC-4 after).
SUNDAY_NY = Window(
    id=2, tags=("db",), days=(6,), start_time=dt.time(2, 0), duration_s=7200, time_zone="America/New_York"
)
# Mondays 23:00 UTC for 3 h: spans midnight into Tuesday.
MONDAY_NIGHT = Window(id=3, monitor_ids=(7,), days=(0,), start_time=dt.time(23, 0), duration_s=3 * 3600)

CASES = [
    ("one-off-inside", ONE_OFF, "2025-03-01T10:30", 7, [], True),
    ("one-off-end-excluded", ONE_OFF, "2025-03-01T11:00", 7, [], False),
    ("one-off-other-monitor", ONE_OFF, "2025-03-01T10:30", 8, [], False),
    ("recurring-by-tag-est", SUNDAY_NY, "2025-03-02T07:30", 9, ["db"], True),
    ("recurring-by-tag-edt", SUNDAY_NY, "2025-03-16T06:30", 9, ["db"], True),
    ("recurring-edt-shifted", SUNDAY_NY, "2025-03-16T08:30", 9, ["db"], False),
    ("recurring-other-tag", SUNDAY_NY, "2025-03-02T07:30", 9, ["web"], False),
    ("recurring-wrong-day", SUNDAY_NY, "2025-03-03T07:30", 9, ["db"], False),
    ("spans-midnight", MONDAY_NIGHT, "2025-03-04T01:30", 7, [], True),
    ("spans-midnight-over", MONDAY_NIGHT, "2025-03-04T02:00", 7, [], False),
    (
        "disabled",
        Window(
            id=4,
            monitor_ids=(7,),
            starts_at=at("2025-03-01T00:00"),
            ends_at=at("2025-03-02T00:00"),
            enabled=False,
        ),
        "2025-03-01T10:00",
        7,
        [],
        False,
    ),
]


@pytest.mark.parametrize(
    ("window", "now", "monitor", "tags", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_it_knows_when_a_window_covers_a_monitor(
    window: Window, now: str, monitor: int, tags: list[str], expected: bool
) -> None:
    occurrences = active([window], at(now), monitor, tags)
    assert bool(occurrences) is expected
    for occ in occurrences:
        assert occ.starts_at <= at(now) < occ.ends_at


def test_it_returns_the_occurrence_bounds_in_utc() -> None:
    (occ,) = active([SUNDAY_NY], at("2025-03-02T08:00"), 1, ["db"])
    assert occ.starts_at == at("2025-03-02T07:00") and occ.ends_at == at("2025-03-02T09:00")
