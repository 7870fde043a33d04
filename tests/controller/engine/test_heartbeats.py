"""Heartbeat deadlines: the pure schedule logic, then record() and tick() with a fixed
clock against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from probefleet.controller import metrics
from probefleet.controller.api.heartbeats import attach
from probefleet.controller.engine import heartbeats as hb
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.storage import db
from probefleet.controller.storage import heartbeats as store
from probefleet.controller.storage import monitors as monitor_store

UTC = dt.UTC
T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NY = ZoneInfo("America/New_York")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def spec(**kw: object) -> heartbeat.HeartbeatSpec:
    parsed, problems = heartbeat.parse_spec(kw)
    assert parsed is not None, problems
    return parsed


def state(s: heartbeat.HeartbeatSpec, **kw: object) -> heartbeat.State:
    return heartbeat.State(spec=s, status=str(kw.pop("status", "up")), anchor=T0, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------ pure


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # 02:30 does not exist on 2024-03-10 in New York: it runs at 03:30 EDT (07:30 UTC)
        ("30 2 * * *", "America/New_York", utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7, 30)),
        ("30 2 * * *", "America/New_York", utc(2024, 3, 10, 7, 30), utc(2024, 3, 11, 6, 30)),
        # 01:30 happens twice on 2024-11-03: counted once, at its first (EDT) occurrence
        ("30 1 * * *", "America/New_York", utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30)),
        ("30 1 * * *", "America/New_York", utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)),
        # wall-clock daily 09:00 keeps its local time across the change: 23 h then 24 h
        ("0 9 * * *", "Europe/Berlin", utc(2024, 3, 30, 8, 0), utc(2024, 3, 31, 7, 0)),
        ("0 9 * * *", "Europe/Berlin", utc(2024, 3, 31, 7, 0), utc(2024, 4, 1, 7, 0)),
        # every 30 minutes: in the repeated hour (01:10 EST) the next due time is 02:00 EST,
        # a longer wait rather than a false alarm for a daily job pinging late
        ("*/30 * * * *", "America/New_York", utc(2024, 11, 3, 6, 10), utc(2024, 11, 3, 7, 0)),
        ("*/30 * * * *", "America/New_York", utc(2024, 11, 3, 5, 10), utc(2024, 11, 3, 5, 30)),
        ("0 0 1 1 *", "UTC", utc(2024, 6, 1), utc(2025, 1, 1)),
    ],
    ids=[
        "gap-day",
        "after-gap",
        "fold-day",
        "after-fold",
        "berlin-spring",
        "berlin-next",
        "fold-every-30",
        "before-fold",
        "yearly",
    ],
)
def test_it_finds_the_next_cron_time_across_dst(
    expr: str, tz: str, after: dt.datetime, expected: dt.datetime
) -> None:
    assert heartbeat.next_cron(expr, ZoneInfo(tz), after) == expected


def test_it_reports_a_missed_cron_run_after_the_dst_gap_with_its_grace() -> None:
    s = spec(cron="30 2 * * *", tz="America/New_York", grace_period=600)
    st = heartbeat.State(spec=s, status="up", anchor=utc(2024, 3, 1), last_success=utc(2024, 3, 9, 7, 31))
    d = hb.deadline(st)
    assert d is not None and d.at == utc(2024, 3, 10, 7, 40) and d.reason == "heartbeat_missed"
    assert hb.evaluate(st, utc(2024, 3, 10, 7, 39, 59)) is None
    verdict = hb.evaluate(st, utc(2024, 3, 10, 7, 40))
    assert verdict is not None and verdict.state == "down" and verdict.reason == "heartbeat_missed"


def test_it_is_late_only_after_period_plus_grace() -> None:
    st = state(spec(run_interval=60, grace_period=30), last_success=T0)
    assert hb.evaluate(st, T0 + dt.timedelta(seconds=89)) is None
    assert hb.evaluate(st, T0 + dt.timedelta(seconds=90)) is not None


def test_it_counts_the_first_deadline_from_creation() -> None:
    st = state(spec(run_interval=60, grace_period=0), status="pending")
    assert hb.evaluate(st, T0 + dt.timedelta(seconds=59)) is None
    assert hb.evaluate(st, T0 + dt.timedelta(seconds=60)) is not None


def test_a_start_without_finish_is_down_after_the_grace() -> None:
    st = state(spec(run_interval=3600, grace_period=60), last_success=T0)
    hb.signal(st, heartbeat.Ping(monitor_id=1, at=T0 + dt.timedelta(seconds=10), kind="start", rid="r1"))
    d = hb.deadline(st)
    assert d is not None and d.reason == "run_timeout" and d.at == T0 + dt.timedelta(seconds=70)
    verdict = hb.evaluate(st, T0 + dt.timedelta(seconds=70))
    assert verdict is not None and verdict.reason == "run_timeout"


def test_a_finish_pairs_with_its_start_by_run_id() -> None:
    st = state(spec(run_interval=3600, grace_period=600))
    hb.signal(st, heartbeat.Ping(monitor_id=1, at=T0, kind="start", rid="a"))
    hb.signal(st, heartbeat.Ping(monitor_id=1, at=T0 + dt.timedelta(seconds=5), kind="start", rid="b"))
    verdict, duration = hb.signal(
        st, heartbeat.Ping(monitor_id=1, at=T0 + dt.timedelta(seconds=42), kind="success", rid="a")
    )
    assert verdict is not None and verdict.state == "up" and duration == 42.0
    assert list(st.runs) == ["b"]
    _, duration = hb.signal(
        st, heartbeat.Ping(monitor_id=1, at=T0 + dt.timedelta(seconds=50), kind="success")
    )
    assert duration is None  # no start without a run id to pair with


def test_fail_is_down_at_once_and_log_changes_nothing() -> None:
    st = state(spec(run_interval=60))
    verdict, _ = hb.signal(st, heartbeat.Ping(monitor_id=1, at=T0, kind="fail", body="disk full"))
    assert verdict is not None and verdict.state == "down" and verdict.message == "disk full"
    assert hb.signal(st, heartbeat.Ping(monitor_id=1, at=T0, kind="log", body="x")) == (None, None)


def test_nothing_is_late_while_paused_or_already_down() -> None:
    far = T0 + dt.timedelta(days=10)
    assert hb.evaluate(state(spec(run_interval=60), status="paused"), far) is None
    assert hb.evaluate(state(spec(run_interval=60), enabled=False), far) is None
    assert hb.evaluate(state(spec(run_interval=60), status="down"), far) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"run_interval": 60, "cron": "* * * * *"}, "run_interval"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"run_interval": 60, "tz": "Mars/Olympus"}, "tz"),
        ({"run_interval": 0}, "run_interval"),
        ({"run_interval": 60, "colour": 1}, "colour"),
    ],
    ids=["both", "bad-cron", "six-fields", "never", "bad-tz", "zero", "unknown"],
)
def test_it_rejects_bad_schedules(fields: dict[str, object], field: str) -> None:
    parsed, problems = heartbeat.parse_spec(fields)
    assert parsed is None and field in problems


def test_no_schedule_is_the_default_interval() -> None:
    parsed, problems = heartbeat.parse_spec({})
    assert problems == {} and parsed is not None
    assert (parsed.run_interval, parsed.cron) == (heartbeat.DEFAULT_RUN_INTERVAL, None)
    parsed, _ = heartbeat.parse_spec({}, fallback_interval=300)
    assert parsed is not None and parsed.run_interval == 300


# ------------------------------------------------------------ record and tick on PostgreSQL


ALLOW = hb.OUTAGE_ALLOWANCE.total_seconds()


@pytest.mark.parametrize(
    ("outages", "expected"),
    [
        ([], 100),
        ([(10, 40)], 100),  # over before the grace window [70, 100] opened: the client had time
        ([(60, 80)], 100 + 20 + ALLOW),  # overlaps the window's start
        ([(90, 95)], 100 + 5 + ALLOW),  # inside the window
        ([(95, 130)], 100 + 35 + ALLOW),  # the deadline passed during it
        ([(100, 110)], 100),  # began at the deadline: the ping was late already
        ([(120, 130)], 100),  # began after the deadline
        ([(80, 90), (105, 115)], 100 + 10 + 10 + ALLOW),  # the second overlaps the moved deadline
        ([(105, 115), (80, 90)], 100 + 10 + 10 + ALLOW),  # in any order
    ],
    ids=[
        "none",
        "before-window",
        "window-start",
        "inside-window",
        "across-deadline",
        "at-deadline",
        "after-deadline",
        "chained",
        "chained-unsorted",
    ],
)
def test_an_outage_in_the_grace_window_moves_the_deadline(
    outages: list[tuple[float, float]], expected: float
) -> None:
    d = heartbeat.Deadline(at=at(100), reason="heartbeat_missed")
    moved = hb.excused(d, 30, [(at(a), at(b)) for a, b in outages])
    assert moved == heartbeat.Deadline(at=at(expected), reason="heartbeat_missed")


def test_a_deadline_with_no_grace_moves_only_for_an_outage_across_it() -> None:
    d = heartbeat.Deadline(at=at(100), reason="run_timeout")
    assert hb.excused(d, 0, [(at(90), at(99))]) == d
    assert hb.excused(d, 0, [(at(99), at(104))]).at == at(105 + ALLOW)


@pytest.fixture
async def pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The shared pool, with the ping partitions of the days these tests ping on."""
    await ping_days(pool)
    return pool


