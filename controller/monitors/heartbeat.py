"""A heartbeat monitor's model: its schedule (every `run_interval` seconds, or at `cron` in
`tz`), the signals a job sends, and what its deadline depends on. Pure: no I/O; the engine
(controller/engine/heartbeats.py) decides from these when a heartbeat is late."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from probefleet.controller.validation import from_msgspec

KINDS = ("success", "start", "fail", "log")


MAX_OPEN_RUNS = 20


RUN_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


_CRON_SEARCH = 2000  # cron candidates tried before giving up (DST gaps, Feb 30th)


# A heartbeat given no schedule at all (a monitor created with only name, type and target)
# is expected every DEFAULT_RUN_INTERVAL seconds: the check_interval every other monitor
# gets by default (config.MonitorCommon; a test keeps the two equal).
DEFAULT_RUN_INTERVAL = 60


class HeartbeatSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=False):
    """A heartbeat's schedule: every `run_interval` seconds, or at `cron` in `tz`."""

    run_interval: Annotated[int, Meta(ge=1, le=366 * 86400)] | None = None
    grace_period: Annotated[int, Meta(ge=0, le=366 * 86400)] = 300
    cron: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    tz: Annotated[str, Meta(min_length=1, max_length=64)] = "UTC"


SPEC_ALIASES = {
    "period": "run_interval",
    "interval_s": "run_interval",
    "grace": "grace_period",
    "grace_seconds": "grace_period",
    "schedule": "cron",
    "timezone": "tz",
    "time_zone": "tz",
}


Problems = dict[str, object]


def parse_spec(
    data: dict[str, Any], fallback_interval: int | None = None
) -> tuple[HeartbeatSpec | None, Problems]:
    """Validate the heartbeat fields of a monitor; (spec, {}) or (None, field errors)."""
    fields: dict[str, Any] = {}
    for key, value in data.items():
        canonical = SPEC_ALIASES.get(key, key)
        if canonical not in fields or canonical == key:
            fields[canonical] = value
    unknown = sorted(set(fields) - set(HeartbeatSpec.__struct_fields__))
    if unknown:
        return None, {k: "unknown field" for k in unknown}
    if fields.get("run_interval") is None and fields.get("cron") is None:
        fields["run_interval"] = fallback_interval or DEFAULT_RUN_INTERVAL
    try:
        spec = msgspec.convert(fields, HeartbeatSpec)
    except msgspec.ValidationError as e:
        return None, dict(from_msgspec(e).details)
    errors: dict[str, object] = {}
    if (spec.run_interval is None) == (spec.cron is None):
        errors["run_interval"] = "give run_interval (seconds) or cron, not both"
    if zone(spec.tz) is None:
        errors["tz"] = "unknown time zone; use an IANA name such as Europe/Berlin"
    if spec.cron is not None and (problem := cron_problem(spec.cron)):
        errors["cron"] = problem
    return (None, errors) if errors else (spec, {})


def merge_fields(current: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat's flat fields after a PATCH `body` (aliases applied): sending `cron`
    clears `run_interval` and back, and for an interval schedule `check_interval` alone is
    the new `run_interval` (one value, shown under both names)."""
    body = {SPEC_ALIASES.get(k, k): v for k, v in body.items()}
    if (
        "check_interval" in body
        and "run_interval" not in body
        and "cron" not in body
        and current.get("run_interval") is not None
    ):
        body["run_interval"] = body["check_interval"]
    # The shown check_interval mirrors run_interval, which may exceed check_interval's own
    # maximum (a weekly job): only a check_interval the client sent is validated.
    fields = {**{k: v for k, v in current.items() if k != "check_interval"}, **body}
    if "cron" in body and "run_interval" not in body:
        fields["run_interval"] = None
    elif "run_interval" in body and "cron" not in body:
        fields["cron"] = None
    return fields


def decode_spec(stored: dict[str, Any] | None) -> HeartbeatSpec | None:
    if stored is None:
        return None
    return msgspec.convert({k: v for k, v in stored.items() if k != "type"}, HeartbeatSpec)


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def cron_problem(expr: str) -> str | None:
    if len(expr.split()) != 5:
        return "must have five fields: minute hour day-of-month month day-of-week"
    # croniter (with dateutil, about 1 MiB) is imported by the first cron schedule, not by
    # every controller.
    from croniter import croniter
    from croniter.croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError

    try:
        croniter(expr, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError):
        return "not a valid cron expression"
    except CroniterBadDateError:
        return "never matches a date"
    return None


def next_cron(expr: str, tz: ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first cron time strictly after the instant `after`, in UTC.

    croniter walks naive local wall-clock times and zoneinfo turns each into an instant,
    so DST is handled by zoneinfo alone: a time in the spring-forward gap maps to the
    instant just after the jump (02:30 -> 03:30 EDT), and in the repeated autumn hour the
    first occurrence counts once."""
    from croniter import croniter

    local = after.astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, local)
    for _ in range(_CRON_SEARCH):
        wall: dt.datetime = it.get_next(dt.datetime)
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
        if instant > after:
            return instant
    raise ValueError(f"cron {expr!r} has no time after {after.isoformat()}")


def next_expected(spec: HeartbeatSpec, after: dt.datetime) -> dt.datetime:
    """When the next success is due, given the previous one (or the schedule's start)."""
    if spec.cron is not None:
        return next_cron(spec.cron, zone(spec.tz) or ZoneInfo("UTC"), after)
    assert spec.run_interval is not None
    return after + dt.timedelta(seconds=spec.run_interval)


class State(msgspec.Struct, kw_only=True):
    """What the deadline depends on: schedule, monitor status and the last signals."""

    spec: HeartbeatSpec
    status: str  # the monitor's status: pending | up | down | paused | ...
    anchor: dt.datetime
    enabled: bool = True
    last_success: dt.datetime | None = None
    runs: dict[str, dt.datetime] = msgspec.field(default_factory=dict)


class Deadline(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    reason: str  # heartbeat_missed | run_timeout


class Ping(msgspec.Struct, kw_only=True):
    """One received signal, as the API hands it to the writer."""

    monitor_id: int
    at: dt.datetime
    kind: str  # success | start | fail | log
    exit_code: int | None = None
    rid: str | None = None
    source: str | None = None
    user_agent: str | None = None
    method: str | None = None
    body: str = ""
