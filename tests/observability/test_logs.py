"""Structured logs: `key=value` events become JSON fields, API requests carry their request
id into the logs and the X-Request-Id header, both roles take --log-format json, and the
logs of a full run hold none of the secrets the run created."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from probefleet.controller.config import Region
from probefleet.shared.logs import REQUEST_ID, JsonFormatter, TextFormatter, split_fields
from tests.controller.conftest import start_controller
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

REGIONS = ["us-east", "eu-west"]


@pytest.mark.parametrize(
    ("text", "event", "fields"),
    [
        ("probe started", "probe started", {}),
        (
            "probe joined probe_id=p1 region=eu-west",
            "probe joined",
            {"probe_id": "p1", "region": "eu-west"},
        ),
        (
            "delivery failed delivery_id=7 error=webhook: cannot connect to 127.0.0.1:1: refused",
            "delivery failed",
            {"delivery_id": 7, "error": "webhook: cannot connect to 127.0.0.1:1: refused"},
        ),
        ("fetched url=http://h/?a=1&b=2 status=200", "fetched", {"url": "http://h/?a=1&b=2", "status": 200}),
        ("x=1", "", {"x": 1}),
    ],
    ids=["plain", "fields", "value-with-spaces", "url-with-query", "fields-only"],
)
def test_split_fields(text: str, event: str, fields: dict[str, object]) -> None:
    assert split_fields(text) == (event, fields)


def test_the_json_line_has_the_event_fields_request_id_and_traceback() -> None:
    record = logging.LogRecord(
        "probefleet.x", logging.WARNING, "f", 1, "monitor late monitor_id=%s", (42,), None
    )
    record.region = "eu-west"
    token = REQUEST_ID.set("req-1")
    try:
        line = JsonFormatter({"role": "controller"}).format(record)
        text = TextFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    doc = json.loads(line)
    assert doc["message"] == "monitor late" and doc["monitor_id"] == 42 and doc["region"] == "eu-west"
    assert doc["level"] == "warning" and doc["logger"] == "probefleet.x" and doc["role"] == "controller"
    assert doc["request_id"] == "req-1" and doc["time"].endswith("+00:00")
    assert text.endswith("monitor late monitor_id=42 request_id=req-1")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Every record of the run at DEBUG, formatted both ways."""
    json_out, text_out = io.StringIO(), io.StringIO()
    handlers = []
    for out, fmt in ((json_out, JsonFormatter({"role": "test"})), (text_out, TextFormatter())):
        handler = logging.StreamHandler(out)
        handler.setFormatter(fmt)
        handler.setLevel(logging.DEBUG)
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    yield json_out, text_out
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(level)


