"""The diagnose kind: traceroute, DNS answer and resolver, TLS chain, within its budget."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

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
    assert "udp traceroute reached 127.0.0.21 in 1 hop" in out.message


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
    assert "TLS chain not verified: " in out.message and "expired" in out.message
    good = await serve_tls(leaf(ca, days=30))
    out = await run(DiagnoseSpec(host="127.0.0.1", port=good, tls=True, ca_pem=ca_pem))
    assert out.details["tls"]["verified"] is True  # type: ignore[index]
    assert out.details["tls"]["tls_version"] == "TLSv1.3"  # type: ignore[index]
    assert out.message.endswith(", TLS chain ok")


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


def _closed_port(host: str) -> int:
    """A port nothing listens on at `host` (bound for a moment, then let go)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _as_nobody(call: Callable[[], dict[str, object]]) -> dict[str, object]:
    """`call()`'s answer from a child process that became nobody (the test process is root)."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody (modules are loaded already), answer, exit
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write, json.dumps({"uid": os.geteuid(), "out": call()}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = json.loads(f.read() or "{}")
    os.waitpid(pid, 0)
    assert answer["uid"] == nobody.pw_uid
    return dict(answer["out"])


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.25", 0))
        s.listen(64)
        yield "127.0.0.25", int(s.getsockname()[1])


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_the_tcp_traceroute_reaches_a_listening_port_in_one_hop(
    listening: tuple[str, int], user: str
) -> None:
    host, port = listening

    def call() -> dict[str, object]:
        return diagnose.trace_tcp(host, port, max_hops=20, wait=3.0)

    if user == "nobody" and os.geteuid() != 0:
        pytest.skip("needs root to become nobody in a child")
    route = _as_nobody(call) if user == "nobody" else call()
    assert (route["method"], route["address"], route["port"]) == ("tcp", host, port)
    assert (route["reached"], route["port_state"]) == (True, "open")
    hops = route["hops"]
    assert isinstance(hops, list)
    assert [(h["ttl"], h["address"], h["kind"], h["port"]) for h in hops] == [(1, host, "reached", "open")]


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_the_tcp_traceroute_reaches_a_closed_port_and_says_it_is_closed(user: str) -> None:
    host = "127.0.0.26"
    port = _closed_port(host)

    def call() -> dict[str, object]:
        return diagnose.trace_tcp(host, port, max_hops=20, wait=3.0)

    if user == "nobody" and os.geteuid() != 0:
        pytest.skip("needs root to become nobody in a child")
    route = _as_nobody(call) if user == "nobody" else call()
    assert (route["method"], route["reached"], route["port_state"]) == ("tcp", True, "closed")
    hops = route["hops"]
    assert isinstance(hops, list)
    assert [(h["ttl"], h["address"], h["kind"], h["port"]) for h in hops] == [(1, host, "reached", "closed")]


async def test_a_tcp_target_is_traced_with_tcp_and_the_summary_says_so(listening: tuple[str, int]) -> None:
    host, port = listening
    out = await run(DiagnoseSpec(host=host, port=port, tcp=True))
    route = out.details["traceroute"]
    assert isinstance(route, dict)
    assert (route["method"], route["reached"], route["port_state"]) == ("tcp", True, "open")
    assert f"tcp traceroute reached {host} in 1 hop" in out.message
    # The UDP trace ran beside it, within the same budget; both reached: the summary says one.
    udp = route["udp"]
    assert (udp["method"], udp["address"], udp["reached"]) == ("udp", host, True)
    assert [(h["ttl"], h["kind"]) for h in udp["hops"]] == [(1, "reached")]
    assert "udp traceroute" not in out.message
    closed = await run(DiagnoseSpec(host="127.0.0.26", port=_closed_port("127.0.0.26"), tcp=True))
    assert "(port closed)" in closed.message
    # Without a port there is nothing to connect to: UDP as for any other target.
    out = await run(DiagnoseSpec(host=host, tcp=True))
    assert out.details["traceroute"]["method"] == "udp"  # type: ignore[index]


def test_the_summary_names_the_udp_trace_when_it_gets_further_than_the_tcp_one() -> None:
    hop = {"ttl": 1, "address": "10.0.0.1", "kind": "time_exceeded"}
    route = {"method": "tcp", "address": "10.0.0.9", "reached": False, "hops": [hop] * 3}
    udp = {"method": "udp", "address": "10.0.0.9", "reached": True, "hops": [hop] * 7}
    summary = diagnose._summary({"traceroute": {**route, "udp": udp}})
    assert summary == "tcp traceroute did not reach 10.0.0.9 in 3 hops, udp traceroute reached it in 7 hops"
    assert diagnose._summary({"traceroute": route}) == "tcp traceroute did not reach 10.0.0.9 in 3 hops"


_TRACE_IN_NS = """
import json, sys
from probefleet.probe.checkers import diagnose
print(json.dumps(diagnose.trace_tcp(sys.argv[1], 80, max_hops=5, wait=3.0)))
"""


@pytest.fixture(scope="module")
def routed() -> Iterator[str]:
    """Three network namespaces: the probe, a router, the target (10.77.2.1, nothing
    listening): the path the probe sees is two hops. The name of the probe's namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to build network namespaces")
    ns = f"pf{os.getpid()}"
    c, r, s = f"{ns}c", f"{ns}r", f"{ns}s"
    steps = [
        *(["netns", "add", n] for n in (c, r, s)),
        ["link", "add", f"{ns}a", "type", "veth", "peer", "name", f"{ns}b"],
        ["link", "add", f"{ns}d", "type", "veth", "peer", "name", f"{ns}e"],
        ["link", "set", f"{ns}a", "netns", c],
        ["link", "set", f"{ns}b", "netns", r],
        ["link", "set", f"{ns}d", "netns", r],
        ["link", "set", f"{ns}e", "netns", s],
        ["-n", c, "addr", "add", "10.77.1.1/24", "dev", f"{ns}a"],
        ["-n", r, "addr", "add", "10.77.1.2/24", "dev", f"{ns}b"],
        ["-n", r, "addr", "add", "10.77.2.2/24", "dev", f"{ns}d"],
        ["-n", s, "addr", "add", "10.77.2.1/24", "dev", f"{ns}e"],
        *(
            ["-n", n, "link", "set", dev, "up"]
            for n, dev in ((c, f"{ns}a"), (r, f"{ns}b"), (r, f"{ns}d"), (s, f"{ns}e"))
        ),
        ["-n", c, "route", "add", "default", "via", "10.77.1.2"],
        ["-n", s, "route", "add", "default", "via", "10.77.2.2"],
        ["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ]
    try:
        for step in steps:
            done = subprocess.run(["ip", *step], capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                pytest.skip(f"cannot build the namespaces here: ip {' '.join(step)}: {done.stderr.strip()}")
        yield c
    finally:
        for n in (c, r, s):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_the_tcp_traceroute_reads_a_router_s_time_exceeded(routed: str, user: str) -> None:
    """The router's time exceeded for the SYN with TTL 1 comes from the socket's error queue;
    the target's RST ends the path at hop 2. Unprivileged: the same as nobody."""
    become = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if user == "nobody" else []
    if become and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run as nobody")
    if become:
        can = subprocess.run(
            [*become, sys.executable, "-c", "import probefleet.probe.checkers.diagnose"],
            capture_output=True,
            timeout=20,
        )
        if can.returncode != 0:
            # CI builds the venv in a 0700 folder; the unprivileged path itself is covered on
            # loopback by the forked-child nobody tests above.
            pytest.skip("nobody cannot import probefleet from this venv")
    done = subprocess.run(
        ["ip", "netns", "exec", routed, *become, sys.executable, "-c", _TRACE_IN_NS, "10.77.2.1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    route = json.loads(done.stdout)
    assert (route["method"], route["reached"], route["port_state"]) == ("tcp", True, "closed")
    assert [(h["ttl"], h["address"], h["kind"]) for h in route["hops"]] == [
        (1, "10.77.1.2", "time_exceeded"),
        (2, "10.77.2.1", "reached"),
    ]
