"""A diagnosis (attempt DIAGNOSTIC_ATTEMPT) is stored with the raw results but is no verdict
on the target: it is `ok` whenever it ran. The per-region views (the status endpoint's
list, the console's region matrix and its region filter) show the newest check, not it."""

from __future__ import annotations

import datetime as dt

import asyncpg

from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT
from probefleet.controller.storage import console
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import results as result_store


async def test_the_region_views_show_the_failing_check_not_the_later_diagnosis(pool: asyncpg.Pool) -> None:
    mid = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " VALUES ('m', 'http', $1::jsonb, 60, 5, $2) RETURNING id",
        '{"type": "http", "url": "http://127.0.0.1:1/"}',
        ["us-east"],
    )
    now = dt.datetime.now(dt.UTC)
    for due, attempt, status in ((now - dt.timedelta(seconds=5), 0, "fail"), (now, DIAGNOSTIC_ATTEMPT, "ok")):
        await pool.execute(
            "INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status, started_at,"
            " duration_ms) VALUES ($1, $2, 'us-east', $3, 'p1', $4, $2, 1.0)",
            mid,
            due,
            attempt,
            status,
        )
    since = now - dt.timedelta(hours=1)
    async with pool.acquire() as conn:
        [last] = await result_store.last_per_region(conn, mid, since)
        assert (last["status"], last["attempt"]) == ("fail", 0)
        assert await console.region_matrix(conn, [mid], since) == {mid: {"us-east": "fail"}}
        failing = monitor_store.Filters(region_state=("us-east", "fail", since))
        passing = monitor_store.Filters(region_state=("us-east", "ok", since))
        assert [m["id"] for m in await monitor_store.list_filtered(conn, failing)] == [mid]
        assert await monitor_store.list_filtered(conn, passing) == []
