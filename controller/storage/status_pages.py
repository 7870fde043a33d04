"""SQL for status pages, their components, posts and subscribers (whose notices are
deliveries: storage/notifications.py)."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from probefleet.controller.storage import DB, Tx, stats

Row = dict[str, Any]
# The logo's bytes are read by `logo` alone; pages carry its type and a version (for links
# that change with the image, so browsers may cache it).
PAGE_COLUMNS = (
    "id, name, slug, custom_domain, description, is_public, password_hash, incident_status,"
    " incident_message, incident_updated_at, created_at, updated_at, logo_type,"
    " left(md5(logo), 12) AS logo_version, colors, custom_css, footer_text, theme, show_response_times"
)
_SETTABLE = (
    "name",
    "slug",
    "custom_domain",
    "description",
    "is_public",
    "password_hash",
    "logo",
    "logo_type",
    "colors",
    "custom_css",
    "footer_text",
    "theme",
    "show_response_times",
)


async def missing_monitors(conn: DB, ids: list[int]) -> set[int]:
    found = await conn.fetch("SELECT id FROM monitors WHERE id = ANY($1)", ids)
    return set(ids) - {r["id"] for r in found}


async def insert_page(conn: Tx, fields: dict[str, Any]) -> int:
    cols = [c for c in _SETTABLE if c in fields]
    marks = ", ".join(f"${i + 1}" for i in range(len(cols)))
    page_id: int = await conn.fetchval(
        f"INSERT INTO status_pages ({', '.join(cols)}) VALUES ({marks}) RETURNING id",
        *[fields[c] for c in cols],
    )
    return page_id


async def update_page(conn: Tx, page_id: int, fields: dict[str, Any]) -> bool:
    cols = [c for c in _SETTABLE if c in fields]
    sets = "".join(f", {c} = ${i + 2}" for i, c in enumerate(cols))
    done = await conn.fetchval(
        f"UPDATE status_pages SET updated_at = now(){sets} WHERE id = $1 RETURNING id",
        page_id,
        *[fields[c] for c in cols],
    )
    return done is not None


async def set_incident(conn: Tx, page_id: int, status: str, message: str) -> None:
    await conn.execute(
        "UPDATE status_pages SET incident_status = $2, incident_message = $3,"
        " incident_updated_at = now(), updated_at = now() WHERE id = $1",
        page_id,
        status,
        message,
    )


async def set_components(conn: Tx, page_id: int, sections: list[dict[str, Any]]) -> None:
    """Replace the page's components, keeping the public id of each monitor already shown."""
    rows = [
        (page_id, c["monitor_id"], s["name"], si, ci, c["display_name"], c.get("description") or "")
        for si, s in enumerate(sections)
        for ci, c in enumerate(s["monitors"])
    ]
    await conn.execute(
        "DELETE FROM status_page_components WHERE page_id = $1 AND NOT monitor_id = ANY($2)",
        page_id,
        [r[1] for r in rows],
    )
    await conn.executemany(
        "INSERT INTO status_page_components (page_id, monitor_id, section, section_pos, position,"
        " display_name, description) SELECT $1, $2, $3, $4, $5, coalesce($6, m.name), $7"
        " FROM monitors m WHERE m.id = $2"
        " ON CONFLICT (page_id, monitor_id) DO UPDATE SET section = EXCLUDED.section,"
        " section_pos = EXCLUDED.section_pos, position = EXCLUDED.position,"
        " display_name = EXCLUDED.display_name, description = EXCLUDED.description",
        rows,
    )


async def get_page(conn: DB, page_id: int) -> Row | None:
    row = await conn.fetchrow(f"SELECT {PAGE_COLUMNS} FROM status_pages WHERE id = $1", page_id)
    return dict(row) if row else None


async def find_page(conn: DB, *, slug: str | None = None, domain: str | None = None) -> Row | None:
    row = await conn.fetchrow(
        f"SELECT {PAGE_COLUMNS} FROM status_pages WHERE slug = $1 OR custom_domain = $2 LIMIT 1",
        slug,
        domain,
    )
    return dict(row) if row else None


async def logo(conn: DB, page_id: int) -> tuple[bytes, str] | None:
    """The page's logo (bytes, media type), or None."""
    row = await conn.fetchrow("SELECT logo, logo_type FROM status_pages WHERE id = $1", page_id)
    return (bytes(row["logo"]), row["logo_type"]) if row and row["logo"] is not None else None


