"""gRPC health check: the standard grpc.health.v1.Health/Check for one service (or the
whole server with ""), over TLS or plaintext. grpcio is imported here, when a check runs:
a probe without the `checks` extra starts and does not announce the kind."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import time
from typing import Any

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import GrpcSpec, Reason

REQUIRES = ("grpc", "grpc_health")


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
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    start = time.perf_counter()
    target = f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if spec.server_name:
        options.append(("grpc.ssl_target_name_override", spec.server_name))
    try:
        if spec.tls:
            channel = grpc.aio.secure_channel(target, _credentials(grpc, spec), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
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
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        what = f"service {spec.service!r}" if spec.service else "the server"
        return base.failed(Reason.NOT_SERVING, f"{what} is {status}", **fields)
    return base.passed(total, spec.degraded_ms, **fields)
