"""A failed result's evidence is stored in its row's own column (check_results.evidence,
migration 0023) as msgpack, the body as its gzip bytes: once per result however often it
is delivered, out of line without a second compression, and read back as the probe sent
it; an older probe's base64 body and evidence stored before the column, inside details,
read the same."""

from __future__ import annotations

import base64
import datetime as dt
import random

import asyncpg

from probefleet.controller.storage import db
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import results as result_store
from probefleet.controller.storage import stats as stats_store
from probefleet.probe.evidence import http_response
from probefleet.shared import wire
from probefleet.shared.evidence import EVIDENCE_BODY, from_stored, unpack_body

# Hex of random bytes: gzip keeps about half, so the stored evidence is tens of KiB (out of line).
PAGE = random.Random(20).randbytes(40000).hex().encode()


def _evidence() -> dict[str, object]:
    return http_response(
        wire.HttpSpec(url="http://127.0.0.1:1/"),
        (wire.Reason.STATUS_MISMATCH, "status 503 not in 2xx, 3xx"),
        ips=["127.0.0.1"],
        status_line="HTTP/1.1 503 Service Unavailable",
        headers=[("Content-Type", "text/html"), ("Set-Cookie", "s3cr3t")],
        body=PAGE,
    )


def _result(mid: int, due: float, region: str, details: dict[str, object]) -> wire.CheckResult:
    return wire.CheckResult(
        monitor_id=mid,
        due=due,
        region=region,
        probe_id=f"p-{region}",
        status=wire.Status.FAIL if details else wire.Status.OK,
        reason=wire.Reason.STATUS_MISMATCH if details else None,
        started_at=due,
        duration_ms=3.0,
        status_code=503 if details else 200,
        details=details,
    )


async def test_evidence_is_stored_once_in_its_column_and_read_back_as_sent(pool: asyncpg.Pool) -> None:
    mid = await pool.fetchval(
        "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
        " VALUES ('m', 'http', $1::jsonb, 60, 5, $2) RETURNING id",
        '{"type": "http", "url": "http://127.0.0.1:1/"}',
        ["us-east", "eu-west"],
    )
    sent = _evidence()
    assert isinstance(sent["body_gzip"], bytes)
    # An older probe sent the gzip in base64: stored the same way.
    older = {k: v for k, v in sent.items() if k != "body_gzip"} | {
        "body_gzip_b64": base64.b64encode(sent["body_gzip"]).decode()
    }
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    due = now.timestamp() - 60
    batch = [
        _result(mid, due, "us-east", {"evidence": sent, "extra": 1}),
        _result(mid, due, "eu-west", {}),
        _result(mid, due, "ap-south", {"evidence": older}),
    ]
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert (await result_store.store_batch(conn, batch)).count == 3
        async with conn.transaction():  # redelivered: nothing stored twice
            assert (await result_store.store_batch(conn, batch)).count == 0
        rows = await conn.fetch(
            "SELECT region, details, evidence, pg_column_compression(evidence) AS c,"
            " tableoid::regclass::text AS part FROM check_results WHERE monitor_id = $1 ORDER BY region",
            mid,
        )
    old_probe, passed, failed = rows
    assert (passed["details"], passed["evidence"]) == (None, None)
    # The rest of details stays JSON; the evidence is msgpack with the gzip bytes (an older
    # probe's base64 decoded), and PostgreSQL did not compress it again.
    assert failed["details"] == {"extra": 1} and old_probe["details"] is None
    assert from_stored(failed["evidence"]) == from_stored(old_probe["evidence"]) == sent
    assert len(sent["body_gzip"]) > 16 << 10 and failed["c"] is None
    assert len(failed["evidence"]) < len(sent["body_gzip"]) + 300
    # EXTERNAL in the day's partition, in one created later (they take it from the parent)
    # and in one made of rows that sat in the default partition (db._adopt_default_rows).
    later, adopted = now + dt.timedelta(days=400), now + dt.timedelta(days=500)
    async with pool.acquire() as conn, conn.transaction():
        await result_store.store_batch(
            conn, [_result(mid, adopted.timestamp(), "us-east", {"evidence": sent})]
        )
    await db.ensure_partitions(pool, later, days_ahead=0, tables=("check_results",))
    await db.ensure_partitions(pool, adopted, days_ahead=0, tables=("check_results",))
    assert (
        await pool.fetchval(
            "SELECT tableoid::regclass::text FROM check_results WHERE monitor_id = $1 AND due = $2",
            mid,
            adopted.replace(microsecond=0),
        )
        == f"check_results_{adopted.date():%Y%m%d}"
    )
    for part in (
        failed["part"],
        f"check_results_{later.date():%Y%m%d}",
        f"check_results_{adopted.date():%Y%m%d}",
    ):
        storage = await pool.fetchval(
            "SELECT attstorage::text FROM pg_attribute WHERE attrelid = $1::regclass"
            " AND attname = 'evidence'",
            part,
        )
        assert storage == "e", part

    # Evidence stored before the column, inside details (an older probe's base64), reads the same.
    await pool.execute(
        "INSERT INTO check_results (monitor_id, due, region, attempt, probe_id, status, reason,"
        " started_at, duration_ms, details) VALUES ($1, $2, 'sa-east', 0, 'p-old', 'fail',"
        " 'status_mismatch', $2, 3.0, $3::jsonb)",
        mid,
        now - dt.timedelta(seconds=60),
        {"evidence": older},
    )
    got = await incident_store.failed_results(pool, mid, now - dt.timedelta(hours=1), now, 10)
    assert [r["region"] for r in got] == ["ap-south", "sa-east", "us-east"]
    shown = [unpack_body(r["evidence"]) for r in got]
    assert shown[0] == shown[1] == shown[2] == unpack_body(sent)
    assert shown[0]["body"] == PAGE[:EVIDENCE_BODY].decode() and shown[0]["body_truncated"] is True
    assert shown[0]["headers"] == [["Content-Type", "text/html"], ["Set-Cookie", "<redacted>"]]

    # Retention drops a day's partition: its results' evidence goes with them.
    assert await stats_store.drop_partition(pool, failed["part"])
    got = await incident_store.failed_results(pool, mid, now - dt.timedelta(hours=1), now, 10)
    assert got == [] and await pool.fetchval("SELECT count(*) FROM check_results WHERE due <= $1", now) == 0
