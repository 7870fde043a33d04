"""SQL for notification channels, rules, deliveries and the dispatcher's watermark.

A delivery goes to a channel or to a status-page subscriber. It is unique on (event_id,
channel_id, kind, seq), or (event_id, subscriber_id, kind, seq), so inserting it is
idempotent (ON CONFLICT DO NOTHING) whichever controller fans an event out. Every
status change after that is compare-and-set on (status, attempts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from probefleet.controller.storage import DB, Tx

Row = dict[str, Any]

CHANNEL_COLUMNS = (
    "id, kind, name, config, is_enabled, disabled_reason, disabled_at, reminder_minutes,"
    " created_at, updated_at"
)
RULE_COLUMNS = (
    "id, name, events, monitor_ids, tags, min_severity, channel_ids, reminder_minutes,"
    " escalate_after_minutes, escalation_channel_ids, is_enabled, is_policy, group_by, group_window_s,"
    " created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, event_id, channel_id, subscriber_id, kind, seq, monitor_id, incident_id, status, attempts,"
    " next_attempt_at, locked_until, last_error, reminder_s, payload, created_at, updated_at, delivered_at,"
    " group_key"
)
# What the dispatcher reads of an event (dispatcher.notification), after the watermark or by id.
EVENT_COLUMNS = "id, kind, monitor_id, incident_id, occurred_at, payload"
STATE_EVENTS = ["monitor.down", "monitor.up", "monitor.degraded"]
# Events held back until the monitor reaches its alert_threshold.
GATED_EVENTS = ["monitor.down", "incident.opened"]
# The update of an opening with its diagnoses (controller/engine/diagnostics.py).
DIAGNOSED = "incident.diagnosed"
BELOW_THRESHOLD = "recovered before alert_threshold"


# ------------------------------------------------------------ channels


async def insert_channel(conn: DB, c: Row) -> Row:
    row = await conn.fetchrow(
        f"INSERT INTO notification_channels (kind, name, config, is_enabled, reminder_minutes)"
        f" VALUES ($1,$2,$3,$4,$5) RETURNING {CHANNEL_COLUMNS}",
        c["kind"],
        c["name"],
        c["config"],
        c["is_enabled"],
        c["reminder_minutes"],
    )
    assert row is not None
    return dict(row)


async def update_channel(conn: DB, channel_id: int, c: Row) -> Row | None:
    """Replace the editable fields; enabling a channel clears why it was disabled."""
    row = await conn.fetchrow(
        f"UPDATE notification_channels SET name=$2, config=$3, is_enabled=$4, reminder_minutes=$5,"
        f" disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END,"
        f" disabled_at = CASE WHEN $4 THEN NULL ELSE disabled_at END, updated_at=now()"
        f" WHERE id=$1 RETURNING {CHANNEL_COLUMNS}",
        channel_id,
        c["name"],
        c["config"],
        c["is_enabled"],
        c["reminder_minutes"],
    )
    return dict(row) if row else None


async def get_channel(conn: DB, channel_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id=$1", channel_id)
    return dict(row) if row else None


async def list_channels(conn: DB, *, after_id: int = 0, limit: int = 100) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id > $1 ORDER BY id LIMIT $2",
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def channels_by_id(conn: DB, ids: Sequence[int]) -> dict[int, Row]:
    rows = await conn.fetch(
        f"SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = ANY($1::bigint[])", list(ids)
    )
    return {r["id"]: dict(r) for r in rows}


async def channel_with_url(conn: DB, kind: str, url: str) -> int | None:
    """The oldest channel of `kind` sending to `url` (a monitor named it by URL)."""
    found = await conn.fetchval(
        "SELECT id FROM notification_channels WHERE kind = $1 AND config->>'url' = $2 ORDER BY id LIMIT 1",
        kind,
        url,
    )
    return int(found) if found is not None else None


async def missing_channels(conn: DB, ids: Sequence[int]) -> list[int]:
    """The ids among `ids` that name no channel."""
    found = await conn.fetch("SELECT id FROM notification_channels WHERE id = ANY($1::bigint[])", list(ids))
    have = {r["id"] for r in found}
    return [i for i in ids if i not in have]


async def delete_channel(conn: DB, channel_id: int) -> bool:
    """Delete, and drop the id from monitors' own channel lists (which must name channels)."""
    deleted = await conn.fetchval(
        "WITH d AS (DELETE FROM notification_channels WHERE id=$1 RETURNING id),"
        " m AS (UPDATE monitors SET notifications = array_remove(notifications, $1)"
        "   WHERE $1 = ANY(notifications) AND EXISTS (SELECT 1 FROM d))"
        " SELECT id FROM d",
        channel_id,
    )
    return deleted is not None


