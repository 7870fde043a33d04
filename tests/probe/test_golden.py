"""Encoded jobs, results and heartbeats compared with tests/testdata/.

Regenerate with PROBEFLEET_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from probefleet.shared import wire
from probefleet.shared.wire import (
    Assertion,
    CheckJob,
    CheckResult,
    DnsSpec,
    HttpSpec,
    IcmpSpec,
    ProbeHeartbeat,
    Reason,
    Status,
    TcpSpec,
    TlsSpec,
    UdpSpec,
)

TESTDATA = Path(__file__).parent.parent / "testdata"
SPECS: dict[str, wire.CheckSpec] = {
    "http": HttpSpec(
        url="https://example.test/health",
        method="POST",
        headers={"X-Probe": "1"},
        body='{"a": 1}',
        body_kind="json",
        expected_status=["2xx", 301],
        json_assertions=[Assertion(path="data.ok", op="equals", value=True)],
        degraded_ms=500,
    ),
    "tcp": TcpSpec(host="db.example.test", port=5432, send="PING\r\n", expect="PONG"),
    "udp": UdpSpec(host="ntp.example.test", port=123, send="hi", expect="ok"),
    "icmp": IcmpSpec(host="example.test", count=5, max_packet_loss=0.2),
    "dns": DnsSpec(name="example.test", record_type="MX", expected_values=["10 mx.example.test"]),
    "tls": TlsSpec(host="example.test", warn_days=21, expected_issuer="Let's Encrypt"),
}
MESSAGES: dict[str, CheckJob | CheckResult | ProbeHeartbeat] = {
    **{
        f"job_{kind}": CheckJob(
            monitor_id=42,
            due=1700000000.0,
            deadline=1700000010.0,
            region="eu-west",
            timeout=5.0,
            spec=spec,
        )
        for kind, spec in SPECS.items()
    },
    "result_ok": CheckResult(
        monitor_id=42,
        due=1700000000.0,
        region="eu-west",
        probe_id="probe-1",
        status=Status.OK,
        started_at=1700000000.25,
        duration_ms=12.5,
        timings={"dns": 0.4, "connect": 1.2, "tls": 3.1, "first_byte": 10.0, "total": 12.5},
        status_code=200,
        details={"size": 512, "cert_days_left": 80.5},
    ),
    "result_fail": CheckResult(
        monitor_id=42,
        due=1700000000.0,
        region="eu-west",
        attempt=1,
        probe_id="probe-1",
        status=Status.FAIL,
        reason=Reason.CONNECTION_REFUSED,
        message="connection refused",
        started_at=1700000000.25,
        duration_ms=0.9,
    ),
    "result_skipped": CheckResult(
        monitor_id=42,
        due=1700000000.0,
        region="eu-west",
        probe_id="probe-1",
        status=Status.SKIPPED,
        reason=Reason.DEADLINE_PASSED,
        started_at=1700000011.0,
    ),
    "heartbeat": ProbeHeartbeat(
        probe_id="probe-1",
        region="eu-west",
        version="0.1.0",
        concurrency=1000,
        in_flight=3,
        started_at=1700000000.0,
        sent_at=1700000002.0,
        source_address="127.0.0.12",
        checks_total=99,
    ),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_it_encodes_like_the_golden_file(name: str) -> None:
    path = TESTDATA / f"probe_{name}.msgpack"
    encoded = wire.encode(MESSAGES[name])
    if os.environ.get("PROBEFLEET_REGEN_GOLDEN") == "1":
        path.write_bytes(encoded)
    assert path.exists(), f"{path} missing: run with PROBEFLEET_REGEN_GOLDEN=1"
    assert encoded == path.read_bytes()
    decode = {"job": wire.decode_job, "result": wire.decode_result}.get(
        name.split("_")[0], wire.decode_heartbeat
    )
    assert decode(path.read_bytes()) == MESSAGES[name]


def test_a_job_batch_encodes_like_the_golden_file() -> None:
    """Jobs sent ahead to probes that take batches: a msgpack array of jobs in one message."""
    jobs = [MESSAGES["job_http"], MESSAGES["job_tcp"]]
    assert all(isinstance(j, CheckJob) for j in jobs)
    path = TESTDATA / "probe_job_batch.msgpack"
    encoded = wire.encode_job_batch([wire.encode(j) for j in jobs])
    if os.environ.get("PROBEFLEET_REGEN_GOLDEN") == "1":
        path.write_bytes(encoded)
    assert path.exists(), f"{path} missing: run with PROBEFLEET_REGEN_GOLDEN=1"
    assert encoded == path.read_bytes()
    assert wire.decode_jobs(path.read_bytes()) == jobs
    # A single job is its own message, as for a probe that takes no batches.
    assert wire.encode_job_batch([wire.encode(jobs[0])]) == (TESTDATA / "probe_job_http.msgpack").read_bytes()
    assert wire.decode_jobs((TESTDATA / "probe_job_http.msgpack").read_bytes()) == jobs[:1]


def test_a_batch_of_results_encodes_like_the_golden_file_and_only_a_new_decoder_reads_it() -> None:
    results = [MESSAGES["result_ok"], MESSAGES["result_fail"]]
    assert isinstance(results[0], CheckResult) and isinstance(results[1], CheckResult)
    path = TESTDATA / "probe_result_batch.msgpack"
    encoded = wire.encode_batch([wire.encode(r) for r in results])
    if os.environ.get("PROBEFLEET_REGEN_GOLDEN") == "1":
        path.write_bytes(encoded)
    assert encoded == path.read_bytes()
    assert wire.decode_results(encoded) == results
    assert wire.decode_results(wire.encode(results[0])) == [results[0]]
    # A controller of the previous version decodes one result only: a batch would be lost,
    # which is why probes batch only for jobs that ask (and a job that does not ask is as before).
    with pytest.raises(msgspec.DecodeError):
        wire.decode_result(encoded)
    job = MESSAGES["job_tcp"]
    assert isinstance(job, CheckJob)
    assert wire.encode(msgspec.structs.replace(job, batch_results=False)) == wire.encode(job)
    assert wire.decode_job(wire.encode(msgspec.structs.replace(job, batch_results=True))).batch_results
