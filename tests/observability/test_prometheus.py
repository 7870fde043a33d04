"""A real Prometheus (Debian's package, installed when missing) scrapes a real controller
and two regions' probes through a short run: `promtool` passes the rules and both
/metrics texts, a query per new series returns what the run did, the alert rules are
evaluated on the scraped data (the region-down alert fires once a region's probe stops),
and every expression of the Grafana dashboard parses."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from probefleet.controller.config import Region
from probefleet.probe import metrics as probe_metrics
from tests.controller.conftest import start_controller
from tests.fleet import RegionalTarget, start_probes
from tests.helpers import eventually

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "probefleet-dashboard.json"
REGIONS = ["us-east", "eu-west"]
CERT_DAYS = 5


def _ensure_prometheus() -> tuple[str, str]:
    """Paths of prometheus and promtool, installing Debian's package when missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        if not shutil.which("apt-get"):
            pytest.skip("prometheus missing and apt-get is not available to install it")
        try:
            subprocess.run(
                "apt-get update && apt-get install -y --no-install-recommends prometheus",
                shell=True,
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"could not install prometheus with apt-get: {e}")
    return str(shutil.which("prometheus")), str(shutil.which("promtool"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_promtool_accepts_the_rules_and_the_example_configuration() -> None:
    _, promtool = _ensure_prometheus()
    for check, path in (("rules", RULES), ("config", RULES.with_name("prometheus.yml"))):
        done = subprocess.run(
            [promtool, "check", check, str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    panels = _panels(dash)
    assert len(panels) >= 20
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "region", "monitor_id"} <= variables
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    used = " ".join(_expressions(dash))
    for name in (
        "probefleet_probe_monitor_duration_seconds",
        "probefleet_probe_monitor_success",
        "probefleet_monitors",
    ):
        assert name in used


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _expressions(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), \w+\)", v["definition"])
            assert found, v["definition"]
            exprs.append(found.group(1))
    return exprs


# ---------------------------------------------------------------- the run


class _Zone(BaseResolver):
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        if str(request.q.qname) == "www.example.test." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR("www.example.test", QTYPE.A, rdata=A("192.0.2.10"), ttl=60))
            reply.add_answer(RR("www.example.test", QTYPE.A, rdata=A("192.0.2.11"), ttl=60))
        return reply


@pytest.fixture
def resolver() -> Iterator[str]:
    server = DNSServer(_Zone(), port=0, address="127.0.0.1")
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}"
    server.stop()