async def disable_channel(conn: Tx, channel_id: int, reason: str, now: dt.datetime) -> Row | None:
    """Disable if still enabled (compare-and-set); the channel row or None."""
    row = await conn.fetchrow(
        f"UPDATE notification_channels SET is_enabled=false, disabled_reason=$2, disabled_at=$3,"
        f" updated_at=$3 WHERE id=$1 AND is_enabled RETURNING {CHANNEL_COLUMNS}",
        channel_id,
        reason,
        now,
    )
    return dict(row) if row else None


# ------------------------------------------------------------ rules


def _rule_values(r: Row) -> list[Any]:
    """A rule's editable columns in the order insert_rule and update_rule name them."""
    return [
        r["name"],
        r["events"],
        r["monitor_ids"],
        r["tags"],
        r["min_severity"],
        r["channel_ids"],
        r["reminder_minutes"],
        r["escalate_after_minutes"],
        r["escalation_channel_ids"],
        r["is_enabled"],
        r.get("is_policy", False),
        r.get("group_by") or [],
        r.get("group_window_s") or 0,
    ]


async def insert_rule(conn: DB, r: Row) -> Row:
    row = await conn.fetchrow(
        f"INSERT INTO notification_rules (name, events, monitor_ids, tags, min_severity, channel_ids,"
        f" reminder_minutes, escalate_after_minutes, escalation_channel_ids, is_enabled, is_policy,"
        f" group_by, group_window_s)"
        f" VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) RETURNING {RULE_COLUMNS}",
        *_rule_values(r),
    )
    assert row is not None
    return dict(row)


async def update_rule(conn: DB, rule_id: int, r: Row) -> Row | None:
    row = await conn.fetchrow(
        f"UPDATE notification_rules SET name=$2, events=$3, monitor_ids=$4, tags=$5, min_severity=$6,"
        f" channel_ids=$7, reminder_minutes=$8, escalate_after_minutes=$9, escalation_channel_ids=$10,"
        f" is_enabled=$11, is_policy=$12, group_by=$13, group_window_s=$14, updated_at=now()"
        f" WHERE id=$1 RETURNING {RULE_COLUMNS}",
        rule_id,
        *_rule_values(r),
    )
    return dict(row) if row else None


async def get_rule(conn: DB, rule_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {RULE_COLUMNS} FROM notification_rules WHERE id=$1", rule_id)
    return dict(row) if row else None


async def list_rules(conn: DB, *, enabled_only: bool = False) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {RULE_COLUMNS} FROM notification_rules WHERE is_enabled OR NOT $1 ORDER BY id", enabled_only
    )
    return [dict(r) for r in rows]


async def rules_named(conn: DB, ref: int | str) -> list[int]:
    """Ids of the rules an escalation_policy reference names: by id (int) or by name."""
    if isinstance(ref, int):
        rows = await conn.fetch("SELECT id FROM notification_rules WHERE id=$1", ref)
    else:
        rows = await conn.fetch("SELECT id FROM notification_rules WHERE name=$1 ORDER BY id", ref)
    return [r["id"] for r in rows]


async def delete_rule(conn: DB, rule_id: int) -> bool:
    deleted = await conn.fetchval("DELETE FROM notification_rules WHERE id=$1 RETURNING id", rule_id)
    return deleted is not None


# ------------------------------------------------------------ fan-out inputs


async def watermark(conn: DB) -> int:
    value: int = await conn.fetchval("SELECT last_event_id FROM dispatcher_cursor WHERE name='fanout'")
    return value


async def advance_watermark(conn: DB, old: int, new: int) -> bool:
    """Compare-and-set: False when another controller moved it first."""
    done = await conn.fetchval(
        "UPDATE dispatcher_cursor SET last_event_id=$2 WHERE name='fanout' AND last_event_id=$1"
        " RETURNING last_event_id",
        old,
        new,
    )
    return done is not None


async def events_after(conn: DB, after_id: int, limit: int) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        after_id,
        limit,
    )
    return [dict(r) for r in rows]


async def monitor_routing(conn: DB, ids: Sequence[int]) -> dict[int, Row]:
    """Tags, own channel list, escalation policy, failure streak and parent of each monitor."""
    rows = await conn.fetch(
        "SELECT id, tags, notifications, escalation_policy_id, status, fail_streak, parent_id FROM monitors"
        " WHERE id = ANY($1::bigint[])",
        list(ids),
    )
    return {r["id"]: dict(r) for r in rows}