async def list_pages(conn: DB, *, after_id: int, limit: int) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {PAGE_COLUMNS} FROM status_pages WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
    )
    return [dict(r) for r in rows]


async def delete_page(conn: DB, page_id: int) -> bool:
    return await conn.fetchval("DELETE FROM status_pages WHERE id = $1 RETURNING id", page_id) is not None


async def components(conn: DB, page_ids: list[int]) -> list[Row]:
    """Components of the pages in display order, with their monitor's current state."""
    rows = await conn.fetch(
        "SELECT c.id, c.page_id, c.monitor_id, c.section, c.display_name, c.description, m.status,"
        " m.status_changed_at FROM status_page_components c JOIN monitors m ON m.id = c.monitor_id"
        " WHERE c.page_id = ANY($1) ORDER BY c.page_id, c.section_pos, c.position",
        page_ids,
    )
    return [dict(r) for r in rows]


async def monitor_badge(conn: DB, monitor_id: int) -> Row | None:
    """A monitor's status, whether any public page shows it, and the first display name it
    has on a page; None when there is no such monitor."""
    row = await conn.fetchrow(
        "SELECT m.status, bool_or(p.is_public) AS public, min(c.display_name) AS display_name"
        " FROM monitors m LEFT JOIN status_page_components c ON c.monitor_id = m.id"
        " LEFT JOIN status_pages p ON p.id = c.page_id WHERE m.id = $1 GROUP BY m.id",
        monitor_id,
    )
    return dict(row) if row else None


_RAW_DAYS = (
    "WITH ex AS MATERIALIZED (SELECT monitor_id, starts_at, ends_at FROM stats_excluded_periods"
    "   WHERE monitor_id = ANY($1) AND starts_at < $3 AND ends_at > $2)"
    " SELECT r.monitor_id, (r.due AT TIME ZONE 'UTC')::date AS day,"
    " count(*) FILTER (WHERE r.verdict = 'up')::int AS up,"
    " count(*) FILTER (WHERE r.verdict = 'degraded')::int AS degraded,"
    " count(*) FILTER (WHERE r.verdict = 'down')::int AS down"
    " FROM rounds r WHERE r.monitor_id = ANY($1) AND r.due >= $2 AND r.due < $3 AND r.attempt = 0"
    " AND r.verdict IN ('up', 'degraded', 'down') AND NOT EXISTS (SELECT 1 FROM ex"
    "   WHERE ex.monitor_id = r.monitor_id AND r.due >= ex.starts_at AND r.due < ex.ends_at)"
    " GROUP BY 1, 2"
)


async def day_counts(
    conn: DB, monitor_ids: list[int], since: dt.datetime, until: dt.datetime
) -> dict[int, dict[dt.date, tuple[int, int, int]]]:
    """(up, degraded, down) scheduled rounds per monitor per UTC day of [since, until).

    Read like the stats engine reads uptime: verdict rollups (day, hour, minute) below their
    watermarks, raw rounds above; rounds in maintenance or paused spans are left out, unknown
    verdicts (no region answered: the fleet's problem) and re-check attempts count for nothing.
    """
    out: dict[int, dict[dt.date, tuple[int, int, int]]] = {}
    for level, a, b in stats.pieces(since, until, await stats.watermarks(conn)):
        if level == "raw":
            rows = await conn.fetch(_RAW_DAYS, monitor_ids, a, b)
        else:
            rows = await conn.fetch(
                f"SELECT monitor_id, (bucket AT TIME ZONE 'UTC')::date AS day, sum(up)::int AS up,"
                f" sum(degraded)::int AS degraded, sum(down)::int AS down FROM verdicts_{level}"
                f" WHERE monitor_id = ANY($1) AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2",
                monitor_ids,
                a,
                b,
            )
        for r in rows:
            days = out.setdefault(r["monitor_id"], {})
            up, degraded, down = days.get(r["day"], (0, 0, 0))
            days[r["day"]] = (up + r["up"], degraded + r["degraded"], down + r["down"])
    return {m: {d: c for d, c in days.items() if any(c)} for m, days in out.items()}


async def _has_table(conn: DB, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def in_maintenance(conn: DB, monitor_ids: list[int], now: dt.datetime) -> set[int]:
    if not await _has_table(conn, "maintenance_periods"):
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT monitor_id FROM maintenance_periods WHERE monitor_id = ANY($1)"
        " AND starts_at <= $2 AND ends_at > $2",
        monitor_ids,
        now,
    )
    return {r["monitor_id"] for r in rows}


