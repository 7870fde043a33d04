from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from dnslib import AAAA, CAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from probefleet.probe.checkers import dns
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import DnsSpec, Reason, Status

SOA_TIMES = (7, 3600, 600, 86400, 60)
ZONE = [
    RR("www.example.test", QTYPE.A, rdata=A("192.0.2.10")),
    RR("www.example.test", QTYPE.A, rdata=A("192.0.2.11")),
    RR("www.example.test", QTYPE.AAAA, rdata=AAAA("2001:db8::10")),
    RR("alias.example.test", QTYPE.CNAME, rdata=CNAME("www.example.test")),
    RR("example.test", QTYPE.MX, rdata=MX("mail.example.test", 10)),
    RR("example.test", QTYPE.TXT, rdata=TXT("v=spf1 -all")),
    RR("example.test", QTYPE.NS, rdata=NS("ns1.example.test")),
    RR(
        "example.test",
        QTYPE.SOA,
        rdata=SOA("ns1.example.test", "admin.example.test", (7, 3600, 600, 86400, 60)),
    ),
    RR("_sip._tcp.example.test", QTYPE.SRV, rdata=SRV(1, 5, 5060, "sip.example.test")),
    RR("example.test", QTYPE.CAA, rdata=CAA(0, "issue", "letsencrypt.org")),
    RR("10.2.0.192.in-addr.arpa", QTYPE.PTR, rdata=PTR("www.example.test")),
]


class _Zone(BaseResolver):
    def __init__(self) -> None:
        self.peers: list[str] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        self.peers.append(handler.client_address[0])
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        if str(qname).startswith("broken."):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if str(qname).startswith("slow."):
            import time

            time.sleep(0.5)
        names = {rr.rname for rr in ZONE}
        reply.add_answer(*[rr for rr in ZONE if rr.rname == qname and rr.rtype == qtype])
        if qname not in names:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[str, _Zone]]:
    resolver = _Zone()
    server = DNSServer(resolver, port=0, address="127.0.0.1")
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}", resolver
    server.stop()


async def run(spec: DnsSpec, source: str | None = None, budget: float = 1.0) -> Outcome:
    return await dns.check(spec, timeout=budget, source_address=source)


