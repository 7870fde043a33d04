"""SQL for the monitors aggregate."""

from __future__ import annotations

from typing import Any

from controller.monitors import MonitorConfig, spec_json
from controller.storage import DB

Row = dict[str, Any]

COLUMNS = (
    "id, name, kind, spec, interval_s, timeout_s, locations, consensus, quorum, retry_count,"
    " recovery_count, enabled, tags, extra, created_at, updated_at, status, status_changed_at,"
    " last_round, last_check, last_success, last_failure, response_time_ms, fail_streak,"
    " pass_streak, parent_id, incident_on_degraded, notifications"
)


async def insert(conn: DB, cfg: MonitorConfig) -> Row:
    row = await conn.fetchrow(
        f"INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, consensus,"
        f" quorum, retry_count, recovery_count, enabled, tags, status, parent_id, incident_on_degraded,"
        f" notifications)"
        f" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,"
        f" CASE WHEN $11 THEN 'pending' ELSE 'paused' END, $13, $14, $15) RETURNING {COLUMNS}",
        cfg.name, cfg.kind, spec_json(cfg.spec), cfg.interval_s, cfg.timeout_s, cfg.locations,
        cfg.consensus, cfg.quorum, cfg.retry_count, cfg.recovery_count, cfg.enabled, cfg.tags,
        cfg.parent_id, cfg.incident_on_degraded, cfg.notifications,
    )  # fmt: skip
    assert row is not None
    return dict(row)


async def update(conn: DB, monitor_id: int, cfg: MonitorConfig) -> Row | None:
    row = await conn.fetchrow(
        f"UPDATE monitors SET name=$2, kind=$3, spec=$4, interval_s=$5, timeout_s=$6,"
        f" locations=$7, consensus=$8, quorum=$9, retry_count=$10, recovery_count=$11,"
        f" enabled=$12, tags=$13, parent_id=$14, incident_on_degraded=$15, notifications=$16,"
        f" updated_at=now(),"
        f" status = CASE WHEN NOT $12 THEN 'paused' WHEN status='paused' THEN 'pending'"
        f"   ELSE status END"
        f" WHERE id=$1 RETURNING {COLUMNS}",
        monitor_id, cfg.name, cfg.kind, spec_json(cfg.spec), cfg.interval_s, cfg.timeout_s,
        cfg.locations, cfg.consensus, cfg.quorum, cfg.retry_count, cfg.recovery_count,
        cfg.enabled, cfg.tags, cfg.parent_id, cfg.incident_on_degraded, cfg.notifications,
    )  # fmt: skip
    return dict(row) if row else None


async def get(conn: DB, monitor_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM monitors WHERE id=$1", monitor_id)
    return dict(row) if row else None


async def get_many(conn: DB, ids: list[int]) -> list[Row]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM monitors WHERE id = ANY($1)", ids)
    return [dict(r) for r in rows]


async def delete(conn: DB, monitor_id: int) -> bool:
    return await conn.fetchval("DELETE FROM monitors WHERE id=$1 RETURNING id", monitor_id) is not None


async def list_page(
    conn: DB, *, after_id: int = 0, limit: int = 50,
    status: str | None = None, kind: str | None = None,
) -> list[Row]:  # fmt: skip
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM monitors WHERE id > $1"
        f" AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR kind = $3)"
        f" ORDER BY id LIMIT $4",
        after_id, status, kind, limit,
    )  # fmt: skip
    return [dict(r) for r in rows]


async def all_schedulable(conn: DB) -> list[Row]:
    """Every enabled monitor with what the scheduler needs."""
    rows = await conn.fetch(
        "SELECT id, kind, spec, interval_s, timeout_s, locations, updated_at"
        " FROM monitors WHERE enabled AND kind <> 'heartbeat'"
    )
    return [dict(r) for r in rows]