async def test_a_full_run_logs_no_secret(
    database: str, nats_url: str, captured: tuple[io.StringIO, io.StringIO]
) -> None:
    json_out, text_out = captured
    ctl = await start_controller(database, nats_url, regions=[Region(id=r) for r in REGIONS])
    probes = await start_probes(nats_url, REGIONS)
    target, failing = RegionalTarget(), RegionalTarget()
    await target.start()
    await failing.start()
    failing.fail_all()
    # The webhook's receiver answers 500, so its error (which can quote the URL) is logged.
    hooks = RegionalTarget()
    await hooks.start()
    hooks.fail_all()
    hooks.failing.add("127.0.0.1")
    receiver = hooks.url.removesuffix("/health")
    secrets: dict[str, str] = {"admin key": ctl.admin_key}
    try:
        async with aiohttp.ClientSession(
            base_url=ctl.base, headers={"Authorization": f"Bearer {ctl.admin_key}"}
        ) as api:
            made = await _post(api, "/api/v1/api-keys", {"name": "ci", "scopes": ["monitors:read"]})
            secrets["api key"] = made["key"]
            hook = "hooks-secret-path-5c1d"
            channel = await _post(
                api,
                "/api/v1/notification-channels",
                {
                    "name": "hook",
                    "kind": "webhook",
                    "config": {
                        "url": f"{receiver}/{hook}?token=hook-query-secret-77",
                        "secret": "hook-signing-secret-91",
                    },
                },
            )
            secrets |= {
                "webhook path": hook,
                "webhook query": "hook-query-secret-77",
                "webhook signing": "hook-signing-secret-91",
            }
            common = {"check_interval": 1, "timeout": 2, "locations": REGIONS}
            await _post(
                api,
                "/api/v1/monitors",
                {
                    "name": "with credentials",
                    "url": f"{target.url}?api_key=monitor-query-secret-12",
                    "basic_auth": ["user", "monitor-password-secret-34"],
                    "headers": {"X-Api-Key": "monitor-header-secret-56"},
                    **common,
                },
            )
            await _post(
                api,
                "/api/v1/monitors",
                {
                    "name": "failing with token",
                    "url": f"{failing.url}?token=failing-query-secret-78",
                    "bearer_token": "monitor-bearer-secret-90",
                    "notifications": [channel["id"]],
                    **common,
                },
            )
            secrets |= {
                "monitor query": "monitor-query-secret-12",
                "monitor password": "monitor-password-secret-34",
                "monitor header": "monitor-header-secret-56",
                "failing query": "failing-query-secret-78",
                "bearer token": "monitor-bearer-secret-90",
            }
            token = (await _post(api, "/api/v1/regions/eu-west/enrollment-tokens", {"expires_in": 600}))[
                "token"
            ]
            secrets["enrollment token"] = token
            async with aiohttp.ClientSession(base_url=ctl.base) as anon:
                r = await anon.post(
                    "/api/v1/enroll", json={"token": token, "public_key": _public_key(), "host": "h1"}
                )
                assert r.status == 201, await r.text()
                r = await anon.post(
                    "/api/v1/enroll", json={"token": token + "x", "public_key": _public_key()}
                )
                assert r.status == 401
            # A request whose id the client chose is answered with it, and its log line has it.
            r = await api.post(
                "/api/v1/regions/us-east/enrollment-tokens",
                json={"expires_in": 60},
                headers={"X-Request-Id": "ci-run-1"},
            )
            assert r.status == 201 and r.headers["X-Request-Id"] == "ci-run-1"
            secrets["second token"] = (await r.json())["data"]["token"]
            r = await api.get("/api/v1/monitors", headers={"X-Request-Id": "bad id level=forged"})
            assert (
                r.status == 200
                and "\n" not in r.headers["X-Request-Id"]
                and len(r.headers["X-Request-Id"]) == 16
            )

            # Until the failing monitor went down and its webhook delivery failed.
            await eventually(
                lambda: "delivery failed" in text_out.getvalue(), timeout=30, what="a failed delivery"
            )
    finally:
        await stop_probes(probes)
        await target.stop()
        await failing.stop()
        await hooks.stop()
        await ctl.stop()

    assert sum(hooks.hits.values()) >= 1, "the webhook was called"
    lines = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert len(lines) > 20
    tokens = [d for d in lines if d["message"] == "enrollment token created"]
    assert [d.get("request_id") for d in tokens][-1] == "ci-run-1" and all(
        d.get("request_id") for d in tokens
    )
    assert any(d["message"] == "probe joined" and d.get("region") == "eu-west" for d in lines)
    for out in (json_out.getvalue(), text_out.getvalue()):
        leaked = [name for name, secret in secrets.items() if secret in out]
        assert not leaked, f"secrets in the logs: {leaked}"


async def _post(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with api.post(path, json=body) as r:
        data = await r.json()
        assert r.status == 201, data
    result: dict[str, Any] = data["data"]
    return result


def _public_key() -> str:
    from probefleet.shared import natscreds

    return natscreds.new_user_keypair()[1]


@pytest.mark.parametrize("role", ["probe", "controller"])
async def test_both_roles_take_log_format_json(role: str) -> None:
    """`probefleet <role> ... --log-format json`: the first line (the insecure-NATS warning)
    is a JSON object with the role's fields."""
    args = {
        "probe": [
            "probe",
            "run",
            "--region",
            "eu-west",
            "--probe-id",
            "p-json",
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
        "controller": [
            "controller",
            "serve",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--database-url",
            "postgresql://127.0.0.1:1/x",
        ],
    }[role]
    env = {**os.environ, "PROBEFLEET_NATS_INSECURE": "true"}
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), "probefleet"),
        *args,
        "--insecure-nats",
        "--log-format",
        "json",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    doc = json.loads(line)
    assert doc["role"] == role and doc["level"] == "warning" and doc["message"].startswith("insecure NATS")
    if role == "probe":
        assert doc["probe_id"] == "p-json" and doc["region"] == "eu-west"
    else:
        assert doc["controller_id"]
