"""MySQL and MariaDB check: connect, authenticate, run the query in a read-only
transaction and compare the first column of the first row (as text) with the expected
value. aiomysql is imported when a check runs."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time

from probefleet.probe.checkers import base, db
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import MysqlSpec, Reason

REQUIRES = ("aiomysql",)
_ACCESS_DENIED = {1044, 1045, 1698}


async def check(spec: MysqlSpec, *, timeout: float, source_address: str | None) -> Outcome:
    import aiomysql
    import pymysql

    start = time.perf_counter()
    timings: dict[str, float] = {}
    ssl_ctx = base.tls_context(verify=spec.verify_tls, ca_pem=spec.ca_pem) if spec.tls else None
    try:
        async with asyncio.timeout(timeout):
            conn = await aiomysql.connect(
                host=spec.host,
                port=spec.port,
                user=spec.user,
                password=spec.password or "",
                db=spec.database,
                ssl=ssl_ctx,
                connect_timeout=timeout,
                autocommit=False,
                local_infile=False,
            )
            timings["connect"] = base.elapsed_ms(start)
            try:
                async with conn.cursor() as cur:
                    # Guards statements that change rows; DDL commits implicitly in MySQL, so
                    # the check's user should have SELECT rights only (docs/checks.md).
                    await cur.execute("SET SESSION TRANSACTION READ ONLY")
                    await cur.execute("START TRANSACTION READ ONLY")
                    await cur.execute(spec.query)
                    row = await cur.fetchone()
                await conn.rollback()
                timings["query"] = round(base.elapsed_ms(start) - timings["connect"], 3)
                details: dict[str, object] = {"server_version": conn.get_server_info()}
            finally:
                conn.close()
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
    value = None if not row else row[0]
    return db.verdict(value, spec.expected_value, spec.degraded_ms, timings, start, details)
