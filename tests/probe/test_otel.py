"""OpenTelemetry export: a local OTLP/HTTP receiver (aiohttp, decoding the protobuf with
opentelemetry-proto) gets one span per check and phase-duration histograms; the HTTP
target sees the span's traceparent; a failed check's span has an error status; exports
the receiver refuses are counted and logged."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig, load_probe_config
from probefleet.shared.wire import CheckJob, HttpSpec
from tests.helpers import eventually
from tests.probe.conftest import start_app

REGION = "eu-west"


@dataclass
class Receiver:
    """An OTLP/HTTP collector stand-in: keeps what it is sent, or refuses with `refuse`."""

    url: str = ""
    spans: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    refuse: int | None = None

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        if self.refuse:
            return web.Response(status=self.refuse, text="refused")
        body = ExportTraceServiceRequest.FromString(await request.read())
        for rs in body.resource_spans:
            self.resources.append({a.key: _value(a.value) for a in rs.resource.attributes})
            self.spans.extend(s for ss in rs.scope_spans for s in ss.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def metrics_(self, request: web.Request) -> web.Response:
        if self.refuse:
            return web.Response(status=self.refuse, text="refused")
        body = ExportMetricsServiceRequest.FromString(await request.read())
        self.metrics.extend(m for rm in body.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        return web.Response(body=b"", content_type="application/x-protobuf")


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value"))


def attrs(item: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in item.attributes}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", rec.traces)
    app.router.add_post("/v1/metrics", rec.metrics_)
    runner, port = await start_app(app)
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP target that notes each request's traceparent; /fail answers 500."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        return web.Response(status=500 if request.path == "/fail" else 200, text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner, port = await start_app(app)
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def job(url: str, monitor_id: int) -> CheckJob:
    now = time.time()
    return CheckJob(
        monitor_id=monitor_id, due=now, deadline=now + 5, region=REGION, timeout=2, spec=HttpSpec(url=url)
    )


def agent(endpoint: str) -> Agent:
    return Agent(
        ProbeConfig(region=REGION, probe_id="p-otel", otel_endpoint=endpoint, otel_export_interval=60)
    )


async def test_it_exports_a_span_per_check_and_phase_histograms(
    receiver: Receiver, target: tuple[str, list[str]]
) -> None:
    url, seen = target
    a = agent(receiver.url)
    assert a.telemetry is not None
    try:
        await a.handle_job(job(f"{url}/ok", 1))
        await a.handle_job(job(f"{url}/fail", 2))
        await asyncio.to_thread(a.telemetry.flush)
        await eventually(lambda: len(receiver.spans) == 2 and receiver.metrics, what="the export")
    finally:
        await asyncio.to_thread(a.telemetry.shutdown)

    spans = {attrs(s)["probefleet.monitor_id"]: s for s in receiver.spans}
    ok, failed = spans[1], spans[2]
    assert ok.name == "check http" and attrs(ok)["probefleet.region"] == REGION
    assert attrs(ok)["probefleet.status"] == "ok" and ok.status.code != SpanStatus.STATUS_CODE_ERROR
    assert (
        attrs(failed)["probefleet.status"] == "fail"
        and attrs(failed)["probefleet.reason"] == "status_mismatch"
    )
    assert failed.status.code == SpanStatus.STATUS_CODE_ERROR and "500" in failed.status.message
    assert attrs(failed)["http.response.status_code"] == 500
    assert ok.end_time_unix_nano > ok.start_time_unix_nano
    # The target saw each check's own span as its parent.
    assert seen == [f"00-{s.trace_id.hex()}-{s.span_id.hex()}-01" for s in (ok, failed)]
    assert receiver.resources[0]["service.name"] == "probefleet-probe"
    assert receiver.resources[0]["service.instance.id"] == "p-otel"

    # Each export (the flush, then the shutdown) carries the cumulative histogram.
    duration = [m for m in receiver.metrics if m.name == "probefleet.check.duration"][-1]
    assert duration.unit == "s"
    points = {(attrs(p)["monitor_id"], attrs(p)["phase"]): p for p in duration.histogram.data_points}
    assert {("1", "total"), ("2", "total"), ("1", "first_byte")} <= set(points)
    total = points[("1", "total")]
    assert total.count == 1 and 0 < total.sum < 2 and len(total.explicit_bounds) == 12
    assert attrs(total)["region"] == REGION and attrs(total)["kind"] == "http"


async def test_it_counts_and_logs_refused_exports(
    receiver: Receiver, target: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = target
    receiver.refuse = 400
    a = agent(receiver.url)
    assert a.telemetry is not None
    failures = a.metrics.otel_export_failures
    with caplog.at_level(logging.WARNING, logger="probefleet.probe.otel"):
        try:
            await a.handle_job(job(f"{url}/ok", 1))
            await asyncio.to_thread(a.telemetry.flush)
        finally:
            await asyncio.to_thread(a.telemetry.shutdown)
    assert failures.labels("traces")._value.get() >= 1
    assert failures.labels("metrics")._value.get() >= 1
    assert "otel export failed signal=traces" in caplog.text
    assert not receiver.spans


def test_a_probe_without_the_extra_runs_and_refuses_an_endpoint() -> None:
    """With opentelemetry unimportable, the agent module loads and checks run; asking for
    export is a configuration error that names the extra."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from probefleet.probe.agent import Agent\n"
        "from probefleet.probe.config import ProbeConfig, load_probe_config\n"
        "assert Agent(ProbeConfig(region='r', probe_id='p')).telemetry is None\n"
        "try:\n"
        "    load_probe_config(region='r', otel_endpoint='http://127.0.0.1:4318')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "install the otel extra" in done.stdout


def test_the_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        load_probe_config(region="r", otel_endpoint="collector:4318")
