"""MySQL and MariaDB check: connect, authenticate, run the query in a read-only
transaction and compare the first column of the first row (as text) with the expected
value.

The session runs in a worker thread with PyMySQL (the `checks` extra): aiomysql, the
asyncio client built on it, opens its socket with no local address and no seam to give
one, and a check must leave from the probe's source address, which PyMySQL takes as
`bind_address`. Every socket operation is bounded by the check's timeout, so a
thread outliving a timed-out check ends within that time and closes its connection."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ssl
import time

from probefleet.probe.checkers import base, db
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import MysqlSpec, Reason

REQUIRES = ("pymysql",)
_ACCESS_DENIED = {1044, 1045, 1698}


def _session(
    spec: MysqlSpec,
    timeout: float,
    source_address: str | None,
    ssl_ctx: ssl.SSLContext | None,
    timings: dict[str, float],
    start: float,
) -> tuple[object, str]:
    """Connects, runs the query read-only; the first value and the server's version."""
    import pymysql

    conn = pymysql.connect(
        host=spec.host,
        port=spec.port,
        user=spec.user,
        password=spec.password or "",
        database=spec.database,
        ssl=ssl_ctx,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
        autocommit=False,
        local_infile=False,
        bind_address=source_address,
    )
    timings["connect"] = base.elapsed_ms(start)
    try:
        with conn.cursor() as cur:
            # Guards statements that change rows; DDL commits implicitly in MySQL, so the
            # check's user should have SELECT rights only (docs/checks.md).
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.execute("START TRANSACTION READ ONLY")
            cur.execute(spec.query)
            row = cur.fetchone()
        conn.rollback()
        timings["query"] = round(base.elapsed_ms(start) - timings["connect"], 3)
        return (None if not row else row[0]), conn.get_server_info()
    finally:
        conn.close()


async def check(spec: MysqlSpec, *, timeout: float, source_address: str | None) -> Outcome:
    import pymysql

    start = time.perf_counter()
    timings: dict[str, float] = {}
    ssl_ctx = base.tls_context(verify=spec.verify_tls, ca_pem=spec.ca_pem) if spec.tls else None
    try:
        async with asyncio.timeout(timeout):
            value, version = await asyncio.to_thread(
                _session, spec, timeout, source_address, ssl_ctx, timings, start
            )
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        if code in _ACCESS_DENIED and "connect" not in timings:
            return base.failed(Reason.AUTH_FAILED, str(exc.args[-1])[:300], timings=db.total(timings, start))
        cause = exc.__cause__ or exc.__context__
        if "connect" not in timings and isinstance(cause, OSError):
            return base.from_exception(cause, timings=db.total(timings, start))
        reason = Reason.QUERY_FAILED if "connect" in timings else Reason.CONNECTION_REFUSED
        return base.failed(reason, str(exc.args[-1])[:300], timings=db.total(timings, start))
    except pymysql.err.MySQLError as exc:
        reason = Reason.QUERY_FAILED if "connect" in timings else Reason.PROTOCOL_ERROR
        return base.failed(
            reason, str(exc.args[-1] if exc.args else exc)[:300], timings=db.total(timings, start)
        )
    except Exception as exc:
        return base.from_exception(exc, timings=db.total(timings, start))
    details: dict[str, object] = {"server_version": version}
    return db.verdict(value, spec.expected_value, spec.degraded_ms, timings, start, details)
