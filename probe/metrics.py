"""Every Prometheus metric of the probe, on a registry of its own.

Two kinds: the probe's own counters (checks, drops, publishing), and `MonitorSeries`, the
per-monitor series of the checks this probe ran, blackbox_exporter style (success, duration
by phase, HTTP status, certificate expiry, DNS answers). Each region's probes export only
their own checks, so the per-monitor series spread over the fleet's probes. They are
rendered from one dict at scrape time: the hot path stores one tuple per check, and a
monitor not seen for a few of its intervals (deleted, paused, moved to another region)
drops out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from probefleet.probe.checkers.base import Outcome
from probefleet.probe.config import ProbeConfig
from probefleet.shared.version import VERSION, commit
from probefleet.shared.wire import CheckJob, Status

if TYPE_CHECKING:
    from aiohttp import web

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A monitor whose job carries no interval (an older controller) is judged by the gap between
# its last two checks, and by this until it has one.
_DEFAULT_INTERVAL = 60.0
# Stale entries are swept at every scrape, and from the hot path at most this often.
_SWEEP_EVERY = 30.0
_SAMPLE_BUCKETS = 10_000

# `*_created` samples (one per counter and histogram child) are noise to a Prometheus user;
# the switch is process-wide, so both roles' metrics modules turn it off.
disable_created_metrics()


def add_process_collectors(registry: CollectorRegistry) -> None:
    """process_*, python_info and python_gc_* on `registry` (the default registry has them;
    a registry of our own does not)."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)


def build_info(registry: CollectorRegistry, help_text: str) -> None:
    """probefleet_build_info{version,commit} 1."""
    Gauge(
        "probefleet_build_info",
        help_text,
        ["version", "commit"],
        registry=registry,
    ).labels(VERSION, commit()).set(1)


class _Last(NamedTuple):
    """The last check of one monitor: references to what the check produced anyway."""

    kind: str
    name: str
    ok: bool
    timings: dict[str, float]
    status_code: int | None
    details: dict[str, object]
    finished: float  # Unix time
    seen: float  # monotonic
    interval: float


_new_last = tuple.__new__


def sampled(monitor_id: int, fraction: float) -> bool:
    """Whether `monitor_id` is in the stable `fraction` of monitor ids (the same ids on
    every probe and after restarts; Knuth's multiplicative hash spreads consecutive ids)."""
    if fraction >= 1:
        return True
    return (monitor_id * 2654435761) % 2**32 % _SAMPLE_BUCKETS < fraction * _SAMPLE_BUCKETS


def cert_expiry(kind: str, details: dict[str, object]) -> float | None:
    """Unix time the checked certificate expires (HTTPS and tls checks), else None."""
    not_after = details.get("cert_not_after" if kind == "http" else "not_after")
    if not isinstance(not_after, str):
        return None
    try:
        return dt.datetime.fromisoformat(not_after).timestamp()
    except ValueError:
        return None


