"""SQL for the monitors aggregate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import msgspec

from probefleet.controller.storage import DB, Tx, uptime_cache

Row = dict[str, Any]


class MonitorFields(Protocol):
    """The configured columns of a monitor row, as the monitors model validated them
    (controller/monitors/config.py MonitorConfig has these fields); read-only, so any
    kind of spec fits."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def spec(self) -> msgspec.Struct | None: ...
    @property
    def interval_s(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def locations(self) -> list[str]: ...
    @property
    def consensus(self) -> str: ...
    @property
    def quorum(self) -> int | None: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def recovery_count(self) -> int: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def incident_on_degraded(self) -> bool: ...
    @property
    def notifications(self) -> list[int | str]: ...
    @property
    def project(self) -> str | None: ...
    @property
    def escalation_policy(self) -> int | str | None: ...


def spec_json(spec: msgspec.Struct | None) -> dict[str, Any] | None:
    """The spec as stored in the monitors.spec column (with its kind tag)."""
    return None if spec is None else msgspec.to_builtins(spec)


COLUMNS = (
    "id, name, kind, spec, interval_s, timeout_s, locations, consensus, quorum, retry_count,"
    " recovery_count, enabled, tags, extra, created_at, updated_at, status, status_changed_at,"
    " last_round, last_check, last_success, last_failure, response_time_ms, fail_streak,"
    " pass_streak, parent_id, incident_on_degraded, project, paused_reason, paused_at, notifications,"
    " escalation_policy_id"
)


INSERT = (
    f"INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, consensus,"
    f" quorum, retry_count, recovery_count, enabled, tags, status, parent_id, incident_on_degraded,"
    f" project, paused_at, notifications, escalation_policy_id)"
    f" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,"
    f" CASE WHEN $11 THEN 'pending' ELSE 'paused' END, $13, $14, $15,"
    f" CASE WHEN $11 THEN NULL ELSE now() END, $16, $17) RETURNING {COLUMNS}"
)


async def insert(conn: DB, cfg: MonitorFields) -> Row:
    row = await conn.fetchrow(INSERT, *_values(cfg))
    assert row is not None
    return dict(row)


async def insert_many(conn: Tx, cfgs: list[MonitorFields]) -> list[Row]:
    """Many monitors in one round trip (config as code: 5,000 one by one cost a
    millisecond each); the rows in the order given."""
    if not cfgs:
        return []
    return [dict(r) for r in await conn.fetchmany(INSERT, [_values(c) for c in cfgs])]


async def update(conn: DB, monitor_id: int, cfg: MonitorFields) -> Row | None:
    row = await conn.fetchrow(
        f"UPDATE monitors SET name=$2, kind=$3, spec=$4, interval_s=$5, timeout_s=$6,"
        f" locations=$7, consensus=$8, quorum=$9, retry_count=$10, recovery_count=$11,"
        f" enabled=$12, tags=$13, parent_id=$14, incident_on_degraded=$15, project=$16, notifications=$17,"
        f" escalation_policy_id=$18, updated_at=now(),"
        f" status = CASE WHEN NOT $12 THEN 'paused' WHEN status='paused' THEN 'pending'"
        f"   ELSE status END,"
        f" paused_at = CASE WHEN $12 THEN NULL ELSE coalesce(paused_at, now()) END,"
        f" paused_reason = CASE WHEN $12 THEN NULL ELSE paused_reason END"
        f" WHERE id=$1 RETURNING {COLUMNS}",
        monitor_id,
        *_values(cfg),
    )
    return dict(row) if row else None


def _values(cfg: MonitorFields) -> tuple[Any, ...]:
    """The configured columns in the order insert and update number them ($1.. / $2..)."""
    return (
        cfg.name,
        cfg.kind,
        spec_json(cfg.spec),
        cfg.interval_s,
        cfg.timeout_s,
        cfg.locations,
        cfg.consensus,
        cfg.quorum,
        cfg.retry_count,
        cfg.recovery_count,
        cfg.enabled,
        cfg.tags,
        cfg.parent_id,
        cfg.incident_on_degraded,
        cfg.project,
        cfg.notifications,
        _policy(cfg),
    )


def _policy(cfg: MonitorFields) -> int | None:
    """The escalation policy's rule id (the API resolves names first; see
    controller.api.notifications.resolve_references)."""
    return cfg.escalation_policy if isinstance(cfg.escalation_policy, int) else None


# The API's read: the row with its cached uptime counts (storage/uptime_cache.py) and its
# flap state (monitor_flaps, written by the dispatcher; no row: never flapped).
FLAP_COLUMNS = "coalesce(f.flapping, false) AS flapping, f.percent AS flap_percent"
FLAP_JOIN = "LEFT JOIN monitor_flaps f ON f.monitor_id = monitors.id"
WITH_UPTIMES = (
    f"SELECT {COLUMNS}, {uptime_cache.COLUMNS}, {FLAP_COLUMNS} FROM monitors {uptime_cache.JOIN} {FLAP_JOIN}"
)


async def get(conn: DB, monitor_id: int, *, with_uptimes: bool = False) -> Row | None:
    select = WITH_UPTIMES if with_uptimes else f"SELECT {COLUMNS} FROM monitors"
    row = await conn.fetchrow(f"{select} WHERE id=$1", monitor_id)
    return dict(row) if row else None


async def flaps(conn: DB, ids: list[int]) -> dict[int, Row]:
    """{flapping, flap_percent} of the monitors that have a flap state (for the rows a
    write returns, which lack FLAP_COLUMNS)."""
    rows = await conn.fetch(
        "SELECT monitor_id, flapping, percent AS flap_percent FROM monitor_flaps WHERE monitor_id = ANY($1)",
        ids,
    )
    return {r["monitor_id"]: {"flapping": r["flapping"], "flap_percent": r["flap_percent"]} for r in rows}


async def get_many(conn: DB, ids: list[int]) -> list[Row]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM monitors WHERE id = ANY($1)", ids)
    return [dict(r) for r in rows]


async def get_name(conn: DB, monitor_id: int) -> Row | None:
    """The monitor's id and name, or None."""
    row = await conn.fetchrow("SELECT id, name FROM monitors WHERE id = $1", monitor_id)
    return dict(row) if row else None


async def list_names(conn: DB) -> list[asyncpg.Record]:
    """Every monitor's id and name, by id."""
    return await conn.fetch("SELECT id, name FROM monitors ORDER BY id")


async def unavailable_regions(conn: DB, monitor_id: int) -> list[str]:
    """Regions that did not vote in the monitor's last applied round ([] for no such monitor)."""
    row = await conn.fetchrow("SELECT unavailable_regions FROM monitors WHERE id = $1", monitor_id)
    return list(row["unavailable_regions"]) if row else []


async def status_of(conn: DB, monitor_id: int) -> str | None:
    status: str | None = await conn.fetchval("SELECT status FROM monitors WHERE id = $1", monitor_id)
    return status


async def delete(conn: DB, monitor_id: int) -> bool:
    return await conn.fetchval("DELETE FROM monitors WHERE id=$1 RETURNING id", monitor_id) is not None


async def list_page(
    conn: DB,
    *,
    after_id: int = 0,
    limit: int = 50,
    status: str | None = None,
    kind: str | None = None,
) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM monitors WHERE id > $1"
        f" AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR kind = $3)"
        f" ORDER BY id LIMIT $4",
        after_id,
        status,
        kind,
        limit,
    )
    return [dict(r) for r in rows]


