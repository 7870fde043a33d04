"""api_flow against a real aiohttp app on loopback: login, extract, use, assert, teardown."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probefleet.controller.monitors import config as monitor_config
from probefleet.controller.validation import ValidationError
from probefleet.probe.checkers import CHECKERS, api_flow
from probefleet.shared.wire import ApiFlowSpec, Assertion, Extract, FlowStep, Reason, Status

from .conftest import start_app

SECRET = "s3cr3t-password-value"


class Shop:
    """A tiny API: log in (a token in JSON and a session cookie), create an order, read it,
    delete it; `calls` records every request's method and path."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.orders: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/login", self.login)
        app.router.add_post("/orders", self.create)
        app.router.add_get("/orders/{id}", self.read)
        app.router.add_delete("/orders/{id}", self.delete)
        app.router.add_get("/health", self.health)
        app.router.add_get("/slow", self.slow)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        return await handler(request)

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("password") != SECRET:
            return web.json_response({"error": "bad password"}, status=401)
        resp = web.json_response({"token": "tok-123", "user": {"id": 7}})
        resp.set_cookie("session", "sess-abc")
        return resp

    def _authorized(self, request: web.Request) -> bool:
        return (
            request.headers.get("Authorization") == "Bearer tok-123"
            and request.cookies.get("session") == "sess-abc"
        )

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        order_id = f"o{len(self.orders) + 1}"
        self.orders[order_id] = await request.json()
        return web.json_response({"id": order_id}, status=201, headers={"Location": f"/orders/{order_id}"})

    async def read(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"order": order, "state": "open"}, headers={"X-Shop": "v2"})

    async def delete(self, request: web.Request) -> web.Response:
        self.orders.pop(request.match_info["id"], None)
        return web.Response(status=204)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="version=1.4.2 ok")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")


@pytest.fixture
async def shop() -> AsyncIterator[tuple[Shop, str]]:
    target = Shop()
    runner, port = await start_app(target.app())
    yield target, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _flow(base: str, *, password: str = "{{secrets.password}}", **extra: Any) -> ApiFlowSpec:
    steps = [
        FlowStep(
            name="login",
            method="POST",
            url=f"{base}/login",
            body='{"user": "probe", "password": "' + password + '"}',
            body_kind="json",
            expected_status=[200],
            extract=[Extract(name="token", source="json", path="$.token")],
        ),
        FlowStep(
            name="create",
            method="POST",
            url=f"{base}/orders",
            headers={"Authorization": "Bearer {{token}}"},
            body='{"item": "{{item}}"}',
            body_kind="json",
            expected_status=[201],
            extract=[
                Extract(name="order", source="json", path="id"),
                Extract(name="location", source="header", path="Location"),
                Extract(name="session", source="cookie", path="session"),
            ],
        ),
        FlowStep(
            name="read",
            url=base + "{{location}}",
            json_assertions=[
                Assertion(path="$.order.item", value="widget"),
                Assertion(path="$.state", value="open"),
            ],
            expected_headers={"X-Shop": "v2"},
        ),
        FlowStep(
            name="version",
            url=f"{base}/health",
            body_regex=r"version=\d+\.\d+",
            expected_content="ok",
            extract=[Extract(name="version", source="regex", path=r"version=([\d.]+)")],
        ),
        FlowStep(name="read again", url=f"{base}/orders/{{{{order}}}}", max_latency_ms=5000),
    ]
    fields: dict[str, Any] = {
        "steps": steps,
        "variables": {"item": "widget"},
        "secrets": {"password": SECRET},
        "teardown": FlowStep(
            name="cleanup", method="DELETE", url=f"{base}/orders/{{{{order}}}}", expected_status=[204]
        ),
    }
    fields.update(extra)
    return ApiFlowSpec(**fields)


async def test_a_five_step_flow_passes_with_extracted_variables_and_runs_its_teardown(
    shop: tuple[Shop, str],
) -> None:
    target, base = shop
    out = await api_flow.check(_flow(base), timeout=5.0, source_address=None)
    assert out.status == Status.OK, out
    steps = out.details["steps"]
    assert isinstance(steps, list)
    assert [s["result"] for s in steps] == ["ok"] * 5
    assert [s["status_code"] for s in steps] == [200, 201, 200, 200, 200]
    assert all("total" in s["timings"] for s in steps)
    assert {"step1", "step5", "total"} <= out.timings.keys()
    assert out.details["teardown"]["result"] == "ok"  # type: ignore[index]
    assert target.calls[-1] == "DELETE /orders/o1"
    assert target.orders == {}
    assert "diagnostic" not in out.details