async def state_changes(conn: DB, ids: Sequence[int], since: dt.datetime, until_id: int) -> dict[int, int]:
    """How many times each monitor changed state since `since`, up to event `until_id`."""
    rows = await conn.fetch(
        "SELECT monitor_id, count(*) AS n FROM events WHERE monitor_id = ANY($1::bigint[])"
        " AND kind = ANY($2::text[]) AND occurred_at >= $3 AND id <= $4 GROUP BY monitor_id",
        list(ids),
        STATE_EVENTS,
        since,
        until_id,
    )
    return {r["monitor_id"]: r["n"] for r in rows}


class NewDelivery(NamedTuple):
    event_id: int | None
    channel_id: int
    kind: str
    seq: int
    monitor_id: int | None
    incident_id: int | None
    status: str
    next_attempt_at: dt.datetime
    reminder_s: int | None
    hold_reason: str | None = None  # 'parent' when held for the parent's verdict
    group_key: str | None = None  # grouped notifications (rules' group_by), see open_leaders


async def insert_deliveries(conn: DB, items: Sequence[NewDelivery]) -> int:
    """Insert what is not there yet; the number inserted."""
    if not items:
        return 0
    cols = list(zip(*items, strict=True))
    rows = await conn.fetch(
        "INSERT INTO deliveries (event_id, channel_id, kind, seq, monitor_id, incident_id, status,"
        " next_attempt_at, reminder_s, hold_reason, group_key)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::bigint[],"
        " $6::bigint[], $7::text[], $8::timestamptz[], $9::int[], $10::text[], $11::text[])"
        " ON CONFLICT (event_id, channel_id, kind, seq) DO NOTHING RETURNING id",
        *cols,
    )
    return len(rows)


async def insert_test_delivery(conn: DB, channel_id: int, now: dt.datetime) -> int:
    delivery_id: int = await conn.fetchval(
        "INSERT INTO deliveries (channel_id, kind, status, attempts, next_attempt_at, locked_until)"
        " VALUES ($1, 'test', 'sending', 1, $2::timestamptz, $2::timestamptz + interval '1 minute')"
        " RETURNING id",
        channel_id,
        now,
    )
    return delivery_id


# ------------------------------------------------------------ subscriber notices


class NewNotice(NamedTuple):
    """A delivery to a status-page subscriber: kind 'state', 'post' or 'confirm', and what
    the notice says."""

    event_id: int | None
    subscriber_id: int
    kind: str
    payload: dict[str, Any]
    next_attempt_at: dt.datetime


async def insert_notices(conn: DB, items: Sequence[NewNotice]) -> int:
    """Insert what is not there yet (an event's notice to a subscriber exists once); the
    number inserted."""
    if not items:
        return 0
    rows = await conn.fetch(
        "INSERT INTO deliveries (event_id, subscriber_id, kind, payload, next_attempt_at)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::jsonb[], $5::timestamptz[])"
        " ON CONFLICT DO NOTHING RETURNING id",
        *zip(*items, strict=True),
    )
    return len(rows)


async def insert_confirmation(conn: Tx, subscriber_id: int, resend_after: dt.timedelta) -> bool:
    """One confirmation mail, unless one is still queued or one was queued within
    `resend_after`. Call after the subscriber's upsert in the same transaction: its row
    lock makes concurrent requests for the same address take turns."""
    done = await conn.fetchval(
        "INSERT INTO deliveries (subscriber_id, kind, payload) SELECT $1, 'confirm', '{}'::jsonb"
        " WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE subscriber_id = $1 AND kind = 'confirm'"
        "  AND (status IN ('pending', 'sending', 'failed') OR created_at > now() - $2::interval))"
        " RETURNING id",
        subscriber_id,
        resend_after,
    )
    return done is not None


async def insert_page_notices(
    conn: Tx, page_id: int, event_id: int | None, kind: str, payload: dict[str, Any]
) -> int:
    """The notice to every confirmed subscriber of the page; how many."""
    rows = await conn.fetch(
        "INSERT INTO deliveries (event_id, subscriber_id, kind, payload)"
        " SELECT $2, id, $3, $4 FROM status_page_subscribers WHERE page_id = $1 AND confirmed_at IS NOT NULL"
        " ON CONFLICT DO NOTHING RETURNING id",
        page_id,
        event_id,
        kind,
        payload,
    )
    return len(rows)