async def maintenance_windows(conn: DB, monitor_ids: list[int], now: dt.datetime) -> list[Row]:
    """Enabled windows (recurring, or one-off and not ended) touching the page's monitors;
    `shown` lists which of those monitors each covers."""
    if not await _has_table(conn, "maintenance_windows"):
        return []
    rows = await conn.fetch(
        "SELECT w.id, w.name, w.monitor_ids, w.tags, w.starts_at, w.ends_at, w.days, w.start_time,"
        " w.duration_s, w.time_zone, w.enabled, array_agg(m.id) AS shown"
        " FROM maintenance_windows w JOIN monitors m ON m.id = ANY($1)"
        " AND (m.id = ANY(w.monitor_ids) OR m.tags && w.tags)"
        " WHERE w.enabled AND (cardinality(w.days) > 0 OR w.ends_at > $2)"
        " GROUP BY w.id ORDER BY w.id LIMIT 200",
        monitor_ids,
        now,
    )
    return [dict(r) for r in rows]


# --- posts -------------------------------------------------------------------------------


async def insert_post(conn: Tx, page_id: int, title: str, status: str, message: str) -> int:
    post_id: int = await conn.fetchval(
        "INSERT INTO status_page_posts (page_id, title, status, resolved_at)"
        " VALUES ($1, $2, $3, CASE WHEN $3 = 'resolved' THEN now() END) RETURNING id",
        page_id,
        title,
        status,
    )
    await conn.execute(
        "INSERT INTO status_page_post_updates (post_id, status, message) VALUES ($1, $2, $3)",
        post_id,
        status,
        message,
    )
    return post_id


async def add_update(conn: Tx, post_id: int, status: str, message: str) -> bool:
    done = await conn.fetchval(
        "UPDATE status_page_posts SET status = $2, updated_at = now(),"
        " resolved_at = CASE WHEN $2 = 'resolved' THEN coalesce(resolved_at, now()) END"
        " WHERE id = $1 RETURNING id",
        post_id,
        status,
    )
    if done is None:
        return False
    await conn.execute(
        "INSERT INTO status_page_post_updates (post_id, status, message) VALUES ($1, $2, $3)",
        post_id,
        status,
        message,
    )
    return True


async def open_post(conn: DB, page_id: int) -> int | None:
    post_id: int | None = await conn.fetchval(
        "SELECT id FROM status_page_posts WHERE page_id = $1 AND status <> 'resolved'"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        page_id,
    )
    return post_id


async def posts(
    conn: DB,
    page_id: int,
    *,
    post_id: int | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Row]:
    """Posts newest first, each with its updates newest first; open posts whatever their age.
    `offset` skips that many (the archive's pages)."""
    rows = await conn.fetch(
        "SELECT p.id, p.page_id, p.title, p.status, p.created_at, p.updated_at, p.resolved_at,"
        " coalesce((SELECT json_agg(json_build_object('id', u.id, 'status', u.status,"
        # RFC 3339 in UTC like every other time the API shows (not the session's zone)
        "  'message', u.message, 'created_at',"
        "  to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"
        "  ORDER BY u.id DESC)"
        "  FROM status_page_post_updates u WHERE u.post_id = p.id), '[]')::jsonb AS updates"
        " FROM status_page_posts p WHERE p.page_id = $1 AND ($2::bigint IS NULL OR p.id = $2)"
        " AND ($3::timestamptz IS NULL OR p.status <> 'resolved' OR p.updated_at >= $3)"
        " ORDER BY p.created_at DESC, p.id DESC LIMIT $4 OFFSET $5",
        page_id,
        post_id,
        since,
        limit,
        offset,
    )
    return [dict(r) for r in rows]


async def count_posts(conn: DB, page_id: int) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM status_page_posts WHERE page_id = $1", page_id)
    return n


async def response_times(
    conn: DB, monitor_ids: list[int], since: dt.datetime, until: dt.datetime
) -> dict[int, float]:
    """Mean response time (ms) per monitor over [since, until), every region together, read
    as the statistics are (rollups below their watermarks, raw results above)."""
    sums: dict[int, tuple[int, float]] = {}
    for r in await stats.check_rows(
        conn, monitor_ids, stats.pieces(since, until, await stats.watermarks(conn))
    ):
        n, total = sums.get(r["monitor_id"], (0, 0.0))
        sums[r["monitor_id"]] = (n + r["rt_count"], total + float(r["rt_sum"] or 0.0))
    return {m: total / n for m, (n, total) in sums.items() if n}


