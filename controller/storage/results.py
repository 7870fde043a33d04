"""SQL for raw results and rounds. Inserts are idempotent: a redelivered result is
ignored by the primary key, and only newly stored results count toward a round."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from probefleet.controller.storage import DB, Tx
from probefleet.shared.wire import CheckResult

Key = tuple[int, dt.datetime, int]  # monitor_id, due, attempt

_json = msgspec.json.Encoder()


def ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def insert_results(conn: Tx, results: list[CheckResult]) -> list[tuple[int, dt.datetime, int, str]]:
    """Store results; return the (monitor_id, due, attempt, region) of those newly stored."""
    rows = await conn.fetch(
        "INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status, reason,"
        " message, started_at, duration_ms, status_code, timings, details)"
        " SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::smallint[],"
        " $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::real[],"
        " $11::smallint[], $12::text[]::jsonb[], $13::text[]::jsonb[])"
        " ON CONFLICT DO NOTHING RETURNING monitor_id, due, attempt, region",
        [r.monitor_id for r in results],
        [ts(r.due) for r in results],
        [r.region for r in results],
        [r.attempt for r in results],
        [r.probe_id for r in results],
        [str(r.status) for r in results],
        [str(r.reason) if r.reason else None for r in results],
        [r.message[:2000] for r in results],
        [ts(r.started_at) for r in results],
        [r.duration_ms for r in results],
        [r.status_code for r in results],
        [_json.encode(r.timings).decode() if r.timings else None for r in results],
        [_json.encode(r.details).decode() if r.details else None for r in results],
    )
    return [(r["monitor_id"], r["due"], r["attempt"], r["region"]) for r in rows]


async def insert_rounds(
    conn: DB,
    rounds: list[tuple[int, dt.datetime, int, list[str], dt.datetime]],
) -> set[Key]:
    """Open rounds: (monitor_id, due, attempt, expected regions, deadline).

    Returns the keys of the rounds this call created: a round another
    controller opened first is not ours to publish.
    """
    if not rounds:
        return set()
    rows = await conn.fetch(
        "INSERT INTO rounds (monitor_id, due, attempt, regions, deadline)"
        " SELECT m, d, a, string_to_array(r, ','), dl FROM unnest($1::bigint[],"
        " $2::timestamptz[], $3::smallint[], $4::text[], $5::timestamptz[]) AS t(m, d, a, r, dl)"
        " ON CONFLICT DO NOTHING RETURNING monitor_id, due, attempt",
        [r[0] for r in rounds],
        [r[1] for r in rounds],
        [r[2] for r in rounds],
        [",".join(r[3]) for r in rounds],
        [r[4] for r in rounds],
    )
    return {(r["monitor_id"], r["due"], r["attempt"]) for r in rows}


async def answer_rounds(conn: Tx, stored: list[tuple[int, dt.datetime, int, str]]) -> list[dict[str, Any]]:
    """Record which regions answered and close, in the same statement, the open rounds every
    expected region has now answered; return those this call closed.

    One UPDATE per batch rather than one to record and one to close: a round is written once
    for its answers, not twice. It stays a compare-and-set: only a round still open is
    touched, and two controllers storing answers of one round queue on its row lock, so the
    second sees the first one's answers (and its close) before deciding whether to close.

    The closed rounds' answers are read by a statement of their own (`results_for`), not
    joined in here: this statement's snapshot is taken before it waits for that row lock,
    so it would miss the answers the other controller had just committed."""
    if not stored:
        return []
    rows = await conn.fetch(
        "WITH a AS (SELECT m, d, a, array_agg(DISTINCT r) AS regions FROM unnest($1::bigint[],"
        " $2::timestamptz[], $3::smallint[], $4::text[]) AS t(m, d, a, r) GROUP BY m, d, a)"
        " UPDATE rounds SET answered = rounds.answered || a.regions,"
        " closed_at = CASE WHEN rounds.regions <@ (rounds.answered || a.regions) THEN now() END FROM a"
        " WHERE rounds.monitor_id = a.m AND rounds.due = a.d AND rounds.attempt = a.a"
        " AND rounds.closed_at IS NULL"
        " RETURNING rounds.monitor_id, rounds.due, rounds.attempt, rounds.regions,"
        " rounds.closed_at IS NOT NULL AS closed",
        [s[0] for s in stored],
        [s[1] for s in stored],
        [s[2] for s in stored],
        [s[3] for s in stored],
    )
    return [
        {"monitor_id": r["monitor_id"], "due": r["due"], "attempt": r["attempt"], "regions": r["regions"]}
        for r in rows
        if r["closed"]
    ]


async def close_expired(conn: Tx, now: dt.datetime, limit: int = 5000) -> list[dict[str, Any]]:
    """Close rounds whose deadline passed; SKIP LOCKED lets controllers share the sweep."""
    rows = await conn.fetch(
        "WITH due AS (SELECT monitor_id, due, attempt FROM rounds"
        " WHERE closed_at IS NULL AND deadline < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " UPDATE rounds SET closed_at = now() FROM due WHERE rounds.monitor_id = due.monitor_id"
        " AND rounds.due = due.due AND rounds.attempt = due.attempt"
        " RETURNING rounds.monitor_id, rounds.due, rounds.attempt, rounds.regions",
        now,
        limit,
    )
    return [dict(r) for r in rows]


async def results_for(conn: Tx, keys: list[Key]) -> list[dict[str, Any]]:
    """The stored results of these rounds, each round looked up by the primary key.

    A plain join with the unnest let the generic plan of the prepared statement (used
    after a few runs) hash the keys and read the whole day's partition instead: the profile
    of 1,000 monitors showed 1.1 million rows read per 1,000 checks, a cost that grows all
    day as the partition fills. The LATERAL subquery with OFFSET 0 is not pulled up into a
    join, so each key is one index probe whatever the statistics say."""
    if not keys:
        return []
    rows = await conn.fetch(
        "SELECT c.monitor_id, c.due, c.attempt, c.region, c.status, c.reason, c.message,"
        " c.duration_ms, c.status_code FROM unnest($1::bigint[], $2::timestamptz[], $3::smallint[])"
        " AS k(m, d, a) CROSS JOIN LATERAL (SELECT * FROM check_results c WHERE c.monitor_id = k.m"
        " AND c.due = k.d AND c.attempt = k.a OFFSET 0) c",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return [dict(r) for r in rows]


async def set_verdicts(conn: Tx, verdicts: list[tuple[Key, str]]) -> None:
    if not verdicts:
        return
    await conn.execute(
        "UPDATE rounds SET verdict = v FROM unnest($1::bigint[], $2::timestamptz[],"
        " $3::smallint[], $4::text[]) AS k(m, d, a, v) WHERE rounds.monitor_id = k.m"
        " AND rounds.due = k.d AND rounds.attempt = k.a",
        [k[0][0] for k in verdicts],
        [k[0][1] for k in verdicts],
        [k[0][2] for k in verdicts],
        [k[1] for k in verdicts],
    )


async def recent(
    conn: DB,
    monitor_id: int,
    *,
    limit: int = 100,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    region: str | None = None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT due, region, attempt, probe_id, status, reason, message, started_at,"
        " duration_ms, status_code, timings FROM check_results WHERE monitor_id = $1"
        " AND ($2::timestamptz IS NULL OR due >= $2) AND ($3::timestamptz IS NULL OR due < $3)"
        " AND ($4::text IS NULL OR region = $4) ORDER BY due DESC, region LIMIT $5",
        monitor_id,
        since,
        until,
        region,
        limit,
    )
    return [dict(r) for r in rows]


# ---- the status endpoint: last result per region and a window's counts -----------------


async def last_per_region(conn: DB, monitor_id: int, since: dt.datetime) -> list[dict[str, Any]]:
    """The newest result of each region since `since`, as the status endpoint names its fields."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (region) region, due AS checked_at, attempt, probe_id, status, reason,"
        " message, duration_ms AS response_time_ms, status_code FROM check_results"
        " WHERE monitor_id = $1 AND due >= $2 ORDER BY region, due DESC, attempt DESC",
        monitor_id,
        since,
    )
    return [dict(r) for r in rows]