# ------------------------------------------------------------ send step


async def claim(
    conn: DB, now: dt.datetime, lease_s: float, limit: int, *, subscribers: bool = True
) -> list[Row]:
    """Take due deliveries: pending, failed and due, or sending with an expired claim;
    deliveries to subscribers only when `subscribers`."""
    rows = await conn.fetch(
        "UPDATE deliveries SET status='sending', attempts=attempts+1, updated_at=$1,"
        " locked_until = $1 + make_interval(secs => $2)"
        " WHERE id IN (SELECT id FROM deliveries WHERE next_attempt_at <= $1"
        "   AND (status IN ('pending', 'failed') OR (status='sending' AND locked_until < $1))"
        "   AND ($4 OR subscriber_id IS NULL)"
        "   ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {DELIVERY_COLUMNS}",
        now,
        lease_s,
        limit,
        subscribers,
    )
    return [dict(r) for r in rows]


async def events_by_id(conn: DB, ids: Sequence[int]) -> dict[int, Row]:
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1::bigint[])",
        list(ids),
    )
    return {r["id"]: dict(r) for r in rows}


async def incident_status(conn: DB, ids: Sequence[int]) -> dict[int, str]:
    rows = await conn.fetch("SELECT id, status FROM incidents WHERE id = ANY($1::bigint[])", list(ids))
    return {r["id"]: r["status"] for r in rows}


class Outcome(NamedTuple):
    id: int
    attempts: int
    status: str  # delivered | failed | dead | cancelled
    error: str | None
    next_attempt_at: dt.datetime | None
    # For the delivery log: the service's HTTP status (None: no answer, or not HTTP) and
    # how long the attempt took (None: nothing was sent).
    status_code: int | None = None
    duration_ms: float | None = None


async def record(conn: DB, outcomes: Sequence[Outcome], now: dt.datetime) -> list[int]:
    """Write outcomes of our own claims only (status 'sending' and the same attempt), and
    log each written one as an attempt (delivery_attempts) in the same statement."""
    if not outcomes:
        return []
    ids, attempts, statuses, errors, nexts, codes, durations = zip(*outcomes, strict=True)
    rows = await conn.fetch(
        "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[],"
        "   $5::timestamptz[], $7::int[], $8::float8[])"
        "   AS u(id, attempts, status, error, next_at, code, ms)),"
        " done AS (UPDATE deliveries d SET status=u.status, last_error=u.error, updated_at=$6,"
        "   locked_until=NULL, next_attempt_at = COALESCE(u.next_at, d.next_attempt_at),"
        "   delivered_at = CASE WHEN u.status='delivered' THEN $6 ELSE d.delivered_at END"
        "   FROM u WHERE d.id=u.id AND d.attempts=u.attempts AND d.status='sending'"
        "   RETURNING d.id, d.attempts, d.kind, d.channel_id, d.subscriber_id, d.event_id, d.monitor_id,"
        "   d.incident_id, d.status, d.last_error),"
        " logged AS (INSERT INTO delivery_attempts (delivery_id, attempt, channel_id, subscriber_id,"
        "   event_id, event_kind, monitor_id, incident_id, outcome, status_code, error, duration_ms,"
        "   attempted_at)"
        "   SELECT done.id, done.attempts, done.channel_id, done.subscriber_id, done.event_id,"
        "   COALESCE(e.kind, done.kind), done.monitor_id,"
        "   done.incident_id, done.status, u.code, done.last_error, u.ms, $6"
        "   FROM done JOIN u ON u.id = done.id LEFT JOIN events e ON e.id = done.event_id"
        "   ON CONFLICT (delivery_id, attempt) DO NOTHING)"
        " SELECT id FROM done",
        list(ids),
        list(attempts),
        list(statuses),
        list(errors),
        list(nexts),
        now,
        list(codes),
        list(durations),
    )
    return [r["id"] for r in rows]


ATTEMPT_COLUMNS = (
    "id, delivery_id, attempt, channel_id, subscriber_id, event_id, event_kind, monitor_id, incident_id,"
    " outcome, status_code, error, duration_ms, attempted_at"
)


async def list_attempts(
    conn: DB,
    *,
    incident_id: int | None = None,
    channel_id: int | None = None,
    outcome: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Row]:
    """The delivery log, newest first, filtered by incident, channel and outcome."""
    rows = await conn.fetch(
        f"SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts"
        " WHERE ($1::bigint IS NULL OR incident_id = $1) AND ($2::bigint IS NULL OR channel_id = $2)"
        " AND ($3::text IS NULL OR outcome = $3) AND ($4::bigint IS NULL OR id < $4)"
        " ORDER BY id DESC LIMIT $5",
        incident_id,
        channel_id,
        outcome,
        before_id,
        limit,
    )
    return [dict(r) for r in rows]


