"""Redis check: connect, AUTH when a password is set, SELECT the database, run one
read-only command (PING by default) and compare its reply (as text) with the expected
value. Commands that write are refused by the API and here. redis-py's asyncio client is
imported when a check runs."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from probefleet.probe.checkers import base, db
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason, RedisSpec, parse_redis_command

REQUIRES = ("redis",)


def _bound(connection_class: Any) -> Any:
    """`connection_class` (redis-py's TCP or TLS connection) opening its socket from a
    `source_address` keyword: the client has no option for a local address, but each
    connection takes its asyncio.open_connection arguments from `_connection_arguments`."""

    class Bound(connection_class):
        def __init__(self, *, source_address: str | None = None, **kwargs: Any) -> None:
            self.source_address = source_address
            super().__init__(**kwargs)

        def _connection_arguments(self) -> Mapping[str, Any]:
            arguments = dict(super()._connection_arguments())
            if self.source_address:
                arguments["local_addr"] = (self.source_address, 0)
            return arguments

    return Bound


async def check(spec: RedisSpec, *, timeout: float, source_address: str | None) -> Outcome:
    import redis.asyncio as aioredis
    import redis.exceptions as errors
    from redis.asyncio.connection import Connection, SSLConnection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        words = parse_redis_command(spec.command)
    except ValueError as exc:
        return base.failed(Reason.INVALID_TARGET, str(exc))
    tls: dict[str, Any] = {}
    if spec.tls:
        tls = {"ssl_cert_reqs": "required" if spec.verify_tls else "none", "ssl_ca_data": spec.ca_pem}
    pool = aioredis.ConnectionPool(
        connection_class=_bound(SSLConnection if spec.tls else Connection),
        source_address=source_address,
        host=spec.host,
        port=spec.port,
        username=spec.username,
        password=spec.password,
        db=spec.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # one attempt: a check reports what it saw
        **tls,
    )
    client = aioredis.Redis(connection_pool=pool, single_connection_client=True)
    try:
        async with asyncio.timeout(timeout):
            await client.initialize()
            connection = client.connection
            assert connection is not None
            await connection.connect()
            timings["connect"] = base.elapsed_ms(start)
            reply = await client.execute_command(*words)
            timings["query"] = round(base.elapsed_ms(start) - timings["connect"], 3)
    except errors.AuthenticationError as exc:
        return base.failed(Reason.AUTH_FAILED, str(exc)[:300], timings=db.total(timings, start))
    except errors.ResponseError as exc:
        reason = (
            Reason.AUTH_FAILED if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) else Reason.QUERY_FAILED
        )
        return base.failed(reason, str(exc)[:300], timings=db.total(timings, start))
    except errors.TimeoutError:
        return base.failed(Reason.TIMEOUT, "timed out", timings=db.total(timings, start))
    except errors.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return base.from_exception(cause, timings=db.total(timings, start))
        reason = Reason.CONNECTION_REFUSED if "refused" in str(exc).lower() else Reason.PROTOCOL_ERROR
        return base.failed(reason, str(exc)[:300], timings=db.total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=db.total(timings, start))
    finally:
        await client.aclose()
        await pool.aclose()
    if reply is True:
        reply = "PONG" if words[0].upper() == "PING" else "OK"
    return db.verdict(reply, spec.expected_value, spec.degraded_ms, timings, start)