async def test_a_failing_third_step_skips_the_rest_runs_diagnostic_and_teardown(
    shop: tuple[Shop, str],
) -> None:
    target, base = shop
    spec = _flow(base, diagnostic=FlowStep(name="health", url=f"{base}/health"))
    spec.steps[2].expected_headers = {"X-Shop": "v3"}
    out = await api_flow.check(spec, timeout=5.0, source_address=None)
    assert out.status == Status.FAIL
    assert out.reason == Reason.HEADER_MISMATCH
    assert out.message.startswith("step 3 (read): header X-Shop")
    steps = out.details["steps"]
    assert isinstance(steps, list)
    assert [s["result"] for s in steps] == ["ok", "ok", "fail", "skipped", "skipped"]
    assert out.details["diagnostic"]["result"] == "ok"  # type: ignore[index]
    assert out.details["teardown"]["result"] == "ok"  # type: ignore[index]
    assert target.calls == [
        "POST /login",
        "POST /orders",
        "GET /orders/o1",
        "GET /health",
        "DELETE /orders/o1",
    ]


async def test_a_wrong_password_fails_the_first_step_without_showing_the_secret(
    shop: tuple[Shop, str],
) -> None:
    _, base = shop
    spec = _flow(base, secrets={"password": "wrong-" + SECRET})
    out = await api_flow.check(spec, timeout=5.0, source_address=None)
    assert out.reason == Reason.STATUS_MISMATCH and out.status_code == 401
    assert out.message == "step 1 (login): status 401, expected [200]"
    # The teardown needs {{order}}, which step 2 never extracted.
    assert out.details["teardown"]["reason"] == "variable_missing"  # type: ignore[index]
    assert SECRET not in repr(out)


async def test_secrets_in_urls_are_hidden_in_the_step_records(shop: tuple[Shop, str]) -> None:
    _, base = shop
    spec = ApiFlowSpec(
        steps=[FlowStep(url=f"{base}/health?key={{{{secrets.k}}}}", expected_status=[500])],
        secrets={"k": SECRET},
    )
    out = await api_flow.check(spec, timeout=5.0, source_address=None)
    assert out.reason == Reason.STATUS_MISMATCH
    assert SECRET not in repr(out)
    assert out.details["steps"][0]["url"].endswith("/health?key=<redacted>")  # type: ignore[index]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (FlowStep(url="{base}/health", expected_content="absent"), Reason.KEYWORD_MISSING),
        (FlowStep(url="{base}/health", body_regex=r"version=9"), Reason.KEYWORD_MISSING),
        (FlowStep(url="{base}/health", json_assertions=[Assertion(path="a")]), Reason.JSON_MISMATCH),
        (
            FlowStep(url="{base}/health", extract=[Extract(name="x", source="header", path="X-None")]),
            Reason.EXTRACTION_FAILED,
        ),
        (FlowStep(url="{base}/health?t={{nope}}"), Reason.VARIABLE_MISSING),
        (FlowStep(url="{base}/slow?s=0.3", max_latency_ms=50), Reason.LATENCY_EXCEEDED),
    ],
    ids=["contains", "regex", "json", "extract", "variable", "latency"],
)
async def test_each_assertion_fails_with_its_reason(
    shop: tuple[Shop, str], step: FlowStep, reason: Reason
) -> None:
    _, base = shop
    step.url = step.url.replace("{base}", base)
    out = await api_flow.check(ApiFlowSpec(steps=[step]), timeout=5.0, source_address=None)
    assert out.status == Status.FAIL and out.reason == reason, out


async def test_one_deadline_covers_the_flow_and_leaves_time_for_the_teardown(shop: tuple[Shop, str]) -> None:
    target, base = shop
    spec = ApiFlowSpec(
        steps=[
            FlowStep(url=f"{base}/health"),
            FlowStep(url=f"{base}/slow?s=10"),
            FlowStep(url=f"{base}/health"),
        ],
        teardown=FlowStep(name="cleanup", url=f"{base}/health"),
    )
    out = await api_flow.check(spec, timeout=1.0, source_address=None)
    assert out.reason == Reason.TIMEOUT
    assert [s["result"] for s in out.details["steps"]] == ["ok", "fail", "skipped"]  # type: ignore[union-attr]
    assert out.details["teardown"]["result"] == "ok"  # type: ignore[index]
    assert target.calls[-1] == "GET /health"


async def test_an_unreachable_target_is_connection_refused() -> None:
    spec = ApiFlowSpec(steps=[FlowStep(url="http://127.0.0.1:9/")])
    out = await CHECKERS["api_flow"](spec, timeout=2.0, source_address=None)
    assert out.reason == Reason.CONNECTION_REFUSED


def _monitor(**fields: Any) -> dict[str, Any]:
    steps = [{"name": "login", "method": "POST", "url": "{{base}}/login", "body": "{{secrets.pw}}"}]
    return {"name": "flow", "type": "api_flow", "steps": steps, "secrets": {"pw": SECRET}, **fields}