async def list_deliveries(
    conn: DB, channel_id: int, *, limit: int = 50, before_id: int | None = None, status: str | None = None
) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE channel_id=$1"
        " AND ($2::bigint IS NULL OR id < $2) AND ($3::text IS NULL OR status=$3)"
        " ORDER BY id DESC LIMIT $4",
        channel_id,
        before_id,
        status,
        limit,
    )
    return [dict(r) for r in rows]


# ------------------------------------------------------------ flap suppression


async def release_suppressed(conn: DB, now: dt.datetime, window: dt.timedelta) -> int:
    """For monitors judged by state-change events (heartbeats: no rounds, so no row in
    monitor_flaps) with no state change in `window`: the newest suppressed delivery per
    (monitor, channel) becomes pending, the older ones 'collapsed'. The update re-checks
    status='suppressed' (compare-and-set), so two controllers release each row once."""
    rows = await conn.fetch(
        "WITH settled AS (SELECT DISTINCT d.monitor_id FROM deliveries d WHERE d.status='suppressed'"
        "   AND NOT EXISTS (SELECT 1 FROM monitor_flaps f WHERE f.monitor_id=d.monitor_id)"
        "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.monitor_id=d.monitor_id"
        "     AND e.kind = ANY($3::text[]) AND e.occurred_at > $1::timestamptz - $2::interval)),"
        " ranked AS (SELECT d.id, row_number() OVER (PARTITION BY d.monitor_id, d.channel_id"
        "   ORDER BY d.event_id DESC) AS rn FROM deliveries d JOIN settled s USING (monitor_id)"
        "   WHERE d.status='suppressed')"
        " UPDATE deliveries d SET status = CASE WHEN r.rn=1 THEN 'pending' ELSE 'collapsed' END,"
        " next_attempt_at=$1, updated_at=$1 FROM ranked r WHERE d.id=r.id AND d.status='suppressed'"
        " RETURNING d.id",
        now,
        window,
        STATE_EVENTS,
    )
    return len(rows)


async def open_leaders(conn: DB, keys: Sequence[tuple[int, str]], at: dt.datetime) -> set[tuple[int, str]]:
    """The (channel, group key) pairs that have a leading delivery still collecting: not
    yet sent (pending or held) and due after `at` (its window is still open)."""
    if not keys:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT d.channel_id, d.group_key FROM deliveries d"
        " JOIN unnest($1::bigint[], $2::text[]) AS k(channel_id, group_key)"
        "   ON d.channel_id = k.channel_id AND d.group_key = k.group_key"
        " WHERE d.status IN ('pending', 'held') AND d.kind = 'event' AND d.next_attempt_at > $3",
        [k[0] for k in keys],
        [k[1] for k in keys],
        at,
    )
    return {(r["channel_id"], r["group_key"]) for r in rows}


# The outage kinds a recovery ends (a recovery's group key names the outage's).
RECOVERY_OF = {"incident.resolved": ["incident.opened"], "monitor.up": ["monitor.down", "monitor.degraded"]}
GROUPED_MARK = "grouped into delivery "


async def outage_groups(conn: DB, wanted: Sequence[tuple[int, int, int, str]]) -> dict[tuple[int, int], str]:
    """For recoveries (event id, channel id, monitor id, event kind): the group key of the
    outage each one ends on that channel (the monitor's latest outage delivery there),
    when that outage went out in a group of more than one monitor: a member (grouped, or
    listed by its leader) or a leader that listed members. (event id, channel id) -> key."""
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT k.event_id, k.channel_id, o.group_key FROM unnest($1::bigint[], $2::bigint[],"
        "   $3::bigint[], $4::text[]) AS k(event_id, channel_id, monitor_id, kind)"
        " CROSS JOIN LATERAL (SELECT d.id, d.group_key, d.status, d.last_error FROM deliveries d"
        "   JOIN events e ON e.id = d.event_id WHERE d.channel_id = k.channel_id"
        "   AND d.monitor_id = k.monitor_id AND d.kind = 'event' AND d.event_id < k.event_id"
        "   AND e.kind = ANY(CASE k.kind WHEN 'incident.resolved' THEN $5::text[] ELSE $6::text[] END)"
        "   ORDER BY d.event_id DESC LIMIT 1) o"
        " WHERE o.group_key IS NOT NULL AND (o.status = 'grouped' OR o.last_error LIKE $7 || '%'"
        "   OR EXISTS (SELECT 1 FROM deliveries g WHERE g.channel_id = k.channel_id"
        "     AND g.group_key = o.group_key AND g.id <> o.id AND (g.last_error = $7 || o.id::text"
        "       OR (g.status = 'grouped' AND o.status IN ('pending', 'held', 'sending', 'failed')))))",
        [w[0] for w in wanted],
        [w[1] for w in wanted],
        [w[2] for w in wanted],
        [w[3] for w in wanted],
        RECOVERY_OF["incident.resolved"],
        RECOVERY_OF["monitor.up"],
        GROUPED_MARK,
    )
    return {(r["event_id"], r["channel_id"]): r["group_key"] for r in rows}


