"""Schemathesis against the served document: every operation typed, no 5xx, and no
response that breaks the document. Bounded for `make test`: a few examples
per operation, a 15 s time budget and a fixed seed. A longer hunt: PROBEFLEET_ST_SEED,
PROBEFLEET_ST_EXAMPLES and PROBEFLEET_ST_SECONDS, e.g. PROBEFLEET_ST_SECONDS=90 (seeds 7 and
42 with 20-30 examples and 90 s sent about 13,500 requests without a 5xx)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probefleet.controller.api import openapi
from tests.controller.api.test_hostile_inputs import fixtures
from tests.controller.conftest import Running

ST = Path(sys.executable).with_name("schemathesis")
# Left out, because they cannot run here: /check and /test wait for probe answers
# (none run in this test; test_monitors.py runs them with two probe agents), and the
# streams never end (SSE /status/{slug}/events, WebSocket /api/v1/ws: test_realtime.py).
EXCLUDE = r"^(/api/v1/monitors/\{id\}/(check|test)|/status/\{slug\}/events|/api/v1/ws)$"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def config(key: str, rows: dict[str, str], spare_key: int) -> str:
    """Path parameters name a real row half of the time (dictionaries bound with a
    probability), so generated queries and bodies reach the handlers' parsing and writes
    instead of stopping at a 404; the other half stay generated."""
    ids = sorted({int(v) for k, v in rows.items() if k.startswith("/") and v.isascii() and v.isdigit()})
    values = {
        "ids": ids,
        "monitors": [int(rows["/api/v1/monitors/"])],
        "posts": [int(rows["/posts/"])],
        "slugs": [rows["slug"]],
        "tokens": [rows["token"]],
        "signals": ["start", "fail", "log", "0", "1"],
        "assets": ["status.css", "status.js"],
    }
    bound = {
        "path.id": "ids",
        "path.monitor_id": "monitors",
        "path.post_id": "posts",
        "path.subscriber_id": "ids",
        "path.slug": "slugs",
        "path.token": "tokens",
        "path.signal": "signals",
        "path.name": "assets",
    }
    # By security scheme, so operations documented `security: []` are called without a key.
    lines = ["[auth.openapi.bearerAuth]", f"bearer = {json.dumps(key)}", "", "[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(v)} }}" for name, v in values.items()]
    lines += ["", "[parameters]"]
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in bound.items()]
    # A generated id would revoke the key this run uses (the first one, id 1), and every
    # later request would be a 401: revocation only ever gets a key made for it.
    lines += ["", "[[operations]]", 'include-path = "/api/v1/api-keys/{id}"', 'include-method = "DELETE"']
    lines += [f'parameters = {{ "path.id" = {spare_key} }}']
    return "\n".join(lines) + "\n"


async def made(api: aiohttp.ClientSession, body: dict[str, object]) -> dict[str, Any]:
    r = await api.post("/api/v1/api-keys", json=body)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = (await r.json())["data"]
    return data


@pytest.mark.skipif(not ST.exists(), reason="schemathesis not installed (dev extra)")
@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_server_errors(
    controller: Running, api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # An empty schema accepts anything: the run checks responses only where they are typed.
    assert openapi.untyped(openapi.document(controller.app)) == []
    toml = tmp_path / "schemathesis.toml"
    spare = await made(api, {"name": "revoked by schemathesis", "scopes": ["admin"]})
    # Its own key, with a limit this run does not reach: a 429 tests nothing here.
    key = await made(api, {"name": "schemathesis", "scopes": ["admin"], "rate_limit": 1_000_000})
    toml.write_text(config(key["key"], await fixtures(api), spare["id"]))
    proc = await asyncio.create_subprocess_exec(
        str(ST),
        "--config-file",
        str(toml),
        "run",
        f"{controller.base}/api/v1/openapi.json",
        "--url",
        controller.base,
        "--checks",
        CHECKS,
        "--exclude-path-regex",
        EXCLUDE,
        "--max-examples",
        os.environ.get("PROBEFLEET_ST_EXAMPLES", "5"),
        "--max-time",
        os.environ.get("PROBEFLEET_ST_SECONDS", "15"),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        os.environ.get("PROBEFLEET_ST_SEED", "1"),
        "--no-shrink",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--warnings",
        "off",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert proc.returncode == 0, text[-12000:]
    assert "No issues found" in text or "passed" in text, text[-3000:]
    print(text[-1500:])