async def all_schedulable(conn: DB) -> list[Row]:
    """Every enabled monitor with what the scheduler needs."""
    rows = await conn.fetch(
        "SELECT id, name, tags, kind, spec, interval_s, timeout_s, locations, updated_at"
        " FROM monitors WHERE enabled AND kind <> 'heartbeat'"
    )
    return [dict(r) for r in rows]


# ---- lists: filters, sort keys, keyset and offset pages --------------------------------

# Cached uptime over a window as a sort key: monitors without data sort as -1 (lowest).
UPTIME_SORTS = {"uptime": "24h", "uptime_24h": "24h", "uptime_7d": "7d", "uptime_30d": "30d"}
# Sortable fields: API name -> the column or expression of the ORDER BY and the keyset.
SORTS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "status": "status",
    "type": "kind",
    "check_interval": "interval_s",
    **{
        name: f"coalesce(u.good_{w}::float8 / nullif(u.counted_{w}, 0), -1)"
        for name, w in UPTIME_SORTS.items()
    },
}


# What the console's overview groups by: the project, or the monitor's first tag in
# alphabetical order (the one it is listed under).
GROUPS: dict[str, str] = {
    "project": "project",
    "tag": "(SELECT min(t) FROM unnest(tags) t)",
}


def group_key(group: str, row: Row) -> str | None:
    if group == "project":
        return row.get("project")
    tags = row.get("tags") or []
    return min(tags) if tags else None


