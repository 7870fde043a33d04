"""The probe's /metrics: per-monitor series from real checks, their staleness and filters,
process and build metrics, no `_created` noise."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from probefleet.probe.agent import Agent
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.config import ProbeConfig
from probefleet.probe.metrics import MonitorSeries, ProbeMetrics, sampled, serve
from probefleet.shared.wire import CheckJob, DnsSpec, HttpSpec, Status, TlsSpec
from tests.probe.conftest import ServeTls, leaf
from tests.probe.test_dns import _Zone, zone  # noqa: F401 (fixture)

REGION = "eu-west"


def job(spec: Any, monitor_id: int, **fields: Any) -> CheckJob:
    now = time.time()
    return CheckJob(
        monitor_id=monitor_id, due=now, deadline=now + 5, region=REGION, timeout=2.0, spec=spec, **fields
    )


def samples(metrics: ProbeMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(metrics: ProbeMetrics, metric: str, /, **labels: str) -> float | None:
    for got, v in samples(metrics).get(metric, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return None


def agent(**fields: Any) -> Agent:
    return Agent(ProbeConfig(region=REGION, probe_id="p1", **fields))


async def test_it_exports_success_status_and_phases_per_monitor(http_target: str) -> None:
    a = agent()
    await a.handle_job(job(HttpSpec(url=f"{http_target}/"), 1, interval=30.0, name="home"))
    await a.handle_job(job(HttpSpec(url=f"{http_target}/status/503"), 2, interval=30.0))
    m = a.metrics
    one = {"monitor_id": "1", "region": REGION, "kind": "http"}
    assert value(m, "probefleet_probe_monitor_success", **one) == 1
    assert value(m, "probefleet_probe_monitor_success", monitor_id="2") == 0
    assert value(m, "probefleet_probe_monitor_http_status_code", **one) == 200
    assert value(m, "probefleet_probe_monitor_http_status_code", monitor_id="2") == 503
    phases = {
        labels["phase"]
        for labels, _ in samples(m)["probefleet_probe_monitor_duration_seconds"]
        if labels["monitor_id"] == "1"
    }
    assert {"total", "first_byte"} <= phases  # connect only on a new connection (keep-alive)
    total = value(m, "probefleet_probe_monitor_duration_seconds", phase="total", **one)
    assert total is not None and 0 < total < 2
    stamp = value(m, "probefleet_probe_monitor_last_check_timestamp_seconds", **one)
    assert stamp is not None and abs(stamp - time.time()) < 60
    assert value(m, "probefleet_probe_monitor_series") == 2
    # No name label unless asked for: a rename must not start new series.
    labels, _ = samples(m)["probefleet_probe_monitor_success"][0]
    assert set(labels) == {"monitor_id", "region", "kind"}


async def test_it_adds_the_name_label_when_configured(http_target: str) -> None:
    a = agent(monitor_series_name=True)
    await a.handle_job(job(HttpSpec(url=f"{http_target}/"), 1, name="home page"))
    assert value(a.metrics, "probefleet_probe_monitor_success", name="home page") == 1


async def test_it_exports_the_certificate_expiry(ca_pem: str, ca: Any, serve_tls: ServeTls) -> None:
    cert = leaf(ca, days=30)
    port = await serve_tls(cert)
    a = agent()
    await a.handle_job(job(TlsSpec(host="127.0.0.1", port=port, ca_pem=ca_pem, warn_days=1), 5))
    await a.handle_job(job(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem), 6))
    expected = time.time() + 30 * 86400
    for mid, kind in (("5", "tls"), ("6", "http")):
        got = value(a.metrics, "probefleet_probe_monitor_cert_expiry_timestamp_seconds", monitor_id=mid)
        assert got is not None and abs(got - expected) < 3600, (kind, got)


async def test_it_exports_the_dns_answer_count(zone: tuple[str, _Zone]) -> None:  # noqa: F811
    resolver, _ = zone
    a = agent()
    await a.handle_job(job(DnsSpec(name="www.example.test", resolver=resolver), 9))
    assert value(a.metrics, "probefleet_probe_monitor_dns_answers", monitor_id="9", kind="dns") == 2


async def test_it_does_not_count_a_skipped_job_as_a_check(http_target: str) -> None:
    a = agent()
    now = time.time()
    late = CheckJob(
        monitor_id=3,
        due=now - 10,
        deadline=now - 1,
        region=REGION,
        timeout=1,
        spec=HttpSpec(url="http://127.0.0.1:1/"),
    )
    await a.handle_job(late)
    assert value(a.metrics, "probefleet_probe_monitor_success", monitor_id="3") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ok() -> Outcome:
    return Outcome(status=Status.OK, timings={"total": 12.0})


def test_it_drops_a_monitor_unseen_for_its_stale_intervals() -> None:
    clock = Clock()
    series = MonitorSeries(REGION, stale_intervals=3, clock=clock)
    metrics = ProbeMetrics(series)
    spec = HttpSpec(url="http://127.0.0.1:1/")
    series.record(job(spec, 1, interval=10.0), "http", ok())
    series.record(job(spec, 2, interval=60.0), "http", ok())
    clock.now += 31
    ids = {labels["monitor_id"] for labels, _ in samples(metrics)["probefleet_probe_monitor_success"]}
    assert ids == {"2"}
    assert value(metrics, "probefleet_probe_monitor_series_dropped_total") == 1
    clock.now += 150
    assert "probefleet_probe_monitor_success" not in samples(metrics)
    assert value(metrics, "probefleet_probe_monitor_series") == 0


def test_it_estimates_the_interval_of_jobs_that_do_not_carry_it() -> None:
    clock = Clock()
    series = MonitorSeries(REGION, stale_intervals=3, clock=clock)
    spec = HttpSpec(url="http://127.0.0.1:1/")
    series.record(job(spec, 1), "http", ok())  # 60 s until a gap is seen
    clock.now += 100
    series.record(job(spec, 1), "http", ok())
    clock.now += 299
    assert series.sweep(clock.now) == 0
    clock.now += 2
    assert series.sweep(clock.now) == 1


def test_a_check_now_does_not_shorten_the_interval() -> None:
    clock = Clock()
    series = MonitorSeries(REGION, stale_intervals=3, clock=clock)
    spec = HttpSpec(url="http://127.0.0.1:1/")
    series.record(job(spec, 1, interval=60.0), "http", ok())
    clock.now += 2
    series.record(job(spec, 1), "http", ok())  # on demand: the job carries no interval
    clock.now += 170
    assert series.sweep(clock.now) == 0 and 1 in series.last


def test_it_keeps_only_monitors_with_a_chosen_tag() -> None:
    series = MonitorSeries(REGION, tags=["prod"])
    spec = HttpSpec(url="http://127.0.0.1:1/")
    series.record(job(spec, 1, tags=["prod", "eu"]), "http", ok())
    series.record(job(spec, 2, tags=["staging"]), "http", ok())
    series.record(job(spec, 3), "http", ok())
    assert set(series.last) == {1}


def test_sampling_keeps_a_stable_fraction_of_monitor_ids() -> None:
    kept = [mid for mid in range(1, 20_001) if sampled(mid, 0.1)]
    assert 1800 < len(kept) < 2200
    assert kept == [mid for mid in range(1, 20_001) if sampled(mid, 0.1)]
    assert all(sampled(mid, 1.0) for mid in range(1, 100))


async def test_it_serves_process_and_build_metrics_without_created_series(http_target: str) -> None:
    a = agent()
    await a.handle_job(job(HttpSpec(url=f"{http_target}/"), 1))
    runner = await serve(a.metrics, "127.0.0.1:0")
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    finally:
        await runner.cleanup()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert not [n for n in names if n.endswith("_created")]
    build = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "probefleet_build_info"
    ]
    assert len(build) == 1 and set(build[0].labels) == {"version", "commit"} and build[0].value == 1


async def test_it_gzips_the_scrape_when_asked(http_target: str) -> None:
    a = agent()
    await a.handle_job(job(HttpSpec(url=f"{http_target}/"), 1))
    runner = await serve(a.metrics, "127.0.0.1:0")
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}) as r,
        ):
            encoding = r.headers.get("Content-Encoding")
            text = await r.text()
    finally:
        await runner.cleanup()
    assert encoding == "gzip"
    assert 'probefleet_probe_monitor_success{monitor_id="1",region="eu-west",kind="http"} 1' in text


def test_check_durations_fall_in_the_buckets_prometheus_counts_them_in() -> None:
    metrics = ProbeMetrics()
    for seconds in (0.005, 0.0051, 0.7, 31.0):  # on a bound, just over one, mid, past the last
        metrics.checked("http", "ok", seconds)
    metrics.checked("tcp", "fail", 0.001)
    name = "probefleet_probe_check_duration_seconds"
    found = samples(metrics)[f"{name}_bucket"]
    buckets = {labels["le"]: v for labels, v in found if labels["kind"] == "http"}
    assert (buckets["0.005"], buckets["0.01"], buckets["0.5"], buckets["1.0"]) == (1, 2, 2, 3)
    assert (buckets["30.0"], buckets["+Inf"]) == (3, 4)
    assert value(metrics, f"{name}_count", kind="http") == 4
    assert value(metrics, f"{name}_sum", kind="http") == 0.005 + 0.0051 + 0.7 + 31.0
    assert value(metrics, f"{name}_count", kind="tcp") == 1
    assert value(metrics, "probefleet_probe_checks_total", kind="http", status="ok") == 4
    assert value(metrics, "probefleet_probe_checks_total", kind="tcp", status="fail") == 1