async def ping_days(pool: asyncpg.Pool) -> None:
    """heartbeat_pings has no default partition: the days these tests ping on."""
    await db.ensure_partitions(pool, T0, days_ahead=11, tables=("heartbeat_pings",))


async def make(pool: asyncpg.Pool, **fields: object) -> int:
    cfg = monitors.parse({"name": "job", "type": "heartbeat", **fields}, ["us-east"])
    row = await monitor_store.insert(pool, cfg)
    await pool.execute("UPDATE monitors SET created_at = $2 WHERE id = $1", row["id"], T0)
    row["created_at"] = T0
    await attach(pool, row)
    return int(row["id"])


async def status(pool: asyncpg.Pool, mid: int) -> str:
    return str(await pool.fetchval("SELECT status FROM monitors WHERE id = $1", mid))


async def kinds(pool: asyncpg.Pool, mid: int) -> list[str]:
    return [
        r["kind"] for r in await pool.fetch("SELECT kind FROM events WHERE monitor_id = $1 ORDER BY id", mid)
    ]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def test_a_missed_deadline_goes_down_once_and_the_next_success_brings_it_up(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=60, grace_period=30)
    assert await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(1), kind="success")]) == [True]
    assert await status(pool, mid) == "up"
    assert await hb.tick(pool, at(90)) == 0  # deadline 1 + 60 + 30 = 91
    assert await hb.tick(pool, at(91)) == 1
    assert await status(pool, mid) == "down"
    assert await hb.tick(pool, at(500)) == 0  # no second alert
    assert await kinds(pool, mid) == ["monitor.down", "incident.opened", "heartbeat.missed"]
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(600), kind="success")])
    assert await status(pool, mid) == "up"
    assert (await kinds(pool, mid))[-2:] == ["incident.resolved", "monitor.up"]
    row = await store.get(pool, mid)
    assert row is not None and row["deadline"] == at(690)


