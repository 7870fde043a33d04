"""The diagnose kind: traceroute, DNS answer and resolver, TLS chain, within its budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import trustme
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from probefleet.probe.checkers import diagnose
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import DiagnoseSpec, Status

from .conftest import ServeTls, leaf


class _Zone(BaseResolver):
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        if str(request.q.qname) == "app.diagnose.test." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR("app.diagnose.test", QTYPE.A, rdata=A("127.0.0.23"), ttl=60))
        elif str(request.q.qname) != "app.diagnose.test.":
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def resolver() -> Iterator[str]:
    server = DNSServer(_Zone(), port=0, address="127.0.0.1")
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}"
    server.stop()


async def run(spec: DiagnoseSpec, budget: float = 5.0) -> Outcome:
    return await diagnose.check(spec, timeout=budget, source_address=None)


async def test_the_traceroute_reaches_a_loopback_address_in_one_hop() -> None:
    out = await run(DiagnoseSpec(host="127.0.0.21", port=9))
    assert out.status == Status.OK
    route = out.details["traceroute"]
    assert isinstance(route, dict)
    assert route["method"] == "udp"
    assert route["reached"] is True
    assert route["hops"] == [
        {"ttl": 1, "address": "127.0.0.21", "kind": "reached", "rtt_ms": route["hops"][0]["rtt_ms"]}
    ]
    assert out.details["dns"] == {
        "skipped": "the target is an address",
        "addresses": ["127.0.0.21"],
        "duration_ms": out.details["dns"]["duration_ms"],  # type: ignore[index]
    }
    assert "tls" not in out.details
    assert "reached 127.0.0.21 (1 hop)" in out.message


async def test_it_resolves_the_name_with_the_resolver_it_names_and_traces_the_answer(resolver: str) -> None:
    out = await run(DiagnoseSpec(host="app.diagnose.test", port=80, resolver=resolver))
    answer = out.details["dns"]
    assert isinstance(answer, dict)
    assert answer["resolver"] == resolver
    assert answer["addresses"] == ["127.0.0.23"]
    assert answer["answers"]["A"] == {
        "rcode": "NOERROR",
        "answer": [{"name": "app.diagnose.test", "type": "A", "ttl": 60, "data": "127.0.0.23"}],
    }
    assert answer["answers"]["AAAA"]["rcode"] == "NOERROR"
    route = out.details["traceroute"]
    assert isinstance(route, dict)
    assert route["address"] == "127.0.0.23"
    assert route["reached"] is True


async def test_a_name_that_does_not_exist_is_reported_not_failed(resolver: str) -> None:
    out = await run(DiagnoseSpec(host="gone.diagnose.test", resolver=resolver))
    assert out.status == Status.OK
    answer = out.details["dns"]
    assert isinstance(answer, dict)
    assert answer["answers"]["A"]["rcode"] == "NXDOMAIN"
    assert answer["addresses"] == []
    assert out.details["traceroute"]["error"] == "the name has no address to trace"  # type: ignore[index]


async def test_it_reads_the_presented_chain_verified_or_not(
    ca: trustme.CA, ca_pem: str, serve_tls: ServeTls
) -> None:
    port = await serve_tls(leaf(ca, days=-3))
    out = await run(DiagnoseSpec(host="127.0.0.1", port=port, tls=True, ca_pem=ca_pem))
    chain = out.details["tls"]
    assert isinstance(chain, dict)
    assert chain["verified"] is False
    assert "expired" in chain["verify_error"]
    assert chain["chain"][0]["sans"] == ["127.0.0.1"]
    assert "Probefleet Test CA" in chain["chain"][0]["issuer"]
    good = await serve_tls(leaf(ca, days=30))
    out = await run(DiagnoseSpec(host="127.0.0.1", port=good, tls=True, ca_pem=ca_pem))
    assert out.details["tls"]["verified"] is True  # type: ignore[index]
    assert out.details["tls"]["tls_version"] == "TLSv1.3"  # type: ignore[index]


async def test_the_budget_holds_against_a_server_that_never_answers_tls() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never says a word
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        start = time.perf_counter()
        out = await run(DiagnoseSpec(host="127.0.0.1", port=port, tls=True, budget=1.5), budget=10.0)
        elapsed = time.perf_counter() - start
    finally:
        server.close()
    assert out.status == Status.OK
    assert out.details["tls"]["error"] == "timed out"  # type: ignore[index]
    assert out.details["traceroute"]["reached"] is True  # type: ignore[index]
    assert elapsed < 1.5