async def take_members(conn: DB, leader_id: int, channel_id: int, group_key: str) -> list[int]:
    """Collapse the deliveries grouped under a leader (compare-and-set on 'grouped') and
    return the event ids of all its members so far, oldest first (a retried leader lists
    the same ones again, and any that joined since)."""
    mark = f"{GROUPED_MARK}{leader_id}"
    await conn.execute(
        "UPDATE deliveries SET status = 'collapsed', last_error = $4, updated_at = now()"
        " WHERE channel_id = $1 AND group_key = $2 AND status = 'grouped' AND id <> $3",
        channel_id,
        group_key,
        leader_id,
        mark,
    )
    rows = await conn.fetch(
        "SELECT event_id FROM deliveries WHERE channel_id = $1 AND group_key = $2 AND last_error = $3"
        " ORDER BY event_id",
        channel_id,
        group_key,
        mark,
    )
    return [r["event_id"] for r in rows]


async def recent_verdicts(conn: DB, ids: Sequence[int], n: int) -> dict[int, list[str]]:
    """Each monitor's last `n` round verdicts (rechecks included, unknown left out: a
    round nobody answered says nothing about the target), oldest first. Monitors without
    rounds (heartbeats) are absent."""
    rows = await conn.fetch(
        "SELECT m.id, v.states FROM unnest($1::bigint[]) AS m(id) CROSS JOIN LATERAL"
        " (SELECT array_agg(r.verdict ORDER BY r.due, r.attempt) AS states FROM"
        "   (SELECT verdict, due, attempt FROM rounds WHERE monitor_id = m.id AND verdict IS NOT NULL"
        "    AND verdict <> 'unknown' ORDER BY due DESC, attempt DESC LIMIT $2) r) v"
        " WHERE v.states IS NOT NULL",
        list(ids),
        n,
    )
    return {r["id"]: list(r["states"]) for r in rows}


async def flap_states(conn: DB, ids: Sequence[int] | None = None) -> dict[int, bool]:
    """Whether each judged monitor is flapping: the given ones, or (None) every monitor that
    is flapping or has suppressed deliveries waiting."""
    if ids is None:
        rows = await conn.fetch(
            "SELECT monitor_id, flapping FROM monitor_flaps WHERE flapping OR monitor_id IN"
            " (SELECT monitor_id FROM deliveries WHERE status = 'suppressed')"
        )
    else:
        rows = await conn.fetch(
            "SELECT monitor_id, flapping FROM monitor_flaps WHERE monitor_id = ANY($1::bigint[])", list(ids)
        )
    return {r["monitor_id"]: r["flapping"] for r in rows}


async def set_flapping(conn: DB, monitor_id: int, flapping: bool, percent: float, now: dt.datetime) -> bool:
    """Store the monitor's flap state; True only when `flapping` changed (compare-and-set:
    of two controllers judging the same change, one gets True and writes the event)."""
    await conn.execute(
        "INSERT INTO monitor_flaps (monitor_id, flapping, percent, changed_at) VALUES ($1, false, $2, $3)"
        " ON CONFLICT (monitor_id) DO NOTHING",
        monitor_id,
        percent,
        now,
    )
    changed = await conn.fetchval(
        "UPDATE monitor_flaps SET flapping = $2, percent = $3, changed_at = $4"
        " WHERE monitor_id = $1 AND flapping <> $2 RETURNING monitor_id",
        monitor_id,
        flapping,
        percent,
        now,
    )
    if changed is None:
        await conn.execute("UPDATE monitor_flaps SET percent = $2 WHERE monitor_id = $1", monitor_id, percent)
    return changed is not None