async def test_a_tick_with_nothing_due_is_one_statement_and_no_transaction(
    pool: asyncpg.Pool, database: str
) -> None:
    mid = await make(pool, run_interval=60, grace_period=30)
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(1), kind="success")])
    async with pool.acquire() as conn:  # the connection the tick gets (the pool is LIFO)
        pid = conn.get_server_pid()
    assert await hb.tick(pool, at(90)) == 0
    watcher = await asyncpg.connect(database)
    try:
        last = await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await watcher.close()
    assert last.startswith("SELECT EXISTS"), last  # not COMMIT: no transaction was opened
    assert await hb.tick(pool, at(91)) == 1  # and a deadline passed is still seen


async def test_a_late_ping_before_the_tick_keeps_it_up(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=60, grace_period=30)
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(1), kind="success")])
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(85), kind="success")])  # late but in grace
    assert await hb.tick(pool, at(100)) == 0
    assert await status(pool, mid) == "up"


async def test_a_deadline_that_passed_while_the_database_was_unavailable_is_excused(
    pool: asyncpg.Pool,
) -> None:
    mid = await make(pool, run_interval=60, grace_period=30)
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(1), kind="success")])
    outage = [(at(80), at(100))]  # deadline 91: the pings of 80..100 were refused

    def outages() -> list[tuple[dt.datetime, dt.datetime]]:
        return outage

    def excused() -> float:
        return metrics.REGISTRY.get_sample_value("probefleet_heartbeat_deadlines_excused_total") or 0.0

    before = excused()
    assert await hb.tick(pool, at(101), outages=outages) == 0
    assert await status(pool, mid) == "up"
    assert excused() == before + 1
    row = await store.get(pool, mid)
    moved = at(91 + 20) + hb.OUTAGE_ALLOWANCE
    assert row is not None and row["deadline"] == moved  # not read again by every tick
    assert await hb.tick(pool, at(105), outages=outages) == 0
    assert excused() == before + 1
    # the client's retry after the outage keeps it up; without one it goes down when the
    # moved deadline passes
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(103), kind="success")])
    assert await hb.tick(pool, at(190), outages=outages) == 0
    assert await status(pool, mid) == "up"
    assert await hb.tick(pool, at(192), outages=outages) == 0
    assert await hb.tick(pool, at(193), outages=outages) == 1  # 103 + 90; the outage is before its window
    assert await kinds(pool, mid) == ["monitor.down", "incident.opened", "heartbeat.missed"]


