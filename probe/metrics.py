"""Every Prometheus metric of the probe, on a registry of its own."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProbeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "probefleet_probe_checks_total",
            "Checks run, by kind and outcome status.",
            ["kind", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "probefleet_probe_check_duration_seconds",
            "Wall time of one check.",
            ["kind"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
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

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: ProbeMetrics, listen: str) -> web.AppRunner:
    """Serve /metrics on host:port; the caller cleans the runner up."""
    host, _, port = listen.rpartition(":")

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    return runner