class MonitorSeries:
    """Per-monitor series of this probe's checks, from the last check of each monitor.

    `record` is the hot path (one tuple of references stored in one dict); `snapshot` and
    `exposition` write the families at scrape time, after dropping monitors not seen within
    `stale_intervals` of their interval. Which monitors
    get series: those with one of `tags` (all when empty) among the `sample` fraction of ids.
    """

    def __init__(
        self,
        region: str,
        *,
        with_name: bool = False,
        tags: Iterable[str] = (),
        sample: float = 1.0,
        stale_intervals: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self.with_name = with_name
        self.tags = frozenset(tags)
        self.sample = sample
        self.stale_intervals = stale_intervals
        self.clock = clock
        self.last: dict[int, _Last] = {}
        self.dropped = 0
        self._swept = clock()
        # Every monitor gets series (the default): `record` skips asking `wants`.
        self._everyone = not self.tags and sample >= 1

    def wants(self, job: CheckJob) -> bool:
        if self.tags and self.tags.isdisjoint(job.tags):
            return False
        return sampled(job.monitor_id, self.sample)

    def record(self, job: CheckJob, kind: str, outcome: Outcome, finished: float | None = None) -> None:
        """Note one finished check (skipped ones are not checks of the target) that ended at
        Unix time `finished` (now by default)."""
        status = outcome.status
        if status is Status.SKIPPED or not (self._everyone or self.wants(job)):
            return
        now = self.clock()
        interval = job.interval
        if interval <= 0:
            # An on-demand check, or a job from an older controller: never shorter than what
            # is known, so a "check now" right after a round does not make the series stale
            # within seconds.
            previous = self.last.get(job.monitor_id)
            interval = max(previous.interval, now - previous.seen) if previous else _DEFAULT_INTERVAL
        # tuple.__new__ straight: _Last(...) is a Python-level __new__ (a frame per check).
        self.last[job.monitor_id] = _new_last(
            _Last,
            (
                kind,
                job.name,
                status is not Status.FAIL,
                outcome.timings,
                outcome.status_code,
                outcome.details,
                time.time() if finished is None else finished,
                now,
                interval,
            ),
        )
        if now - self._swept > _SWEEP_EVERY:
            self.sweep(now)

    def sweep(self, now: float) -> int:
        """Drop monitors not seen for `stale_intervals` of their interval; how many."""
        self._swept = now
        factor = self.stale_intervals
        stale = [mid for mid, last in self.last.items() if now - last.seen > factor * max(last.interval, 1.0)]
        for mid in stale:
            del self.last[mid]
        self.dropped += len(stale)
        return len(stale)

    def snapshot(self) -> list[tuple[int, _Last]]:
        """The current entries, stale ones swept first; cheap enough for the event loop
        (a list of references), and safe to render in another thread afterwards."""
        self.sweep(self.clock())
        return list(self.last.items())

    def exposition(self, entries: list[tuple[int, _Last]] | None = None) -> str:
        """The per-monitor families in Prometheus text format (of `entries`, by default a
        snapshot taken now). Written here rather than by prometheus_client, whose per-sample
        label validation and escaping took 15 us a series (0.3 s a scrape for 2,000
        monitors; bench/probe_series.py)."""
        if entries is None:
            entries = self.snapshot()
        lines: dict[str, list[str]] = {name: [] for name in FAMILIES}
        success, last_check, duration, status_code, expiry, answers = (
            lines[name].append for name in list(FAMILIES)[:6]
        )
        region, with_name = _escape(self.region), self.with_name
        for mid, last in entries:
            labels = f'monitor_id="{mid}",region="{region}",kind="{last.kind}"'
            if with_name:
                labels += f',name="{_escape(last.name)}"'
            success(f"{{{labels}}} {1 if last.ok else 0}")
            last_check(f"{{{labels}}} {last.finished!r}")
            for phase, ms in last.timings.items():
                duration(f'{{{labels},phase="{_escape(phase)}"}} {ms / 1000!r}')
            if last.status_code is not None:
                status_code(f"{{{labels}}} {last.status_code}")
            if last.details:
                if (expires := cert_expiry(last.kind, last.details)) is not None:
                    expiry(f"{{{labels}}} {expires!r}")
                if last.kind == "dns" and isinstance(found := last.details.get("answers"), list):
                    answers(f"{{{labels}}} {len(found)}")
        lines["probefleet_probe_monitor_series"].append(f" {len(entries)}")
        lines["probefleet_probe_monitor_series_dropped"].append(f" {self.dropped}")
        out: list[str] = []
        for name, (kind, _, help_text) in FAMILIES.items():
            sample = f"{name}_total" if kind == "counter" else name
            out.append(f"# HELP {sample} {help_text}\n# TYPE {sample} {kind}\n")
            out.extend(f"{sample}{line}\n" for line in lines[name])
        return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


MONITOR_LABELS = ("monitor_id", "region", "kind")
# Name: (type, labels besides monitor_id/region/kind[/name], help); in the order `exposition`
# fills them. tests/test_metric_names.py reads the label names from here.
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "probefleet_probe_monitor_success": (
        "gauge",
        (),
        "1 when the monitor's last check on this probe passed (ok or degraded), 0 when it failed.",
    ),
    "probefleet_probe_monitor_last_check_timestamp_seconds": (
        "gauge",
        (),
        "Unix time the monitor's last check on this probe ended.",
    ),
    "probefleet_probe_monitor_duration_seconds": (
        "gauge",
        ("phase",),
        "Duration of the monitor's last check by phase (total, dns, connect, tls, first_byte, ...).",
    ),
    "probefleet_probe_monitor_http_status_code": (
        "gauge",
        (),
        "HTTP status of the monitor's last check (http monitors that got a response).",
    ),
    "probefleet_probe_monitor_cert_expiry_timestamp_seconds": (
        "gauge",
        (),
        "Unix time the certificate seen by the monitor's last check expires (https, tls).",
    ),
    "probefleet_probe_monitor_dns_answers": (
        "gauge",
        (),
        "Answers of the requested type in the monitor's last DNS check.",
    ),
    "probefleet_probe_monitor_series": ("gauge", (), "Monitors this probe exports series for now."),
    "probefleet_probe_monitor_series_dropped": (
        "counter",
        (),
        "Monitors whose series were dropped: no check of theirs for a few of their intervals.",
    ),
}
FLEET_WIDE = {"probefleet_probe_monitor_series", "probefleet_probe_monitor_series_dropped"}