async def test_a_heartbeat_silent_after_the_outage_goes_down_at_the_moved_deadline(
    pool: asyncpg.Pool,
) -> None:
    mid = await make(pool, run_interval=60, grace_period=30)
    await hb.record(pool, [heartbeat.Ping(monitor_id=mid, at=at(1), kind="success")])

    def outages() -> list[tuple[dt.datetime, dt.datetime]]:
        return [(at(80), at(100))]

    moved = 91 + 20 + hb.OUTAGE_ALLOWANCE.total_seconds()
    assert await hb.tick(pool, at(moved - 1), outages=outages) == 0
    assert await hb.tick(pool, at(moved), outages=outages) == 1
    assert await status(pool, mid) == "down"


async def test_every_signal_is_stored_and_applied(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=3600, grace_period=60)
    pings = [
        heartbeat.Ping(monitor_id=mid, at=at(0), kind="start", rid="r1"),
        heartbeat.Ping(monitor_id=mid, at=at(2), kind="log", body="halfway"),
        heartbeat.Ping(monitor_id=mid, at=at(5), kind="success", rid="r1"),
        heartbeat.Ping(monitor_id=mid, at=at(6), kind="fail", exit_code=3),
        heartbeat.Ping(monitor_id=mid, at=at(7), kind="success", exit_code=0),
    ]
    assert await hb.record(pool, pings) == [True] * 5
    history = await store.pings(pool, mid, before=None, limit=10)
    assert [(p["kind"], p["exit_code"]) for p in reversed(history)] == [
        ("start", None),
        ("log", None),
        ("success", None),
        ("fail", 3),
        ("success", 0),
    ]
    assert history[-3]["duration_ms"] == 5000.0
    assert await status(pool, mid) == "up"
    assert await kinds(pool, mid) == ["monitor.down", "incident.opened", "incident.resolved", "monitor.up"]


async def test_a_start_without_finish_goes_down_by_tick(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=3600, grace_period=60)
    await hb.record(
        pool,
        [
            heartbeat.Ping(monitor_id=mid, at=at(0), kind="success"),
            heartbeat.Ping(monitor_id=mid, at=at(100), kind="start"),
        ],
    )
    assert await hb.tick(pool, at(159)) == 0
    assert await hb.tick(pool, at(160)) == 1
    event = await pool.fetchrow("SELECT payload FROM events WHERE kind = 'heartbeat.missed'")
    assert event is not None and event["payload"]["reason"] == "run_timeout"


async def test_a_paused_heartbeat_is_never_late_and_unknown_ones_are_not_stored(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=60, grace_period=0, is_enabled=False)
    assert await hb.tick(pool, at(10_000)) == 0
    assert await status(pool, mid) == "paused"
    assert await hb.record(
        pool,
        [
            heartbeat.Ping(monitor_id=mid, at=at(1), kind="start"),
            heartbeat.Ping(monitor_id=mid, at=at(2), kind="log"),
            heartbeat.Ping(monitor_id=mid + 1000, at=at(1), kind="success"),
        ],
    ) == [True, True, False]
    assert await status(pool, mid) == "paused"  # a start or a log does not resume it
    assert await store.count_pings(pool, mid) == 2


async def test_a_maintenance_window_writes_no_down_event(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=60, grace_period=0)
    await pool.execute(
        "INSERT INTO maintenance_windows (name, monitor_ids, starts_at, ends_at) VALUES ('m', $1, $2, $3)",
        [mid],
        at(0),
        at(1000),
    )
    assert await hb.tick(pool, at(61)) == 1
    assert await status(pool, mid) == "down"
    assert await kinds(pool, mid) == []


async def test_the_deadline_query_can_use_the_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch(
            "EXPLAIN SELECT monitor_id FROM heartbeats WHERE deadline <= now() ORDER BY deadline LIMIT 5"
        )
    assert "heartbeats_deadline" in "\n".join(r[0] for r in plan)


