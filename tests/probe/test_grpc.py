"""grpc against a real grpcio server on loopback with the standard health service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe.checkers import CHECKERS
from probefleet.shared.wire import GrpcSpec, Reason, Status

from .by_hand import probe_check

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RecordingHealth(health.aio.HealthServicer):
    """The standard health service, noting each caller's address as the server saw it."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[str] = []

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        self.peers.append(context.peer())
        return await super().Check(request, context)


class Server:
    def __init__(self, server: grpc.aio.Server, servicer: RecordingHealth, port: int, tls_port: int) -> None:
        self.server, self.servicer, self.port, self.tls_port = server, servicer, port, tls_port


@pytest.fixture(scope="module")
async def grpc_server(ca: trustme.CA) -> AsyncIterator[Server]:
    server = grpc.aio.server()
    servicer = RecordingHealth()
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


async def test_a_standby_expected_not_serving_passes_and_fails_when_serving(grpc_server: Server) -> None:
    target = {"host": "127.0.0.1", "port": grpc_server.port, "expected_serving_status": "NOT_SERVING"}
    standby = await run(GrpcSpec(**target, service="shop.Billing"))  # type: ignore[arg-type]
    assert standby.status == Status.OK and standby.details == {"serving_status": "NOT_SERVING"}, standby
    serving = await run(GrpcSpec(**target, service="shop.Orders"))  # type: ignore[arg-type]
    assert serving.reason == Reason.STATUS_MISMATCH, serving
    assert serving.message == "service 'shop.Orders' is SERVING, expected NOT_SERVING"


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
    relayed = await CHECKERS["grpc"](
        GrpcSpec(host="127.0.0.1", port=9), timeout=2.0, source_address="127.0.0.12"
    )
    assert relayed.reason == Reason.CONNECTION_REFUSED, relayed


async def test_it_calls_from_the_probe_source_address(grpc_server: Server, ca_pem: str) -> None:
    plain = GrpcSpec(host="127.0.0.1", port=grpc_server.port, service="shop.Orders")
    out = await CHECKERS["grpc"](plain, timeout=2.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
    assert grpc_server.servicer.peers[-1].startswith("ipv4:127.0.0.12:")
    tls = GrpcSpec(
        host="127.0.0.1", port=grpc_server.tls_port, tls=True, ca_pem=ca_pem, service="shop.Orders"
    )
    out = await CHECKERS["grpc"](tls, timeout=2.0, source_address="127.0.0.13")
    assert out.status == Status.OK, out
    assert grpc_server.servicer.peers[-1].startswith("ipv4:127.0.0.13:")
    named = await CHECKERS["grpc"](
        GrpcSpec(
            host="127.0.0.1", port=grpc_server.tls_port, tls=True, ca_pem=ca_pem, server_name="localhost"
        ),
        timeout=2.0,
        source_address="127.0.0.14",
    )
    assert named.status == Status.OK, named
    untrusted = await CHECKERS["grpc"](
        GrpcSpec(host="127.0.0.1", port=grpc_server.tls_port, tls=True),
        timeout=2.0,
        source_address="127.0.0.12",
    )
    assert untrusted.status == Status.FAIL


async def test_a_source_address_the_host_does_not_have_is_network_unreachable(grpc_server: Server) -> None:
    spec = GrpcSpec(host="127.0.0.1", port=grpc_server.port)
    out = await CHECKERS["grpc"](spec, timeout=2.0, source_address="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


def test_the_api_reads_a_target_and_refuses_unverified_tls() -> None:
    cfg = monitor_config.parse({"name": "g", "type": "grpc", "url": "grpc://orders:50051"}, ["eu"])
    assert isinstance(cfg.spec, GrpcSpec) and (cfg.spec.host, cfg.spec.port) == ("orders", 50051)
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse(
            {"name": "g", "type": "grpc", "host": "o", "port": 1, "tls": True, "verify_tls": False}, ["eu"]
        )
    assert "verify_tls" in caught.value.details
    standby = {"name": "g", "type": "grpc", "host": "o", "port": 1, "expected_serving_status": "NOT_SERVING"}
    assert monitor_config.parse(standby, ["eu"]).spec == GrpcSpec(
        host="o", port=1, expected_serving_status="NOT_SERVING"
    )
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse(standby | {"expected_serving_status": "UNKNOWN"}, ["eu"])
    assert "expected_serving_status" in caught.value.details, caught.value.details


async def test_probefleet_probe_check_runs_it_from_a_spec_file(grpc_server: Server, tmp_path: Path) -> None:
    fields = {"host": "127.0.0.1", "port": grpc_server.port, "service": "shop.Orders"}
    code, result = await probe_check("grpc", fields, tmp_path)
    assert code == 0 and result["details"] == {"serving_status": "SERVING"}, result
    code, result = await probe_check("grpc", fields | {"service": "shop.Billing"}, tmp_path)
    assert code == 1 and result["reason"] == "not_serving", result
