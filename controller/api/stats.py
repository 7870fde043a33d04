"""Statistics endpoints: GET /api/v1/monitors/{id}/stats (period + granularity),
GET /api/v1/analytics/{monitor_id} (any range), GET /api/v1/reports/sla (every monitor,
JSON or CSV). All read rollups plus the not yet rolled-up raw tail
(controller/storage/stats.py); uptime comes from round verdicts, response times and
check counts from per-region results."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api.common import check_time, now_utc, ok, parse_int, parse_time, path_id, require
from probefleet.controller.api.errors import not_found
from probefleet.controller.storage import DB
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import stats as store
from probefleet.controller.validation import ValidationError

DAY, HOUR = store.DAY, store.HOUR
PERIODS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
GRANULARITIES = {"5m": dt.timedelta(minutes=5), "1h": HOUR, "1d": DAY}
DEFAULT_GRANULARITY = {"24h": "5m", "7d": "1h", "30d": "1d", "90d": "1d"}
MAX_POINTS = 2016  # 7 days at 5 minutes
MAX_RANGE = 400 * DAY
SLA_FIELDS = (
    "monitor_id",
    "name",
    "uptime",
    "downtime_s",
    "incidents",
    "mttr_s",
    "mtbf_s",
    "rounds_up",
    "rounds_degraded",
    "rounds_down",
    "rounds_unknown",
    "rounds_excluded",
)


def _choice(request: web.Request, name: str, options: dict[str, Any], default: str) -> str:
    value = request.query.get(name, default)
    if value not in options:
        raise ValidationError({name: f"must be one of {', '.join(options)}"})
    return value


def _time(request: web.Request, name: str) -> dt.datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    candidates = [raw.replace("Z", "+00:00")]
    if " " in raw.strip():  # an unescaped '+' in a query string arrives as a space
        candidates.append(raw.strip()[::-1].replace(" ", "+", 1)[::-1])
    for text in candidates:
        try:
            dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        return parse_time(text, name)
    if (seconds := parse_int(raw, 0, 10**11 - 1)) is not None:
        t = dt.datetime.fromtimestamp(seconds, dt.UTC)
        check_time(t, name)
        return t
    raise ValidationError({name: "must be an ISO 8601 time or Unix seconds"})


def _range(request: web.Request, default: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    now = now_utc()
    end = _time(request, "to") or now
    start = _time(request, "from") or end - default
    errors: dict[str, object] = {}
    if start >= end:
        errors["from"] = "must be before to"
    elif end - start > MAX_RANGE:
        errors["to"] = f"range longer than {MAX_RANGE.days} days"
    if errors:
        raise ValidationError(errors)
    return start, min(end, now + DAY)


def _points_check(start: dt.datetime, end: dt.datetime, step: dt.timedelta, name: str) -> None:
    if (end - start) / step > MAX_POINTS:
        raise ValidationError({name: f"too fine for the range: at most {MAX_POINTS} points"})


async def _monitor(pool: DB, request: web.Request, name: str) -> dict[str, Any]:
    monitor_id = path_id(request, name, what="monitor")
    row = await monitor_store.get_name(pool, monitor_id)
    if row is None:
        raise not_found("monitor")
    return row


def _incidents(rows: list[Any]) -> dict[str, Any]:
    downtime = sum((r["b"] - r["a"]).total_seconds() for r in rows)
    resolved = [(r["resolved_at"] - r["started_at"]).total_seconds() for r in rows if r["resolved_at"]]
    return {
        "count": len(rows),
        "total_downtime": round(downtime, 3),
        "mttr": round(sum(resolved) / len(resolved), 3) if resolved else None,
    }


async def _report(
    pool: DB, monitor_id: int, start: dt.datetime, end: dt.datetime, step: dt.timedelta
) -> dict[str, Any]:
    marks = await store.watermarks(pool)
    s = await store.summary(pool, monitor_id, start, end, marks)
    total: store.Checks = s["total"]
    verdicts: store.Verdicts = s["verdicts"]
    regions = []
    for region, c in s["regions"].items():
        regions.append(
            {
                "region": region,
                "uptime": round(100.0 * (c.checks - c.failures) / c.checks, 4) if c.checks else None,
                **c.public(),
            }
        )
    return {
        "monitor_id": monitor_id,
        "from": start,
        "to": end,
        "uptime_percentage": verdicts.uptime,
        **total.public(),
        "percentile_relative_error": round(store.RELATIVE_ERROR, 4),
        "rounds": {
            "up": verdicts.up,
            "degraded": verdicts.degraded,
            "down": verdicts.down,
            "unknown": verdicts.unknown,
            "excluded": verdicts.excluded,
        },
        "incidents": _incidents(await store.incidents_in(pool, [monitor_id], start, end)),
        "regions": regions,
        "granularity": _label(step),
        "series": await store.series(pool, monitor_id, start, end, step, marks),
    }


def _label(step: dt.timedelta) -> str:
    return next((k for k, v in GRANULARITIES.items() if v == step), f"{int(step.total_seconds())}s")


async def monitor_stats(request: web.Request) -> web.Response:
    """Uptime per window, response times, incidents and checks, per region, over a period."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor = await _monitor(pool, request, "id")
    period = _choice(request, "period", PERIODS, "24h")
    granularity = _choice(request, "granularity", GRANULARITIES, DEFAULT_GRANULARITY[period])
    end = now_utc()
    start = end - PERIODS[period]
    _points_check(start, end, GRANULARITIES[granularity], "granularity")
    report = await _report(pool, monitor["id"], start, end, GRANULARITIES[granularity])
    windows = await store.uptimes(pool, [monitor["id"]], end, windows=PERIODS)
    return ok(
        {
            "period": period,
            "uptime": windows[monitor["id"]] | {"period": report["uptime_percentage"]},
            **report,
        }
    )


