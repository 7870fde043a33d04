"""The fleet-state gauges: one refresh reads the database's monitors, open incidents,
overdue heartbeats, queued deliveries and outbox; a running controller serves them (with
process and build metrics, without `_created` series) and keeps them current."""

from __future__ import annotations

import datetime as dt
import json

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from probefleet.controller import metrics
from probefleet.controller.state_metrics import refresh
from tests.controller.conftest import start_controller
from tests.helpers import eventually

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def monitor(pool: asyncpg.Pool, name: str, kind: str, status: str) -> int:
    spec = {"url": "http://127.0.0.1:1/"} if kind == "http" else {}
    mid: int = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, status)"
        " VALUES ($1, $2, $3::jsonb, 60, 5, '{us-east}', $4) RETURNING id",
        name,
        kind,
        json.dumps(spec),
        status,
    )
    return mid


async def test_it_reads_the_fleet_state_into_the_gauges(pool: asyncpg.Pool) -> None:
    up = [await monitor(pool, f"up{i}", "http", "up") for i in range(3)]
    down = await monitor(pool, "down", "http", "down")
    await monitor(pool, "paused", "tcp", "paused")
    hb_late = await monitor(pool, "hb-late", "heartbeat", "up")
    hb_fine = await monitor(pool, "hb-fine", "heartbeat", "up")
    for mid, deadline in ((hb_late, NOW - dt.timedelta(seconds=5)), (hb_fine, NOW + dt.timedelta(minutes=5))):
        await pool.execute(
            "INSERT INTO heartbeats (monitor_id, anchor_at, deadline) VALUES ($1, $2, $3)", mid, NOW, deadline
        )
    for mid, severity, status in (
        (down, "high", "active"),
        (up[0], "low", "acknowledged"),
        (up[1], "high", "resolved"),
    ):
        await pool.execute(
            "INSERT INTO incidents (monitor_id, severity, status, title, started_at)"
            " VALUES ($1, $2, $3, 't', $4)",
            mid,
            severity,
            status,
            NOW,
        )
    channel = await pool.fetchval(
        "INSERT INTO notification_channels (kind, name, config) VALUES ('webhook', 'hook', '{}') RETURNING id"
    )
    for seq, status in enumerate(("pending", "failed", "failed", "delivered")):
        await pool.execute(
            "INSERT INTO deliveries (event_id, channel_id, seq, status) VALUES (NULL, $1, $2, $3)",
            channel,
            seq,
            status,
        )
    await pool.execute(
        "UPDATE dispatcher_cursor SET last_event_id = (SELECT COALESCE(max(id), 0) FROM events)"
    )
    for minutes in (3, 1):
        await pool.execute(
            "INSERT INTO events (kind, monitor_id, occurred_at) VALUES ('monitor.down', $1, $2)",
            down,
            NOW - dt.timedelta(minutes=minutes),
        )

    await refresh(pool, NOW)

    assert gauge("probefleet_monitors", kind="http", status="up") == 3
    assert gauge("probefleet_monitors", kind="http", status="down") == 1
    assert gauge("probefleet_monitors", kind="tcp", status="paused") == 1
    assert gauge("probefleet_monitors", kind="heartbeat", status="up") == 2
    assert gauge("probefleet_incidents_open", severity="high") == 1
    assert gauge("probefleet_incidents_open", severity="low") == 1
    assert gauge("probefleet_heartbeats_overdue") == 1
    assert gauge("probefleet_notification_deliveries_queued", kind="webhook", status="pending") == 1
    assert gauge("probefleet_notification_deliveries_queued", kind="webhook", status="failed") == 2
    assert gauge("probefleet_notification_deliveries_queued", kind="webhook", status="delivered") is None
    assert gauge("probefleet_outbox_events_pending") == 2
    assert gauge("probefleet_outbox_lag_seconds") == 180
    assert gauge("probefleet_state_metrics_timestamp_seconds") == NOW.timestamp()

    # A status no monitor has any more disappears instead of keeping its last count.
    await pool.execute("UPDATE monitors SET status = 'up' WHERE id = $1", down)
    await pool.execute("UPDATE dispatcher_cursor SET last_event_id = (SELECT max(id) FROM events)")
    await refresh(pool, NOW)
    assert gauge("probefleet_monitors", kind="http", status="down") is None
    assert gauge("probefleet_monitors", kind="http", status="up") == 4
    assert gauge("probefleet_outbox_lag_seconds") == 0


async def test_a_running_controller_serves_them_with_process_and_build_metrics(
    database: str, nats_url: str
) -> None:
    running = await start_controller(database, nats_url, state_metrics_interval=0.2)
    try:
        headers = {"Authorization": f"Bearer {running.admin_key}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            body = {"name": "web", "kind": "http", "url": "http://127.0.0.1:1/", "locations": ["us-east"]}
            async with s.post(f"{running.base}/api/v1/monitors", json=body) as r:
                assert r.status == 201, await r.text()

            async def scrape() -> dict[str, float]:
                async with s.get(f"{running.base}/metrics") as r:
                    text = await r.text()
                return {
                    f"{x.name}{sorted(x.labels.items())}": x.value
                    for f in text_string_to_metric_families(text)
                    for x in f.samples
                }

            async def counted() -> dict[str, float] | None:
                found = await scrape()
                key = "probefleet_monitors[('kind', 'http'), ('status', 'pending')]"
                return found if found.get(key) == 1 else None

            found = await eventually(counted, timeout=10)
    finally:
        await running.stop()
    names = {key.split("[")[0] for key in found}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert not [n for n in names if n.endswith("_created")]
    [build] = [k for k in found if k.startswith("probefleet_build_info")]
    assert "'version'" in build and "'commit'" in build and found[build] == 1