async def test_a_success_or_fail_ping_resumes_a_paused_heartbeat(pool: asyncpg.Pool) -> None:
    ok_id = await make(pool, run_interval=60, grace_period=30, is_enabled=False)
    fail_id = await make(pool, run_interval=60, grace_period=30, is_enabled=False)
    pings = [
        heartbeat.Ping(monitor_id=ok_id, at=at(100), kind="success"),
        heartbeat.Ping(monitor_id=fail_id, at=at(100), kind="fail", body="disk full"),
    ]
    await hb.record(pool, pings)
    assert await status(pool, ok_id) == "up" and await status(pool, fail_id) == "down"
    assert await pool.fetchval("SELECT bool_and(enabled) FROM monitors") is True
    assert await kinds(pool, ok_id) == ["monitor.resumed"]
    assert await kinds(pool, fail_id) == ["monitor.resumed", "monitor.down", "incident.opened"]
    event = await pool.fetchrow(
        "SELECT payload FROM events WHERE kind = 'monitor.resumed' AND monitor_id = $1", ok_id
    )
    assert event["payload"]["reason"] == "ping" and event["payload"]["previous_status"] == "paused"
    row = await store.get(pool, ok_id)
    assert row is not None and row["anchor_at"] == at(100) and row["deadline"] == at(190)
    assert await hb.tick(pool, at(189)) == 0
    assert await hb.tick(pool, at(190)) == 1


async def test_two_controllers_ticking_together_transition_each_heartbeat_once(database: str) -> None:
    """Two deadline checkers (two pools, as two controllers) race over the same due
    heartbeats, in small batches so their transactions interleave."""
    await db.migrate(database)
    a, b = await db.create_pool(database, max_size=3), await db.create_pool(database, max_size=3)
    await ping_days(a)
    try:
        ids = [await make(a, run_interval=60, grace_period=0) for _ in range(40)]
        for round_no in range(2):
            base = round_no * 1000
            await hb.record(a, [heartbeat.Ping(monitor_id=m, at=at(base + 1), kind="success") for m in ids])
            downs = await asyncio.gather(*(hb.tick(p, at(base + 61), limit=3) for p in (a, b, a, b)))
            assert sum(downs) == len(ids)
        rows = await a.fetch("SELECT monitor_id, kind, count(*) AS n FROM events GROUP BY 1, 2")
        counts = {(r["monitor_id"], r["kind"]): r["n"] for r in rows}
        for m in ids:
            for kind in ("monitor.down", "incident.opened", "heartbeat.missed", "incident.resolved"):
                assert counts.get((m, kind)) == (2 if kind != "incident.resolved" else 1), (m, kind)
        per_monitor = await a.fetch("SELECT monitor_id, count(*) AS n FROM incidents GROUP BY 1")
        assert {r["n"] for r in per_monitor} == {2} and len(per_monitor) == len(ids)
    finally:
        await a.close()
        await b.close()


async def test_pings_are_counted_by_kind_with_batch_sizes(pool: asyncpg.Pool) -> None:
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    mid = await make(pool, run_interval=60)
    before = (
        sample("probefleet_heartbeat_pings_total", kind="log"),
        sample("probefleet_heartbeat_ping_batch_size_count"),
    )
    writer = hb.PingWriter(pool)
    futures = [
        asyncio.ensure_future(writer.submit(heartbeat.Ping(monitor_id=mid, at=at(i), kind="log")))
        for i in range(3)
    ]
    await asyncio.sleep(0)
    assert await writer.flush_once() == 3
    assert all(await asyncio.gather(*futures))
    assert sample("probefleet_heartbeat_pings_total", kind="log") == before[0] + 3
    assert sample("probefleet_heartbeat_ping_batch_size_count") == before[1] + 1


async def test_the_writer_keeps_one_connection_per_lane_and_gives_them_back(pool: asyncpg.Pool) -> None:
    a, b = await make(pool, run_interval=60), await make(pool, run_interval=60)
    writer, stop = hb.PingWriter(pool, lanes=2), asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    pings = [
        heartbeat.Ping(monitor_id=m, at=at(i), kind="log", body=str(i)) for i in range(10) for m in (a, b)
    ]
    assert await asyncio.gather(*(writer.submit(p) for p in pings)) == [True] * 20
    assert pool.get_size() - pool.get_idle_size() == len({a % 2, b % 2})
    stop.set()
    await task
    assert pool.get_idle_size() == pool.get_size()
    for m in (a, b):  # each heartbeat's pings stored in arrival order (ids follow inserts)
        rows = await store.pings(pool, m, before=None, limit=100)
        assert [r["body"] for r in sorted(rows, key=lambda r: r["id"])] == [str(i) for i in range(10)]


