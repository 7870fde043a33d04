"""Per-monitor series of one probe: series count, memory and scrape cost for N monitors.

    .venv/bin/python -m bench.probe_series [--monitors 100000] [--no-record]

One region's probe runs every monitor of a fleet once (100,000 monitors x 3 regions puts
100,000 on each region's probes together). The mix is 80 % https (six phases, a status
code, a certificate), 10 % tcp, 5 % dns, 5 % tls, as the checkers return them; each is
recorded with `MonitorSeries.record`, as the agent does after a check. Measured: the
record cost per check, the resident memory the series hold (RSS after minus before,
checker outputs included, since the probe keeps them for the scrape), one scrape's time
and size, and the series it returns. Results go to bench/RESULTS.md, section "Probe
per-monitor series (issue 21)".
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

from bench.common import record
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.metrics import MonitorSeries, ProbeMetrics
from probefleet.shared.wire import CheckJob, DnsSpec, HttpSpec, Status, TcpSpec, TlsSpec

_SPECS = {
    "http": HttpSpec(url="https://example.com/"),
    "tcp": TcpSpec(host="example.com", port=443),
    "dns": DnsSpec(name="example.com"),
    "tls": TlsSpec(host="example.com"),
}


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def outcome(kind: str, i: int) -> Outcome:
    """What the checker of `kind` returns, with fresh dicts as each real check has."""
    base = 10.0 + i % 50
    match kind:
        case "http":
            return Outcome(
                status=Status.OK if i % 20 else Status.FAIL,
                timings={
                    "dns": 1.2,
                    "connect": base,
                    "tls": base * 2,
                    "first_byte": base * 4,
                    "total": base * 4.5,
                },
                status_code=200 if i % 20 else 503,
                details={
                    "size": 1256,
                    "cert_not_after": "2027-03-01T12:00:00+00:00",
                    "tls_version": "TLSv1.3",
                },
            )
        case "tcp":
            return Outcome(status=Status.OK, timings={"connect": base, "total": base})
        case "dns":
            return Outcome(
                status=Status.OK,
                timings={"total": base},
                details={"rcode": "NOERROR", "answers": ["192.0.2.1", "192.0.2.2"]},
            )
    return Outcome(
        status=Status.OK,
        timings={"total": base},
        details={"days_left": 80.5, "not_after": "2027-03-01T12:00:00+00:00", "issuer": "CN=R3"},
    )


def kind_of(i: int) -> str:
    n = i % 20
    return "http" if n < 16 else "tcp" if n < 18 else "dns" if n < 19 else "tls"


def run(monitors: int) -> dict[str, float]:
    now = time.time()
    jobs = [
        CheckJob(
            monitor_id=i,
            due=now,
            deadline=now + 30,
            region="eu-west",
            timeout=10,
            spec=_SPECS[kind_of(i)],
            interval=60,
        )
        for i in range(1, monitors + 1)
    ]
    series = MonitorSeries("eu-west")
    metrics = ProbeMetrics(series)
    gc.collect()
    before = rss_bytes()
    outcomes = [outcome(kind_of(i), i) for i in range(1, monitors + 1)]
    started = time.perf_counter()
    for job, out in zip(jobs, outcomes, strict=True):
        series.record(job, kind_of(job.monitor_id), out)
    record_s = time.perf_counter() - started
    # The checkers' timings and details now live only in the series, as in a probe after
    # publishing: what the series hold is the growth since before they were made.
    del outcomes
    gc.collect()
    held = rss_bytes() - before
    # A second pass: steady state, each record replaces the previous check's entry.
    again = [outcome(kind_of(i), i) for i in range(1, monitors + 1)]
    started = time.perf_counter()
    for job, out in zip(jobs, again, strict=True):
        series.record(job, kind_of(job.monitor_id), out)
    steady_s = time.perf_counter() - started
    del again
    started = time.perf_counter()
    body = metrics.render()
    scrape_s = time.perf_counter() - started
    lines = [line for line in body.decode().splitlines() if line.startswith("probefleet_probe_monitor_")]
    per_monitor = [line for line in lines if "monitor_id=" in line]
    return {
        "monitors": monitors,
        "series": len(per_monitor),
        "series_per_monitor": len(per_monitor) / monitors,
        "held_mib": held / 2**20,
        "bytes_per_monitor": held / monitors,
        "record_us": record_s / monitors * 1e6,
        "steady_record_us": steady_s / monitors * 1e6,
        "scrape_s": scrape_s,
        "scrape_mib": len(body) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--monitors", type=int, default=100_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    r = run(args.monitors)
    table = (
        "| monitors | series | series per monitor | memory held | per monitor | record (new / replacing) "
        "| one scrape | scrape size |\n|---|---|---|---|---|---|---|---|\n"
        f"| {r['monitors']:,.0f} | {r['series']:,.0f} | {r['series_per_monitor']:.1f} "
        f"| {r['held_mib']:.1f} MiB "
        f"| {r['bytes_per_monitor']:.0f} B | {r['record_us']:.2f} / {r['steady_record_us']:.2f} us "
        f"| {r['scrape_s']:.2f} s | {r['scrape_mib']:.1f} MiB |"
    )
    print(table)
    if not args.no_record:
        body = (
            f"Command: `.venv/bin/python -m bench.probe_series --monitors {args.monitors}`\n\n{table}\n\n"
            "Memory held is the probe's resident growth with every monitor's last check kept for the "
            "scrape (the checker's timings and details dicts included). With more than a probe's share, "
            "use monitor_series_tags or monitor_series_sample (docs/metrics.md)."
        )
        record("Probe per-monitor series (issue 21)", body)


if __name__ == "__main__":
    main()