def sort_value(sort: str, row: Row) -> Any:
    """The row's value of a sort key, as the keyset compares it (for a cursor)."""
    if window := UPTIME_SORTS.get(sort):
        good, counted = row.get(f"good_{window}"), row.get(f"counted_{window}")
        return good / counted if counted else -1.0
    return row[SORTS[sort]]


@dataclass
class Filters:
    statuses: list[str] | None = None
    kind: str | None = None
    search: str | None = None
    tags: list[str] | None = None
    project: str | None = None
    created_after: dt.datetime | None = None
    enabled: bool | None = None
    # (region, result status, since): the newest result in that region since then has
    # that status (ok, degraded, fail, skipped; "none": no result there since then).
    region_state: tuple[str, str, dt.datetime] | None = None


def _where(f: Filters, args: list[Any]) -> str:
    def p(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = ["true"]
    if f.statuses and len(f.statuses) == 1:
        # One status as an equality, so the (kind, status, id) index (migration 0027) can
        # serve the filter and the id order together: `= ANY(array)` cannot, as planned
        # for any array.
        clauses.append(f"status = {p(f.statuses[0])}")
    elif f.statuses:
        clauses.append(f"status = ANY({p(f.statuses)}::text[])")
    if f.kind:
        clauses.append(f"kind = {p(f.kind)}")
    if f.search:
        like = "%" + f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        x = p(like)
        # search_url is the URL without its password and query values (migration 0014): a
        # search must not match what a response shows as <redacted>.
        clauses.append(f"(name ILIKE {x} OR search_url ILIKE {x} OR spec->>'host' ILIKE {x})")
    if f.tags:
        clauses.append(f"tags @> {p(f.tags)}::text[]")
    if f.project:
        clauses.append(f"project = {p(f.project)}")
    if f.created_after:
        clauses.append(f"created_at > {p(f.created_after)}")
    if f.enabled is not None:
        clauses.append(f"enabled = {p(f.enabled)}")
    if f.region_state is not None:
        region, state, since = f.region_state
        newest = (
            "SELECT c.status FROM check_results c WHERE c.monitor_id = monitors.id"
            f" AND c.region = {p(region)} AND c.due >= {p(since)} AND c.attempt <> 2000"
            " ORDER BY c.due DESC, c.attempt DESC LIMIT 1"
        )
        if state == "none":
            clauses.append(f"NOT EXISTS ({newest})")
        else:
            clauses.append(f"({newest}) = {p(state)}")
    return " AND ".join(clauses)


async def list_filtered(
    conn: DB,
    f: Filters,
    *,
    sort: str = "id",
    desc: bool = False,
    after: tuple[Any, int] | None = None,
    offset: int = 0,
    limit: int = 50,
    group: str | None = None,
) -> list[Row]:
    """A page ordered by (sort column, id), with cached uptimes; `after` is the last
    (value, id) seen (keyset). `group` (a key of GROUPS, offset paging only) orders by the
    group first, so a group's monitors are together across pages."""
    rows = await list_records(
        conn, f, sort=sort, desc=desc, after=after, offset=offset, limit=limit, group=group
    )
    return [dict(r) for r in rows]


# The configured columns (what controller/monitors/config.py config_fields reads), and
# the others a list shows: a list read with config=False leaves the first out.
CONFIG_COLUMNS = (
    "name, kind, spec, interval_s, timeout_s, locations, consensus, quorum, retry_count,"
    " recovery_count, enabled, tags, parent_id, incident_on_degraded, notifications, project,"
    " escalation_policy_id"
)
STATE_COLUMNS = (
    "id, config_version, created_at, updated_at, status, status_changed_at, last_check,"
    " last_success, last_failure, response_time_ms, paused_reason, paused_at"
)

_STATE = frozenset(c.strip() for c in STATE_COLUMNS.split(","))


async def list_records(
    conn: DB,
    f: Filters,
    *,
    sort: str = "id",
    desc: bool = False,
    after: tuple[Any, int] | None = None,
    offset: int = 0,
    limit: int = 50,
    group: str | None = None,
    config: bool = True,
) -> list[asyncpg.Record]:
    """`list_filtered`'s rows as asyncpg returns them, for a caller that only reads them
    (`[]`, `.get`): no dict per row (about a tenth of a list request's CPU in the API).
    config=False: without the configured columns (CONFIG_COLUMNS) but with
    `config_version` (migration 0027) and the sort column, for a caller that holds most
    monitors' configs and reads the others with `configs`."""
    col = SORTS[sort]
    shown = COLUMNS
    if not config:
        shown = STATE_COLUMNS if sort in UPTIME_SORTS or col in _STATE else f"{STATE_COLUMNS}, {col}"
    args: list[Any] = []
    where = _where(f, args)
    op, direction = ("<", "DESC") if desc else (">", "ASC")
    if after is not None:
        args += [after[0], after[1]]
        where += f" AND ({col}, id) {op} (${len(args) - 1}, ${len(args)})"
    args += [limit, offset]
    order = f"id {direction}" if col == "id" else f"{col} {direction}, id {direction}"
    if group is not None:
        order = f"{GROUPS[group]} ASC NULLS LAST, {order}"
    page = f"ORDER BY {order} LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    joined = f"{uptime_cache.COLUMNS}, {FLAP_COLUMNS}"
    if sort in UPTIME_SORTS:  # the sort key needs the joined uptimes
        sql = f"SELECT {shown}, {joined} FROM monitors {uptime_cache.JOIN} {FLAP_JOIN} WHERE {where} {page}"
    else:
        # The page first, then its uptimes and flap state: joined over the whole filtered
        # walk, a merge join read an uptime row for every monitor the filter passed over
        # (3,010 for a page of 101), where this looks up the 101. (The subquery's columns
        # the outer list leaves out are never read out.)
        sql = (
            f"SELECT {shown}, {joined}"
            f" FROM (SELECT {COLUMNS}, config_version FROM monitors WHERE {where} {page}) monitors"
            f" {uptime_cache.JOIN} {FLAP_JOIN} ORDER BY {order}"
        )
    return await (_planned_per_search(conn, sql, args) if f.search else conn.fetch(sql, *args))


async def configs(conn: DB, ids: list[int]) -> list[asyncpg.Record]:
    """The id, config_version and configured columns of these monitors (those a list read
    with config=False found no shown config for)."""
    return await conn.fetch(
        f"SELECT id, config_version, {CONFIG_COLUMNS} FROM monitors WHERE id = ANY($1::bigint[])", ids
    )


async def count_filtered(conn: DB, f: Filters) -> int:
    args: list[Any] = []
    sql = f"SELECT count(*) FROM monitors WHERE {_where(f, args)}"
    rows = await (_planned_per_search(conn, sql, args) if f.search else conn.fetch(sql, *args))
    return int(rows[0][0])


async def _planned_per_search(conn: DB, sql: str, args: list[Any]) -> list[asyncpg.Record]:
    """Run a query with a `search` pattern planned for that pattern. After five runs of a
    prepared statement PostgreSQL may switch to a generic plan, which cannot tell a rare
    substring (trigram index, ~3 ms at 100,000 monitors) from a common one (walk the
    primary key and stop at the limit): the generic choice scanned for ~50 ms."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await _planned_per_search(c, sql, args)
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await conn.fetch(sql, *args)


# ---- pause and resume ------------------------------------------------------------------


async def set_paused(conn: Tx, monitor_id: int, paused: bool, reason: str | None) -> Row | None:
    """Pause or resume (compare-and-set on `enabled`); the row with `previous_status`, or
    None when the monitor is missing or already in that state."""
    cols = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
    row = await conn.fetchrow(
        f"WITH old AS (SELECT id, status FROM monitors WHERE id = $1 FOR UPDATE)"
        f" UPDATE monitors m SET enabled = NOT $2, updated_at = now(),"
        f" status = CASE WHEN $2 THEN 'paused' ELSE 'pending' END,"
        f" paused_reason = CASE WHEN $2 THEN $3 ELSE NULL END,"
        f" paused_at = CASE WHEN $2 THEN now() ELSE NULL END"
        # pausing needs an enabled monitor, resuming a disabled one
        f" FROM old WHERE m.id = old.id AND m.enabled = $2"
        f" RETURNING {cols}, old.status AS previous_status",
        monitor_id,
        paused,
        reason,
    )
    return dict(row) if row else None


async def delete_many(conn: Tx, ids: list[int]) -> list[int]:
    rows = await conn.fetch("DELETE FROM monitors WHERE id = ANY($1) RETURNING id", ids)
    return [r["id"] for r in rows]


async def get_many_for_update(conn: Tx, ids: list[int]) -> dict[int, Row]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM monitors WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)
    return {r["id"]: dict(r) for r in rows}


# ---- verdicts applied by the results consumer (engine/results.py, engine/incidents.py) --


async def apply_verdict(
    conn: Tx,
    monitor_id: int,
    due: dt.datetime,
    *,
    status: str,
    fail_streak: int,
    pass_streak: int,
    now: dt.datetime,
    answered: bool,
    passed: bool,
    failed: bool,
    response_time_ms: float | None,
    fail_since: dt.datetime | None,
    unavailable_regions: list[str],
) -> bool:
    """Write a round's outcome, compare-and-set on last_round: False when the monitor is
    paused or a later round (`due`) was applied first."""
    row = await conn.fetchrow(
        "UPDATE monitors SET status = $3, fail_streak = $4, pass_streak = $5, last_round = $2,"
        " status_changed_at = CASE WHEN status <> $3 THEN $6 ELSE status_changed_at END,"
        " last_check = CASE WHEN $7 THEN $6 ELSE last_check END,"
        " last_success = CASE WHEN $8 THEN $6 ELSE last_success END,"
        " last_failure = CASE WHEN $9 THEN $6 ELSE last_failure END,"
        " response_time_ms = COALESCE($10, response_time_ms), fail_since = $11,"
        " unavailable_regions = $12"
        " WHERE id = $1 AND status <> 'paused' AND (last_round IS NULL OR last_round < $2)"
        " RETURNING id",
        monitor_id,
        due,
        status,
        fail_streak,
        pass_streak,
        now,
        answered,
        passed,
        failed,
        response_time_ms,
        fail_since,
        unavailable_regions,
    )
    return row is not None


# ---- history: rounds with their per-region results -------------------------------------


async def rounds_between(
    conn: DB,
    monitor_id: int,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> list[Row]:
    rows = await conn.fetch(
        "SELECT due, attempt, regions, answered, deadline, closed_at, verdict FROM rounds"
        " WHERE monitor_id = $1 AND ($2::timestamptz IS NULL OR due >= $2)"
        " AND ($3::timestamptz IS NULL OR due < $3) ORDER BY due DESC, attempt DESC LIMIT $4",
        monitor_id,
        since,
        until,
        limit,
    )
    return [dict(r) for r in rows]


async def results_of_rounds(conn: DB, monitor_id: int, rounds: list[Row]) -> list[Row]:
    if not rounds:
        return []
    rows = await conn.fetch(
        "SELECT c.due, c.attempt, c.region, c.probe_id, c.status, c.reason, c.message,"
        " c.duration_ms, c.status_code FROM check_results c"
        " JOIN unnest($2::timestamptz[], $3::smallint[]) AS k(d, a) ON c.due = k.d AND c.attempt = k.a"
        " WHERE c.monitor_id = $1 AND c.due >= $4 AND c.due <= $5",
        monitor_id,
        [r["due"] for r in rounds],
        [r["attempt"] for r in rounds],
        min(r["due"] for r in rounds),
        max(r["due"] for r in rounds),
    )
    return [dict(r) for r in rows]


# ---- alert settings (read by the notifications dispatcher) -----------------------------

ALERT_FIELDS = ("email_enabled", "email_recipients", "slack_enabled", "alert_on_recovery", "alert_threshold")
ALERT_DEFAULTS: Row = {
    "email_enabled": False,
    "email_recipients": [],
    "slack_enabled": False,
    "alert_on_recovery": True,
    "alert_threshold": 1,
}


async def alert_settings(conn: DB, monitor_id: int) -> Row:
    row = await conn.fetchrow(
        f"SELECT {', '.join(ALERT_FIELDS)}, updated_at FROM monitor_alert_settings WHERE monitor_id = $1",
        monitor_id,
    )
    return dict(row) if row else {**ALERT_DEFAULTS, "updated_at": None}


async def put_alert_settings(conn: DB, monitor_id: int, s: Row) -> Row:
    row = await conn.fetchrow(
        f"INSERT INTO monitor_alert_settings (monitor_id, {', '.join(ALERT_FIELDS)})"
        f" VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (monitor_id) DO UPDATE SET"
        f" email_enabled = $2, email_recipients = $3, slack_enabled = $4, alert_on_recovery = $5,"
        f" alert_threshold = $6, updated_at = now()"
        f" RETURNING {', '.join(ALERT_FIELDS)}, updated_at",
        monitor_id,
        *(s[f] for f in ALERT_FIELDS),
    )
    assert row is not None
    return dict(row)
