"""SQL for the probes table: the last heartbeat of each live probe."""

from __future__ import annotations

from probefleet.controller.storage import DB
from probefleet.controller.storage.results import ts
from probefleet.shared.wire import ProbeHeartbeat


async def save(conn: DB, live: list[ProbeHeartbeat]) -> None:
    if not live:
        return
    await conn.execute(
        "INSERT INTO probes (id, region, version, concurrency, in_flight, source_address,"
        " started_at, last_seen) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::int[], $5::int[], $6::text[], $7::timestamptz[], $8::timestamptz[])"
        " ON CONFLICT (id) DO UPDATE SET region = excluded.region, version = excluded.version,"
        " concurrency = excluded.concurrency, in_flight = excluded.in_flight,"
        " source_address = excluded.source_address, last_seen = excluded.last_seen",
        [p.probe_id for p in live],
        [p.region for p in live],
        [p.version for p in live],
        [p.concurrency for p in live],
        [p.in_flight for p in live],
        [p.source_address for p in live],
        [ts(p.started_at) for p in live],
        [ts(p.sent_at) for p in live],
    )