def series_for(config: ProbeConfig) -> MonitorSeries:
    return MonitorSeries(
        config.region,
        with_name=config.monitor_series_name,
        tags=config.monitor_series_tags,
        sample=config.monitor_series_sample,
        stale_intervals=config.monitor_series_stale_intervals,
    )


class _CheckCounts:
    """probefleet_probe_checks_total{kind,status} from plain counts, and the observations
    `_CheckDurations` renders: the hot path (ProbeMetrics.checked) adds to a dict entry and a
    list slot, without prometheus_client's lock and child lookup per call. Collected in the
    scrape's thread from copies (a list() of a dict or list is taken whole under the GIL)."""

    _labelnames = ("kind", "status")  # read by tests/test_metric_names.py, as a Counter's

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        # Kind -> a count per bucket of _BUCKETS, the +Inf count, then the sum of seconds.
        self.durations: dict[str, list[float]] = {}

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily("probefleet_probe_checks", "Checks run, by kind and outcome status.")]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "probefleet_probe_checks", "Checks run, by kind and outcome status.", labels=self._labelnames
        )
        for (kind, status), n in list(self.counts.items()):
            family.add_metric([kind, status], n)
        return [family]


class _CheckDurations:
    """probefleet_probe_check_duration_seconds{kind}, a histogram over _BUCKETS, from the
    observations `_CheckCounts` keeps."""

    _labelnames = ("kind",)

    def __init__(self, counts: _CheckCounts) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily("probefleet_probe_check_duration_seconds", "Wall time of one check.")]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "probefleet_probe_check_duration_seconds", "Wall time of one check.", labels=self._labelnames
        )
        for kind, observed in list(self._counts.durations.items()):
            slots = observed[:]
            buckets, total = [], 0.0
            for bound, n in zip((*_BUCKETS, float("inf")), slots[:-1], strict=True):
                total += n
                buckets.append((floatToGoString(bound), total))
            family.add_metric([kind], buckets, slots[-1])
        return [family]