async def release_settled(conn: DB, now: dt.datetime, monitor_ids: Sequence[int]) -> int:
    """For monitors that stopped flapping: the newest suppressed delivery per channel becomes
    pending, the older ones 'collapsed' (compare-and-set on status='suppressed'). An
    incident.diagnosed (the update of an opening) is not ranked: it is sent when its
    opening on that channel went or goes out, else collapsed; after the ranking, so two
    controllers that release at once see the opening decided."""
    rows = await conn.fetch(
        "WITH ranked AS (SELECT d.id, row_number() OVER (PARTITION BY d.monitor_id, d.channel_id"
        "   ORDER BY d.event_id DESC) AS rn FROM deliveries d"
        "   WHERE d.status='suppressed' AND d.monitor_id = ANY($2::bigint[])"
        "   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id AND e.kind = $3))"
        " UPDATE deliveries d SET status = CASE WHEN r.rn=1 THEN 'pending' ELSE 'collapsed' END,"
        " next_attempt_at=$1, updated_at=$1 FROM ranked r WHERE d.id=r.id AND d.status='suppressed'"
        " RETURNING d.id",
        now,
        list(monitor_ids),
        DIAGNOSED,
    )
    updates = await conn.fetch(
        "UPDATE deliveries d SET status = CASE WHEN EXISTS (SELECT 1 FROM deliveries o"
        "   WHERE o.event_id = (e.payload->>'opened_event_id')::bigint AND o.channel_id = d.channel_id"
        "   AND o.kind = 'event' AND (o.status = ANY($4::text[])"
        "   OR (o.status = 'collapsed' AND starts_with(o.last_error, $5))))"
        " THEN 'pending' ELSE 'collapsed' END, next_attempt_at=$1, updated_at=$1"
        " FROM events e WHERE e.id = d.event_id AND e.kind = $3 AND d.status='suppressed'"
        " AND d.monitor_id = ANY($2::bigint[]) RETURNING d.id",
        now,
        list(monitor_ids),
        DIAGNOSED,
        ["pending", "sending", "delivered", "failed", "grouped"],
        GROUPED_MARK,
    )
    return len(rows) + len(updates)


async def alert_settings(conn: DB, ids: Sequence[int]) -> dict[int, Row]:
    """Per-monitor alert settings (table from 0003_api.sql; empty when it is absent)."""
    if not ids or not await conn.fetchval("SELECT to_regclass('monitor_alert_settings') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT monitor_id, email_enabled, email_recipients, alert_on_recovery, alert_threshold"
        " FROM monitor_alert_settings WHERE monitor_id = ANY($1::bigint[])",
        list(ids),
    )
    return {r["monitor_id"]: dict(r) for r in rows}


# ------------------------------------------------------------ alert threshold