@pytest.fixture
async def tls_target() -> AsyncIterator[tuple[int, str]]:
    """An HTTPS server whose certificate expires in CERT_DAYS days; (port, CA PEM)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", not_after=_days_from_now(CERT_DAYS))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    app = web.Application()

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    yield runner.addresses[0][1], ca.cert_pem.bytes().decode()
    await runner.cleanup()


def _days_from_now(days: float) -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


class Prometheus:
    def __init__(self, binary: str, root: Path, controller: str, probes: list[str]) -> None:
        rules = RULES.read_text()
        # The same rules with every `for:` cut to 1 s, so a short run sees them fire.
        (root / "alerts.yml").write_text(re.sub(r"for: \d+[smh]", "for: 1s", rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(root / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "probefleet-controller", "static_configs": [{"targets": [controller]}]},
                {"job_name": "probefleet-probe", "static_configs": [{"targets": probes}]},
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def test_prometheus_scrapes_a_run_and_evaluates_the_rules(
    database: str, nats_url: str, tmp_path: Path, resolver: str, tls_target: tuple[int, str]
) -> None:
    prometheus_bin, promtool = _ensure_prometheus()
    ctl = await start_controller(
        database, nats_url, regions=[Region(id=r) for r in REGIONS], state_metrics_interval=0.5
    )
    probes = await start_probes(nats_url, REGIONS)
    runners = [await probe_metrics.serve(p.metrics, "127.0.0.1:0") for p in probes]
    probe_targets = [f"127.0.0.1:{r.addresses[0][1]}" for r in runners]
    target, failing = RegionalTarget(), RegionalTarget()
    await target.start()
    await failing.start()
    failing.fail_all()
    prom = Prometheus(prometheus_bin, tmp_path, ctl.base.removeprefix("http://"), probe_targets)
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    try:
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            channel = await _create(
                api,
                "/api/v1/notification-channels",
                {"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:1/hook"}},
            )
            common = {"check_interval": 1, "timeout": 2, "locations": REGIONS}
            ok = await _create(api, "/api/v1/monitors", {"name": "ok", "url": target.url, **common})
            bad = await _create(
                api,
                "/api/v1/monitors",
                {"name": "bad", "url": failing.url, "notifications": [channel], **common},
            )
            port, ca_pem = tls_target
            cert = await _create(
                api,
                "/api/v1/monitors",
                {
                    "name": "cert",
                    "type": "tls",
                    "host": "127.0.0.1",
                    "port": port,
                    "ca_pem": ca_pem,
                    **common,
                },
            )
            dns = await _create(
                api,
                "/api/v1/monitors",
                {"name": "dns", "type": "dns", "domain": "www.example.test", "resolver": resolver, **common},
            )
        async with aiohttp.ClientSession(base_url=prom.url) as prom_api:
            await eventually(lambda: _ready(prom_api), timeout=30, what="prometheus ready")
            await _check_the_run(prom_api, ok=ok, bad=bad, cert=cert, dns=dns)
            await _check_promtool_metrics(promtool, ctl.base, probe_targets)
            await _check_the_dashboard_queries(prom_api, ok)
            # The region-down alert: not firing while both regions have probes, firing for
            # eu-west once its probe stops, and still not for us-east.
            expiring = await eventually(
                lambda: _firing(prom_api, "ProbefleetCertificateExpiring"), timeout=30
            )
            assert [a["labels"]["monitor_id"] for a in expiring] == [str(cert)]
            assert not await _firing(prom_api, "ProbefleetCertificateExpiringSoon")  # 5 days > 3
            assert not await _firing(prom_api, "ProbefleetRegionDown")
            eu_west = probes.pop(REGIONS.index("eu-west"))
            await eu_west.stop()
            fired = await eventually(lambda: _firing(prom_api, "ProbefleetRegionDown"), timeout=30)
            assert [a["labels"]["region"] for a in fired] == ["eu-west"]
            assert not await _firing(prom_api, "ProbefleetOutboxStuck")
    finally:
        prom.stop()
        # side by side: each stop runs the jobs it holds up to a lookahead ahead (~1 s)
        await asyncio.gather(*(p.stop() for p in probes))
        for r in runners:
            await r.cleanup()
        await target.stop()
        await failing.stop()
        await ctl.stop()


async def _create(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> int:
    async with api.post(path, json=body) as r:
        data = await r.json()
        assert r.status == 201, data
    return int(data["data"]["id"] if "data" in data else data["id"])


async def _ready(prom: aiohttp.ClientSession) -> bool:
    try:
        async with prom.get("/-/ready") as r:
            return r.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _query(prom: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
    async with prom.get("/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _values(prom: aiohttp.ClientSession, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in await _query(prom, expr)}


async def _firing(prom: aiohttp.ClientSession, alert: str) -> list[dict[str, Any]]:
    async with prom.get("/api/v1/alerts") as r:
        body = await r.json()
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == alert and a["state"] == "firing"]


async def _when(prom: aiohttp.ClientSession, expr: str, check: Any, what: str) -> dict[Any, float]:
    """Wait until `check(values of expr)` holds; return the values."""

    async def ready() -> dict[Any, float] | None:
        values = await _values(prom, expr)
        return values if values and check(values) else None

    result: dict[Any, float] = await eventually(ready, timeout=40, interval=0.5, what=what)
    return result


async def _check_the_run(prom: aiohttp.ClientSession, *, ok: int, bad: int, cert: int, dns: int) -> None:
    """One query per new series, each answering what the run did."""
    mid = "probefleet_probe_monitor"

    def by_region(values: dict[Any, float]) -> dict[str, float]:
        return {dict(k)["region"]: v for k, v in values.items()}

    success = await _when(
        prom,
        f'{mid}_success{{monitor_id="{ok}"}}',
        lambda v: len(v) == 2,
        "ok monitor's success in both regions",
    )
    assert by_region(success) == {"us-east": 1, "eu-west": 1}
    failed = await _when(prom, f'{mid}_success{{monitor_id="{bad}"}}', lambda v: len(v) == 2, "bad monitor")
    assert by_region(failed) == {"us-east": 0, "eu-west": 0}
    codes = await _when(
        prom, f'{mid}_http_status_code{{monitor_id="{bad}"}}', lambda v: len(v) == 2, "status codes"
    )
    assert set(codes.values()) == {503}
    phases = await _values(prom, f'{mid}_duration_seconds{{monitor_id="{ok}", region="us-east"}}')
    assert {"total", "first_byte"} <= {dict(k)["phase"] for k in phases}  # keep-alive: no connect
    assert all(0 < v < 2 for v in phases.values())
    expiry = await _when(
        prom, f'{mid}_cert_expiry_timestamp_seconds{{monitor_id="{cert}"}}', lambda v: len(v) == 2, "cert"
    )
    assert all(abs(v - (time.time() + CERT_DAYS * 86400)) < 3600 for v in expiry.values())
    answers = await _when(
        prom, f'{mid}_dns_answers{{monitor_id="{dns}"}}', lambda v: len(v) == 2, "dns answers"
    )
    assert set(answers.values()) == {2}
    ages = await _values(prom, f"time() - {mid}_last_check_timestamp_seconds")
    assert len(ages) == 8 and all(v < 30 for v in ages.values())
    series = await _values(prom, f"{mid}_series")
    assert sorted(series.values()) == [4, 4]
    assert await _values(prom, f"sum({mid}_series_dropped_total)") == {(): 0}

    # The controller's fleet state, from the database.
    await _when(
        prom,
        'probefleet_monitors{kind="http", status="down"}',
        lambda v: sum(v.values()) == 1,
        "bad monitor down",
    )
    await _when(prom, "sum(probefleet_incidents_open)", lambda v: v[()] == 1, "one open incident")
    await _when(
        prom,
        'sum(probefleet_notification_deliveries_queued{kind="webhook"})',
        lambda v: v[()] >= 1,
        "the failing webhook's delivery queued",
    )
    assert await _values(prom, "probefleet_heartbeats_overdue") != {}
    assert all(v < 60 for v in (await _values(prom, "probefleet_outbox_lag_seconds")).values())
    assert await _values(prom, "probefleet_outbox_events_pending") != {}
    stamp = await _values(prom, "time() - probefleet_state_metrics_timestamp_seconds")
    assert all(v < 30 for v in stamp.values())
    lag = await _when(
        prom, "probefleet_result_lag_seconds_count", lambda v: sum(v.values()) > 0, "result lag"
    )
    assert sum(lag.values()) > 0

    # Both roles: build info, process collectors, no _created series.
    jobs = {"probefleet-controller", "probefleet-probe"}
    built = await _values(prom, "count by (job) (probefleet_build_info)")
    assert {dict(k)["job"] for k in built} == jobs
    cpu = await _values(prom, "count by (job) (process_cpu_seconds_total)")
    assert {dict(k)["job"] for k in cpu} == jobs
    assert await _query(prom, 'count({__name__=~".+_created"})') == []


async def _check_promtool_metrics(promtool: str, controller: str, probes: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for url in [f"{controller}/metrics", *(f"http://{p}/metrics" for p in probes)]:
            async with http.get(url) as r:
                text = await r.read()
            done = await asyncio.to_thread(
                subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
            )
            assert done.returncode == 0, (url, done.stdout.decode() + done.stderr.decode())


async def _check_the_dashboard_queries(prom: aiohttp.ClientSession, monitor_id: int) -> None:
    """Every expression of the dashboard, with its variables filled in, is valid PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    variables = {
        "$__rate_interval": "1m",
        "$__interval": "1m",
        "$monitor_id": str(monitor_id),
        "$region": "us-east|eu-west",
        "$job": ".+",
    }
    answered: dict[str, bool] = {}
    for expr in _expressions(dash):
        for name, value in variables.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        answered[expr] = bool(await _query(prom, expr))  # _query asserts it parsed
    # The drill-down's instant panels show the monitor (rates need a longer run).
    for metric in ("probefleet_probe_monitor_success", "probefleet_probe_monitor_duration_seconds"):
        shown = [
            e for e, has_data in answered.items() if f'{metric}{{monitor_id="{monitor_id}"' in e and has_data
        ]
        assert shown, metric