class ProbeMetrics:
    def __init__(self, series: MonitorSeries | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        add_process_collectors(self.registry)
        build_info(self.registry, "The probe's version and build commit (always 1).")
        # Rendered beside the registry, not through it (see MonitorSeries.exposition).
        self.series = series or MonitorSeries("")
        # Counted in plain numbers per check and turned into families at scrape time
        # (_CheckCounts): a prometheus_client child's inc() and observe() took a lock each.
        self.checks = _CheckCounts()
        self.duration = _CheckDurations(self.checks)
        self.registry.register(self.checks)
        self.registry.register(self.duration)
        self.in_flight = Gauge(
            "probefleet_probe_checks_in_flight",
            "Checks running now.",
            registry=self.registry,
        )
        self.dropped = Counter(
            "probefleet_probe_jobs_dropped_total",
            "Jobs or results given up: overload (too many pending), buffer_full (NATS down).",
            ["reason"],
            registry=self.registry,
        )
        self.late = Counter(
            "probefleet_probe_jobs_late_total",
            "Jobs that arrived (or got a slot) after their deadline and were skipped.",
            registry=self.registry,
        )
        self.published = Counter(
            "probefleet_probe_results_published_total",
            "Results acknowledged by JetStream.",
            registry=self.registry,
        )
        self.result_messages = Counter(
            "probefleet_probe_result_messages_total",
            "Messages of results acknowledged by JetStream (a batch of results is one).",
            registry=self.registry,
        )
        self.results_per_message = Histogram(
            "probefleet_probe_results_per_message",
            "Results in each message acknowledged by JetStream (1: a result sent alone).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self.otel_export_failures = Counter(
            "probefleet_probe_otel_export_failures_total",
            "OpenTelemetry exports (metrics or spans) the collector did not accept, by signal.",
            ["signal"],
            registry=self.registry,
        )
        for signal in ("traces", "metrics"):  # 0 from the start, so increase() sees the first
            self.otel_export_failures.labels(signal)

    def checked(self, kind: str, status: str, seconds: float) -> None:
        """One check of `kind` ended with `status` after `seconds` (checks_total and
        check_duration_seconds)."""
        counts = self.checks.counts
        key = (kind, status)
        counts[key] = counts.get(key, 0) + 1
        observed = self.checks.durations.get(kind)
        if observed is None:
            observed = self.checks.durations[kind] = [0.0] * (len(_BUCKETS) + 2)
        # One slot per bucket (the first bound not below `seconds`, as `le` counts), +Inf
        # last but one, the sum last.
        observed[bisect_left(_BUCKETS, seconds)] += 1
        observed[-1] += seconds

    def render(self, entries: list[tuple[int, _Last]] | None = None) -> bytes:
        return generate_latest(self.registry) + self.series.exposition(entries).encode()


async def serve(
    metrics: ProbeMetrics,
    listen: str,
    *,
    healthy: Callable[[], bool] = lambda: True,
    ready: Callable[[], bool] = lambda: True,
) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz on host:port; the caller cleans the runner up.

    /healthz (liveness) and /readyz (readiness) answer 200 while `healthy()` / `ready()`
    hold and 503 otherwise, with one word of text either way."""
    # Imported only when a listener is asked for: aiohttp's server side is about 2 MiB of a
    # probe's memory that the checks (aiohttp's client) do not need.
    from aiohttp import web

    host, _, port = listen.rpartition(":")

    async def handle(_request: web.Request) -> web.Response:
        # Rendered in a thread from a snapshot taken here: 100,000 monitors take about a
        # second to write out (bench/probe_series.py), which would hold up every check.
        entries = metrics.series.snapshot()
        body = await asyncio.to_thread(metrics.render, entries)
        response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        # gzip when the scraper asks (Prometheus does): the text is mostly repeated names.
        response.enable_compression()
        return response

    def check(condition: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            if condition():
                return web.Response(text="ok\n")
            return web.Response(status=503, text="unavailable\n")

        return handle

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app.router.add_get("/healthz", check(healthy))
    app.router.add_get("/readyz", check(ready))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner
