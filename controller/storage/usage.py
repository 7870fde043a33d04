"""What this installation holds, counted for GET /api/v1/subscription."""

from __future__ import annotations

from probefleet.controller.storage import DB


async def counts(conn: DB) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM monitors) AS monitors,"
        " (SELECT count(*) FROM monitors WHERE kind = 'heartbeat') AS heartbeats,"
        " (SELECT count(*) FROM status_pages) AS status_pages,"
        " (SELECT count(*) FROM notification_channels) AS notification_channels,"
        " (SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
        "   AND (expires_at IS NULL OR expires_at > now())) AS api_keys"
    )
    assert row is not None
    return {k: int(v) for k, v in row.items()}