def test_the_api_takes_a_flow_and_never_shows_its_secrets() -> None:
    cfg = monitor_config.parse(_monitor(variables={"base": "https://shop.example"}), ["eu"])
    assert isinstance(cfg.spec, ApiFlowSpec) and cfg.spec.secrets == {"pw": SECRET}
    shown = monitor_config.redact({"secrets": {"pw": SECRET}, "steps": []})
    assert shown["secrets"] == {"pw": "<redacted>"}
    restored = monitor_config.restore_secrets(
        {"secrets": {"pw": "<redacted>", "new": "x"}}, {"secrets": {"pw": SECRET}}
    )
    assert restored["secrets"] == {"pw": SECRET, "new": "x"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"steps": []}, "steps"),
        ({"steps": [{"url": "https://a.example/"}] * 21}, "steps"),
        ({"steps": [{"url": "ftp://a.example/"}]}, "steps[0].url"),
        (
            {"steps": [{"url": "https://a.example/", "headers": {"Content-Length": "1"}}]},
            "steps[0].headers.Content-Length",
        ),
        ({"steps": [{"url": "https://a.example/", "body_regex": "("}]}, "steps[0].body_regex"),
        (
            {"steps": [{"url": "https://a.example/", "extract": [{"name": "a b", "path": "x"}]}]},
            "steps[0].extract[0].name",
        ),
        ({"teardown": {"url": "https://a.example/", "method": "GE T"}}, "teardown.method"),
    ],
    ids=["none", "too-many", "scheme", "header", "regex", "variable-name", "teardown"],
)
def test_a_bad_flow_is_refused_with_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        monitor_config.parse(_monitor(**fields), ["eu"])
    assert field in caught.value.details, caught.value.details


async def test_probefleet_probe_check_runs_a_flow_from_a_spec_file(
    shop: tuple[Shop, str], tmp_path: Path
) -> None:
    _, base = shop
    spec_file = tmp_path / "flow.yaml"
    spec_file.write_text(
        f"steps:\n  - url: {base}/health\n    expected_content: ok\n"
        f"  - url: {base}/nowhere\n    expected_status: [200]\n"
    )
    cmd = [sys.executable, "-m", "probefleet.shared.cli", "probe", "check", "--kind", "api_flow"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--spec-file", str(spec_file), "--json", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 1
    result = json.loads(stdout)
    assert result["reason"] == "status_mismatch"
    assert [s["result"] for s in result["details"]["steps"]] == ["ok", "fail"]
    bad = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
    _, stderr = await bad.communicate()
    assert bad.returncode == 2 and b"--spec-file" in stderr


def test_the_api_hides_step_credentials_and_keeps_them_on_update() -> None:
    stored = {
        "steps": [
            {
                "url": "https://a.example/x?token=t0k3n",
                "headers": {"Authorization": "Bearer abc", "Accept": "a"},
            },
        ],
        "teardown": {"url": "https://a.example/", "headers": {"X-Api-Key": "k"}},
    }
    shown = monitor_config.redact(json.loads(json.dumps(stored)))
    assert shown["steps"][0]["headers"] == {"Authorization": "<redacted>", "Accept": "a"}
    assert "t0k3n" not in shown["steps"][0]["url"]
    assert shown["teardown"]["headers"] == {"X-Api-Key": "<redacted>"}
    assert stored["steps"][0]["headers"]["Authorization"] == "Bearer abc"  # a copy was shown
    back = monitor_config.restore_secrets(shown, stored)
    assert back["steps"] == stored["steps"] and back["teardown"] == stored["teardown"]


async def test_the_agent_runs_a_flow_job_and_its_result_crosses_the_wire(
    shop: tuple[Shop, str], nats_url: str
) -> None:
    from probefleet.probe.agent import Agent
    from probefleet.shared import wire

    from .test_agent import config

    _, base = shop
    spec = _flow(base, diagnostic=FlowStep(name="health", url=f"{base}/health"))
    spec.steps[2].expected_headers = {"X-Shop": "v3"}
    now = time.time()
    job = wire.CheckJob(monitor_id=7, due=now, deadline=now + 10, region="eu-west", timeout=5.0, spec=spec)
    job = wire.decode_job(wire.encode(job))  # as a probe receives it
    result = await Agent(config(nats_url)).handle_job(job)
    again = wire.decode_result(wire.encode(result))
    assert again.reason == Reason.HEADER_MISMATCH
    assert [s["result"] for s in again.details["steps"]] == ["ok", "ok", "fail", "skipped", "skipped"]  # type: ignore[union-attr]
    assert SECRET not in repr(again)


async def test_it_calls_from_the_probe_source_address(http_target: str) -> None:
    """The loopback target's /echo answers the client address it saw as `peer`."""
    step = FlowStep(url=f"{http_target}/echo", json_assertions=[Assertion(path="$.peer", value="127.0.0.12")])
    out = await api_flow.check(ApiFlowSpec(steps=[step]), timeout=5.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out