@pytest.mark.parametrize(
    ("name", "rtype", "expected"),
    [
        ("www.example.test", "A", ["192.0.2.10", "192.0.2.11"]),
        ("www.example.test", "AAAA", ["2001:db8::10"]),
        ("alias.example.test", "CNAME", ["www.example.test"]),
        ("example.test", "MX", ["10 mail.example.test"]),
        ("example.test", "TXT", ["v=spf1 -all"]),
        ("example.test", "NS", ["ns1.example.test"]),
        ("example.test", "SOA", ["ns1.example.test admin.example.test 7"]),
        ("_sip._tcp.example.test", "SRV", ["1 5 5060 sip.example.test"]),
        ("example.test", "CAA", ["0 issue letsencrypt.org"]),
        ("192.0.2.10", "PTR", ["www.example.test"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_it_reads_every_record_type(
    zone: tuple[str, _Zone], name: str, rtype: str, expected: list[str]
) -> None:
    spec = DnsSpec(name=name, record_type=rtype, resolver=zone[0], expected_values=expected)  # type: ignore[arg-type]
    spec.match = "all"
    out = await run(spec)
    assert out.status == Status.OK, out.message
    assert sorted(dns._norm(a) for a in out.details["answers"]) == sorted(expected)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "match", "reason"),
    [
        (["192.0.2.10", "192.0.2.99"], "any", None),
        (["192.0.2.10", "192.0.2.99"], "all", Reason.ANSWER_MISMATCH),
        (["192.0.2.99"], "any", Reason.ANSWER_MISMATCH),
    ],
    ids=["any", "all-missing-one", "none"],
)
async def test_it_matches_expected_values(
    zone: tuple[str, _Zone], values: list[str], match: str, reason: Reason | None
) -> None:
    spec = DnsSpec(name="www.example.test", resolver=zone[0], expected_values=values)
    spec.match = match  # type: ignore[assignment]
    assert (await run(spec)).reason == reason


@pytest.mark.parametrize(
    ("name", "rcode", "reason"),
    [
        ("missing.example.test", "NXDOMAIN", None),
        ("missing.example.test", "NOERROR", Reason.RCODE_MISMATCH),
        ("www.example.test", "NXDOMAIN", Reason.RCODE_MISMATCH),
        ("broken.example.test", "NOERROR", Reason.RCODE_MISMATCH),
        ("broken.example.test", "SERVFAIL", None),
    ],
    ids=["nxdomain-expected", "nxdomain-unexpected", "exists-but-nx-expected", "servfail", "sf-ok"],
)
async def test_it_checks_the_rcode(
    zone: tuple[str, _Zone], name: str, rcode: str, reason: Reason | None
) -> None:
    out = await run(DnsSpec(name=name, resolver=zone[0], expected_rcode=rcode))
    assert out.reason == reason, out.message


async def test_it_binds_the_source_address(zone: tuple[str, _Zone]) -> None:
    out = await run(DnsSpec(name="www.example.test", resolver=zone[0]), source="127.0.0.12")
    assert out.status == Status.OK
    assert zone[1].peers[-1] == "127.0.0.12"


async def test_a_source_address_the_host_does_not_have_is_network_unreachable(
    zone: tuple[str, _Zone],
) -> None:
    out = await run(DnsSpec(name="www.example.test", resolver=zone[0]), source="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


async def test_it_times_out_on_a_slow_resolver(zone: tuple[str, _Zone]) -> None:
    out = await run(DnsSpec(name="slow.example.test", resolver=zone[0]), budget=0.2)
    assert out.reason == Reason.TIMEOUT
    assert out.timings["total"] < 400


class _Garbage(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # The right query id followed by a header that claims records it does not hold.
        self.transport.sendto(data[:2] + b"\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00", addr)  # type: ignore[attr-defined]


@pytest.fixture
async def garbage_resolver() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Garbage, local_addr=("127.0.0.1", 0))
    yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    transport.close()


async def test_it_fails_a_malformed_answer_as_dns_error(garbage_resolver: str) -> None:
    out = await run(DnsSpec(name="www.example.test", resolver=garbage_resolver), budget=0.5)
    assert out.reason == Reason.DNS_ERROR, out


async def test_a_wrong_answer_keeps_the_full_answer_as_evidence(zone: tuple[str, _Zone]) -> None:
    spec = DnsSpec(name="www.example.test", resolver=zone[0], expected_values=["192.0.2.99"])
    ok = await run(DnsSpec(name="www.example.test", resolver=zone[0]))
    assert ok.status == Status.OK and "evidence" not in ok.details
    out = await run(spec)
    assert out.reason == Reason.ANSWER_MISMATCH
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["resolver"] == zone[0] and evidence["rcode"] == "NOERROR"
    assert evidence["query"] == {"name": "www.example.test", "type": "A"}
    answer = evidence["answer"]
    assert isinstance(answer, list)
    assert sorted((r["name"], r["type"], r["data"]) for r in answer) == [
        ("www.example.test", "A", "192.0.2.10"),
        ("www.example.test", "A", "192.0.2.11"),
    ]
    assert all(isinstance(r["ttl"], int) for r in answer)
    assert evidence["authority"] == [] and evidence["additional"] == []


async def test_an_nxdomain_keeps_the_rcode_and_resolver_as_evidence(zone: tuple[str, _Zone]) -> None:
    out = await run(DnsSpec(name="missing.example.test", resolver=zone[0]))
    assert out.reason == Reason.RCODE_MISMATCH
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["rcode"] == "NXDOMAIN" and evidence["resolver"] == zone[0] and evidence["answer"] == []
    assert evidence["reason"] == "rcode_mismatch" and "NXDOMAIN" in str(evidence["message"])