async def post_page(conn: DB, post_id: int) -> int | None:
    page_id: int | None = await conn.fetchval("SELECT page_id FROM status_page_posts WHERE id = $1", post_id)
    return page_id


# --- subscribers and notices -------------------------------------------------------------


async def add_subscriber(
    conn: Tx, page_id: int, kind: str, address: str, confirmed: bool, component_ids: list[int] | None = None
) -> Row:
    """The subscriber row; subscribing twice returns the existing row (and its token). An
    unconfirmed row takes the components of the latest request (None: all of them); a
    confirmed one keeps its own, so nobody else's request can narrow what it receives."""
    row = await conn.fetchrow(
        "INSERT INTO status_page_subscribers (page_id, kind, address, token, confirmed_at, component_ids)"
        " VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END, $6)"
        " ON CONFLICT (page_id, kind, address) DO UPDATE SET component_ids = CASE"
        " WHEN status_page_subscribers.confirmed_at IS NULL THEN EXCLUDED.component_ids"
        " ELSE status_page_subscribers.component_ids END"
        " RETURNING id, page_id, kind, address, token, confirmed_at, created_at, component_ids",
        page_id,
        kind,
        address,
        secrets.token_urlsafe(32),
        confirmed,
        component_ids,
    )
    assert row is not None
    return dict(row)


async def confirm_subscriber(conn: DB, token: str) -> Row | None:
    row = await conn.fetchrow(
        "UPDATE status_page_subscribers SET confirmed_at = coalesce(confirmed_at, now())"
        " WHERE token = $1 RETURNING id, page_id, kind, address",
        token,
    )
    return dict(row) if row else None


async def remove_subscriber(
    conn: DB, *, token: str | None = None, page_id: int | None = None, subscriber_id: int | None = None
) -> bool:
    done = await conn.fetchval(
        "DELETE FROM status_page_subscribers WHERE (token = $1) OR (page_id = $2 AND id = $3) RETURNING id",
        token,
        page_id,
        subscriber_id,
    )
    return done is not None


async def subscribers(conn: DB, page_id: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT id, kind, address, confirmed_at, created_at, component_ids FROM status_page_subscribers"
        " WHERE page_id = $1 ORDER BY id",
        page_id,
    )
    return [dict(r) for r in rows]


async def state_audience(conn: DB, events: list[tuple[int, int]]) -> list[Row]:
    """For (event id, monitor id) pairs: every confirmed subscriber of a page showing that
    monitor (of all its components, or of that one), with the component's display name there."""
    if not events:
        return []
    ids, monitors = zip(*events, strict=True)
    rows = await conn.fetch(
        "SELECT e.id AS event_id, s.id AS subscriber_id, c.display_name"
        " FROM unnest($1::bigint[], $2::bigint[]) AS e(id, monitor_id)"
        " JOIN status_page_components c ON c.monitor_id = e.monitor_id"
        " JOIN status_page_subscribers s ON s.page_id = c.page_id AND s.confirmed_at IS NOT NULL"
        " AND (s.component_ids IS NULL OR c.id = ANY(s.component_ids))"
        " ORDER BY e.id, s.id",
        list(ids),
        list(monitors),
    )
    return [dict(r) for r in rows]


async def subscribers_by_id(conn: DB, ids: list[int]) -> dict[int, Row]:
    """Where each subscriber's notices go (kind, address), its link token and its page."""
    rows = await conn.fetch(
        "SELECT s.id, s.kind, s.address, s.token, s.page_id, p.name AS page_name, p.slug"
        " FROM status_page_subscribers s JOIN status_pages p ON p.id = s.page_id"
        " WHERE s.id = ANY($1::bigint[])",
        ids,
    )
    return {r["id"]: dict(r) for r in rows}


# --- shared secrets ---------------------------------------------------------------------


async def shared_secret(conn: DB, name: str, candidate: str) -> str:
    """The secret stored under `name`; the first controller to ask stores its candidate."""
    await conn.execute(
        "INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", name, candidate
    )
    value: str = await conn.fetchval("SELECT value FROM shared_secrets WHERE name = $1", name)
    return value