async def monitor_analytics(request: web.Request) -> web.Response:
    """The same over any range, with a time series."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    monitor = await _monitor(pool, request, "monitor_id")
    start, end = _range(request, DAY)
    raw = request.query.get("granularity")
    if raw is not None:
        step = GRANULARITIES[_choice(request, "granularity", GRANULARITIES, "1h")]
        _points_check(start, end, step, "granularity")
    else:
        span = end - start
        step = GRANULARITIES["5m"] if span <= 2 * DAY else HOUR if span <= 60 * DAY else DAY
    return ok(await _report(pool, monitor["id"], start, end, step))


async def sla_report(request: web.Request) -> web.Response:
    """Per monitor: uptime, downtime, incidents, MTTR and MTBF over [from, to)."""
    await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    fmt = _choice(request, "format", {"json": 1, "csv": 1}, "json")
    start, end = _range(request, 30 * DAY)
    monitors = await monitor_store.list_names(pool)
    ids = [m["id"] for m in monitors]
    marks = await store.watermarks(pool)
    verdicts = {i: store.Verdicts() for i in ids}
    for r in await store.verdict_rows(pool, ids, store.pieces(start, end, marks)):
        verdicts[r["monitor_id"]].add(r)
    incidents: dict[int, list[Any]] = {i: [] for i in ids}
    for r in await store.incidents_in(pool, ids, start, end):
        incidents[r["monitor_id"]].append(r)
    span = (end - start).total_seconds()
    items = []
    for m in monitors:
        v, inc = verdicts[m["id"]], _incidents(incidents[m["id"]])
        items.append(
            {
                "monitor_id": m["id"],
                "name": m["name"],
                "uptime": v.uptime,
                "downtime_s": inc["total_downtime"],
                "incidents": inc["count"],
                "mttr_s": inc["mttr"],
                "mtbf_s": round((span - inc["total_downtime"]) / inc["count"], 3) if inc["count"] else None,
                "rounds_up": v.up,
                "rounds_degraded": v.degraded,
                "rounds_down": v.down,
                "rounds_unknown": v.unknown,
                "rounds_excluded": v.excluded,
            }
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=SLA_FIELDS)
        writer.writeheader()
        writer.writerows(items)
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="sla.csv"'},
        )
    return ok({"from": start, "to": end, "monitors": items}, meta={"count": len(items)})