async def waiting(conn: DB, soon: dt.datetime) -> bool:
    """Whether a step may find work by time alone: a delivery to send or retry before
    `soon`, one held (alert threshold, parent) or suppressed (flapping), or a monitor
    flapping. Partial indexes answer each part."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status IN ('pending', 'failed', 'sending')"
            " AND next_attempt_at <= $1) OR EXISTS (SELECT 1 FROM deliveries WHERE status = 'held')"
            " OR EXISTS (SELECT 1 FROM deliveries WHERE status = 'suppressed')"
            " OR EXISTS (SELECT 1 FROM monitor_flaps WHERE flapping)",
            soon,
        )
    )


async def release_held(conn: DB, now: dt.datetime) -> int:
    """Held deliveries of monitors that are down with fail_streak >= alert_threshold become
    pending (escalations keep their later due time); held deliveries of monitors that are
    no longer down are cancelled. Both re-check status='held' (compare-and-set)."""
    released = await conn.fetch(
        "UPDATE deliveries d SET status='pending', next_attempt_at=GREATEST(d.next_attempt_at, $1),"
        " updated_at=$1 FROM monitors m JOIN monitor_alert_settings a ON a.monitor_id = m.id"
        " WHERE d.status='held' AND d.hold_reason IS NULL AND m.id = d.monitor_id AND m.status = 'down'"
        " AND m.fail_streak >= a.alert_threshold RETURNING d.id",
        now,
    )
    cancelled = await conn.fetch(
        "UPDATE deliveries d SET status='cancelled', last_error=$2, updated_at=$1"
        " WHERE d.status='held' AND NOT EXISTS (SELECT 1 FROM monitors m"
        "   WHERE m.id = d.monitor_id AND m.status = 'down') RETURNING d.id",
        now,
        BELOW_THRESHOLD,
    )
    return len(released) + len(cancelled)


PARENT = "parent"


async def release_parent_held(conn: DB, now: dt.datetime) -> tuple[int, list[Row]]:
    """Decide deliveries held for the parent's verdict (hold_reason 'parent').

    - parent down: cancelled ("parent monitor N is down"); the rows are returned so the
      caller marks the child's incident suppressed (its recovery then notifies nobody).
    - parent seen passing since the child began failing (a round due at or after the
      child's fail_since, with no failing streak), parent paused or gone, or the hold older
      than the parent's confirmation time (interval x (retries + 2) + timeout, so an
      undecided parent cannot hold a child's page forever): the hold ends; the delivery is
      pending, or held for the child's own alert_threshold when that is not reached yet.
    Children that are no longer down are cancelled by release_held. Every update re-checks
    status='held' AND hold_reason='parent' (compare-and-set): two controllers decide a
    row once."""
    suppressed = await conn.fetch(
        "UPDATE deliveries d SET status='cancelled', hold_reason=NULL, updated_at=$1,"
        " last_error='parent monitor ' || p.id || ' is down'"
        " FROM monitors c JOIN monitors p ON p.id = c.parent_id"
        " WHERE d.status='held' AND d.hold_reason=$2 AND c.id = d.monitor_id AND p.status = 'down'"
        " RETURNING d.id, d.incident_id, c.id AS monitor_id, p.id AS parent_id",
        now,
        PARENT,
    )
    released = await conn.fetch(
        "UPDATE deliveries d SET hold_reason=NULL, updated_at=$1,"
        " status = CASE WHEN c.fail_streak >= COALESCE(a.alert_threshold, 1) THEN 'pending' ELSE 'held' END,"
        " next_attempt_at = GREATEST(d.next_attempt_at, $1)"
        " FROM monitors c LEFT JOIN monitors p ON p.id = c.parent_id"
        " LEFT JOIN monitor_alert_settings a ON a.monitor_id = c.id"
        " WHERE d.status='held' AND d.hold_reason=$2 AND c.id = d.monitor_id AND c.status = 'down'"
        " AND (p.id IS NULL OR p.status = 'paused'"
        "   OR (p.status <> 'down' AND p.fail_streak = 0 AND p.last_round >= c.fail_since)"
        "   OR d.next_attempt_at"
        "     + make_interval(secs => p.interval_s * (p.retry_count + 2) + p.timeout_s) <= $1)"
        " RETURNING d.id",
        now,
        PARENT,
    )
    return len(released), [dict(r) for r in suppressed]


async def outage_unalerted(conn: DB, monitor_id: int, before_event_id: int) -> bool:
    """Whether the monitor's last outage before this event was held back by its
    alert_threshold (held, or cancelled below it): its recovery is not news to anyone."""
    value = await conn.fetchval(
        "SELECT d.status = 'held' OR d.last_error = $3 FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.monitor_id = $1 AND d.kind = 'event' AND d.event_id < $2 AND e.kind = ANY($4::text[])"
        " ORDER BY d.event_id DESC LIMIT 1",
        monitor_id,
        before_event_id,
        BELOW_THRESHOLD,
        GATED_EVENTS,
    )
    return bool(value)


async def cancel_held(conn: DB, monitor_id: int, before_event_id: int, now: dt.datetime) -> int:
    rows = await conn.fetch(
        "UPDATE deliveries SET status='cancelled', last_error=$4, updated_at=$3"
        " WHERE monitor_id=$1 AND status='held' AND event_id < $2 RETURNING id",
        monitor_id,
        before_event_id,
        now,
        BELOW_THRESHOLD,
    )
    return len(rows)


async def opening_states(
    conn: DB, event_id: int, statuses: Sequence[str]
) -> dict[int, tuple[str, str | None]]:
    """Channel -> (status, hold_reason) of the first notices of `event_id` in one of
    `statuses`, or collapsed into a group's leader (then 'grouped')."""
    rows = await conn.fetch(
        "SELECT channel_id, status, hold_reason FROM deliveries WHERE event_id = $1 AND kind = 'event'"
        " AND channel_id IS NOT NULL AND (status = ANY($2::text[])"
        " OR (status = 'collapsed' AND starts_with(last_error, $3)))",
        event_id,
        list(statuses),
        GROUPED_MARK,
    )
    return {
        int(r["channel_id"]): ("grouped" if r["status"] == "collapsed" else r["status"], r["hold_reason"])
        for r in rows
    }