# ------------------------------------------------------------ partitioned ping history


async def test_the_history_pages_newest_first_across_day_partitions(pool: asyncpg.Pool) -> None:
    mid = await make(pool, run_interval=60)
    times = [at(0), at(86400 + 5), at(2 * 86400), at(2 * 86400), at(3 * 86400 + 7)]
    order = [4, 0, 1, 2, 3]  # the newest stored first: ids do not follow time
    assert (
        await hb.record(
            pool, [heartbeat.Ping(monitor_id=mid, at=times[i], kind="log", body=str(i)) for i in order]
        )
        == [True] * 5
    )
    where = await pool.fetch("SELECT tableoid::regclass::text AS part FROM heartbeat_pings")
    assert {r["part"] for r in where} == {
        "heartbeat_pings_20240601",
        "heartbeat_pings_20240602",
        "heartbeat_pings_20240603",
        "heartbeat_pings_20240604",
    }
    seen: list[dict[str, object]] = []
    before: tuple[dt.datetime, int] | None = None
    while True:
        page = await store.pings(pool, mid, before=before, limit=2)
        seen += page
        if len(page) < 2:
            break
        before = (page[-1]["at"], page[-1]["id"])
    # newest first; the two pings of one instant (split by a page end) by id, the later first
    assert [r["body"] for r in seen] == ["4", "3", "2", "1", "0"]


KIND_OF_PINGS = "SELECT relkind::text FROM pg_class WHERE relname = 'heartbeat_pings'"


async def test_the_partitioning_migration_keeps_every_ping(database: str) -> None:
    await db.migrate(database, upto="0010")
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval(KIND_OF_PINGS) == "r"
        add = (
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            " VALUES ('job', 'heartbeat', '{}', 60, 10, '{}') RETURNING id"
        )
        mid, other = await conn.fetchval(add), await conn.fetchval(add)
        # a day's last and the next day's first microsecond, a gap of weeks, and today
        times = [
            T0,
            utc(2024, 6, 2, 23, 59, 59, 999_999),
            utc(2024, 6, 3),
            T0 + dt.timedelta(days=40),
            dt.datetime.now(UTC),
        ]
        for i, t in enumerate(times):
            await conn.execute(
                "INSERT INTO heartbeat_pings (monitor_id, at, kind, exit_code, rid, duration_ms, source,"
                " user_agent, method, body)"
                " VALUES ($1, $2, $3, $4, $5, $6, '10.0.0.1', 'cron/1', 'POST', $7)",
                mid if i % 2 == 0 else other,
                t,
                ("start", "success", "fail", "log", "success")[i],
                i or None,
                f"run-{i}",
                i * 1.5,
                f"body {i}",
            )
        old = [dict(r) for r in await conn.fetch("SELECT * FROM heartbeat_pings ORDER BY id")]
    finally:
        await conn.close()

    assert "0011_heartbeat_pings_partitioned" in await db.migrate(database)

    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval(KIND_OF_PINGS) == "p"
        assert await conn.fetchval("SELECT to_regclass('heartbeat_pings_unpartitioned')") is None
        rows = await conn.fetch("SELECT tableoid::regclass::text AS part, * FROM heartbeat_pings ORDER BY id")
        assert [{k: v for k, v in r.items() if k != "part"} for r in rows] == old
        assert [r["part"] for r in rows] == [f"heartbeat_pings_{t:%Y%m%d}" for t in times]
        # the sequence went along: a new ping (today's partition, made by migrate) gets a new id
        new_id = await conn.fetchval(
            "INSERT INTO heartbeat_pings (monitor_id, at, kind) VALUES ($1, now(), 'log') RETURNING id", mid
        )
        assert new_id > old[-1]["id"]
        # and so did the foreign key: deleting a monitor deletes its pings
        await conn.execute("DELETE FROM monitors WHERE id = $1", other)
        assert {r["monitor_id"] for r in await conn.fetch("SELECT monitor_id FROM heartbeat_pings")} == {mid}
    finally:
        await conn.close()
