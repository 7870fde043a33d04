"""OpenTelemetry export of check results (optional: the `otel` extra, off unless
`otel_endpoint` is set). The agent imports this module only then, so a probe without the
extra runs.

Per check: one span (`check <kind>`, a CLIENT span from the check's start to its end, with
the monitor, region and outcome as attributes and an error status when the check failed)
and one observation per timing phase in the histogram `probefleet.check.duration` (seconds,
attributes monitor_id, region, kind, phase). An HTTP check carries the span's W3C
`traceparent` header (`checkers.base.TRACEPARENT`), so the target's own traces join it.
Both go over OTLP/HTTP (protobuf) from the SDK's background threads; an export the
collector refuses is counted in `probefleet_probe_otel_export_failures_total{signal}` and
logged, never dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode

from probefleet.probe.checkers.base import TRACEPARENT, Outcome
from probefleet.shared.version import VERSION
from probefleet.shared.wire import CheckJob, Status

log = logging.getLogger("probefleet.probe.otel")

# Seconds, like the probe's Prometheus histogram of check durations.
_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_EXPORT_TIMEOUT = 5.0

OnFailure = Callable[[str], None]


class _CountedSpanExporter(SpanExporter):
    """The OTLP span exporter, with each refused batch counted and logged."""

    def __init__(self, inner: SpanExporter, on_failure: OnFailure) -> None:
        self.inner = inner
        self.on_failure = on_failure

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.on_failure("traces")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountedMetricExporter(MetricExporter):
    """The OTLP metric exporter, with each refused export counted and logged."""

    def __init__(self, inner: MetricExporter, on_failure: OnFailure) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.on_failure = on_failure

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is not MetricExportResult.SUCCESS:
            self.on_failure("metrics")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _signal_url(endpoint: str, signal: str) -> str:
    """The collector's OTLP/HTTP URL for `signal` from its base URL (http://host:4318)."""
    return f"{endpoint.rstrip('/')}/v1/{signal}"


class CheckTelemetry:
    """Spans and phase histograms of this probe's checks, exported over OTLP/HTTP."""

    def __init__(
        self,
        endpoint: str,
        *,
        probe_id: str,
        region: str,
        on_failure: OnFailure,
        export_interval: float = 10.0,
    ) -> None:
        self.region = region
        self._on_failure = on_failure
        resource = Resource.create(
            {
                "service.name": "probefleet-probe",
                "service.version": VERSION,
                "service.instance.id": probe_id,
                "probefleet.region": region,
            }
        )
        spans = _CountedSpanExporter(
            OTLPSpanExporter(endpoint=_signal_url(endpoint, "traces"), timeout=_EXPORT_TIMEOUT), self._failed
        )
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        self.tracer = self.tracer_provider.get_tracer("probefleet.probe", VERSION)
        exporter = _CountedMetricExporter(
            OTLPMetricExporter(endpoint=_signal_url(endpoint, "metrics"), timeout=_EXPORT_TIMEOUT),
            self._failed,
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval * 1000)
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[reader],
            views=[
                View(
                    instrument_type=Histogram,
                    instrument_name="probefleet.check.duration",
                    aggregation=ExplicitBucketHistogramAggregation(_BOUNDARIES),
                )
            ],
        )
        meter = self.meter_provider.get_meter("probefleet.probe", VERSION)
        self.duration = meter.create_histogram(
            "probefleet.check.duration",
            unit="s",
            description="Duration of one check phase (total, dns, ...).",
        )

    def _failed(self, signal: str) -> None:
        self._on_failure(signal)
        log.warning("otel export failed signal=%s", signal)

    @contextlib.contextmanager
    def check(self, job: CheckJob, kind: str) -> Iterator[Span]:
        """A span around one check; within it, TRACEPARENT holds the span's header value."""
        span = self.tracer.start_span(
            f"check {kind}",
            kind=SpanKind.CLIENT,
            attributes={
                "probefleet.monitor_id": job.monitor_id,
                "probefleet.region": self.region,
                "probefleet.kind": kind,
                "probefleet.attempt": job.attempt,
            },
        )
        ctx = span.get_span_context()
        # Only the sampled flag: the SDK also sets level 2's "random" bit (0x02), which
        # older level 1 parsers may refuse.
        flags = int(ctx.trace_flags) & 0x01
        token = TRACEPARENT.set(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags:02x}")
        try:
            yield span
        finally:
            TRACEPARENT.reset(token)

    def finish(self, span: Span, job: CheckJob, kind: str, outcome: Outcome) -> None:
        """End `span` with the outcome and record the check's phases."""
        span.set_attribute("probefleet.status", outcome.status.value)
        if outcome.reason is not None:
            span.set_attribute("probefleet.reason", outcome.reason.value)
        if outcome.status_code is not None:
            span.set_attribute("http.response.status_code", outcome.status_code)
        if outcome.status is Status.FAIL:
            span.set_status(StatusCode.ERROR, outcome.message)
        span.end(time.time_ns())
        base = {"monitor_id": str(job.monitor_id), "region": self.region, "kind": kind}
        for phase, ms in outcome.timings.items():
            self.duration.record(ms / 1000, {**base, "phase": phase})

    def flush(self) -> None:
        """Export what is pending now (blocking: call it from a thread in async code)."""
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
