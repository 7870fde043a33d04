"""SQL for raw results and rounds. Inserts are idempotent: a redelivered result is
ignored by the primary key, and only newly stored results count toward a round."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from probefleet.controller.storage import DB, Tx
from probefleet.shared.evidence import to_stored
from probefleet.shared.wire import CheckResult

Key = tuple[int, dt.datetime, int]  # monitor_id, due, attempt

_json = msgspec.json.Encoder()


def ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


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


# The columns of a stored result that consensus reads.
ANSWER_COLUMNS = "monitor_id, due, attempt, region, status, reason, message, duration_ms"

# The monitor columns a verdict needs (state, rule, what events name).
VERDICT_COLUMNS = (
    "id, status, fail_streak, pass_streak, retry_count, recovery_count, consensus, quorum,"
    " name, kind, spec, interval_s, timeout_s, locations, tags, parent_id, incident_on_degraded,"
    " fail_since, unavailable_regions"
)

# The tail of the statements that close rounds: from `closed` (the rounds closed, with
# what they expected and who answered) and `answers` (their stored results), one row per
# closed round with its answers as arrays, its monitor's row locked for the verdict (in id
# order, so concurrent batches cannot deadlock on monitors) and the enabled maintenance
# windows that apply to it.
_CLOSED_TAIL = (
    " m AS (SELECT " + VERDICT_COLUMNS + ", ARRAY(SELECT w FROM maintenance_windows w WHERE w.enabled"
    " AND (monitors.id = ANY(w.monitor_ids) OR w.tags && monitors.tags)) AS windows FROM monitors"
    " WHERE id IN (SELECT monitor_id FROM closed) ORDER BY id FOR UPDATE),"
    " done AS (SELECT k.monitor_id, k.due, k.attempt, k.regions, k.answered,"
    " array_agg(x.region) FILTER (WHERE x.region IS NOT NULL) AS a_region,"
    " array_agg(x.status) FILTER (WHERE x.region IS NOT NULL) AS a_status,"
    " array_agg(x.reason) FILTER (WHERE x.region IS NOT NULL) AS a_reason,"
    " array_agg(x.message) FILTER (WHERE x.region IS NOT NULL) AS a_message,"
    " array_agg(x.duration_ms) FILTER (WHERE x.region IS NOT NULL) AS a_duration_ms"
    " FROM closed k LEFT JOIN answers x ON x.monitor_id = k.monitor_id AND x.due = k.due"
    " AND x.attempt = k.attempt GROUP BY k.monitor_id, k.due, k.attempt, k.regions, k.answered)"
)
# The stored answers of the closed rounds, one primary-key probe per round (see results_for).
_STORED_ANSWERS = (
    "SELECT c.* FROM closed k CROSS JOIN LATERAL (SELECT " + ANSWER_COLUMNS + " FROM check_results c"
    " WHERE c.monitor_id = k.monitor_id AND c.due = k.due AND c.attempt = k.attempt OFFSET 0) c"
)
_DONE_COLUMNS = "done.monitor_id, done.due, done.attempt, done.regions, done.answered, done.a_region,"
_DONE_COLUMNS += " done.a_status, done.a_reason, done.a_message, done.a_duration_ms, m.*"


def _closed_rounds(rows: list[Any]) -> list[dict[str, Any]]:
    """Closed rounds from the rows of a statement ending in `_CLOSED_TAIL`: each with its
    `answers` (dicts of ANSWER_COLUMNS) and its `monitor` (None once deleted). Rounds of one
    monitor share one monitor dict, so a verdict applied to it is seen by the next round."""
    monitors: dict[int, dict[str, Any] | None] = {}
    closed = []
    for r in rows:
        if r["monitor_id"] is None:  # the row that only counts results stored
            continue
        key = (r["monitor_id"], r["due"], r["attempt"])
        if r["monitor_id"] not in monitors:
            monitors[r["monitor_id"]] = None
            if r["id"] is not None:
                monitor = {c: r[c] for c in _MONITOR_KEYS}
                monitor["windows"] = [dict(w) for w in r["windows"] or ()]
                monitors[r["monitor_id"]] = monitor
        answers = [
            {"monitor_id": key[0], "due": key[1], "attempt": key[2], "region": region, "status": status}
            | {"reason": reason, "message": message, "duration_ms": duration}
            for region, status, reason, message, duration in zip(
                r["a_region"] or (),
                r["a_status"] or (),
                r["a_reason"] or (),
                r["a_message"] or (),
                r["a_duration_ms"] or (),
                strict=True,
            )
        ]
        closed.append(
            {
                "monitor_id": key[0],
                "due": key[1],
                "attempt": key[2],
                "regions": r["regions"],
                "answered": r["answered"],
                "answers": answers,
                "monitor": monitors[r["monitor_id"]],
            }
        )
    return closed


_MONITOR_KEYS = tuple(c.strip() for c in VERDICT_COLUMNS.split(","))


class Stored(msgspec.Struct, frozen=True):
    """What `store_batch` did: how many results it newly stored, the rounds it closed."""

    count: int
    closed: list[dict[str, Any]]


async def store_batch(conn: Tx, results: list[CheckResult]) -> Stored:
    """Store results, record which regions answered, close the open rounds every expected
    region has now answered and read what their verdicts need: one statement.

    Inserts are idempotent (`ON CONFLICT DO NOTHING`) and only the results newly stored
    count as answers, so a redelivered batch stores and closes nothing. Closing is a
    compare-and-set: only a round still open is touched, and two controllers storing answers
    of one round queue on its row lock, so the second sees the first one's answers (and its
    close) before deciding whether to close.

    A closed round's `answers` are this batch's results and those the statement's snapshot
    shows. When a round's row was updated by a transaction that committed after that
    snapshot was taken (another controller storing another region's answer at the same
    moment: the row lock made us wait for it), its answers are in `answered` but not in the
    snapshot; `missing_answers` finds such rounds, and `results_for` (a new snapshot) reads
    them.

    A result's evidence (details["evidence"], on failed results) goes to its own column as
    msgpack bytes (`_split`), in the same row: stored, deduplicated and dropped with it."""
    split = [_split(r.details) for r in results]
    rows = await conn.fetch(
        "WITH new AS (INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status,"
        " reason, message, started_at, duration_ms, status_code, timings, details, evidence)"
        " SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::smallint[],"
        " $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::real[],"
        " $11::smallint[], $12::text[]::jsonb[], $13::text[]::jsonb[], $14::bytea[])"
        " ON CONFLICT DO NOTHING RETURNING " + ANSWER_COLUMNS + "),"
        " a AS (SELECT monitor_id AS m, due AS d, attempt AS a, array_agg(DISTINCT region) AS regions"
        " FROM new GROUP BY 1, 2, 3),"
        " touched AS (UPDATE rounds SET answered = rounds.answered || a.regions,"
        " closed_at = CASE WHEN rounds.regions <@ (rounds.answered || a.regions) THEN now() END FROM a"
        " WHERE rounds.monitor_id = a.m AND rounds.due = a.d AND rounds.attempt = a.a"
        " AND rounds.closed_at IS NULL RETURNING rounds.monitor_id, rounds.due, rounds.attempt,"
        " rounds.regions, rounds.answered, rounds.closed_at IS NOT NULL AS closed),"
        " closed AS (SELECT * FROM touched WHERE closed),"
        " answers AS (SELECT n.* FROM new n JOIN closed k ON n.monitor_id = k.monitor_id"
        " AND n.due = k.due AND n.attempt = k.attempt UNION ALL "
        + _STORED_ANSWERS
        + "),"
        + _CLOSED_TAIL
        + " SELECT s.stored, "
        + _DONE_COLUMNS
        + " FROM (SELECT count(*) AS stored FROM new) s"
        " LEFT JOIN (done LEFT JOIN m ON m.id = done.monitor_id) ON true",
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
        [_json.encode(rest).decode() if rest else None for rest, _ in split],
        [evidence for _, evidence in split],
    )
    return Stored(count=rows[0]["stored"] if rows else 0, closed=_closed_rounds(rows))


def _split(details: dict[str, object]) -> tuple[dict[str, object], bytes | None]:
    """A result's details without its evidence, and the evidence as check_results.evidence
    holds it (shared/evidence.py `to_stored`): msgpack bytes, the body as its gzip bytes (an
    older probe's base64 decoded). The bytea column is stored out of line as it is (STORAGE
    EXTERNAL): the body is compressed already, and the rest is small. As JSON inside
    details, PostgreSQL parsed every failed result's evidence, built its jsonb and tried
    pglz on it in the ingest transaction, for base64 that does not compress."""
    evidence = details.get("evidence")
    if not isinstance(evidence, dict):
        return details, None
    return {k: v for k, v in details.items() if k != "evidence"}, to_stored(evidence)


def missing_answers(closed: list[dict[str, Any]]) -> list[Key]:
    """The closed rounds whose `answered` names a region whose answer is not in `answers`."""
    return [
        (c["monitor_id"], c["due"], c["attempt"])
        for c in closed
        if set(c["answered"] or ()) - {a["region"] for a in c["answers"]}
    ]


class Expired(msgspec.Struct, frozen=True):
    """What `close_expired` did: the rounds it closed, and the earliest deadline of the
    rounds still open that had not passed (None: no such round)."""

    closed: list[dict[str, Any]]
    next_deadline: dt.datetime | None


async def close_expired(conn: Tx, now: dt.datetime, limit: int = 5000) -> Expired:
    """Close rounds whose deadline is before `now` (SKIP LOCKED lets controllers share the
    sweep) and read what their verdicts need, in one statement, as `store_batch` does."""
    rows = await conn.fetch(
        "WITH due AS (SELECT monitor_id, due, attempt FROM rounds"
        " WHERE closed_at IS NULL AND deadline < $1 LIMIT $2 FOR UPDATE SKIP LOCKED),"
        " closed AS (UPDATE rounds SET closed_at = now() FROM due WHERE rounds.monitor_id = due.monitor_id"
        " AND rounds.due = due.due AND rounds.attempt = due.attempt"
        " RETURNING rounds.monitor_id, rounds.due, rounds.attempt, rounds.regions, rounds.answered),"
        " answers AS ("
        + _STORED_ANSWERS
        + "),"
        + _CLOSED_TAIL
        + " SELECT s.next_deadline, "
        + _DONE_COLUMNS
        + " FROM (SELECT min(deadline) AS next_deadline"
        " FROM rounds WHERE closed_at IS NULL AND deadline >= $1) s"
        " LEFT JOIN (done LEFT JOIN m ON m.id = done.monitor_id) ON true",
        now,
        limit,
    )
    return Expired(closed=_closed_rounds(rows), next_deadline=rows[0]["next_deadline"] if rows else None)


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


async def write_verdicts(
    conn: Tx,
    quiet: list[tuple[int, dt.datetime, str, int, int, float | None]],
    verdicts: list[tuple[Key, str]],
    now: dt.datetime,
) -> set[int]:
    """In one statement: the monitor updates of quiet rounds (monitor id, due, status, fail
    and pass streaks, response time), with monitors.apply_verdict's compare-and-set (a paused
    monitor, or one a later round was applied to first, is skipped), and every closed
    round's verdict. The ids of the monitors written."""
    if not verdicts and not quiet:
        return set()
    rows = await conn.fetch(
        "WITH v AS (UPDATE rounds SET verdict = k.v FROM unnest($8::bigint[], $9::timestamptz[],"
        " $10::smallint[], $11::text[]) AS k(m, d, a, v) WHERE rounds.monitor_id = k.m"
        " AND rounds.due = k.d AND rounds.attempt = k.a)"
        " UPDATE monitors SET status = q.status, fail_streak = q.fs, pass_streak = q.ps,"
        " last_round = q.due, last_check = $7, last_success = $7,"
        " response_time_ms = COALESCE(q.rt, monitors.response_time_ms), fail_since = NULL"
        " FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::int[], $5::int[],"
        " $6::float8[]) AS q(id, due, status, fs, ps, rt)"
        " WHERE monitors.id = q.id AND monitors.status <> 'paused'"
        " AND (monitors.last_round IS NULL OR monitors.last_round < q.due) RETURNING monitors.id",
        [r[0] for r in quiet],
        [r[1] for r in quiet],
        [r[2] for r in quiet],
        [r[3] for r in quiet],
        [r[4] for r in quiet],
        [r[5] for r in quiet],
        now,
        [k[0][0] for k in verdicts],
        [k[0][1] for k in verdicts],
        [k[0][2] for k in verdicts],
        [k[1] for k in verdicts],
    )
    return {r["id"] for r in rows}


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
    """The newest result of each region since `since`, as the status endpoint names its fields.
    Diagnoses (attempt 2000, engine/diagnostics.DIAGNOSTIC_ATTEMPT) are left out: one is `ok`
    whenever it ran, and would show a region that sees the target fail as passing."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (region) region, due AS checked_at, attempt, probe_id, status, reason,"
        " message, duration_ms AS response_time_ms, status_code FROM check_results"
        " WHERE monitor_id = $1 AND due >= $2 AND attempt <> 2000 ORDER BY region, due DESC, attempt DESC",
        monitor_id,
        since,
    )
    return [dict(r) for r in rows]
