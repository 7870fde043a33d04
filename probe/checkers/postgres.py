"""PostgreSQL check: connect, authenticate, run the query in a read-only transaction and
compare the first column of the first row (as text) with the expected value. asyncpg is
imported when a check runs. asyncpg has no option for a local address; with a source
address it is handed a loop that binds every connection it opens (_BoundLoop)."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
from typing import Any

from probefleet.probe.checkers import base, db
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import PostgresSpec, Reason

REQUIRES = ("asyncpg",)


class _BoundLoop:
    """The running loop, but each TCP connection opened through it starts from
    `source_address`. asyncpg takes a `loop` and opens every connection through its
    `create_connection` (the session, the STARTTLS probe, a cancel request), so this is
    the one seam where the probe's region address can be applied."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source_address: str) -> None:
        self._loop = loop
        self._local = (source_address, 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_connection(self, factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        if kwargs.get("sock") is None:
            kwargs["local_addr"] = self._local
        return await self._loop.create_connection(factory, host, port, **kwargs)


def _ssl(spec: PostgresSpec) -> Any:
    if spec.tls == "verify-full":
        return base.tls_context(verify=True, ca_pem=spec.ca_pem)
    if spec.tls == "require":
        return base.tls_context(verify=False, ca_pem=None)
    return spec.tls  # "disable" or "prefer", as asyncpg reads them


async def check(spec: PostgresSpec, *, timeout: float, source_address: str | None) -> Outcome:
    import asyncpg

    start = time.perf_counter()
    timings: dict[str, float] = {}
    loop: Any = _BoundLoop(asyncio.get_running_loop(), source_address) if source_address else None
    try:
        async with asyncio.timeout(timeout):
            conn = await asyncpg.connect(
                host=spec.host,
                port=spec.port,
                user=spec.user,
                password=spec.password,
                database=spec.database or spec.user,
                ssl=_ssl(spec),
                timeout=timeout,
                statement_cache_size=0,
                server_settings={"application_name": "probefleet"},
                loop=loop,
            )
            timings["connect"] = base.elapsed_ms(start)
            try:
                async with conn.transaction(readonly=True):
                    row = await conn.fetchrow(spec.query)
                timings["query"] = round(base.elapsed_ms(start) - timings["connect"], 3)
                details: dict[str, object] = {
                    "server_version": ".".join(str(p) for p in conn.get_server_version()[:2])
                }
            finally:
                await conn.close(timeout=1)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return base.failed(Reason.AUTH_FAILED, str(exc)[:300], timings=db.total(timings, start))
    except asyncpg.PostgresError as exc:
        reason = Reason.QUERY_FAILED if "connect" in timings else Reason.PROTOCOL_ERROR
        return base.failed(reason, str(exc)[:300], timings=db.total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=db.total(timings, start))
    value = None if row is None or len(row) == 0 else row[0]
    return db.verdict(value, spec.expected_value, spec.degraded_ms, timings, start, details)
