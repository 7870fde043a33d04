"""grpc against a real grpcio server on loopback with the standard health service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import GrpcSpec, Reason, Status

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    def __init__(
        self, server: grpc.aio.Server, servicer: health.HealthServicer, port: int, tls_port: int
    ) -> None:
        self.server, self.servicer, self.port, self.tls_port = server, servicer, port, tls_port


@pytest.fixture(scope="module")
async def grpc_server(ca: trustme.CA) -> AsyncIterator[Server]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    creds = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), b"".join(b.bytes() for b in leaf.cert_chain_pems))]
    )
    tls_port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    await servicer.set("shop.Orders", SERVING)
    await servicer.set("shop.Billing", NOT_SERVING)
    await servicer.set("", SERVING)
    yield Server(server, servicer, port, tls_port)
    await server.stop(0)


async def run(spec: GrpcSpec, budget: float = 2.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["grpc"](spec, timeout=budget, source_address=None)


async def test_a_serving_service_passes(grpc_server: Server) -> None:
    out = await run(GrpcSpec(host="127.0.0.1", port=grpc_server.port, service="shop.Orders"))
    assert out.status == Status.OK, out
    assert out.details == {"serving_status": "SERVING"} and "total" in out.timings
    whole = await run(GrpcSpec(host="127.0.0.1", port=grpc_server.port))
    assert whole.status == Status.OK


async def test_a_service_not_serving_or_unknown_fails_with_not_serving(grpc_server: Server) -> None:
    out = await run(GrpcSpec(host="127.0.0.1", port=grpc_server.port, service="shop.Billing"))
    assert out.reason == Reason.NOT_SERVING and "NOT_SERVING" in out.message
    unknown = await run(GrpcSpec(host="127.0.0.1", port=grpc_server.port, service="shop.Nothing"))
    assert unknown.reason == Reason.NOT_SERVING and "NOT_FOUND" in unknown.message


async def test_tls_verifies_the_certificate_with_the_given_ca(grpc_server: Server, ca_pem: str) -> None:
    ok = await run(
        GrpcSpec(host="127.0.0.1", port=grpc_server.tls_port, tls=True, ca_pem=ca_pem, service="shop.Orders")
    )
    assert ok.status == Status.OK, ok
    untrusted = await run(GrpcSpec(host="127.0.0.1", port=grpc_server.tls_port, tls=True))
    assert untrusted.status == Status.FAIL


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(GrpcSpec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED


def test_the_api_reads_a_target_and_refuses_unverified_tls() -> None:
    cfg = monitor_config.parse({"name": "g", "type": "grpc", "url": "grpc://orders:50051"}, ["eu"])
    assert isinstance(cfg.spec, GrpcSpec) and (cfg.spec.host, cfg.spec.port) == ("orders", 50051)
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse(
            {"name": "g", "type": "grpc", "host": "o", "port": 1, "tls": True, "verify_tls": False}, ["eu"]
        )
    assert "verify_tls" in caught.value.details
