"""gRPC health check: the standard grpc.health.v1.Health/Check for one service (or the
whole server with ""), over TLS or plaintext. grpcio is imported here, when a check runs:
a probe without the `checks` extra starts and does not announce the kind.

grpcio has no option for the local address of a channel's connections (gRPC core's socket
mutator and socket factory are C pointers Python cannot give), so with a source address
the channel dials a private Unix socket and each connection on it is relayed to the
target over TCP from that address (_relay); TLS, the authority and the certificate's name
go through the relay unchanged."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import GrpcSpec, Reason

REQUIRES = ("grpc", "grpc_health")


@contextlib.asynccontextmanager
async def _relay(host: str, port: int, source_address: str) -> AsyncIterator[tuple[str, list[OSError]]]:
    """A Unix socket whose connections are relayed to host:port from `source_address`:
    the channel target, and the errors met connecting to the real target (the channel
    itself only sees the relayed connection closed)."""
    errors: list[OSError] = []
    relays: set[asyncio.Task[Any]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                host, port, local_addr=(source_address, 0)
            )
        except OSError as exc:
            errors.append(exc)
            client_writer.close()
            return
        await asyncio.gather(
            base.pipe(client_reader, upstream_writer), base.pipe(upstream_reader, client_writer)
        )

    folder = Path(tempfile.mkdtemp(prefix="probefleet-grpc-"))
    server = await asyncio.start_unix_server(relay, path=str(folder / "relay"))
    try:
        yield f"unix:{folder / 'relay'}", errors
    finally:
        server.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        shutil.rmtree(folder, ignore_errors=True)


def _credentials(grpc: Any, spec: GrpcSpec) -> Any:
    if not spec.verify_tls:
        # grpcio cannot skip verification; trusting the server's own certificate is not
        # possible before the handshake either, so an unverified check is refused early.
        raise ValueError("grpc over TLS always verifies the certificate: give ca_pem instead")
    root = spec.ca_pem.encode() if spec.ca_pem else None
    return grpc.ssl_channel_credentials(root_certificates=root)


def _reason(grpc: Any, code: Any) -> Reason:
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Reason.TIMEOUT
    if code == grpc.StatusCode.UNAVAILABLE:
        return Reason.CONNECTION_REFUSED
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Reason.AUTH_FAILED
    if code == grpc.StatusCode.NOT_FOUND:
        return Reason.NOT_SERVING
    return Reason.PROTOCOL_ERROR


async def check(spec: GrpcSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    if not source_address:
        return await _check(spec, timeout, None, [], start)
    try:
        async with _relay(spec.host, spec.port, source_address) as (target, errors):
            return await _check(spec, timeout, target, errors, start)
    except OSError as exc:  # the relay's own socket
        return base.from_exception(exc, timings={"total": base.elapsed_ms(start)})


async def _check(
    spec: GrpcSpec, timeout: float, relay_target: str | None, relay_errors: list[OSError], start: float
) -> Outcome:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if relay_target is not None:
        options.append(("grpc.default_authority", target))
        if spec.tls and not spec.server_name:
            options.append(("grpc.ssl_target_name_override", spec.host))
    if spec.server_name:
        options.append(("grpc.ssl_target_name_override", spec.server_name))
    dial = relay_target or target
    try:
        if spec.tls:
            channel = grpc.aio.secure_channel(dial, _credentials(grpc, spec), options=options)
        else:
            channel = grpc.aio.insecure_channel(dial, options=options)
    except ValueError as exc:
        return base.failed(Reason.INVALID_TARGET, str(exc))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=spec.service),
            timeout=timeout,
            metadata=tuple(spec.metadata.items()) or None,
            wait_for_ready=False,
        )
    except grpc.aio.AioRpcError as exc:
        if relay_errors and exc.code() == grpc.StatusCode.UNAVAILABLE:
            # The relay could not reach the target: its error says why (refused, the
            # source address not on this host, ...), where the channel saw only a close.
            return base.from_exception(relay_errors[0], timings={"total": base.elapsed_ms(start)})
        detail = exc.details() or exc.code().name
        message = f"{exc.code().name}: {detail}"[:300]
        return base.failed(_reason(grpc, exc.code()), message, timings={"total": base.elapsed_ms(start)})
    except Exception as exc:
        return base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
    finally:
        await channel.close()
    total = base.elapsed_ms(start)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    fields: dict[str, Any] = {"timings": {"total": total}, "details": {"serving_status": status}}
    if status != spec.expected_serving_status:
        what = f"service {spec.service!r}" if spec.service else "the server"
        # Expected SERVING: not_serving, whatever else came (NOT_SERVING, SERVICE_UNKNOWN,
        # UNKNOWN). A standby expected NOT_SERVING that answers otherwise: status_mismatch.
        reason = Reason.NOT_SERVING if spec.expected_serving_status == "SERVING" else Reason.STATUS_MISMATCH
        return base.failed(reason, f"{what} is {status}, expected {spec.expected_serving_status}", **fields)
    return base.passed(total, spec.degraded_ms, **fields)
